//! Roles enforced by nats-server itself: `coxswain auth init` writes a key per role and the
//! server's configuration, nats-server runs with it, `coxswain topology` (admin key) creates
//! the topology, and each role's connection may do what its role needs and nothing more.
//!
//! A request the server denies gets no answer, so a denial looks like a timeout: connections
//! here wait one second for answers, and the denials of one role are tried all at once. Each
//! denial is also looked up in the server's log, so it is the permissions that refused it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus::{Bus, BusError, ConnectOptions, ConsumerOptions, EventQuery, IntentConsumer};
use futures::FutureExt as _;
use futures::future::LocalBoxFuture;
use proto::{ClusterRecord, ContentType, DeployIntent, Outcome, ReleaseState, Rollout};
use serde_json::json;
use tests::NatsServer;

/// How long a connection waits for an answer, so a denial costs this much.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Runs `coxswain ARGS` and requires success; its stdout.
fn coxswain_ok(args: &[&str]) -> String {
    let out = tests::coxswain(args).unwrap();
    assert!(
        out.status.success(),
        "coxswain {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A server running with the roles of `coxswain auth init --clusters <clusters>`, and the
/// topology created with the admin key.
struct Roles {
    dir: tempfile::TempDir,
    nats: NatsServer,
}

impl Roles {
    fn start(clusters: &str) -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let init = coxswain_ok(&[
            "auth",
            "init",
            "--dir",
            keys.to_str().unwrap(),
            "--clusters",
            clusters,
        ]);
        let nats = NatsServer::start_with_config(&keys.join("nats-server.conf")).unwrap();
        let roles = Self { dir, nats };
        coxswain_ok(&[
            "topology",
            "--nats",
            &roles.nats.url(),
            "--nats-nkey",
            roles.seed("admin").to_str().unwrap(),
        ]);
        (roles, init)
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn seed(&self, role: &str) -> PathBuf {
        self.keys().join(format!("{role}.nk"))
    }

    async fn connect(&self, seed: Option<&Path>) -> Result<Bus, BusError> {
        bus::connect(&ConnectOptions {
            url: self.nats.url(),
            nkey_seed_file: seed.map(Path::to_owned),
            request_timeout: Some(ANSWER_WAIT),
            ..Default::default()
        })
        .await
    }

    async fn login(&self, role: &str) -> Bus {
        self.connect(Some(&self.seed(role))).await.unwrap()
    }

    /// Was a publish on `subject` refused by the permissions?
    fn violation(&self, subject: &str) -> bool {
        self.nats
            .log()
            .contains(&format!("Publish Violation - Subject \"{subject}\""))
    }
}

/// `None` when the attempt failed as it should; otherwise what it gave.
async fn refused<T: Debug>(
    what: &'static str,
    attempt: impl Future<Output = Result<T, BusError>>,
) -> Option<String> {
    match attempt.await {
        Err(_) => None,
        Ok(value) => Some(format!("{what}: {value:?}")),
    }
}

/// Every attempt refused.
async fn all_refused(attempts: Vec<LocalBoxFuture<'_, Option<String>>>) {
    let allowed: Vec<String> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(allowed.is_empty(), "allowed although denied: {allowed:#?}");
}

fn intent(id: &str, cluster: &str) -> DeployIntent {
    serde_json::from_value(json!({
        "schema_version": proto::SCHEMA_VERSION, "id": id, "cluster": cluster,
        "release": "web", "namespace": "web", "environment": cluster, "version": "1.0",
        "manifests": {"source": "bundle", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1},
        "requested_by": "test", "created_at": jiff::Timestamp::now(),
    }))
    .unwrap()
}

fn outcome(cluster: &str) -> Outcome {
    serde_json::from_value(json!({
        "schema_version": proto::SCHEMA_VERSION, "event_id": format!("{cluster}.i1.received.1"),
        "intent_id": "i1", "cluster": cluster, "release": "web", "phase": "received",
        "attempt": 1, "at": jiff::Timestamp::now(),
    }))
    .unwrap()
}

fn record(cluster: &str) -> ClusterRecord {
    serde_json::from_value(json!({
        "schema_version": proto::SCHEMA_VERSION, "name": cluster, "labels": {"env": cluster},
        "agent_version": "test", "status": "ready", "heartbeat_at": jiff::Timestamp::now(),
    }))
    .unwrap()
}

fn state(cluster: &str) -> ReleaseState {
    serde_json::from_value(json!({
        "schema_version": proto::SCHEMA_VERSION, "cluster": cluster, "release": "web",
        "namespace": "web", "intent_id": "i1", "version": "1.0", "phase": "succeeded",
        "updated_at": jiff::Timestamp::now(),
    }))
    .unwrap()
}

fn rollout(id: &str) -> Rollout {
    let now = jiff::Timestamp::now();
    serde_json::from_value(json!({
        "schema_version": proto::SCHEMA_VERSION, "id": id,
        "request": {
            "schema_version": proto::SCHEMA_VERSION, "idempotency_key": id, "release": "web",
            "namespace": "web", "environment": "beta", "version": "1.0",
            "manifests": {"source": "bundle", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1},
            "requested_by": "test",
        },
        "waves": [], "clusters": {}, "current_wave": 0, "status": "running",
        "created_at": now, "updated_at": now,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_may_do_what_it_needs_and_nothing_more() {
    let (roles, init_output) = Roles::start("beta,prod");

    // What `auth init` wrote: a secret per role, 0600; the configuration; no seed elsewhere.
    let keys = roles.keys();
    for file in [
        "admin.nk",
        "coordinator.nk",
        "observer.nk",
        "agent-beta.nk",
        "agent-prod.nk",
        "signing.nk",
    ] {
        let path = keys.join(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
        let seed = std::fs::read_to_string(&path).unwrap();
        assert!(seed.starts_with('S'), "{file} holds a seed");
        assert!(
            !init_output.contains(seed.trim()),
            "{file}'s seed was printed"
        );
    }
    let config = std::fs::read_to_string(keys.join("nats-server.conf")).unwrap();
    for role in [
        "admin",
        "coordinator",
        "observer",
        "agent-beta",
        "agent-prod",
    ] {
        assert!(config.contains(&format!("# {role}: ")), "{role} not named");
    }
    let roles_file = std::fs::read_to_string(keys.join("roles.json")).unwrap();
    assert!(!roles_file.contains("\"S"), "a seed in roles.json");
    let signing = std::fs::read_to_string(keys.join("signing.pub")).unwrap();
    assert!(signing.trim().starts_with('A'));
    // A second init would replace every key: refused unless forced.
    let again = tests::coxswain(&["auth", "init", "--dir", keys.to_str().unwrap()]).unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let bad = tests::coxswain(&[
        "auth",
        "add-cluster",
        "--dir",
        keys.to_str().unwrap(),
        "a.b",
    ]);
    assert!(!bad.unwrap().status.success(), "a cluster name with a dot");

    // No credentials, or the signing key as a login: refused at connect.
    assert!(matches!(
        roles.connect(None).await,
        Err(BusError::Connect { .. })
    ));
    assert!(matches!(
        roles.connect(Some(&keys.join("signing.nk"))).await,
        Err(BusError::Nkey { .. })
    ));

    let coordinator = roles.login("coordinator").await;
    let agent_beta = roles.login("agent-beta").await;
    let agent_prod = roles.login("agent-prod").await;
    let observer = roles.login("observer").await;
    let as_coordinator = coordinator.open_topology().await.unwrap();
    let as_beta = agent_beta.open_topology().await.unwrap();
    let as_prod = agent_prod.open_topology().await.unwrap();
    let as_observer = observer.open_topology().await.unwrap();

    // The coordinator publishes intents to any cluster, writes rollouts and bundles.
    let beta_intent = coordinator
        .publish_intent(&intent("i1", "beta"), ContentType::Json, None)
        .await
        .unwrap();
    coordinator
        .publish_intent(&intent("i2", "prod"), ContentType::Json, None)
        .await
        .unwrap();
    assert!(
        as_coordinator
            .rollouts
            .create(&rollout("r1"))
            .await
            .unwrap()
    );
    let bundle = vec![1u8; 3 * 1024 * 1024];
    as_coordinator
        .bundles
        .put("sha256-b", &bundle)
        .await
        .unwrap();
    // Stored again (a CI retry): no purge right needed, the stored one is kept.
    as_coordinator
        .bundles
        .put("sha256-b", &bundle)
        .await
        .unwrap();
    assert!(as_coordinator.registry.all().await.unwrap().is_empty());

    // Each agent: its own consumer, events, keys; the bundles; the newest of its own intents.
    let mut consumer = IntentConsumer::create(&agent_beta, "beta", &ConsumerOptions::default())
        .await
        .unwrap();
    let delivery = consumer
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.subject(), "coxswain.intent.beta.web");
    delivery.double_ack().await.unwrap();
    assert_eq!(consumer.pending().await.unwrap(), 0);
    assert_eq!(
        agent_beta
            .latest_intent_sequence("coxswain.intent.beta.web")
            .await
            .unwrap(),
        Some(beta_intent.sequence)
    );
    agent_beta
        .publish_outcome(&outcome("beta"), ContentType::Json, None)
        .await
        .unwrap();
    as_beta.registry.put(&record("beta")).await.unwrap();
    as_beta.states.put(&state("beta")).await.unwrap();
    assert!(as_beta.states.get("beta", "web").await.unwrap().is_some());
    assert_eq!(
        as_beta.bundles.get("sha256-b", 8 << 20).await.unwrap(),
        bundle
    );
    as_prod.states.put(&state("prod")).await.unwrap();
    as_prod.registry.put(&record("prod")).await.unwrap();

    // The observer reads events and every bucket.
    let events = bus::events::stored_events(&observer, &EventQuery::cluster("beta"))
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(as_observer.registry.all().await.unwrap().len(), 2);
    assert_eq!(as_observer.states.all().await.unwrap().len(), 2);
    assert_eq!(as_observer.rollouts.all().await.unwrap().len(), 1);
    // The coordinator reads what the agents wrote and an agent's backlog.
    assert_eq!(as_coordinator.states.all().await.unwrap().len(), 2);
    assert_eq!(coordinator.intent_backlog("beta").await.unwrap().pending, 0);

    // What each role may not do.
    let options = ConsumerOptions::default();
    all_refused(vec![
        // agent-beta: nothing of prod's, nothing of the coordinator's
        refused(
            "agent-beta publishes an intent for prod",
            agent_beta.publish_intent(&intent("x1", "prod"), ContentType::Json, None),
        )
        .boxed_local(),
        refused(
            "agent-beta publishes an intent for itself",
            agent_beta.publish_intent(&intent("x2", "beta"), ContentType::Json, None),
        )
        .boxed_local(),
        refused(
            "agent-beta publishes an event for prod",
            agent_beta.publish_outcome(&outcome("prod"), ContentType::Json, None),
        )
        .boxed_local(),
        refused(
            "agent-beta creates prod's consumer",
            IntentConsumer::create(&agent_beta, "prod", &options),
        )
        .boxed_local(),
        refused(
            "agent-beta writes prod's registry key",
            as_beta.registry.put(&record("prod")),
        )
        .boxed_local(),
        refused(
            "agent-beta writes prod's release state",
            as_beta.states.put(&state("prod")),
        )
        .boxed_local(),
        refused(
            "agent-beta reads prod's release state",
            as_beta.states.get("prod", "web"),
        )
        .boxed_local(),
        refused(
            "agent-beta reads a registry record",
            as_beta.registry.get("beta"),
        )
        .boxed_local(),
        refused(
            "agent-beta reads prod's newest intent",
            agent_beta.latest_intent_sequence("coxswain.intent.prod.web"),
        )
        .boxed_local(),
        refused(
            "agent-beta writes a rollout",
            as_beta.rollouts.create(&rollout("r2")),
        )
        .boxed_local(),
        refused(
            "agent-beta stores a bundle",
            as_beta.bundles.put("sha256-c", b"x"),
        )
        .boxed_local(),
        // A rollup on its own key would wipe every other key of the bucket.
        refused(
            "agent-beta rolls up the state bucket",
            agent_beta.publish_raw(
                "$KV.coxswain-state.beta.web",
                &[("Nats-Rollup", "all")],
                b"{}".to_vec(),
            ),
        )
        .boxed_local(),
        // the coordinator: no events, no agent keys
        refused(
            "the coordinator publishes an event",
            coordinator.publish_outcome(&outcome("beta"), ContentType::Json, None),
        )
        .boxed_local(),
        refused(
            "the coordinator writes a registry key",
            as_coordinator.registry.put(&record("beta")),
        )
        .boxed_local(),
        refused(
            "the coordinator creates an agent's consumer",
            IntentConsumer::create(&coordinator, "beta", &options),
        )
        .boxed_local(),
        // the observer: nothing at all
        refused(
            "the observer publishes an intent",
            observer.publish_intent(&intent("x3", "beta"), ContentType::Json, None),
        )
        .boxed_local(),
        refused(
            "the observer publishes an event",
            observer.publish_outcome(&outcome("beta"), ContentType::Json, None),
        )
        .boxed_local(),
        refused(
            "the observer writes a registry key",
            as_observer.registry.put(&record("beta")),
        )
        .boxed_local(),
        refused(
            "the observer writes a rollout",
            as_observer.rollouts.create(&rollout("r3")),
        )
        .boxed_local(),
    ])
    .await;
    for subject in [
        "coxswain.intent.prod.web",
        "coxswain.event.prod.web",
        "$JS.API.CONSUMER.CREATE.COXSWAIN_INTENTS.agent-prod.coxswain.intent.prod.>",
        "$KV.coxswain-clusters.prod",
        "$KV.coxswain-state.prod.web",
        "$JS.API.DIRECT.GET.COXSWAIN_INTENTS.coxswain.intent.prod.web",
        "$JS.API.DIRECT.GET.KV_coxswain-state.$KV.coxswain-state.prod.web",
        "$KV.coxswain-rollouts.r2",
        "$KV.coxswain-clusters.beta",
    ] {
        assert!(
            roles.violation(subject),
            "no violation logged for {subject}"
        );
    }
    // The rollup was refused by the stream, and prod's state is still there.
    assert!(
        as_observer
            .states
            .get("prod", "web")
            .await
            .unwrap()
            .is_some(),
        "the rollup wiped prod's state"
    );
    assert_eq!(as_observer.rollouts.all().await.unwrap().len(), 1);
    assert_eq!(
        bus::events::stored_events(&observer, &EventQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_added_later_gets_in_after_a_reload() {
    let (roles, _) = Roles::start("beta");
    let keys = roles.keys();
    let before = std::fs::read_to_string(keys.join("nats-server.conf")).unwrap();
    let added = coxswain_ok(&[
        "auth",
        "add-cluster",
        "--dir",
        keys.to_str().unwrap(),
        "gamma",
    ]);
    assert!(added.contains("--signal reload="), "{added}");
    let after = std::fs::read_to_string(keys.join("nats-server.conf")).unwrap();
    // Every existing user kept its key.
    for line in before.lines().filter(|l| l.trim().starts_with("nkey:")) {
        assert!(after.contains(line), "{line} lost");
    }
    assert!(after.contains("# agent-gamma: "));
    let again = tests::coxswain(&[
        "auth",
        "add-cluster",
        "--dir",
        keys.to_str().unwrap(),
        "gamma",
    ]);
    assert!(!again.unwrap().status.success(), "gamma added twice");

    // Not before the server reloads its configuration...
    let gamma = roles.seed("agent-gamma");
    assert!(matches!(
        roles.connect(Some(&gamma)).await,
        Err(BusError::Connect { .. })
    ));
    // ... then in, with its own consumer; beta's connection went on.
    let beta = roles.login("agent-beta").await;
    roles.nats.reload().unwrap();
    let gamma = roles.connect(Some(&gamma)).await.unwrap();
    gamma.open_topology().await.unwrap();
    IntentConsumer::create(&gamma, "gamma", &ConsumerOptions::default())
        .await
        .unwrap();
    beta.publish_outcome(&outcome("beta"), ContentType::Json, None)
        .await
        .unwrap();
    assert!(
        gamma
            .publish_outcome(&outcome("beta"), ContentType::Json, None)
            .await
            .is_err()
    );
}
