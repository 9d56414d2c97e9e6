//! Outcome events: what happened to an intent on one cluster, phase by phase. The event stream
//! is the audit trail.

use std::fmt;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where an intent is on its way through one cluster.
///
/// `received -> applying -> progressing -> succeeded`, or
/// `-> failed -> rolling_back -> rolled_back | rollback_failed`; `rejected` and `superseded`
/// end an intent that was never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The agent took the intent off the stream.
    Received,
    /// Server-side apply is running.
    Applying,
    /// Applied; waiting for the rollout to become healthy.
    Progressing,
    /// Healthy; the revision is deployed.
    Succeeded,
    /// Health failed or the deadline passed.
    Failed,
    /// Re-applying the last deployed revision.
    RollingBack,
    /// The last deployed revision is back and healthy.
    RolledBack,
    /// The rollback itself failed; a person must look.
    RollbackFailed,
    /// Invalid, wrong environment or wrong cluster: nothing was applied.
    Rejected,
    /// A newer intent for the same release replaced this one.
    Superseded,
    /// Not part of an intent's way: the live objects of the deployed revision changed in
    /// fields the release manages (the event lists each object and field path).
    Drifted,
    /// Not part of an intent's way: drifted fields were set back by re-applying the deployed
    /// revision (`drift: correct`).
    Corrected,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 12] = [
        Self::Received,
        Self::Applying,
        Self::Progressing,
        Self::Succeeded,
        Self::Failed,
        Self::RollingBack,
        Self::RolledBack,
        Self::RollbackFailed,
        Self::Rejected,
        Self::Superseded,
        Self::Drifted,
        Self::Corrected,
    ];

    /// The wire name (`rolling_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Applying => "applying",
            Self::Progressing => "progressing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Rejected => "rejected",
            Self::Superseded => "superseded",
            Self::Drifted => "drifted",
            Self::Corrected => "corrected",
        }
    }

    /// True for the drift phases, which report on a deployed revision, not on an intent.
    pub fn is_drift(self) -> bool {
        matches!(self, Self::Drifted | Self::Corrected)
    }

    /// True for phases after which nothing more happens to the intent. `failed` is final only
    /// when no rollback follows, which the event's `terminal` flag says.
    pub fn always_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::RolledBack
                | Self::RollbackFailed
                | Self::Rejected
                | Self::Superseded
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of one object as the agent last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Rolled out and ready.
    Healthy,
    /// Still rolling out.
    Progressing,
    /// Will not become healthy without a change.
    Failed,
    /// Not observed (yet).
    Unknown,
}

/// One object's health in an outcome event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceHealth {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace, absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
    /// Health verdict.
    pub status: HealthStatus,
    /// Why, in the words of the object's status (`ProgressDeadlineExceeded`, `CrashLoopBackOff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One outcome event, published on `coxswain.event.<cluster>.<release>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// Stable id of this event (also `Nats-Msg-Id` and `ce-id`): a re-published event keeps it,
    /// so consumers de-duplicate on it.
    pub event_id: String,
    /// The intent this event is about.
    pub intent_id: String,
    /// Cluster the event comes from.
    pub cluster: String,
    /// Release the event is about.
    pub release: String,
    /// The phase reached.
    pub phase: Phase,
    /// True when this is the intent's last event on this cluster.
    #[serde(default)]
    pub terminal: bool,
    /// Release revision in the cluster, once one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// Delivery attempt of the intent that produced this event (1 on first delivery).
    pub attempt: u32,
    /// Version of the release the intent deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who asked for the intent (for the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The coordinator rollout the intent belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    /// Why this phase was reached, for failures and rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Per-object health, when observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceHealth>,
    /// When the event happened.
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// Milliseconds since the agent received the intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

/// Longest `reason` an event carries, in characters; a longer one is cut and marked `…`.
pub const MAX_REASON_CHARS: usize = 2048;
/// Longest id or free-text field an event carries, in characters.
pub const MAX_EVENT_FIELD_CHARS: usize = 256;
/// Most per-object health entries an event carries.
pub const MAX_EVENT_RESOURCES: usize = 100;

/// `text` cut to `max` characters, marked when cut.
fn cut(text: &mut String, max: usize) {
    if text.chars().count() > max {
        *text = text.chars().take(max.saturating_sub(1)).collect();
        text.push('…');
    }
}

impl Outcome {
    /// The event with every field within its documented limit, so it can always be encoded
    /// and stored: a reason of `MAX_REASON_CHARS`, ids and texts of `MAX_EVENT_FIELD_CHARS`,
    /// at most `MAX_EVENT_RESOURCES` resources.
    pub fn bounded(mut self) -> Self {
        cut(&mut self.intent_id, MAX_EVENT_FIELD_CHARS);
        cut(&mut self.event_id, 2 * MAX_EVENT_FIELD_CHARS);
        for text in [
            &mut self.version,
            &mut self.requested_by,
            &mut self.rollout_id,
        ]
        .into_iter()
        .flatten()
        {
            cut(text, MAX_EVENT_FIELD_CHARS);
        }
        if let Some(reason) = &mut self.reason {
            cut(reason, MAX_REASON_CHARS);
        }
        self.resources.truncate(MAX_EVENT_RESOURCES);
        for r in &mut self.resources {
            if let Some(message) = &mut r.message {
                cut(message, MAX_EVENT_FIELD_CHARS);
            }
        }
        self
    }

    /// The stable event id of `phase` for an intent on a cluster: the same inputs always give
    /// the same id, so a re-published event is de-duplicated by JetStream and by readers.
    /// A terminal event's id is `<cluster>.<intent>.final`, whatever its phase and attempt:
    /// however often an intent is redelivered, and whatever a later attempt concludes, the
    /// first final event stored is the only one (JetStream drops the repeat as a duplicate).
    pub fn event_id_for(
        cluster: &str,
        intent_id: &str,
        phase: Phase,
        attempt: u32,
        terminal: bool,
    ) -> String {
        if terminal {
            format!("{cluster}.{intent_id}.final")
        } else {
            format!("{cluster}.{intent_id}.{phase}.{attempt}")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bounded_event_always_encodes_within_the_message_limit() {
        let huge = "x".repeat(900 * 1024);
        let outcome = Outcome {
            schema_version: 1,
            event_id: Outcome::event_id_for("beta", &huge, Phase::Rejected, 1, true),
            intent_id: huge.clone(),
            cluster: "beta".into(),
            release: "web".into(),
            phase: Phase::Rejected,
            terminal: true,
            revision: None,
            attempt: 1,
            version: Some(huge.clone()),
            requested_by: Some(huge.clone()),
            rollout_id: None,
            reason: Some(huge.clone()),
            resources: vec![
                ResourceHealth {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: None,
                    name: "p".into(),
                    status: HealthStatus::Failed,
                    message: Some(huge),
                };
                500
            ],
            at: jiff::Timestamp::UNIX_EPOCH,
            elapsed_ms: None,
        }
        .bounded();
        let bytes = crate::encode(crate::ContentType::Json, &outcome).unwrap();
        assert!(bytes.len() < 200 * 1024, "{} bytes", bytes.len());
        assert_eq!(outcome.reason.unwrap().chars().count(), MAX_REASON_CHARS);
        assert!(outcome.intent_id.ends_with('…'));
        assert_eq!(outcome.resources.len(), MAX_EVENT_RESOURCES);
    }
}
