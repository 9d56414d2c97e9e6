//! HTTP probes through the real agent: a CRLF probe URL is rejected at validation, a probe
//! aimed at a host neither in the release nor on the agent's `--probe-allow` list is refused
//! before anything is applied or connected, and then a valid intent with a probe to a listed
//! host succeeds on the same agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proto::{ContentType, DeployIntent, Manifests, Outcome, Phase, SCHEMA_VERSION};
use serde_json::json;
use tests::{AgentProcess, NatsServer, SimProcess, eventually, kubectl_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An intent for `beta` with one ConfigMap and `probe_url` as its one probe.
fn intent(id: &str, probe_url: &str) -> DeployIntent {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"id": id}}),
    ];
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id: id.into(),
        cluster: "beta".into(),
        release: "web".into(),
        namespace: "shop".into(),
        environment: "beta".into(),
        version: id.into(),
        images: Default::default(),
        manifests: Manifests::Inline {
            digest: proto::manifests_digest(&objects),
            objects,
        },
        health: proto::HealthPolicy {
            timeout_secs: 30,
            http_probes: vec![proto::HttpProbe {
                url: probe_url.into(),
                successes: 2,
                timeout_ms: 1000,
            }],
            ..Default::default()
        },
        rollback: Default::default(),
        requested_by: "scenario-test".into(),
        created_at: jiff::Timestamp::now(),
        rollout_id: None,
        expires_at: None,
    }
}

/// A local HTTP server answering 200; its address and how many connections it took.
async fn healthz() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    (addr, accepted)
}

/// The events of `intent_id` once it has a final one. An invalid intent's id is not trusted:
/// its events go under `seq-<stream sequence>`.
async fn until_final(bus: &bus::Bus, intent_id: &str) -> Vec<Outcome> {
    eventually(
        Duration::from_secs(60),
        &format!("a final outcome for {intent_id}"),
        || async {
            let events: Vec<Outcome> = tests::cluster_events(bus, "beta")
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.intent_id == intent_id)
                .collect();
            if events.iter().any(|e| e.terminal) {
                Ok(events)
            } else {
                Err(events.iter().map(|e| e.phase).collect::<Vec<_>>())
            }
        },
    )
    .await
}

fn last(events: &[Outcome]) -> (Phase, String) {
    let end = events.last().unwrap();
    (end.phase, end.reason.clone().unwrap_or_default())
}

#[tokio::test]
async fn probes_are_parsed_and_kept_to_their_scope_then_a_valid_one_succeeds() {
    let nats = NatsServer::start().unwrap();
    let sim = SimProcess::start(&["beta"]).unwrap();
    let bus = bus::connect(&bus::ConnectOptions {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    bus.ensure_topology(&bus::TopologyConfig::default())
        .await
        .unwrap();
    let _agent = AgentProcess::start(
        "beta",
        "beta",
        &nats.url(),
        &sim.kubeconfig("beta"),
        &["--probe-allow", "127.0.0.1"],
    )
    .unwrap();
    eventually(Duration::from_secs(30), "the agent's consumer", || async {
        bus.intent_backlog("beta")
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let (addr, accepted) = healthz().await;
    let publish = |intent: DeployIntent| {
        let bus = bus.clone();
        async move {
            bus.publish_intent(&intent, ContentType::Json, None)
                .await
                .unwrap();
        }
    };

    // A CRLF in the URL: rejected by validation, nothing connected.
    publish(intent(
        "crlf",
        &format!("http://{addr}/healthz\r\nX-Injected: 1"),
    ))
    .await;
    // The first message on the stream: sequence 1.
    let (phase, reason) = last(&until_final(&bus, "seq-1").await);
    assert_eq!(phase, Phase::Rejected, "{reason}");
    assert!(reason.contains("health.http_probes[0].url"), "{reason}");
    assert!(reason.contains("control"), "{reason}");
    assert!(!reason.contains('\n'), "{reason}");

    // A host neither in the release nor listed: refused before anything is applied.
    publish(intent(
        "metadata",
        "http://169.254.169.254/latest/meta-data/",
    ))
    .await;
    let (phase, reason) = last(&until_final(&bus, "metadata").await);
    // Refused before anything touches the cluster, as the intent's own fault.
    assert_eq!(phase, Phase::Rejected, "{reason}");
    assert!(
        reason.contains("169.254.169.254 is neither a Service of this release"),
        "{reason}"
    );
    assert!(reason.contains("--probe-allow"), "{reason}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was connected");
    let configmaps = std::process::Command::new(kubectl_bin().unwrap())
        .env("KUBECONFIG", sim.kubeconfig("beta"))
        .args([
            "get",
            "configmap",
            "web",
            "-n",
            "shop",
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&configmaps.stdout).trim(),
        "",
        "nothing applied"
    );

    // Then a valid intent with a probe to a listed host succeeds on the same agent.
    publish(intent("good", &format!("http://{addr}/healthz"))).await;
    let (phase, reason) = last(&until_final(&bus, "good").await);
    assert_eq!(phase, Phase::Succeeded, "{reason}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "the probe asked twice"
    );
}
