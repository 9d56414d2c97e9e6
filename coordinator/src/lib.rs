//! The coordinator: takes rollout requests from CI over HTTP, admits them under the
//! platform's policy (environments, their clusters, waves, promotion gates and what each may
//! receive; CI only names an environment), resolves the target clusters from the live
//! registry, and drives the rollout wave by wave over NATS: publish a wave's
//! intents, wait for their outcomes, then the next wave; on a failure halt and, by default,
//! revert the clusters earlier waves updated. Rollouts live in the `coxswain-rollouts` bucket,
//! so a restarted coordinator resumes them, and two coordinators share the work through a
//! claim written with compare-and-set.
//!
//! It never talks to Kubernetes.

mod api;
pub mod appconfig;
mod dashboard;
mod driver;
pub mod freeze;
pub mod identity;
mod index;
mod metrics;
pub mod plan;
pub mod policy;
pub mod verify;

pub use api::{CoordinatorConfig, MAX_BUNDLE_BYTES, MAX_REQUEST_BYTES, run};
pub use appconfig::{AppConfig, Loaded};
pub use httpd::{ServerLimits, ServerTls};
pub use identity::{Identity, Role, Tokens};
pub use policy::Policy;

/// The coordinator could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A NATS step failed.
    #[error("nats")]
    Bus(#[from] bus::BusError),
    /// The HTTP listener could not start.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
