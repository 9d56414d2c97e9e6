//! A Kubernetes-compatible cluster simulator, in the spirit of kwok: the Kubernetes API
//! (discovery, OpenAPI v3 stubs, CRUD, server-side apply, merge and JSON patch, list and watch,
//! the status subresource, dry run, garbage collection) for many virtual clusters, and
//! controllers that play kube-controller-manager and kubelet, moving Deployments, StatefulSets,
//! DaemonSets, Jobs and Pods through their rollouts, with failures on demand.
//!
//! Real `kubectl` and `kube::Client` talk to it over HTTP, or in-process through
//! [`router`] handed to `kube::Client::new`.

mod behavior;
mod cluster;
mod controller;
mod fields;
mod fleet;
mod http;
mod kinds;
mod resource;
mod selector;
mod status;
mod store;
mod strategic;

pub use behavior::{ANNOTATION as BEHAVIOR_ANNOTATION, Behavior};
pub use cluster::{Cluster, Faults};
pub use controller::{NODES, Timing};
pub use fleet::{Served, Sim, write_kubeconfig};
pub use http::router;
pub use status::ApiError;
