//! The topology as the admin leaves it, and how the other roles come to it: they wait until it
//! exists; key-value buckets refuse rollups; intents are read by direct get; a bundle is
//! stored once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bus::testing::NatsServer;
use bus::{BusError, ConnectOptions, TopologyConfig};
use proto::{ContentType, DeployIntent, bucket, stream};

async fn connect(server: &NatsServer) -> bus::Bus {
    bus::connect(&ConnectOptions {
        url: server.url(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn raw(server: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

fn intent(id: &str) -> DeployIntent {
    serde_json::from_value(serde_json::json!({
        "schema_version": proto::SCHEMA_VERSION,
        "id": id,
        "cluster": "beta",
        "release": "web",
        "namespace": "web",
        "environment": "beta",
        "version": id,
        "manifests": {"source": "bundle", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1},
        "requested_by": "test",
        "created_at": jiff::Timestamp::now(),
    }))
    .unwrap()
}

#[tokio::test]
async fn processes_without_admin_rights_wait_until_the_admin_creates_the_topology() {
    let server = NatsServer::start().unwrap();
    let agent = connect(&server).await;
    assert!(matches!(
        agent.open_topology().await,
        Err(BusError::Missing { .. })
    ));
    // Shutdown while waiting ends the wait.
    assert!(matches!(
        agent.wait_for_topology(std::future::ready(())).await,
        Err(BusError::Stopped { .. })
    ));
    let mut waiting = tokio::spawn({
        let agent = agent.clone();
        async move { agent.wait_for_topology(std::future::pending()).await }
    });
    // Nothing to open yet: the wait must not end on its own (a negative check needs a window).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "nothing to open yet"
    );
    let admin = connect(&server).await;
    admin
        .ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the topology opened after the admin created it")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn buckets_refuse_rollups_and_intents_allow_direct_get_after_every_ensure() {
    let server = NatsServer::start().unwrap();
    let bus = connect(&server).await;
    let js = raw(&server).await;
    for _ in 0..2 {
        bus.ensure_topology(&TopologyConfig::default())
            .await
            .unwrap();
        for name in [bucket::CLUSTERS, bucket::STATE, bucket::ROLLOUTS] {
            let mut kv = js.get_stream(format!("KV_{name}")).await.unwrap();
            assert!(!kv.info().await.unwrap().config.allow_rollup, "{name}");
        }
        let mut intents = js.get_stream(stream::INTENTS).await.unwrap();
        assert!(intents.info().await.unwrap().config.allow_direct);
    }

    // A rollup on one key would wipe the others: refused.
    let topology = bus.open_topology().await.unwrap();
    let record = |name: &str| -> proto::ClusterRecord {
        serde_json::from_value(serde_json::json!({
            "schema_version": proto::SCHEMA_VERSION, "name": name, "labels": {},
            "agent_version": "test", "status": "ready", "heartbeat_at": jiff::Timestamp::now(),
        }))
        .unwrap()
    };
    topology.registry.put(&record("beta")).await.unwrap();
    topology.registry.put(&record("prod")).await.unwrap();
    let rollup = bus
        .publish_raw(
            "$KV.coxswain-clusters.beta",
            &[("Nats-Rollup", "all")],
            b"{}".to_vec(),
        )
        .await;
    assert!(rollup.is_err(), "a rollup was accepted");
    assert!(topology.registry.get("prod").await.unwrap().is_some());

    // The newest intent of a subject, by direct get.
    let subject = proto::intent_subject("beta", "web").unwrap();
    assert_eq!(bus.latest_intent_sequence(&subject).await.unwrap(), None);
    let mut last = 0;
    for id in ["one", "two"] {
        last = bus
            .publish_intent(&intent(id), ContentType::Json, None)
            .await
            .unwrap()
            .sequence;
    }
    assert_eq!(
        bus.latest_intent_sequence(&subject).await.unwrap(),
        Some(last)
    );
}

#[tokio::test]
async fn a_bundle_stored_twice_is_written_once() {
    let server = NatsServer::start().unwrap();
    let bus = connect(&server).await;
    let topology = bus
        .ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    let js = raw(&server).await;
    let messages = || async {
        let mut store = js
            .get_stream(format!("OBJ_{}", bucket::BUNDLES))
            .await
            .unwrap();
        store.info().await.unwrap().state.messages
    };
    let bundle = vec![7u8; 300 * 1024];
    topology.bundles.put("sha256-a", &bundle).await.unwrap();
    let after_first = messages().await;
    topology.bundles.put("sha256-a", &bundle).await.unwrap();
    assert_eq!(messages().await, after_first, "stored again");
    assert_eq!(
        topology.bundles.get("sha256-a", 1 << 20).await.unwrap(),
        bundle
    );
}
