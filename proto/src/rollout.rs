//! Rollouts: what CI submits to the coordinator, and the record the coordinator keeps in
//! `coxswain-rollouts` while it drives the rollout wave by wave.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::intent::{HealthPolicy, Manifests, RollbackPolicy};
use crate::outcome::Phase;
use crate::validate::{ProblemKind, Validate, ValidationErrors};

/// A request to deploy a release to an environment (`POST /v1/rollouts`). Which clusters, in
/// which waves, behind which gates, is the platform policy's to say, never the request's: a
/// request carrying one of [`PLATFORM_FIELDS`] is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutRequest {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// Idempotency key: the same key twice is one rollout (a CI retry deploys once).
    pub idempotency_key: String,
    /// Release name.
    pub release: String,
    /// Namespace of the release.
    pub namespace: String,
    /// Environment (`beta`, `prod`).
    pub environment: String,
    /// Version being deployed; the promotion gate compares it, with `content_digest`.
    pub version: String,
    /// `sha256:<hex>` of the release's templates and default values (`values.yaml`), before
    /// environment values and `--set` overrides: the same content in every environment. The
    /// promotion gate requires this version with this content to have succeeded first.
    #[serde(default)]
    pub content_digest: String,
    /// The rendered manifests (inline, or a bundle already in `coxswain-bundles`).
    pub manifests: Manifests,
    /// Health policy for every cluster.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Rollback policy for every cluster.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Who asked.
    pub requested_by: String,
    /// Rollouts (ids) of releases this one depends on: on each cluster, it starts only after
    /// each of them succeeded there, and not at all where one of them failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Start even inside a freeze window, for this reason (the caller needs the break-glass
    /// role); recorded with the caller's identity in the rollout, its intents and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

/// The most rollouts a request may wait for.
pub const MAX_AFTER: usize = 32;

/// The fields a request must not carry: the platform policy sets them.
pub const PLATFORM_FIELDS: [&str; 4] = ["selector", "waves", "requires", "revert_on_failure"];

fn yes() -> bool {
    true
}

fn is_sha256_digest(digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `POST /v1/rollbacks`: one cluster's release back to an earlier revision of its own
/// history, signed and published by the coordinator like any intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Release to roll back (DNS-1123 label).
    pub release: String,
    /// Cluster to roll it back on (DNS-1123 label).
    pub cluster: String,
    /// Revision to return to; `None`: the one deployed before the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Seconds the rollback may take.
    #[serde(default = "default_rollback_timeout")]
    pub timeout_secs: u64,
    /// Who asks.
    pub requested_by: String,
}

fn default_rollback_timeout() -> u64 {
    600
}

impl Validate for RollbackRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        errors.check_label("release", &self.release);
        errors.check_label("cluster", &self.cluster);
        errors.check_required("requested_by", &self.requested_by);
        if self.requested_by.len() > 256 {
            errors.push(
                "requested_by",
                ProblemKind::TooLong {
                    len: self.requested_by.len(),
                    max: 256,
                },
            );
        }
        if !(1..=86_400).contains(&self.timeout_secs) {
            errors.push(
                "timeout_secs",
                ProblemKind::Invalid("from 1 to 86400".into()),
            );
        }
        errors.into_result()
    }
}

impl Validate for RolloutRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        errors.check_schema_version(self.schema_version);
        errors.check_required("idempotency_key", &self.idempotency_key);
        if self.idempotency_key.len() > 256 {
            errors.push(
                "idempotency_key",
                ProblemKind::TooLong {
                    len: self.idempotency_key.len(),
                    max: 256,
                },
            );
        }
        errors.check_label("release", &self.release);
        errors.check_label("namespace", &self.namespace);
        errors.check_label("environment", &self.environment);
        errors.check_required("version", &self.version);
        errors.check_required("requested_by", &self.requested_by);
        self.check_break_glass(&mut errors);
        self.check_after(&mut errors);
        if !is_sha256_digest(&self.content_digest) {
            errors.push(
                "content_digest",
                ProblemKind::Invalid(format!(
                    "{:?} is not a digest of the form sha256:<64 lowercase hex> (of the release's \
                     templates and values.yaml; `coxswain deploy` computes it)",
                    self.content_digest
                )),
            );
        }
        errors.into_result()
    }
}

impl RolloutRequest {
    /// A break-glass reason: present, one line, at most 512 characters.
    fn check_break_glass(&self, errors: &mut ValidationErrors) {
        if let Some(reason) = &self.break_glass {
            if reason.trim().is_empty() {
                errors.push(
                    "break_glass",
                    ProblemKind::Invalid("a reason is required".into()),
                );
            } else if reason.chars().count() > 512 || reason.chars().any(char::is_control) {
                errors.push(
                    "break_glass",
                    ProblemKind::Invalid("at most 512 characters on one line".into()),
                );
            }
        }
    }

    /// The rollouts it waits for: at most [`MAX_AFTER`], each a rollout id.
    fn check_after(&self, errors: &mut ValidationErrors) {
        if self.after.len() > MAX_AFTER {
            errors.push(
                "after",
                ProblemKind::TooLong {
                    len: self.after.len(),
                    max: MAX_AFTER,
                },
            );
        }
        for id in &self.after {
            let hex = id.strip_prefix('r').unwrap_or_default();
            if hex.len() != 20
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                errors.push(
                    "after",
                    ProblemKind::Invalid(format!(
                        "{id:?} is not a rollout id (r and 20 lowercase hex)"
                    )),
                );
            }
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Submitted inside a freeze window of its environment: it starts when the window ends
    /// (`queued_until`), in submission order, if it still passes the gate then.
    Queued,
    /// Waves are being deployed.
    Running,
    /// Every cluster succeeded.
    Succeeded,
    /// A cluster failed; later waves were not started.
    Failed,
    /// A cluster failed; later waves were not started and earlier waves were rolled back.
    Reverted,
    /// A newer rollout of the same release to the same environment took over: this one
    /// stopped where it was, and reverted nothing.
    Superseded,
}

impl RolloutStatus {
    /// The name on the wire (`running`, `succeeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Reverted => "reverted",
            Self::Superseded => "superseded",
        }
    }

    /// True once nothing more happens.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running | Self::Queued)
    }
}

