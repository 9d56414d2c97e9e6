//! The coordinator: validates intents from CI, resolves target clusters from the registry,
//! publishes one intent per cluster in waves and tracks the rollout. It never talks to
//! Kubernetes.
//!
//! Filled by the coordinator issue.
