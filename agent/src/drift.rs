//! Drift detection on the agent: every `--drift-interval` (jittered), each release this agent
//! deployed is checked against its deployed revision (`deploy::Engine::check_drift`), one
//! release at a time and never alongside an operation on it (the release's lock). Drift is
//! published as a `drifted` event naming each object and field path (never a value); with
//! `drift: correct` the drifted objects are applied again and a `corrected` event follows.
//! The release state keeps the last finding until it is corrected or deployed again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deploy::{Drift, Engine};
use proto::{DriftPolicy, Outcome, Phase, SCHEMA_VERSION};
use tokio_util::sync::CancellationToken;

use crate::worker::Shared;

/// A deployed release the checks watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watched {
    pub(crate) namespace: String,
    pub(crate) policy: DriftPolicy,
    /// The intent that deployed it (drift events name it).
    pub(crate) intent_id: String,
}

/// The releases this agent deployed, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deployed(Arc<Mutex<BTreeMap<String, Watched>>>);

impl Deployed {
    /// Notes that `release` ended an intent with a deployed revision in place.
    pub(crate) fn record(&self, release: &str, watched: Watched) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(release.to_owned(), watched);
    }

    fn snapshot(&self) -> Vec<(String, Watched)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `interval` give or take a tenth, so many agents do not check at the same moment.
fn jittered(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    interval.mul_f64(0.9 + f64::from(nanos % 2001) / 10_000.0)
}

/// Checks every deployed release each interval until `stop`.
pub(crate) async fn watch(shared: Arc<Shared>, deployed: Deployed, stop: CancellationToken) {
    let interval = shared.config.drift_interval;
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(jittered(interval)) => {}
        }
        for (release, watched) in deployed.snapshot() {
            if stop.is_cancelled() {
                return;
            }
            if watched.policy != DriftPolicy::Ignore {
                check(&shared, &release, &watched, &stop).await;
            }
        }
    }
}

/// One release's check, and what it reports.
async fn check(shared: &Shared, release: &str, watched: &Watched, stop: &CancellationToken) {
    let engine = Engine::new(shared.kube.clone(), shared.config.engine.clone());
    let correct = watched.policy == DriftPolicy::Correct;
    let ignore = &shared.config.drift_ignore_managers;
    match engine
        .check_drift(&watched.namespace, release, correct, ignore, stop)
        .await
    {
        Ok(Some(drift)) => {
            tracing::warn!(
                release,
                drift = drift.summary(),
                corrected = drift.corrected,
                "drift"
            );
            report(shared, release, watched, &drift, Phase::Drifted).await;
            if drift.corrected {
                report(shared, release, watched, &drift, Phase::Corrected).await;
            }
            let found = (!drift.corrected).then(|| drift.summary());
            note_in_state(shared, release, found).await;
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, release, "drift check failed; the next one tries again")
        }
    }
}

/// Publishes a drift event of `release`.
async fn report(shared: &Shared, release: &str, watched: &Watched, drift: &Drift, phase: Phase) {
    let now = jiff::Timestamp::now();
    let cluster = &shared.config.cluster;
    let event = Outcome {
        schema_version: SCHEMA_VERSION,
        event_id: format!("{cluster}.{release}.{phase}.{}", now.as_millisecond()),
        intent_id: watched.intent_id.clone(),
        cluster: cluster.clone(),
        release: release.to_owned(),
        phase,
        terminal: false,
        revision: Some(drift.revision),
        attempt: 0,
        version: Some(drift.version.clone()),
        requested_by: None,
        rollout_id: None,
        reason: Some(drift.summary()),
        resources: Vec::new(),
        at: now,
        elapsed_ms: None,
    }
    .bounded();
    if let Err(error) = shared
        .bus
        .publish_outcome(&event, shared.config.content_type, None)
        .await
    {
        tracing::warn!(%error, release, %phase, "cannot publish the drift event");
    }
}

/// Keeps the finding in the release state (`None` clears it), compare-and-set; a conflict
/// leaves it to the next check.
async fn note_in_state(shared: &Shared, release: &str, found: Option<String>) {
    let states = &shared.reporter.states;
    match states.get_at(&shared.config.cluster, release).await {
        Ok(Some((mut state, revision))) if state.drift != found => {
            state.drift = found;
            if let Err(error) = states.update(&state, revision).await {
                tracing::warn!(%error, release, "cannot note the drift in the release state");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, release, "cannot read the release state"),
    }
}
