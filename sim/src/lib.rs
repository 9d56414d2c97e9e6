//! A Kubernetes-compatible cluster simulator, in the spirit of kwok: the Kubernetes API
//! (discovery, OpenAPI v3 stubs, CRUD, server-side apply, merge and JSON patch, list and watch,
//! the status subresource, dry run, garbage collection) for many virtual clusters, and
//! controllers that play kube-controller-manager and kubelet, moving Deployments, StatefulSets,
//! DaemonSets, Jobs and Pods through their rollouts, with failures on demand.
//!
//! Real `kubectl` and `kube::Client` talk to it over HTTP, or in-process through
//! [`router`] handed to `kube::Client::new`.
//!
//! Dependencies run one way, from the edge to the data: `fleet` serves `cluster`s through
//! `http` (with `discovery`); a `cluster` holds a `store` and runs the `controller`s on it; the
//! `store` keeps objects and applies `admission`, `managed_fields` and `strategic` patches.
//! Underneath everything: `resource` (the served types), `metadata`, `selector`, `behavior`,
//! `nodes`, `timing`, `hash` and `api_error`. The store never reaches up to the controllers.

mod admission;
mod api_error;
mod behavior;
mod cluster;
mod controller;
mod discovery;
mod fleet;
mod hash;
mod http;
mod managed_fields;
mod metadata;
mod nodes;
mod resource;
mod selector;
mod store;
mod strategic;
mod timing;

pub use api_error::ApiError;
pub use behavior::{ANNOTATION as BEHAVIOR_ANNOTATION, Behavior};
pub use cluster::{Cluster, Faults};
pub use fleet::{Served, Sim, write_kubeconfig};
pub use http::router;
pub use nodes::NODES;
pub use timing::Timing;
