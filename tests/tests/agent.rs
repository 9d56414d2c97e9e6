//! The agent as a real process, against a real nats-server and the simulator: outcomes in
//! order, rollback, rejection, supersession, crashes, NATS restarts, poison messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proto::{ContentType, DeployIntent, Manifests, Outcome, Phase, SCHEMA_VERSION};
use serde_json::{Value, json};
use tests::{AgentProcess, NatsServer, SimProcess, eventually, kubectl_bin};

fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "progressDeadlineSeconds": 30,
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}
    })
}

fn intent(id: &str, cluster: &str, env: &str, image: &str) -> DeployIntent {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"id": id}}),
        deployment(image),
    ];
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id: id.into(),
        cluster: cluster.into(),
        release: "web".into(),
        namespace: "shop".into(),
        environment: env.into(),
        version: image.rsplit(':').next().unwrap_or(image).into(),
        images: Default::default(),
        manifests: Manifests::Inline {
            digest: proto::manifests_digest(&objects),
            objects,
        },
        health: proto::HealthPolicy {
            timeout_secs: 60,
            ..Default::default()
        },
        rollback: Default::default(),
        requested_by: "scenario-test".into(),
        created_at: jiff::Timestamp::now(),
        rollout_id: None,
        expires_at: None,
    }
}

struct Fixture {
    nats: NatsServer,
    sim: SimProcess,
    bus: bus::Bus,
    topology: bus::Topology,
}