/// One cluster in a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterProgress {
    /// Wave number, from 0.
    pub wave: usize,
    /// The intent sent to it (none before its wave starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<String>,
    /// Last phase reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Whether that phase is its last.
    #[serde(default)]
    pub terminal: bool,
    /// Why, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The revert intent sent after a later failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_intent_id: Option<String>,
    /// Last phase of the revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_phase: Option<Phase>,
    /// When the intent (or the revert) was sent: the cluster must report a final outcome
    /// within the release's health timeout plus a minute of it, or it fails its wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub sent_at: Option<Timestamp>,
    /// Why this cluster was never sent an intent: a release this rollout depends on failed (or
    /// never ran) there. The rest of the rollout goes on; it ends `failed` naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// A rollout as the coordinator keeps it (`coxswain-rollouts`, key = id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rollout {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// Rollout id, derived from the idempotency key.
    pub id: String,
    /// The request.
    pub request: RolloutRequest,
    /// The platform policy applied to it: targets, waves, gate, revert.
    #[serde(default)]
    pub policy: AppliedPolicy,
    /// Wave by wave, the clusters.
    pub waves: Vec<Vec<String>>,
    /// Per cluster progress.
    pub clusters: BTreeMap<String, ClusterProgress>,
    /// Clusters the environment selects that were not targeted, and why (their agent is
    /// draining, or its heartbeat is stale).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded: BTreeMap<String, String>,
    /// The wave being deployed.
    pub current_wave: usize,
    /// Where it stands.
    pub status: RolloutStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Manifests a revert re-applies: the last rollout of this release to this environment
    /// that succeeded, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_to: Option<RevertTarget>,
    /// The coordinator instance driving it.
    #[serde(default)]
    pub owner: String,
    /// Until when the owner's claim holds unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub owner_until: Option<Timestamp>,
    /// When it was submitted.
    #[schemars(with = "String")]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schemars(with = "String")]
    pub updated_at: Timestamp,
    /// The W3C trace context of the call that created it: every intent it publishes
    /// continues that trace, so one trace shows CI, the coordinator and each agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// While `queued`: when the freeze window it waits for ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub queued_until: Option<Timestamp>,
}

/// What a revert goes back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevertTarget {
    /// The rollout that last succeeded.
    pub rollout_id: String,
    /// Its version.
    pub version: String,
    /// Its manifests.
    pub manifests: Manifests,
}

/// What the platform policy decided for a rollout: kept in the record, so history shows which
/// clusters, waves and gate applied, whatever the policy says today.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppliedPolicy {
    /// Clusters of the environment: every registered cluster whose labels include these.
    pub selector: BTreeMap<String, String>,
    /// Waves, each a further selector within the environment's clusters, deployed in order;
    /// clusters no wave selects form a last wave. Empty: one wave of everything.
    #[serde(default)]
    pub waves: Vec<BTreeMap<String, String>>,
    /// Environments where this version, with this content digest, must have succeeded first.
    #[serde(default)]
    pub requires: Vec<String>,
    /// On a failure, roll back the clusters earlier waves already updated.
    #[serde(default = "yes")]
    pub revert_on_failure: bool,
}

impl Default for AppliedPolicy {
    fn default() -> Self {
        Self {
            selector: BTreeMap::new(),
            waves: Vec::new(),
            requires: Vec::new(),
            revert_on_failure: true,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn request() -> serde_json::Value {
        json!({
            "schema_version": 1,
            "idempotency_key": "k",
            "release": "web",
            "namespace": "shop",
            "environment": "prod",
            "version": "1.0",
            "content_digest": crate::sha256_digest(b"content"),
            "manifests": {"source": "bundle", "digest": crate::sha256_digest(b"m"), "size": 1},
            "requested_by": "ci",
        })
    }

    #[test]
    fn a_request_needs_a_content_digest() {
        let ok: RolloutRequest = serde_json::from_value(request()).unwrap();
        ok.validate().unwrap();
        for digest in [json!(null), json!(""), json!("sha256:abc"), json!("md5:x")] {
            let mut body = request();
            if digest.is_null() {
                body.as_object_mut().unwrap().remove("content_digest");
            } else {
                body["content_digest"] = digest.clone();
            }
            let r: RolloutRequest = serde_json::from_value(body).unwrap();
            let problems = r.validate().unwrap_err().to_string();
            assert!(problems.contains("content_digest:"), "{digest}: {problems}");
        }
    }

    #[test]
    fn a_record_stored_before_platform_policies_still_reads() {
        let mut old = request();
        old["selector"] = json!({"env": "prod"});
        old["requires"] = json!(["beta"]);
        old.as_object_mut().unwrap().remove("content_digest");
        let record = json!({
            "schema_version": 1, "id": "r1", "request": old, "waves": [["a"]],
            "clusters": {}, "current_wave": 0, "status": "succeeded",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        });
        let r: Rollout = serde_json::from_value(record).unwrap();
        assert_eq!(r.request.content_digest, "");
        assert_eq!(r.policy, AppliedPolicy::default());
        assert!(r.policy.revert_on_failure);
    }
}
