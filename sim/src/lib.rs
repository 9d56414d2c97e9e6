//! A Kubernetes-compatible cluster simulator (in the spirit of kwok): the Kubernetes API for many
//! virtual clusters, and controllers that move workloads through their rollouts.
//!
//! Filled by the simulator issue.
