//! Fan-out benchmark: N simulated clusters in one simulator and N agents (tasks in this
//! process, each with its own NATS connection and in-process kube client), one intent to every
//! cluster; reports intent-to-received and intent-to-succeeded latency and memory per agent.
//!
//! Run with `scripts/bench fanout`; results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::{ContentType, DeployIntent, Manifests, Phase, SCHEMA_VERSION};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn intent(cluster: &str) -> DeployIntent {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"k": "v"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "web:1.0"}]}}}}),
    ];
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id: format!("fanout-{cluster}"),
        cluster: cluster.into(),
        release: "web".into(),
        namespace: "web".into(),
        environment: "bench".into(),
        version: "1.0".into(),
        images: Default::default(),
        manifests: Manifests::Inline {
            digest: proto::manifests_digest(&objects),
            objects,
        },
        health: Default::default(),
        rollback: Default::default(),
        requested_by: "bench".into(),
        created_at: jiff::Timestamp::now(),
        rollout_id: None,
        expires_at: None,
    }
}

async fn fanout(n: usize) {
    let server = bus::testing::NatsServer::start().unwrap();
    let options = bus::ConnectOptions {
        url: server.url(),
        ..Default::default()
    };
    let connect = || bus::connect(&options);
    let js = connect().await.unwrap();
    let topology = js
        .ensure_topology(&bus::TopologyConfig::default())
        .await
        .unwrap();

    let before_sim = rss_kib();
    let fleet = sim::Sim::new(sim::Timing::fast());
    let names: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
    let clusters: Vec<_> = names.iter().map(|name| fleet.add_cluster(name)).collect();
    let before_agents = rss_kib();

    let shutdown = CancellationToken::new();
    let mut agents = Vec::new();
    for (name, cluster) in names.iter().zip(&clusters) {
        let mut config = agent::AgentConfig::new(name);
        config.labels.insert("env".into(), "bench".into());
        config.heartbeat = Duration::from_secs(30);
        let nats = connect().await.unwrap();
        let kube = kube::Client::new(sim::router(cluster.clone()), "default");
        agents.push(tokio::spawn(agent::run(
            config,
            nats,
            kube,
            shutdown.clone(),
        )));
    }
    // Every agent registered and its consumer in place.
    let started = Instant::now();
    loop {
        let count = topology.registry.all().await.unwrap().len();
        if count >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {count} of {n} agents registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib();

    // An ordered JetStream consumer: unlike a core subscription it cannot drop events when
    // a thousand agents publish at once.
    let mut events = bus::EventFeed::open(&js, &bus::EventQuery::default(), bus::Since::New)
        .await
        .unwrap();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    for name in &names {
        let i = intent(name);
        sent.insert(i.id.clone(), Instant::now());
        js.publish_intent(&i, ContentType::MsgPack, None)
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    let mut succeeded = Vec::new();
    let mut failed = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while succeeded.len() + failed < n && Instant::now() < deadline {
        let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_secs(30), events.next()).await
        else {
            break;
        };
        let Some(t0) = sent.get(&e.intent_id) else {
            continue;
        };
        match e.phase {
            Phase::Received => received.push(t0.elapsed()),
            Phase::Succeeded => succeeded.push(t0.elapsed()),
            p if e.terminal => {
                failed += 1;
                eprintln!("{} ended {p}: {:?}", e.cluster, e.reason);
            }
            _ => {}
        }
    }
    received.sort();
    succeeded.sort();
    let row = |what: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("| {n} | {what} | - | - | - |");
        } else {
            println!(
                "| {n} | {what} ({} of {n}) | {:.0} ms | {:.0} ms | {:.0} ms |",
                v.len(),
                percentile(v, 0.5).as_secs_f64() * 1000.0,
                percentile(v, 0.99).as_secs_f64() * 1000.0,
                v[v.len() - 1].as_secs_f64() * 1000.0
            );
        }
    };
    row("intent -> received", &received);
    row("intent -> succeeded", &succeeded);
    println!(
        "| {n} | memory | simulator {:.1} KiB/cluster | agents {:.1} KiB/agent (idle, incl. NATS connection) | failed: {failed} |",
        (before_agents - before_sim) as f64 / n as f64,
        (idle.saturating_sub(before_agents)) as f64 / n as f64,
    );
    shutdown.cancel();
    for a in agents {
        let _ = a.await;
    }
    fleet.shutdown().await;
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| N | measure | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        runtime.block_on(fanout(n));
    }
}
