//! Rollouts: what CI submits to the coordinator, and the record the coordinator keeps in
//! `coxswain-rollouts` while it drives the rollout wave by wave.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::intent::{HealthPolicy, Manifests, RollbackPolicy};
use crate::outcome::Phase;
use crate::validate::{ProblemKind, Validate, ValidationErrors};

/// A request to deploy a release to an environment (`POST /v1/rollouts`).
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
    /// Version being deployed; the promotion gate compares it.
    pub version: String,
    /// Clusters of the environment: every registered cluster whose labels include these.
    pub selector: BTreeMap<String, String>,
    /// Waves, each a further selector within the environment's clusters, deployed in order;
    /// clusters no wave selects form a last wave. Empty: one wave of everything.
    #[serde(default)]
    pub waves: Vec<BTreeMap<String, String>>,
    /// Environments where this version must have succeeded first.
    #[serde(default)]
    pub requires: Vec<String>,
    /// On a failure, roll back the clusters earlier waves already updated (default true).
    #[serde(default = "yes")]
    pub revert_on_failure: bool,
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
}

fn yes() -> bool {
    true
}

impl Validate for RolloutRequest {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.schema_version != crate::SCHEMA_VERSION {
            errors.push(
                "schema_version",
                ProblemKind::UnsupportedSchemaVersion {
                    found: self.schema_version,
                    supported: crate::SCHEMA_VERSION,
                },
            );
        }
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
        if self.selector.is_empty() {
            errors.push(
                "selector",
                ProblemKind::Invalid(
                    "an environment selects its clusters by at least one label".into(),
                ),
            );
        }
        for (i, r) in self.requires.iter().enumerate() {
            errors.check_label(&format!("requires[{i}]"), r);
            if r == &self.environment {
                errors.push(
                    format!("requires[{i}]"),
                    ProblemKind::Invalid("an environment cannot require itself".into()),
                );
            }
        }
        errors.into_result()
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Waves are being deployed.
    Running,
    /// Every cluster succeeded.
    Succeeded,
    /// A cluster failed; later waves were not started.
    Failed,
    /// A cluster failed; later waves were not started and earlier waves were rolled back.
    Reverted,
}

impl RolloutStatus {
    /// True once nothing more happens.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running)
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
    /// Wave by wave, the clusters.
    pub waves: Vec<Vec<String>>,
    /// Per cluster progress.
    pub clusters: BTreeMap<String, ClusterProgress>,
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
