//! The agent's entry in the cluster registry (`coxswain-clusters`): labels, version, heartbeat;
//! `draining` once it shuts down.

use std::time::Duration;

use bus::Registry;
use proto::{AgentStatus, ClusterRecord, SCHEMA_VERSION};
use tokio_util::sync::CancellationToken;

use crate::AgentConfig;

/// What this agent can do, as the coordinator reads it.
const CAPABILITIES: [&str; 4] = ["bundles", "http-probes", "test-jobs", "rollback"];

fn record(config: &AgentConfig, status: AgentStatus) -> ClusterRecord {
    ClusterRecord {
        schema_version: SCHEMA_VERSION,
        name: config.cluster.clone(),
        labels: config.labels.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        status,
        heartbeat_at: jiff::Timestamp::now(),
    }
}

/// Writes the record once.
pub(crate) async fn put(registry: &Registry, config: &AgentConfig, status: AgentStatus) {
    if let Err(error) = registry.put(&record(config, status)).await {
        tracing::warn!(%error, "cannot write the cluster record; will retry at the next heartbeat");
    }
}

/// Heartbeats until cancelled.
pub(crate) async fn heartbeat(registry: Registry, config: AgentConfig, cancel: CancellationToken) {
    loop {
        put(&registry, &config, AgentStatus::Ready).await;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(config.heartbeat.max(Duration::from_millis(100))) => {}
        }
    }
}
