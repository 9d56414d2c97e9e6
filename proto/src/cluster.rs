//! The cluster registry record each agent keeps in the `coxswain-clusters` bucket.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{ProblemKind, Validate, ValidationErrors};

/// Whether an agent takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Consuming intents.
    Ready,
    /// Shutting down: finishing in-flight work, taking nothing new.
    Draining,
}

/// One cluster as its agent describes it; the coordinator targets clusters by these labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterRecord {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// Cluster name (DNS-1123 label), also the KV key.
    pub name: String,
    /// Labels the coordinator selects on (`env=prod`, `region=eu`).
    pub labels: BTreeMap<String, String>,
    /// Version of the agent binary.
    pub agent_version: String,
    /// What the agent can do (`bundles`, `http-probes`, `test-jobs`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Ready or draining.
    pub status: AgentStatus,
    /// Last heartbeat.
    #[schemars(with = "String")]
    pub heartbeat_at: Timestamp,
}

impl Validate for ClusterRecord {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        errors.check_schema_version(self.schema_version);
        errors.check_label("name", &self.name);
        for (key, value) in &self.labels {
            if key.is_empty() || key.len() > 63 || value.len() > 63 {
                errors.push(
                    format!("labels.{key}"),
                    ProblemKind::Invalid("label keys are 1-63 and values 0-63 characters".into()),
                );
            }
        }
        errors.into_result()
    }
}
