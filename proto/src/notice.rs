//! Notices: what the coordinator tells observers about a release beyond the agents' outcome
//! events, on `coxswain.notice.<release>` (kept in the events stream).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A version that passed an environment failed or was rolled back there since: it may no
    /// longer be promoted from it, and running promotions of it halt before their next wave.
    PromotionWithdrawn,
}

/// One notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Notice {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// What it says.
    pub kind: NoticeKind,
    /// The release.
    pub release: String,
    /// The version concerned.
    pub version: String,
    /// Its content digest.
    pub content_digest: String,
    /// The environment where it happened.
    pub environment: String,
    /// The rollout that caused it (the rollback, or the failed rollout).
    pub rollout_id: String,
    /// Why, in words.
    pub reason: String,
    /// When the coordinator noticed.
    #[schemars(with = "String")]
    pub at: Timestamp,
}

impl Notice {
    /// The message id a notice is published under: the same notice twice is stored once.
    pub fn msg_id(&self) -> String {
        format!(
            "notice.{}.{}.{:?}",
            self.release, self.rollout_id, self.kind
        )
    }
}
