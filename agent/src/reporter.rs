//! Outcome events and release state: every event is retried until JetStream stores it, so a
//! NATS outage delays events but never loses one.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bus::{Bus, ReleaseStates};
use proto::{ContentType, Outcome, Phase, ReleaseState, SCHEMA_VERSION};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Publishes one intent's events.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) metrics: std::sync::Arc<crate::Metrics>,
    pub(crate) bus: Bus,
    pub(crate) states: ReleaseStates,
    pub(crate) content_type: ContentType,
    /// Cancelled only when the agent must stop at once (after the grace period).
    pub(crate) hard_stop: CancellationToken,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reported {
    /// Stored (now, or by an earlier delivery for a final event).
    Stored,
    /// The agent stops before it could be stored: hand the intent back.
    Stopping,
    /// It can never be stored (a permanent error): the intent must not be redelivered.
    Unstorable,
}

/// What every event about one delivery of an intent shares.
#[derive(Debug, Clone)]
pub(crate) struct About {
    pub(crate) cluster: String,
    pub(crate) intent_id: String,
    pub(crate) release: String,
    pub(crate) namespace: String,
    pub(crate) version: Option<String>,
    pub(crate) requested_by: Option<String>,
    pub(crate) rollout_id: Option<String>,
    pub(crate) attempt: u32,
    pub(crate) received: Instant,
    /// When the intent was issued; `None` for one that was refused (it changes no state).
    pub(crate) issued_at: Option<jiff::Timestamp>,
}

impl About {
    /// The event of `phase`, with its stable id.
    pub(crate) fn outcome(&self, phase: Phase, terminal: bool) -> Outcome {
        Outcome {
            schema_version: SCHEMA_VERSION,
            event_id: Outcome::event_id_for(
                &self.cluster,
                &self.intent_id,
                phase,
                self.attempt,
                terminal,
            ),
            intent_id: self.intent_id.clone(),
            cluster: self.cluster.clone(),
            release: self.release.clone(),
            phase,
            terminal,
            revision: None,
            attempt: self.attempt,
            version: self.version.clone(),
            requested_by: self.requested_by.clone(),
            rollout_id: self.rollout_id.clone(),
            reason: None,
            resources: Vec::new(),
            at: jiff::Timestamp::now(),
            elapsed_ms: u64::try_from(self.received.elapsed().as_millis()).ok(),
        }
    }

    /// A final event of `phase` for `reason`.
    pub(crate) fn ended(&self, phase: Phase, reason: impl Into<String>) -> Outcome {
        Outcome {
            reason: Some(reason.into()),
            ..self.outcome(phase, true)
        }
    }
}

impl Reporter {
    /// The same reporter, encoding events like the intent they answer (JSON for JSON).
    pub(crate) fn replying_in(&self, content_type: ContentType) -> Self {
        Self {
            content_type,
            ..self.clone()
        }
    }

    /// Publishes the event (retrying while the failure is transient) and updates the release
    /// state.
    pub(crate) async fn report(
        &self,
        outcome: &Outcome,
        about: &About,
        traceparent: Option<&str>,
    ) -> Reported {
        let outcome = &outcome.clone().bounded();
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times();
        let publish = || {
            self.bus
                .publish_outcome(outcome, self.content_type, traceparent.map(str::to_owned))
        };
        let stored = publish
            .retry(policy)
            .when(|e: &bus::BusError| !e.is_permanent())
            .sleep(tokio::time::sleep)
            .notify(|error, wait| tracing::warn!(%error, ?wait, phase = %outcome.phase, "outcome event not stored yet; retrying"));
        let published = tokio::select! {
            () = self.hard_stop.cancelled() => return Reported::Stopping,
            result = stored => result,
        };
        let first = match published {
            Ok(p) => {
                tracing::info!(phase = %outcome.phase, release = outcome.release,
                    intent = outcome.intent_id, revision = ?outcome.revision,
                    duplicate = p.duplicate, "outcome event stored");
                !p.duplicate
            }
            Err(error) => {
                tracing::error!(%error, phase = %outcome.phase, "outcome event can never be stored; giving up on it");
                return Reported::Unstorable;
            }
        };
        // A final event already stored (by an earlier delivery) stands: this one changes
        // nothing, neither the metrics nor the state.
        if outcome.terminal && !first {
            return Reported::Stored;
        }
        if outcome.terminal {
            self.metrics
                .finished(outcome.phase.as_str(), about.received.elapsed());
        }
        // A refused intent says nothing about the release: the audit trail has it, the
        // state keeps describing what the cluster runs.
        if about.issued_at.is_some() {
            self.put_state(outcome, about).await;
        }
        Reported::Stored
    }

    /// Writes the release state, unless it already describes an intent issued after this
    /// one: the state (and the replay watermark in it) never goes back to an older intent,
    /// whose superseded or refused ending the audit trail keeps.
    async fn put_state(&self, outcome: &Outcome, about: &About) {
        if let Ok(Some(current)) = self.states.get(&outcome.cluster, &outcome.release).await
            && current.intent_id != outcome.intent_id
            && current.intent_issued_at > about.issued_at
        {
            return;
        }
        let state = ReleaseState {
            schema_version: SCHEMA_VERSION,
            cluster: outcome.cluster.clone(),
            release: outcome.release.clone(),
            namespace: about.namespace.clone(),
            intent_id: outcome.intent_id.clone(),
            intent_issued_at: about.issued_at,
            version: outcome.version.clone().unwrap_or_default(),
            revision: outcome.revision,
            phase: outcome.phase,
            reason: outcome.reason.clone(),
            updated_at: jiff::Timestamp::now(),
        };
        for attempt in 1..=5u32 {
            match self.states.put(&state).await {
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot update the release state");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
    }
}
