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

/// Heartbeats until cancelled: at once, then about every `config.heartbeat`, each wait
/// jittered so agents started together do not write together.
pub(crate) async fn heartbeat(registry: Registry, config: AgentConfig, cancel: CancellationToken) {
    loop {
        put(&registry, &config, AgentStatus::Ready).await;
        let every = config.heartbeat.max(Duration::from_millis(100));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(jittered(every)) => {}
        }
    }
}

/// `every`, give or take a tenth, at random.
fn jittered(every: Duration) -> Duration {
    use std::hash::BuildHasher;
    // A fresh `RandomState` is randomly keyed: enough randomness for a jitter.
    let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let tenth = every / 10;
    let nanos = u64::try_from(tenth.as_nanos()).unwrap_or(u64::MAX).max(1);
    every - tenth + Duration::from_nanos(random % (2 * nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth_and_varies() {
        let every = Duration::from_secs(60);
        let waits: Vec<Duration> = (0..50).map(|_| jittered(every)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(54) && *w < Duration::from_secs(66))
        );
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "the waits should differ"
        );
    }
}
