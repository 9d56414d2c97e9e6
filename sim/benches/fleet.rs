//! Simulator benchmark: memory per idle virtual cluster at 1,000 clusters, and server-side
//! apply requests per second served over HTTP to the real kube client.
//!
//! Run with `scripts/bench sim` (a release build); results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::json;
use sim::{Sim, Timing};

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn memory_per_cluster(clusters: usize) {
    let before = rss_kib();
    let fleet = Sim::new(Timing::fast());
    for i in 0..clusters {
        fleet.add_cluster(&format!("cluster-{i}"));
    }
    let served = fleet
        .serve("127.0.0.1".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(served.len(), clusters);
    // Let every controller run its first pass and go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let per = (after - before) as f64 / clusters as f64;
    println!(
        "| idle clusters, served over HTTP | {clusters} | RSS +{:.1} MiB | {per:.1} KiB per cluster |",
        (after - before) as f64 / 1024.0
    );
    fleet.shutdown().await;
}

async fn apply_rate(concurrency: usize, total: usize) {
    let fleet = Sim::new(Timing::fast());
    fleet.add_cluster("bench");
    let dir = tempfile::tempdir().unwrap();
    fleet
        .serve("127.0.0.1".parse().unwrap(), Some(dir.path()))
        .await
        .unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.path().join("bench.yaml")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        tasks.push(tokio::spawn(async move {
            let params = PatchParams::apply("bench").force();
            for i in (worker..total).step_by(concurrency) {
                // 100 objects, each re-applied with new data: creates and updates alike.
                let name = format!("cm-{}", i % 100);
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"app": "bench"}},
                    "data": {"iteration": i.to_string(), "payload": "x".repeat(512)}});
                api.patch(&name, &params, &Patch::Apply(body))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "| server-side apply over HTTP (kube client, {concurrency} concurrent) | {total} requests | {:.2} s | {:.0} applies/s |",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    fleet.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| measure | size | total | result |");
    println!("|---|---|---|---|");
    runtime.block_on(async {
        memory_per_cluster(1000).await;
        apply_rate(1, 5000).await;
        apply_rate(16, 20000).await;
    });
}
