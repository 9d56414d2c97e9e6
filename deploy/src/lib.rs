//! The release engine: render manifests, apply them with server-side apply, wait for health,
//! keep the release history in the cluster, roll back automatically, prune and lock.
//!
//! It talks to Kubernetes only and never to NATS; the agent joins the two.

mod allow;
mod cluster;
mod engine;
pub mod health;
pub mod history;
mod injection;
pub mod limits;
mod lock;
mod poll;
mod probe;
pub mod redact;
pub mod render;
pub mod sources;

pub use allow::Allowlist;
pub use cluster::{
    Cluster, FIELD_MANAGER, MANAGED_BY, ObjectRef, RELEASE_LABEL, RELEASE_NAMESPACE,
};
pub use engine::{
    Action, Attempt, Drift, DriftedField, Engine, EngineConfig, KEEP_ANNOTATION, Observation,
    Progress, Release, Report, Rollback, Situation, decide,
};
pub use lock::lease_name;
pub use probe::{ProbePolicy, probe_refusals};
pub use render::{RenderError, Rendered};

/// A release operation failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A Kubernetes API call failed for good (not transient, or retried to no avail).
    #[error("kubernetes api call failed: {action}")]
    Api {
        /// The call.
        action: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The release deadline passed during a step.
    #[error("release deadline passed during {during}")]
    DeadlineExceeded {
        /// The step.
        during: String,
    },
    /// A manifest names a kind the cluster does not serve.
    #[error("the cluster does not serve kind {kind} in {api_version}")]
    UnknownKind {
        /// apiVersion of the object.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// Another operation holds the release.
    #[error(
        "release {release} is locked by {holder} until {until}; retry after that or wait for it to finish"
    )]
    Locked {
        /// Release.
        release: String,
        /// Who holds it.
        holder: String,
        /// When the holder's lease expires unless renewed.
        until: String,
    },
    /// No revision to roll back to.
    #[error("release {release} has no revision {wanted} to roll back to")]
    NoRevision {
        /// Release.
        release: String,
        /// What was asked.
        wanted: String,
    },
    /// The operation was cancelled before it started.
    #[error("cancelled")]
    Cancelled,
    /// Something that should be an object is not.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// An HTTP probe is malformed or aimed outside the release's Services and the agent's
    /// `--probe-allow` list; nothing was applied and nothing connected.
    #[error("probe refused: {0}")]
    ProbeRefused(String),
}
