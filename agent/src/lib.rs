//! The per-cluster agent: consumes its cluster's intents from JetStream one at a time, checks
//! them (schema, environment, cluster, supersession), drives the release engine, and publishes
//! an outcome event for every phase, acking an intent only once its final event is stored.
//!
//! It keeps no state of its own: the release history and lock live in the cluster, intents and
//! events in JetStream. Kill it at any moment and the redelivered intent resumes.

mod checks;
mod config;
mod drift;
mod limits;
mod metrics;
mod registry;
mod reporter;
mod runtime;
mod worker;

pub use config::{AgentConfig, Trust};
pub use metrics::Metrics;
pub use runtime::run;

/// The agent could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A NATS step failed.
    #[error("nats")]
    Bus(#[from] bus::BusError),
    /// The configuration is unusable.
    #[error("invalid agent configuration: {0}")]
    Config(String),
}
