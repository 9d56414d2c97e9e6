//! Outcome events and release state: every event is retried until JetStream stores it, so a
//! NATS outage delays events but never loses one.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use backon::{ExponentialBuilder, Retryable};
use proto::{ContentType, Outcome, Phase, ReleaseState, ResourceHealth, SCHEMA_VERSION};
use tokio_util::sync::CancellationToken;

/// Publishes one intent's events.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) metrics: std::sync::Arc<crate::Metrics>,
    pub(crate) js: jetstream::Context,
    pub(crate) state: kv::Store,
    pub(crate) cluster: String,
    pub(crate) content_type: ContentType,
    /// Cancelled only when the agent must stop at once (after the grace period).
    pub(crate) hard_stop: CancellationToken,
}

/// What one event says.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) intent_id: String,
    pub(crate) release: String,
    pub(crate) namespace: String,
    pub(crate) version: String,
    pub(crate) requested_by: Option<String>,
    pub(crate) rollout_id: Option<String>,
    pub(crate) phase: Phase,
    pub(crate) terminal: bool,
    pub(crate) revision: Option<u32>,
    pub(crate) attempt: u32,
    pub(crate) reason: Option<String>,
    pub(crate) resources: Vec<ResourceHealth>,
    pub(crate) elapsed: Duration,
}

impl Reporter {
    /// The same reporter, encoding events like the intent they answer (JSON for JSON).
    pub(crate) fn replying_in(&self, content_type: ContentType) -> Self {
        Self {
            content_type,
            ..self.clone()
        }
    }

    /// Publishes the event (retrying until stored) and updates the release state. `false`
    /// when the agent stopped before the event could be stored.
    pub(crate) async fn report(&self, event: &Event, traceparent: Option<&str>) -> bool {
        let outcome = Outcome {
            schema_version: SCHEMA_VERSION,
            event_id: Outcome::event_id_for(
                &self.cluster,
                &event.intent_id,
                event.phase,
                event.attempt,
                event.terminal,
            ),
            intent_id: event.intent_id.clone(),
            cluster: self.cluster.clone(),
            release: event.release.clone(),
            phase: event.phase,
            terminal: event.terminal,
            revision: event.revision,
            attempt: event.attempt,
            version: Some(event.version.clone()),
            requested_by: event.requested_by.clone(),
            rollout_id: event.rollout_id.clone(),
            reason: event.reason.clone(),
            resources: event.resources.clone(),
            at: jiff::Timestamp::now(),
            elapsed_ms: u64::try_from(event.elapsed.as_millis()).ok(),
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times();
        let publish = || {
            bus::publish_outcome(
                &self.js,
                &outcome,
                self.content_type,
                traceparent.map(str::to_owned),
            )
        };
        let stored = publish
            .retry(policy)
            .sleep(tokio::time::sleep)
            .notify(|error, wait| tracing::warn!(%error, ?wait, phase = %outcome.phase, "outcome event not stored yet; retrying"));
        let published = tokio::select! {
            () = self.hard_stop.cancelled() => return false,
            result = stored => result,
        };
        match published {
            Ok(p) => {
                tracing::info!(phase = %outcome.phase, release = outcome.release, intent = outcome.intent_id,
                revision = ?outcome.revision, duplicate = p.duplicate, "outcome event stored")
            }
            // Unreachable with unlimited retries; kept so a future limit cannot drop silently.
            Err(error) => {
                tracing::error!(%error, phase = %outcome.phase, "outcome event could not be stored");
                return false;
            }
        }
        if event.terminal {
            self.metrics.finished(event.phase.as_str(), event.elapsed);
        }
        self.put_state(event).await;
        true
    }

    async fn put_state(&self, event: &Event) {
        let state = ReleaseState {
            schema_version: SCHEMA_VERSION,
            cluster: self.cluster.clone(),
            release: event.release.clone(),
            namespace: event.namespace.clone(),
            intent_id: event.intent_id.clone(),
            version: event.version.clone(),
            revision: event.revision,
            phase: event.phase,
            reason: event.reason.clone(),
            updated_at: jiff::Timestamp::now(),
        };
        let Ok(bytes) = proto::encode(ContentType::Json, &state) else {
            return;
        };
        let key = format!("{}.{}", self.cluster, event.release);
        for attempt in 1..=5u32 {
            match self.state.put(&key, bytes.clone().into()).await {
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, key, attempt, "cannot update the release state");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
    }
}
