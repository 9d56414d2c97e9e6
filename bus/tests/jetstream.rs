//! The JetStream layer against a real nats-server: topology, de-duplication, acks, redelivery,
//! poison messages and late joiners.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bus::testing::NatsServer;
use bus::{ConnectOptions, ConsumerOptions, IntentConsumer, TopologyConfig};
use proto::{ContentType, DeployIntent, Manifests, SCHEMA_VERSION};

async fn js(server: &NatsServer) -> bus::Bus {
    bus::connect(&ConnectOptions {
        url: server.url(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A plain JetStream context, to inspect what `bus` created.
async fn raw(server: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

async fn ready(server: &NatsServer) -> bus::Bus {
    let js = js(server).await;
    js.ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    js
}

fn intent(id: &str, cluster: &str, release: &str) -> DeployIntent {
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id: id.into(),
        cluster: cluster.into(),
        release: release.into(),
        namespace: release.into(),
        environment: "beta".into(),
        version: id.into(),
        images: Default::default(),
        manifests: Manifests::Bundle {
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
        },
        health: Default::default(),
        rollback: Default::default(),
        requested_by: "test".into(),
        created_at: jiff::Timestamp::now(),
        rollout_id: None,
        expires_at: None,
    }
}

fn short_ack_wait() -> ConsumerOptions {
    ConsumerOptions {
        ack_wait: Duration::from_secs(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn topology_is_idempotent_sequentially_and_concurrently() {
    let server = NatsServer::start().unwrap();
    let config = TopologyConfig::default();
    let first = js(&server).await;
    first.ensure_topology(&config).await.unwrap();
    first.ensure_topology(&config).await.unwrap();

    // A fresh server, two connections racing to create everything.
    let fresh = NatsServer::start().unwrap();
    let (a, b) = (js(&fresh).await, js(&fresh).await);
    let (ra, rb) = tokio::join!(a.ensure_topology(&config), b.ensure_topology(&config));
    ra.unwrap();
    rb.unwrap();

    for js in [&raw(&server).await, &raw(&fresh).await] {
        let mut intents = js.get_stream(proto::stream::INTENTS).await.unwrap();
        let info = intents.info().await.unwrap();
        assert_eq!(info.config.max_messages_per_subject, 5);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(600));
        assert_eq!(info.config.max_message_size, 1024 * 1024);
        assert_eq!(info.config.subjects, ["coxswain.intent.*.*"]);
        let mut events = js.get_stream(proto::stream::EVENTS).await.unwrap();
        assert_eq!(
            events.info().await.unwrap().config.max_age,
            Duration::from_secs(365 * 24 * 3600)
        );
        js.get_key_value(proto::bucket::CLUSTERS).await.unwrap();
        js.get_key_value(proto::bucket::STATE).await.unwrap();
        js.get_object_store(proto::bucket::BUNDLES).await.unwrap();
    }

    // A changed limit is applied to the existing stream.
    let changed = TopologyConfig {
        intents_per_subject: 3,
        ..config
    };
    first.ensure_topology(&changed).await.unwrap();
    let mut intents = raw(&server)
        .await
        .get_stream(proto::stream::INTENTS)
        .await
        .unwrap();
    assert_eq!(
        intents
            .info()
            .await
            .unwrap()
            .config
            .max_messages_per_subject,
        3
    );
}

#[tokio::test]
async fn same_msg_id_is_reported_duplicate_and_delivered_once() {
    let server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    let i = intent("ci-42", "beta", "web");
    let first = js
        .publish_intent(&i, ContentType::MsgPack, None)
        .await
        .unwrap();
    let second = js
        .publish_intent(&i, ContentType::Json, None)
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.sequence, second.sequence);

    let mut consumer = IntentConsumer::create(&js, "beta", &ConsumerOptions::default())
        .await
        .unwrap();
    let d = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.decode::<DeployIntent>().unwrap(), i);
    d.double_ack().await.unwrap();
    assert!(
        consumer
            .next(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn progress_acks_for_three_ack_waits_prevent_redelivery() {
    let server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    js.publish_intent(&intent("slow", "beta", "web"), ContentType::MsgPack, None)
        .await
        .unwrap();
    let options = short_ack_wait();
    let mut consumer = IntentConsumer::create(&js, "beta", &options).await.unwrap();
    let d = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.delivery_count(), 1);

    // Work "goes on" for three ack waits; every 300 ms a progress ack, and in between the
    // consumer is asked for more: a redelivery would show up there.
    let started = std::time::Instant::now();
    while started.elapsed() < options.ack_wait * 3 {
        d.progress().await.unwrap();
        let again = consumer.next(Duration::from_millis(300)).await.unwrap();
        assert!(again.is_none(), "redelivered after {:?}", started.elapsed());
    }
    d.double_ack().await.unwrap();
    assert!(consumer.next(options.ack_wait * 2).await.unwrap().is_none());
}

#[tokio::test]
async fn a_dropped_message_is_redelivered_with_count_two() {
    let server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    js.publish_intent(&intent("lost", "beta", "web"), ContentType::MsgPack, None)
        .await
        .unwrap();
    let mut consumer = IntentConsumer::create(&js, "beta", &short_ack_wait())
        .await
        .unwrap();
    let d = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let sequence = d.stream_sequence();
    assert_eq!(d.delivery_count(), 1);
    drop(d); // as if the agent crashed mid-work

    let again = consumer
        .next(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.stream_sequence(), sequence);
    assert_eq!(again.delivery_count(), 2);
    assert_eq!(again.decode::<DeployIntent>().unwrap().id, "lost");
    again.double_ack().await.unwrap();
}

#[tokio::test]
async fn an_undecodable_message_is_terminated_and_the_next_is_delivered() {
    let server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    js.publish_raw(
        "coxswain.intent.beta.web",
        &[],
        vec![0xc1, 0xff, 0x00, 0x13],
    )
    .await
    .unwrap();
    let good = intent("good", "beta", "api");
    js.publish_intent(&good, ContentType::Json, None)
        .await
        .unwrap();

    let options = short_ack_wait();
    let mut consumer = IntentConsumer::create(&js, "beta", &options).await.unwrap();
    let poison = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let err = poison.decode::<DeployIntent>().unwrap_err();
    assert!(matches!(err, proto::DecodeError::Malformed { .. }), "{err}");
    assert_eq!(poison.release_subject().unwrap().release, "web");
    poison.terminate().await.unwrap();

    let next = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.decode::<DeployIntent>().unwrap(), good);
    next.double_ack().await.unwrap();
    // The terminated message never comes back, even after its ack wait.
    assert!(consumer.next(options.ack_wait * 2).await.unwrap().is_none());
}

#[tokio::test]
async fn a_late_consumer_receives_only_the_latest_intent_per_release() {
    let server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    for id in ["v1", "v2", "v3"] {
        js.publish_intent(&intent(id, "prod-east", "web"), ContentType::MsgPack, None)
            .await
            .unwrap();
    }
    js.publish_intent(
        &intent("api-1", "prod-east", "api"),
        ContentType::MsgPack,
        None,
    )
    .await
    .unwrap();
    // Another cluster's intent is not this consumer's business.
    js.publish_intent(&intent("other", "beta", "web"), ContentType::MsgPack, None)
        .await
        .unwrap();

    let mut consumer = IntentConsumer::create(&js, "prod-east", &ConsumerOptions::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Some(d) = consumer.next(Duration::from_millis(500)).await.unwrap() {
        ids.push(d.decode::<DeployIntent>().unwrap().id);
        d.double_ack().await.unwrap();
    }
    ids.sort();
    assert_eq!(ids, ["api-1", "v3"]);
}

fn outcome(cluster: &str, intent: &str, phase: proto::Phase) -> proto::Outcome {
    proto::Outcome {
        schema_version: SCHEMA_VERSION,
        event_id: proto::Outcome::event_id_for(cluster, intent, phase, 1, phase.always_terminal()),
        intent_id: intent.into(),
        cluster: cluster.into(),
        release: "web".into(),
        phase,
        terminal: phase.always_terminal(),
        revision: None,
        attempt: 1,
        version: None,
        requested_by: None,
        rollout_id: None,
        reason: None,
        resources: Vec::new(),
        at: jiff::Timestamp::now(),
        elapsed_ms: None,
    }
}

#[tokio::test]
async fn the_event_feed_filters_decodes_by_content_type_and_drops_repeats() {
    let server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    let query = bus::EventQuery::cluster("beta");
    let mut live = bus::EventFeed::open(&js, &query, bus::Since::New)
        .await
        .unwrap();
    let received = outcome("beta", "i1", proto::Phase::Received);
    js.publish_outcome(&received, ContentType::MsgPack, None)
        .await
        .unwrap();
    js.publish_outcome(
        &outcome("prod", "i2", proto::Phase::Received),
        ContentType::Json,
        None,
    )
    .await
    .unwrap();
    // Not an event at all, then a repeat of the first with another content type: skipped.
    js.publish_raw("coxswain.event.beta.web", &[], b"garbage".to_vec())
        .await
        .unwrap();
    let mut repeat = received.clone();
    repeat.reason = Some("sent twice".into());
    js.publish_raw(
        "coxswain.event.beta.web",
        &[("Content-Type", "application/json")],
        serde_json::to_vec(&repeat).unwrap(),
    )
    .await
    .unwrap();
    let succeeded = outcome("beta", "i1", proto::Phase::Succeeded);
    js.publish_outcome(&succeeded, ContentType::Json, None)
        .await
        .unwrap();

    let first = live.next().await.unwrap().unwrap();
    assert_eq!(first.event_id, received.event_id);
    let second = live.next().await.unwrap().unwrap();
    assert_eq!(second.event_id, succeeded.event_id);

    let stored = bus::events::stored_events(&js, &query).await.unwrap();
    let ids: Vec<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [received.event_id.as_str(), succeeded.event_id.as_str()]
    );
    let all = bus::events::stored_events(&js, &bus::EventQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let bad = bus::EventQuery::cluster("*");
    assert!(
        bus::EventFeed::open(&js, &bad, bus::Since::All)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn typed_buckets_round_trip_and_refuse_wildcard_keys() {
    let server = NatsServer::start().unwrap();
    let topology = js(&server)
        .await
        .ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    let record = proto::ClusterRecord {
        schema_version: SCHEMA_VERSION,
        name: "beta".into(),
        labels: [("env".to_owned(), "beta".to_owned())].into(),
        agent_version: "0".into(),
        capabilities: Vec::new(),
        status: proto::AgentStatus::Ready,
        heartbeat_at: jiff::Timestamp::now(),
    };
    topology.registry.put(&record).await.unwrap();
    assert_eq!(
        topology.registry.get("beta").await.unwrap().unwrap().name,
        "beta"
    );
    assert!(topology.registry.get("prod").await.unwrap().is_none());
    assert!(topology.registry.get("*").await.is_err());
    assert_eq!(topology.registry.all().await.unwrap().len(), 1);

    let rollouts = &topology.rollouts;
    let err = rollouts.get("a.>").await.unwrap_err();
    assert!(matches!(err, bus::BusError::InvalidKey { .. }), "{err}");
    let bundle = b"[{\"kind\":\"ConfigMap\"}]";
    topology.bundles.put("sha256-x", bundle).await.unwrap();
    assert_eq!(
        topology.bundles.get("sha256-x", 1024).await.unwrap(),
        bundle
    );
    let err = topology.bundles.get("sha256-x", 4).await.unwrap_err();
    assert!(
        matches!(
            err,
            bus::BusError::BundleTooLarge {
                size: 22,
                limit: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_pull_request_outlives_a_call_and_is_sent_again_after_a_server_restart() {
    let mut server = NatsServer::start().unwrap();
    let js = ready(&server).await;
    let mut consumer = IntentConsumer::create(&js, "beta", &ConsumerOptions::default())
        .await
        .unwrap();
    // The call gives up; its pull request stays with the server and answers the next call.
    assert!(
        consumer
            .next(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
    js.publish_intent(&intent("before", "beta", "web"), ContentType::MsgPack, None)
        .await
        .unwrap();
    let d = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.decode::<DeployIntent>().unwrap().id, "before");
    assert_eq!(d.pending(), 0);
    d.double_ack().await.unwrap();

    // A restart drops the waiting request; the reconnect makes the consumer ask again, long
    // before its missed-heartbeat check (a minute) would.
    assert!(
        consumer
            .next(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
    server.restart().unwrap();
    let publisher = js.clone();
    let publish = tokio::spawn(async move {
        let after = intent("after", "beta", "web");
        bus::testing::eventually(
            Duration::from_secs(10),
            "a publish after the restart",
            || publisher.publish_intent(&after, ContentType::MsgPack, None),
        )
        .await;
    });
    let d = consumer
        .next(Duration::from_secs(15))
        .await
        .unwrap()
        .expect("the intent published after the restart");
    assert_eq!(d.decode::<DeployIntent>().unwrap().id, "after");
    d.double_ack().await.unwrap();
    publish.await.unwrap();
}

/// A rollout to 10,000 clusters is ~1.3 MB of JSON, over NATS' 1 MiB payload: it is stored
/// compressed and reads back whole, by key, in a listing and through the watch.
#[tokio::test]
async fn a_rollout_to_ten_thousand_clusters_is_stored_compressed_and_reads_back() {
    let server = NatsServer::start().unwrap();
    let js = js(&server).await;
    let topology = js
        .ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    let now = jiff::Timestamp::now();
    let names: Vec<String> = (0..10_000).map(|i| format!("cluster-{i:05}")).collect();
    let clusters: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|n| {
            let progress = serde_json::json!({
                "wave": 0, "intent_id": format!("r0123456789abcdef0123.{n}"),
                "phase": "succeeded", "terminal": true, "sent_at": now,
            });
            (n.clone(), progress)
        })
        .collect();
    let rollout: proto::Rollout = serde_json::from_value(serde_json::json!({
        "schema_version": SCHEMA_VERSION, "id": "big",
        "request": {
            "schema_version": SCHEMA_VERSION, "idempotency_key": "big", "release": "web",
            "namespace": "web", "environment": "prod", "version": "1.0",
            "manifests": {"source": "bundle", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1},
            "requested_by": "test",
        },
        "waves": [names], "clusters": clusters, "current_wave": 0, "status": "running",
        "created_at": now, "updated_at": now,
    }))
    .unwrap();
    assert!(serde_json::to_vec(&rollout).unwrap().len() > proto::MAX_MESSAGE_BYTES);
    assert!(topology.rollouts.create(&rollout).await.unwrap());
    let (read, revision) = topology.rollouts.get("big").await.unwrap().unwrap();
    assert_eq!(read, rollout);
    assert!(
        topology
            .rollouts
            .update(&rollout, revision)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(
        topology.rollouts.all().await.unwrap(),
        std::slice::from_ref(&rollout)
    );
    let mut watch = topology.rollouts.watch().await.unwrap();
    match watch.next().await.unwrap().unwrap() {
        bus::RolloutChange::Put(r) => assert_eq!(*r, rollout),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        watch.next().await.unwrap().unwrap(),
        bus::RolloutChange::CaughtUp
    ));
}
