//! The latest known state of one release on one cluster, kept in `coxswain-state`.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::Phase;

/// What `coxswain status` shows for one cluster x release cell. Key: `<cluster>.<release>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseState {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// Cluster name.
    pub cluster: String,
    /// Release name.
    pub release: String,
    /// Namespace of the release.
    pub namespace: String,
    /// Last intent that touched the release.
    pub intent_id: String,
    /// When that intent was issued (its `created_at`): an older intent for this release is
    /// a replay and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub intent_issued_at: Option<Timestamp>,
    /// That intent's sequence in the intents stream. An intent issued earlier but published
    /// earlier too (a lower sequence) was merely overtaken and ends superseded; one issued
    /// earlier and published later (a higher sequence) is a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_sequence: Option<u64>,
    /// Version that intent deploys.
    pub version: String,
    /// Revision in the cluster's release history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// Last phase reached.
    pub phase: Phase,
    /// Why, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The release's drift policy, from its last intent (what the drift checks do).
    #[serde(default)]
    pub drift_policy: crate::DriftPolicy,
    /// What the last drift check found, while it stands (cleared by a correction or the next
    /// deploy): objects and field paths, never values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// When this state was written.
    #[schemars(with = "String")]
    pub updated_at: Timestamp,
}
