//! JSON Schemas of the messages, so CI in any language can produce valid intents.

use crate::{ClusterRecord, DeployIntent, Outcome, ReleaseState, Rollout, RolloutRequest};

/// The messages whose schema `coxswain schema` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `DeployIntent`.
    Intent,
    /// `Outcome`.
    Outcome,
    /// `ClusterRecord`.
    Cluster,
    /// `ReleaseState`.
    State,
    /// `RolloutRequest`.
    RolloutRequest,
    /// `Rollout`.
    Rollout,
}

/// The JSON Schema (draft 2020-12) of one message type.
pub fn schema_for(which: Schema) -> serde_json::Value {
    let schema = match which {
        Schema::Intent => schemars::schema_for!(DeployIntent),
        Schema::Outcome => schemars::schema_for!(Outcome),
        Schema::Cluster => schemars::schema_for!(ClusterRecord),
        Schema::State => schemars::schema_for!(ReleaseState),
        Schema::RolloutRequest => schemars::schema_for!(RolloutRequest),
        Schema::Rollout => schemars::schema_for!(Rollout),
    };
    schema.to_value()
}