async fn fixture(clusters: &[&str]) -> Fixture {
    let nats = NatsServer::start().unwrap();
    let sim = SimProcess::start(clusters).unwrap();
    let bus = bus::connect(&bus::ConnectOptions {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    let topology = bus
        .ensure_topology(&bus::TopologyConfig::default())
        .await
        .unwrap();
    Fixture {
        nats,
        sim,
        bus,
        topology,
    }
}

impl Fixture {
    fn agent(&self, cluster: &str, env: &str) -> AgentProcess {
        self.agent_with(cluster, env, &[])
    }

    /// Starts an agent and waits until its durable consumer exists, so nothing published after
    /// this returns is missed (a consumer created later starts from the latest per subject).
    fn agent_with(&self, cluster: &str, env: &str, extra: &[&str]) -> AgentProcess {
        let agent = AgentProcess::start(
            cluster,
            env,
            &self.nats.url(),
            &self.sim.kubeconfig(cluster),
            extra,
        )
        .unwrap();
        let bus = self.bus.clone();
        let cluster = cluster.to_owned();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                eventually(Duration::from_secs(30), "the agent's consumer", || async {
                    bus.intent_backlog(&cluster)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
                .await;
            });
        })
        .join()
        .unwrap();
        agent
    }

    async fn publish(&self, intent: &DeployIntent) {
        self.bus
            .publish_intent(intent, ContentType::MsgPack, None)
            .await
            .unwrap();
    }

    /// Every outcome event of a cluster so far, in order.
    async fn events(&self, cluster: &str) -> Vec<Outcome> {
        tests::cluster_events(&self.bus, cluster).await.unwrap()
    }

    /// Waits until the intent has a terminal event; returns the intent's events in order.
    async fn until_final(&self, cluster: &str, intent_id: &str, within: Duration) -> Vec<Outcome> {
        eventually(
            within,
            &format!("a final outcome for {intent_id}"),
            || async {
                let events: Vec<Outcome> = self
                    .events(cluster)
                    .await
                    .into_iter()
                    .filter(|e| e.intent_id == intent_id)
                    .collect();
                if events.iter().any(|e| e.terminal) {
                    Ok(events)
                } else {
                    Err(events)
                }
            },
        )
        .await
    }

    /// Waits until the cluster's events include `phase`; returns them.
    async fn until_phase(&self, cluster: &str, phase: Phase) -> Vec<Outcome> {
        eventually(
            Duration::from_secs(30),
            &format!("{phase} on {cluster}"),
            || async {
                let events = self.events(cluster).await;
                if phases(&events).contains(&phase) {
                    Ok(events)
                } else {
                    Err(phases(&events))
                }
            },
        )
        .await
    }

    /// Waits until the cluster's consumer has nothing pending and nothing unacked.
    async fn until_consumer_idle(&self, cluster: &str) {
        eventually(Duration::from_secs(30), "an idle consumer", || async {
            let backlog = self.bus.intent_backlog(cluster).await.unwrap();
            if backlog.pending == 0 && backlog.unacked == 0 {
                Ok(())
            } else {
                Err(backlog)
            }
        })
        .await
    }

    fn kubectl(&self, cluster: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(kubectl_bin().unwrap())
            .env("KUBECONFIG", self.sim.kubeconfig(cluster))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn image(&self, cluster: &str) -> String {
        self.kubectl(
            cluster,
            &[
                "get",
                "deploy",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        )
    }
}

fn phases(events: &[Outcome]) -> Vec<Phase> {
    events.iter().map(|e| e.phase).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_intent_succeeds_and_a_broken_one_rolls_back() {
    let f = fixture(&["beta"]).await;
    let metrics_addr = free_address();
    let _agent = f.agent_with("beta", "beta", &["--metrics-addr", &metrics_addr]);
    f.publish(&intent("v1", "beta", "beta", "web:1.0")).await;
    let events = f.until_final("beta", "v1", Duration::from_secs(60)).await;
    assert_eq!(
        phases(&events),
        [
            Phase::Received,
            Phase::Applying,
            Phase::Progressing,
            Phase::Succeeded
        ]
    );
    assert_eq!(events.last().unwrap().revision, Some(1));

    let current = f.topology.states.get("beta", "web").await.unwrap().unwrap();
    assert_eq!(
        (current.intent_id.as_str(), current.phase),
        ("v1", Phase::Succeeded)
    );
    let record = f.topology.registry.get("beta").await.unwrap().unwrap();
    assert_eq!(record.labels["env"], "beta");

    f.publish(&intent("v2", "beta", "beta", "web:2.0-broken"))
        .await;
    let events = f.until_final("beta", "v2", Duration::from_secs(60)).await;
    assert_eq!(
        phases(&events),
        [
            Phase::Received,
            Phase::Applying,
            Phase::Progressing,
            Phase::Failed,
            Phase::RollingBack,
            Phase::RolledBack
        ]
    );
    assert!(
        events[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("CrashLoopBackOff")
    );
    assert_eq!(f.image("beta"), "web:1.0");

    let metrics = http_get(&metrics_addr, "/metrics");
    for line in [
        "coxswain_intents_total{cluster=\"beta\",outcome=\"succeeded\"} 1",
        "coxswain_intents_total{cluster=\"beta\",outcome=\"rolled_back\"} 1",
        "coxswain_rollout_duration_seconds_count{cluster=\"beta\"} 2",
        "coxswain_intents_in_flight{cluster=\"beta\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

/// A free loopback port, as `127.0.0.1:<port>`.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A plain HTTP GET, polled until the server answers.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(address) {
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {address}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wrong_environment_is_rejected_and_garbage_does_not_block_the_queue() {
    let f = fixture(&["prod"]).await;
    let _agent = f.agent("prod", "prod");
    f.publish(&intent("beta-config", "prod", "beta", "web:1.0"))
        .await;
    let events = f
        .until_final("prod", "beta-config", Duration::from_secs(30))
        .await;
    assert_eq!(phases(&events), [Phase::Rejected]);
    assert!(
        events[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("environment beta refused"),
        "{events:?}"
    );
    assert!(
        f.kubectl("prod", &["get", "deploy", "-A"])
            .contains("No resources found")
    );

    // Garbage on an intent subject: rejected and terminated; the next valid intent proceeds.
    f.bus
        .publish_raw(
            "coxswain.intent.prod.web",
            &[],
            vec![0xde, 0xad, 0xbe, 0xef],
        )
        .await
        .unwrap();
    f.publish(&intent("good", "prod", "prod", "web:1.0")).await;
    let events = f.until_final("prod", "good", Duration::from_secs(60)).await;
    assert_eq!(events.last().unwrap().phase, Phase::Succeeded);
    let rejected: Vec<Outcome> = f
        .events("prod")
        .await
        .into_iter()
        .filter(|e| e.intent_id.starts_with("seq-"))
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("undecodable intent")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn intents_published_while_stopped_apply_only_the_newest() {
    let f = fixture(&["beta"]).await;
    let mut agent = f.agent("beta", "beta");
    f.publish(&intent("first", "beta", "beta", "web:1.0")).await;
    f.until_final("beta", "first", Duration::from_secs(60))
        .await;
    assert!(agent.stop().unwrap().success(), "SIGTERM exits 0");

    for id in ["a", "b", "c"] {
        f.publish(&intent(id, "beta", "beta", &format!("web:{id}")))
            .await;
    }
    let _agent = f.agent("beta", "beta");
    let c = f.until_final("beta", "c", Duration::from_secs(60)).await;
    assert_eq!(c.last().unwrap().phase, Phase::Succeeded);
    for old in ["a", "b"] {
        let events = f.until_final("beta", old, Duration::from_secs(30)).await;
        assert_eq!(
            events.last().unwrap().phase,
            Phase::Superseded,
            "{old}: {events:?}"
        );
        assert!(
            !phases(&events).contains(&Phase::Applying),
            "{old} was never applied"
        );
    }
    assert_eq!(f.image("beta"), "web:c");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_intent_cancels_a_slow_rollout() {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    f.publish(&intent("slow", "beta", "beta", "web:1-slow"))
        .await;
    f.until_phase("beta", Phase::Progressing).await;
    f.publish(&intent("fast", "beta", "beta", "web:2")).await;
    let slow = f.until_final("beta", "slow", Duration::from_secs(30)).await;
    assert_eq!(slow.last().unwrap().phase, Phase::Superseded);
    let fast = f.until_final("beta", "fast", Duration::from_secs(60)).await;
    assert_eq!(fast.last().unwrap().phase, Phase::Succeeded);
    assert_eq!(f.image("beta"), "web:2");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_progressing_then_restart_gives_exactly_one_final_outcome() {
    let f = fixture(&["beta"]).await;
    let mut agent = f.agent("beta", "beta");
    // A slow API server keeps the rollout in progress long enough to kill the agent in it.
    f.sim
        .set_faults("beta", &json!({"latency_ms": 150}))
        .unwrap();
    f.publish(&intent("crash", "beta", "beta", "web:1.0")).await;
    let events = f.until_phase("beta", Phase::Progressing).await;
    assert!(
        !events.iter().any(|e| e.terminal),
        "finished before the kill: {events:?}"
    );
    agent.kill();
    let lease = f.kubectl(
        "beta",
        &[
            "get",
            "lease",
            "coxswain-lock-web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert!(
        lease.starts_with("agent-beta/"),
        "the dead agent still holds the lock: {lease}"
    );

    let _agent = f.agent("beta", "beta");
    f.until_final("beta", "crash", Duration::from_secs(60))
        .await;
    f.sim.set_faults("beta", &json!({})).unwrap();
    // Once the agent acked the intent nothing more can come for it: wait for that, not a time.
    f.until_consumer_idle("beta").await;
    let events: Vec<Outcome> = f
        .events("beta")
        .await
        .into_iter()
        .filter(|e| e.intent_id == "crash")
        .collect();
    let finals: Vec<&Outcome> = events.iter().filter(|e| e.terminal).collect();
    assert_eq!(finals.len(), 1, "{events:?}");
    assert_eq!(finals[0].phase, Phase::Succeeded);
    assert!(
        finals[0].attempt >= 2,
        "finished by the redelivery: {events:?}"
    );
    assert_eq!(f.image("beta"), "web:1.0");
    let history = f.kubectl(
        "beta",
        &[
            "get",
            "secrets",
            "-n",
            "shop",
            "-l",
            "owner=coxswain",
            "-o",
            "jsonpath={.items[*].metadata.labels.status}",
        ],
    );
    assert_eq!(
        history, "failed deployed",
        "the abandoned revision is marked failed"
    );
    assert!(
        f.kubectl("beta", &["get", "lease", "-n", "shop"])
            .contains("No resources found"),
        "the lock is free"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_restart_during_a_rollout_loses_nothing() {
    let mut f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    // A slow API server stretches the rollout to several seconds.
    f.sim
        .set_faults("beta", &json!({"latency_ms": 150}))
        .unwrap();
    f.publish(&intent("through-outage", "beta", "beta", "web:1.0"))
        .await;
    f.until_phase("beta", Phase::Applying).await;
    f.nats.restart().unwrap();
    let restarted = jiff::Timestamp::now();
    let events = f
        .until_final("beta", "through-outage", Duration::from_secs(90))
        .await;
    let last = events.last().unwrap();
    assert_eq!(last.phase, Phase::Succeeded, "{events:?}");
    assert!(
        last.at > restarted,
        "the rollout was still running when NATS restarted"
    );
    let finals = events.iter().filter(|e| e.terminal).count();
    assert_eq!(finals, 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clusters_deploy_the_same_release_independently() {
    let f = fixture(&["east", "west"]).await;
    let _east = f.agent("east", "prod");
    let _west = f.agent("west", "prod");
    f.publish(&intent("east-good", "east", "prod", "web:1.0"))
        .await;
    f.publish(&intent("west-bad", "west", "prod", "web:1.0-broken"))
        .await;
    let east = f
        .until_final("east", "east-good", Duration::from_secs(60))
        .await;
    let west = f
        .until_final("west", "west-bad", Duration::from_secs(60))
        .await;
    assert_eq!(east.last().unwrap().phase, Phase::Succeeded);
    assert_eq!(
        west.last().unwrap().phase,
        Phase::Failed,
        "a first install has nothing to roll back to"
    );
    assert_eq!(f.image("east"), "web:1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_intent_span_continues_its_traceparent_and_is_exported_over_otlp() {
    let f = fixture(&["beta"]).await;
    let (endpoint, seen) = tests::otlp_collector().unwrap();
    let mut agent = AgentProcess::start_with_env(
        "beta",
        "beta",
        &f.nats.url(),
        &f.sim.kubeconfig("beta"),
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    f.bus
        .publish_intent(
            &intent("traced", "beta", "beta", "web:1.0"),
            ContentType::Json,
            Some(traceparent),
        )
        .await
        .unwrap();
    f.until_final("beta", "traced", Duration::from_secs(60))
        .await;
    assert!(agent.stop().unwrap().success());
    let wanted: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let exports = seen.lock().unwrap().clone();
    assert!(!exports.is_empty(), "nothing was exported");
    assert!(
        exports.iter().all(|(path, _)| path == "/v1/traces"),
        "{:?}",
        exports.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let continued = exports
        .iter()
        .any(|(_, body)| body.windows(16).any(|w| w == wanted.as_slice()));
    assert!(continued, "no exported span belongs to the intent's trace");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_work_within_the_grace_period_and_exits_0() {
    let f = fixture(&["beta"]).await;
    let mut agent = f.agent("beta", "beta");
    f.sim
        .set_faults("beta", &json!({"latency_ms": 100}))
        .unwrap();
    f.publish(&intent("draining", "beta", "beta", "web:1.0"))
        .await;
    f.until_phase("beta", Phase::Applying).await;
    assert!(agent.stop().unwrap().success(), "exit 0 after draining");
    let events: Vec<Outcome> = f
        .events("beta")
        .await
        .into_iter()
        .filter(|e| e.intent_id == "draining")
        .collect();
    assert_eq!(
        events.last().map(|e| e.phase),
        Some(Phase::Succeeded),
        "{events:?}"
    );
    let record = f.topology.registry.get("beta").await.unwrap().unwrap();
    assert_eq!(record.status, proto::AgentStatus::Draining);
}

#[tokio::test(flavor = "multi_thread")]
async fn bundled_manifests_are_fetched_and_verified() {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    let store = &f.topology.bundles;
    let objects = vec![deployment("web:bundled")];
    let bytes = serde_json::to_vec(&objects).unwrap();
    let digest = deploy::render::sha256(&bytes);
    store.put(&digest, &bytes).await.unwrap();

    let mut good = intent("bundled", "beta", "beta", "web:bundled");
    good.manifests = Manifests::Bundle {
        digest: digest.clone(),
        size: bytes.len() as u64,
    };
    f.publish(&good).await;
    let events = f
        .until_final("beta", "bundled", Duration::from_secs(60))
        .await;
    assert_eq!(events.last().unwrap().phase, Phase::Succeeded, "{events:?}");
    assert_eq!(f.image("beta"), "web:bundled");

    // A bundle whose bytes do not match the digest is refused, not applied.
    let forged = format!("sha256:{}", "ab".repeat(32));
    store.put(&forged, b"[]").await.unwrap();
    let mut bad = intent("forged", "beta", "beta", "web:forged");
    bad.manifests = Manifests::Bundle {
        digest: forged,
        size: 2,
    };
    f.publish(&bad).await;
    let events = f
        .until_final("beta", "forged", Duration::from_secs(30))
        .await;
    assert_eq!(phases(&events), [Phase::Received, Phase::Rejected]);
    assert!(
        events[1]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("bundle digest mismatch"),
        "{events:?}"
    );
    assert_eq!(f.image("beta"), "web:bundled");
}

#[tokio::test(flavor = "multi_thread")]
async fn coxswain_rollback_returns_a_cluster_to_an_earlier_revision() {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    for (id, image) in [("one", "web:1.0"), ("two", "web:2.0")] {
        f.publish(&intent(id, "beta", "beta", image)).await;
        assert_eq!(
            f.until_final("beta", id, Duration::from_secs(60))
                .await
                .last()
                .unwrap()
                .phase,
            Phase::Succeeded
        );
    }
    // `coxswain rollback` goes through the coordinator, which signs it like any intent.
    let policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/platform/policy.yaml");
    let coordinator = tests::CoordinatorProcess::start(&f.nats.url(), "t0ken", &policy).unwrap();
    let rollback = |extra: &[&str]| {
        let mut args = vec![
            "rollback",
            "--release",
            "web",
            "--cluster",
            "beta",
            "--timeout",
            "60s",
            "--token",
            "t0ken",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--coordinator", coordinator.url.as_str()]);
        tests::coxswain(&args).unwrap()
    };
    let out = rollback(&[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.image("beta"), "web:1.0");
    let out = rollback(&["--to", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(f.image("beta"), "web:2.0");
    let out = rollback(&["--to", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("has no revision 99"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Defect: a redelivered older intent cancelled the newer one, and one intent ended twice.
/// Kill -9 while A is progressing, restart, publish B at once: A's redelivery never cancels
/// B, B is deployed, and each intent has exactly one final event.
#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_older_intent_never_cancels_a_newer_one() {
    let f = fixture(&["beta"]).await;
    let mut agent = f.agent("beta", "beta");
    f.publish(&intent("v1", "beta", "beta", "web:1.0")).await;
    f.until_final("beta", "v1", Duration::from_secs(60)).await;
    // A slow API server keeps A in progress long enough to kill the agent in it.
    f.sim
        .set_faults("beta", &json!({"latency_ms": 150}))
        .unwrap();
    f.publish(&intent("a", "beta", "beta", "web:2.0")).await;
    f.until_phase("beta", Phase::Progressing).await;
    agent.kill();
    f.sim.set_faults("beta", &json!({})).unwrap();
    let _agent = f.agent("beta", "beta");
    f.publish(&intent("b", "beta", "beta", "web:3.0")).await;
    let b = f.until_final("beta", "b", Duration::from_secs(60)).await;
    assert_eq!(b.last().unwrap().phase, Phase::Succeeded, "{b:?}");
    f.until_final("beta", "a", Duration::from_secs(60)).await;
    f.until_consumer_idle("beta").await;
    let events = f.events("beta").await;
    for id in ["a", "b"] {
        let finals: Vec<&Outcome> = events
            .iter()
            .filter(|e| e.intent_id == id && e.terminal)
            .collect();
        assert_eq!(finals.len(), 1, "{id}: {finals:?}");
    }
    assert_eq!(f.image("beta"), "web:3.0");
}

/// Defect: an intent with a 300 KiB id could not be rejected (its event could not be
/// encoded), and the agent retried it forever. Now it is rejected under its stream sequence,
/// terminated, and the next intent goes through.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_field_is_rejected_and_never_blocks_the_agent() {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    for field in ["id", "version", "requested_by"] {
        let id = format!("huge-{field}");
        let mut huge = serde_json::to_value(intent(&id, "beta", "beta", "web:1.0")).unwrap();
        huge[field] = json!("x".repeat(300 * 1024));
        f.bus
            .publish_raw(
                "coxswain.intent.beta.web",
                &[("Content-Type", "application/json")],
                serde_json::to_vec(&huge).unwrap(),
            )
            .await
            .unwrap();
    }
    f.publish(&intent("after", "beta", "beta", "web:1.0")).await;
    let after = f
        .until_final("beta", "after", Duration::from_secs(60))
        .await;
    assert_eq!(after.last().unwrap().phase, Phase::Succeeded, "{after:?}");
    f.until_consumer_idle("beta").await;
    let rejected: Vec<Outcome> = f
        .events("beta")
        .await
        .into_iter()
        .filter(|e| e.phase == Phase::Rejected)
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected.iter().all(|e| {
        e.reason
            .as_deref()
            .is_some_and(|r| r.chars().count() <= proto::MAX_REASON_CHARS)
    }));
}

/// Defect: kill -9 during a rollback; the redelivery reported `failed` and never finished the
/// rollback. Now it resumes as a rollback and ends `rolled_back`, once, on the old image.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_interrupted_by_kill_9_is_resumed_as_a_rollback() {
    let f = fixture(&["beta"]).await;
    let mut agent = f.agent("beta", "beta");
    f.publish(&intent("good", "beta", "beta", "web:1.0")).await;
    f.until_final("beta", "good", Duration::from_secs(60)).await;
    f.sim
        .set_faults("beta", &json!({"latency_ms": 150}))
        .unwrap();
    f.publish(&intent("bad", "beta", "beta", "web:2.0-broken"))
        .await;
    f.until_phase("beta", Phase::RollingBack).await;
    agent.kill();
    f.sim.set_faults("beta", &json!({})).unwrap();
    let _agent = f.agent("beta", "beta");
    f.until_final("beta", "bad", Duration::from_secs(60)).await;
    f.until_consumer_idle("beta").await;
    let events: Vec<Outcome> = f
        .events("beta")
        .await
        .into_iter()
        .filter(|e| e.intent_id == "bad" && e.terminal)
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].phase, Phase::RolledBack, "{events:?}");
    assert_eq!(f.image("beta"), "web:1.0");
    let statuses = f.kubectl(
        "beta",
        &[
            "get",
            "secrets",
            "-n",
            "shop",
            "-l",
            "owner=coxswain",
            "-o",
            "jsonpath={.items[*].metadata.labels.status}",
        ],
    );
    assert!(
        !statuses.contains("pending"),
        "no revision left pending: {statuses}"
    );
}

/// Defect: with a permanent API outage the final event came 50 s after the deadline (the
/// rollback got a fresh deadline, unlocking retried for 30 s), and an outage during the
/// rollback ended `failed`. Now one deadline covers the rollback too, the final event
/// follows it within seconds, and it says `rollback_failed`.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_outage_ends_rollback_failed_within_seconds_of_the_one_deadline() {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    f.publish(&intent("good", "beta", "beta", "web:1.0")).await;
    f.until_final("beta", "good", Duration::from_secs(60)).await;
    let mut slow = intent("outage", "beta", "beta", "web:2.0-slow");
    slow.health.timeout_secs = 6;
    let published = tokio::time::Instant::now();
    f.publish(&slow).await;
    eventually(
        Duration::from_secs(30),
        "the slow intent progressing",
        || async {
            let events = f.events("beta").await;
            if events
                .iter()
                .any(|e| e.intent_id == "outage" && e.phase == Phase::Progressing)
            {
                Ok(())
            } else {
                Err(phases(&events))
            }
        },
    )
    .await;
    f.sim
        .set_faults("beta", &json!({"unavailable": true}))
        .unwrap();
    let events = f
        .until_final("beta", "outage", Duration::from_secs(60))
        .await;
    let took = published.elapsed();
    f.sim.set_faults("beta", &json!({})).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.phase, Phase::RollbackFailed, "{events:?}");
    assert!(
        took <= Duration::from_secs(6 + 6),
        "final event {took:?} after publishing, deadline 6 s: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2_gib_bundle_and_too_many_objects_are_refused_and_the_next_intent_still_deploys() {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent("beta", "beta");
    // Nothing is stored under this digest: a download would fail with "cannot be fetched",
    // so a refusal naming the limit proves the size was checked first.
    let mut huge = intent("huge", "beta", "beta", "web:huge");
    huge.manifests = Manifests::Bundle {
        digest: format!("sha256:{}", "cd".repeat(32)),
        size: 2 << 30,
    };
    f.publish(&huge).await;
    let events = f.until_final("beta", "huge", Duration::from_secs(30)).await;
    assert_eq!(phases(&events), [Phase::Rejected], "refused at the checks");
    let reason = events[0].reason.as_deref().unwrap();
    assert!(
        reason.contains("declares 2147483648 bytes, over the limit of 67108864 bytes"),
        "{reason}"
    );

    // 1,001 objects in a bundle: fetched (it is small) and refused by count.
    let objects: Vec<Value> = (0..=1000)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}))
        .collect();
    let bytes = serde_json::to_vec(&objects).unwrap();
    let digest = deploy::render::sha256(&bytes);
    f.topology.bundles.put(&digest, &bytes).await.unwrap();
    let mut many = intent("many", "beta", "beta", "web:many");
    many.manifests = Manifests::Bundle {
        digest,
        size: bytes.len() as u64,
    };
    f.publish(&many).await;
    let events = f.until_final("beta", "many", Duration::from_secs(30)).await;
    assert_eq!(phases(&events), [Phase::Received, Phase::Rejected]);
    assert_eq!(
        events[1].reason.as_deref(),
        Some("the release has 1001 objects, over the limit of 1000 objects per release")
    );

    f.publish(&intent("after", "beta", "beta", "web:1.0")).await;
    let events = f
        .until_final("beta", "after", Duration::from_secs(60))
        .await;
    assert_eq!(events.last().unwrap().phase, Phase::Succeeded, "{events:?}");
    assert_eq!(f.image("beta"), "web:1.0");
}

/// The write an autoscaler makes: the scale subresource of `web`, as `kube-controller-manager`
/// (what the HPA controller's writes are recorded as).
fn autoscale(sim_address: &str, replicas: u32) {
    use std::io::{Read, Write};
    let body = format!("{{\"spec\":{{\"replicas\":{replicas}}}}}");
    let mut stream = std::net::TcpStream::connect(sim_address).unwrap();
    write!(
        stream,
        "PATCH /apis/apps/v1/namespaces/shop/deployments/web/scale?fieldManager=kube-controller-manager HTTP/1.1\r\n\
         Host: {sim_address}\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Drift, with a check every 2 s: an autoscaler's replica change is not drift; a `kubectl set
/// image` of a managed field is reported (`drifted`, naming the field and who changed it)
/// within an interval and shown by `coxswain status`; with `drift: correct` it is set back and
/// reported `corrected`.
#[tokio::test(flavor = "multi_thread")]
async fn drift_is_reported_within_an_interval_and_corrected_when_asked_but_an_autoscaler_is_not_drift()
 {
    let f = fixture(&["beta"]).await;
    let _agent = f.agent_with("beta", "beta", &["--drift-interval", "2s"]);
    f.publish(&intent("d1", "beta", "beta", "web:1.0")).await;
    f.until_final("beta", "d1", Duration::from_secs(60)).await;
    let address = f.sim.address("beta").unwrap();
    autoscale(&address, 3);
    let changed = f.kubectl(
        "beta",
        &[
            "set",
            "image",
            "deployment/web",
            "web=web:hacked",
            "-n",
            "shop",
        ],
    );
    assert!(changed.contains("image updated"), "{changed}");
    let drifted = |phase: Phase| {
        let f = &f;
        move || async move {
            let found: Vec<Outcome> = f
                .events("beta")
                .await
                .into_iter()
                .filter(|e| e.phase == phase)
                .collect();
            found.last().cloned().ok_or(found.len())
        }
    };
    let event = eventually(
        Duration::from_secs(15),
        "a drifted event",
        drifted(Phase::Drifted),
    )
    .await;
    let reason = event.reason.unwrap_or_default();
    assert!(reason.contains("apps/v1/Deployment shop/web"), "{reason}");
    // The field path is the API server's (the simulator tracks a list as one field:
    // `.spec.template.spec.containers`; a real one names `[name="web"].image`).
    assert!(
        reason.contains(".spec.template.spec.containers") && reason.contains("(by kubectl-set)"),
        "{reason}"
    );
    assert!(
        !reason.contains("replicas"),
        "an autoscaler's change is not drift: {reason}"
    );
    assert_eq!((event.intent_id.as_str(), event.terminal), ("d1", false));
    let status = tests::coxswain(&["status", "--nats", &f.nats.url()]).unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("drifted"),
        "{status:?}"
    );
    assert_eq!(f.image("beta"), "web:hacked", "reported, not corrected");

    let mut correcting = intent("d2", "beta", "beta", "web:1.1");
    correcting.health.drift = proto::DriftPolicy::Correct;
    f.publish(&correcting).await;
    f.until_final("beta", "d2", Duration::from_secs(60)).await;
    f.kubectl(
        "beta",
        &[
            "set",
            "image",
            "deployment/web",
            "web=web:hacked-again",
            "-n",
            "shop",
        ],
    );
    let event = eventually(
        Duration::from_secs(15),
        "a corrected event",
        drifted(Phase::Corrected),
    )
    .await;
    assert_eq!(event.intent_id, "d2");
    assert!(event.reason.unwrap_or_default().contains("kubectl-set"));
    assert_eq!(f.image("beta"), "web:1.1", "set back");
}
