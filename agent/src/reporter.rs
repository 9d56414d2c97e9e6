//! Outcome events and release state: every event is retried until JetStream stores it, so a
//! NATS outage delays events but never loses one.
//!
//! Round trips per intent are few: the phase events before the final one are sent without
//! waiting for their acks, which are collected before the final event is published (and the
//! intent is acked only once that one is stored). The release state is written when the
//! cluster starts changing (`applying`) and at the end, with compare-and-set on the revision
//! this worker last read or wrote, so no read precedes each write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bus::{Bus, PendingPublish, ReleaseStates};
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
    /// What one delivery's reporter keeps between events; fresh for each delivery.
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    /// The releases the drift checks watch.
    pub(crate) deployed: crate::drift::Deployed,
}

/// A delivery's events sent and not yet confirmed, and the release state's revision as this
/// worker last read or wrote it.
#[derive(Default)]
pub(crate) struct Ledger {
    unconfirmed: Vec<(Outcome, Option<String>, PendingPublish)>,
    state_revision: Option<u64>,
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
    /// The intent's sequence in the intents stream.
    pub(crate) sequence: u64,
    /// The release's drift policy (from the intent).
    pub(crate) drift: proto::DriftPolicy,
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
            ledger: Arc::default(),
            ..self.clone()
        }
    }

    /// Records the release state's revision as just read (0: there is none), so the next
    /// state write is a compare-and-set against it.
    pub(crate) fn state_read_at(&self, revision: u64) {
        self.ledger().state_revision = Some(revision);
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the event and updates the release state. A phase event before the final
    /// one is sent without waiting for its ack; the final one first confirms those (sending
    /// again any the server did not store), then is published and awaited, retrying while
    /// the failure is transient.
    pub(crate) async fn report(
        &self,
        outcome: &Outcome,
        about: &About,
        traceparent: Option<&str>,
    ) -> Reported {
        let outcome = &outcome.clone().bounded();
        if !outcome.terminal && self.send_early(outcome, traceparent).await {
            if outcome.phase == Phase::Applying && about.issued_at.is_some() {
                self.put_state(outcome, about).await;
            }
            return Reported::Stored;
        }
        if outcome.terminal && self.confirm_sent().await == Reported::Stopping {
            return Reported::Stopping;
        }
        let first = match self.store(outcome, traceparent).await {
            Ok(first) => first,
            Err(reported) => return reported,
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
        if about.issued_at.is_some() && (outcome.terminal || outcome.phase == Phase::Applying) {
            self.put_state(outcome, about).await;
        }
        Reported::Stored
    }

    /// Sends a phase event without awaiting its ack; `false` when it could not even be sent
    /// (it then goes the slow way).
    async fn send_early(&self, outcome: &Outcome, traceparent: Option<&str>) -> bool {
        let traceparent = traceparent.map(str::to_owned);
        match self
            .bus
            .send_outcome(outcome, self.content_type, traceparent.clone())
            .await
        {
            Ok(pending) => {
                self.ledger()
                    .unconfirmed
                    .push((outcome.clone(), traceparent, pending));
                true
            }
            Err(error) => {
                tracing::warn!(%error, phase = %outcome.phase, "cannot send the event; retrying until stored");
                false
            }
        }
    }

    /// Waits for the acks of the events sent early; publishes again (same event id, so
    /// stored once) any the server did not confirm.
    async fn confirm_sent(&self) -> Reported {
        let unconfirmed = std::mem::take(&mut self.ledger().unconfirmed);
        for (outcome, traceparent, pending) in unconfirmed {
            if let Err(error) = pending.stored().await {
                tracing::warn!(%error, phase = %outcome.phase, "event not confirmed; publishing it again");
                if let Err(Reported::Stopping) = self.store(&outcome, traceparent.as_deref()).await
                {
                    return Reported::Stopping;
                }
            }
        }
        Reported::Stored
    }

    /// Publishes an event and waits until it is stored, retrying while the failure is
    /// transient; whether it was new (not a duplicate of one stored before).
    async fn store(&self, outcome: &Outcome, traceparent: Option<&str>) -> Result<bool, Reported> {
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
            () = self.hard_stop.cancelled() => return Err(Reported::Stopping),
            result = stored => result,
        };
        match published {
            Ok(p) => {
                tracing::info!(phase = %outcome.phase, release = outcome.release,
                    intent = outcome.intent_id, revision = ?outcome.revision,
                    duplicate = p.duplicate, "outcome event stored");
                Ok(!p.duplicate)
            }
            Err(error) => {
                tracing::error!(%error, phase = %outcome.phase, "outcome event can never be stored; giving up on it");
                Err(Reported::Unstorable)
            }
        }
    }

    /// Writes the release state, unless it already describes an intent issued after this
    /// one: the state (and the replay watermark in it) never goes back to an older intent,
    /// whose superseded or refused ending the audit trail keeps. A compare-and-set against
    /// the revision this worker knows; when another writer came between (or the revision is
    /// unknown), read, check and write again.
    async fn put_state(&self, outcome: &Outcome, about: &About) {
        let state = ReleaseState {
            schema_version: SCHEMA_VERSION,
            cluster: outcome.cluster.clone(),
            release: outcome.release.clone(),
            namespace: about.namespace.clone(),
            intent_id: outcome.intent_id.clone(),
            intent_issued_at: about.issued_at,
            intent_sequence: Some(about.sequence),
            version: outcome.version.clone().unwrap_or_default(),
            revision: outcome.revision,
            phase: outcome.phase,
            reason: outcome.reason.clone(),
            updated_at: jiff::Timestamp::now(),
            drift_policy: about.drift,
            drift: None,
        };
        // An intent ended with a revision in place (the new one, or the one rolled back to):
        // the drift checks watch the release from now on.
        if outcome.terminal && !about.namespace.is_empty() && outcome.phase != Phase::Rejected {
            self.deployed.record(
                &outcome.release,
                crate::drift::Watched {
                    namespace: about.namespace.clone(),
                    policy: about.drift,
                    intent_id: outcome.intent_id.clone(),
                },
            );
        }
        let known = self.ledger().state_revision;
        if let Some(revision) = known
            && let Ok(Ok(new)) = self.states.update(&state, revision).await
        {
            self.ledger().state_revision = Some(new);
            return;
        }
        for attempt in 1..=5u32 {
            match self.read_then_write(&state, about).await {
                Ok(Some(new)) => {
                    self.ledger().state_revision = Some(new);
                    return;
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot update the release state");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
    }

    /// One read, check and compare-and-set: the new revision; `None` when the state belongs
    /// to a newer intent and stays as it is.
    async fn read_then_write(
        &self,
        state: &ReleaseState,
        about: &About,
    ) -> Result<Option<u64>, String> {
        let current = self
            .states
            .get_at(&state.cluster, &state.release)
            .await
            .map_err(|e| e.to_string())?;
        let revision = match current {
            Some((current, _))
                if current.intent_id != state.intent_id
                    && current.intent_issued_at > about.issued_at =>
            {
                return Ok(None);
            }
            Some((_, revision)) => revision,
            None => 0,
        };
        match self.states.update(state, revision).await {
            Ok(Ok(new)) => Ok(Some(new)),
            Ok(Err(bus::Conflict)) => Err("another writer came first".into()),
            Err(error) => Err(error.to_string()),
        }
    }
}
