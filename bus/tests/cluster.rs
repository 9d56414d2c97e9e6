//! The topology on a 3-node JetStream cluster: `ensure_topology` with three replicas puts
//! every stream, key-value bucket and the object store on all three servers, and clients
//! given the whole URL list keep working when the meta leader dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bus::testing::NatsCluster;
use bus::{ConnectOptions, TopologyConfig};
use proto::{bucket, stream};

/// The streams behind the design's streams, buckets and object store.
fn topology_streams() -> Vec<String> {
    vec![
        stream::INTENTS.to_owned(),
        stream::EVENTS.to_owned(),
        format!("KV_{}", bucket::CLUSTERS),
        format!("KV_{}", bucket::STATE),
        format!("KV_{}", bucket::ROLLOUTS),
        format!("OBJ_{}", bucket::BUNDLES),
    ]
}

/// Stream name -> `num_replicas` of its configuration, as node `i` reports it (`/jsz`).
fn replicas_on(cluster: &NatsCluster, i: usize) -> BTreeMap<String, u64> {
    let jsz = cluster.jsz(i, "?streams=true&config=true").unwrap();
    jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["config"]["num_replicas"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_three_reach_every_stream_bucket_and_store_on_every_node() {
    let mut cluster = NatsCluster::start().unwrap();
    assert_eq!(cluster.node_count(), 3);
    let bus = bus::connect(&ConnectOptions {
        url: cluster.urls(),
        ..Default::default()
    })
    .await
    .unwrap();
    let config = TopologyConfig {
        replicas: 3,
        ..Default::default()
    };
    bus.ensure_topology(&config).await.unwrap();
    let expected: BTreeMap<String, u64> = topology_streams().into_iter().map(|s| (s, 3)).collect();
    for i in 0..cluster.node_count() {
        assert_eq!(replicas_on(&cluster, i), expected, "node n{}", i + 1);
    }

    // The meta leader dies: once the two others elected a new one, the topology is still
    // there and can still be updated (the admin's call again), through the same connection.
    let leader = cluster.meta_leader().unwrap();
    cluster.kill(leader);
    cluster.wait_until_ready().unwrap();
    assert_ne!(cluster.meta_leader(), Some(leader));
    // Stream leaders the dead node held are being elected meanwhile: a request caught in
    // that election times out, and the admin runs it again.
    let topology = bus::testing::eventually(
        std::time::Duration::from_secs(60),
        "the topology writable after the leader died",
        || bus.ensure_topology(&config),
    )
    .await;
    topology.registry.all().await.unwrap();
    cluster.restart(leader).unwrap();
    assert_eq!(replicas_on(&cluster, leader), expected, "after restart");
}

/// A topology first made for one server (R1), then raised to three replicas by running
/// `coxswain topology --replicas 3` again: every stream, bucket and the object store follow.
#[tokio::test(flavor = "multi_thread")]
async fn raising_replicas_later_reaches_every_stream_bucket_and_store() {
    let cluster = NatsCluster::start().unwrap();
    let bus = bus::connect(&ConnectOptions {
        url: cluster.urls(),
        ..Default::default()
    })
    .await
    .unwrap();
    bus.ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    // An R1 stream lives on one node, any of the three.
    let single: BTreeMap<String, u64> = topology_streams().into_iter().map(|s| (s, 1)).collect();
    let anywhere: BTreeMap<String, u64> = (0..cluster.node_count())
        .flat_map(|i| replicas_on(&cluster, i))
        .collect();
    assert_eq!(anywhere, single);
    let config = TopologyConfig {
        replicas: 3,
        ..Default::default()
    };
    bus.ensure_topology(&config).await.unwrap();
    let expected: BTreeMap<String, u64> = topology_streams().into_iter().map(|s| (s, 3)).collect();
    for i in 0..cluster.node_count() {
        wait_for_replicas(&cluster, i, &expected).await;
    }
}

/// Waits (10 s at most) until node `i` holds every stream with the expected replicas: a
/// scaled-up stream reaches the new peers a moment after the update returns.
async fn wait_for_replicas(cluster: &NatsCluster, i: usize, expected: &BTreeMap<String, u64>) {
    bus::testing::eventually(
        std::time::Duration::from_secs(10),
        &format!("node n{} at the expected replicas", i + 1),
        || async {
            let seen = replicas_on(cluster, i);
            if seen == *expected { Ok(()) } else { Err(seen) }
        },
    )
    .await;
}
