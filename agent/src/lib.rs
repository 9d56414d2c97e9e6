//! The per-cluster agent: consumes its cluster's intents from JetStream, drives the release
//! engine and publishes outcome events.
//!
//! Filled by the agent issue.
