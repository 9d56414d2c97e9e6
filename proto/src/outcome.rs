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
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 10] = [
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
        }
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

impl Outcome {
    /// The stable event id of `phase` for an intent on a cluster: the same inputs always give
    /// the same id, so a re-published event is de-duplicated by JetStream and by readers.
    /// A terminal event's id leaves out the delivery attempt: however often an intent is
    /// redelivered, it has one final outcome.
    pub fn event_id_for(
        cluster: &str,
        intent_id: &str,
        phase: Phase,
        attempt: u32,
        terminal: bool,
    ) -> String {
        if terminal {
            format!("{cluster}.{intent_id}.{phase}")
        } else {
            format!("{cluster}.{intent_id}.{phase}.{attempt}")
        }
    }
}
