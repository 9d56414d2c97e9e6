//! The release engine against the simulator, through the real kube client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy::history::RevisionStatus;
use deploy::{DeployError, Engine, EngineConfig, Progress, Release, Rendered};
use proto::{HealthPolicy, Phase, RollbackPolicy};
use serde_json::{Value, json};
use sim::{Sim, Timing};
use tokio_util::sync::CancellationToken;

fn config(holder: &str) -> EngineConfig {
    EngineConfig {
        holder: holder.into(),
        lease: Duration::from_secs(1),
        lock_wait: Duration::from_secs(10),
        history: 10,
        poll: Duration::from_millis(30),
        probes: probes_to_localhost(),
    }
}

/// The tests' probe servers listen on 127.0.0.1, which the agent's operator would list.
fn probes_to_localhost() -> deploy::ProbePolicy {
    let mut probes = deploy::ProbePolicy::default();
    probes.allow_host("127.0.0.1");
    probes
}

fn deployment(image: &str, deadline: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "progressDeadlineSeconds": deadline,
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}
    })
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}})
}

fn release(version: &str, objects: Vec<Value>) -> Release {
    Release {
        name: "web".into(),
        namespace: "shop".into(),
        version: version.into(),
        intent_id: Some(format!("intent-{version}")),
        rendered: Rendered::from_objects(objects),
        health: HealthPolicy {
            timeout_secs: 20,
            ..Default::default()
        },
        rollback: RollbackPolicy::default(),
        rollback_of: None,
        wait: true,
    }
}

/// Records every phase the engine reports.
#[derive(Default, Clone)]
struct Phases(Arc<Mutex<Vec<Phase>>>);

impl Phases {
    fn observer(&self) -> impl Fn(&Progress) + Send + Sync + 'static {
        let seen = Arc::clone(&self.0);
        move |p: &Progress| seen.lock().unwrap().push(p.phase)
    }
    fn take(&self) -> Vec<Phase> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

async fn get(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: &str,
    name: &str,
) -> Option<Value> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = kube::discovery::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), ns, &ar);
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

fn setup() -> (Sim, kube::Client) {
    let fleet = Sim::new(Timing::fast());
    let cluster = fleet.add_cluster("beta");
    let client = kube::Client::new(sim::router(cluster), "default");
    (fleet, client)
}

#[tokio::test]
async fn a_broken_release_rolls_back_to_the_last_good_revision() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let phases = Phases::default();
    let cancel = CancellationToken::new();

    let v1 = engine
        .deploy(
            release(
                "1.0",
                vec![config_map("settings"), deployment("web:1.0", 30)],
            ),
            &phases.observer(),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!((v1.phase, v1.revision), (Phase::Succeeded, Some(1)));
    assert_eq!(
        phases.take(),
        [Phase::Applying, Phase::Progressing, Phase::Succeeded]
    );

    let v2 = engine
        .deploy(
            release(
                "2.0",
                vec![config_map("settings"), deployment("web:2.0-broken", 30)],
            ),
            &phases.observer(),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!((v2.phase, v2.revision), (Phase::RolledBack, Some(3)));
    assert!(
        v2.reason.as_deref().unwrap().contains("CrashLoopBackOff"),
        "{:?}",
        v2.reason
    );
    assert_eq!(
        phases.take(),
        [
            Phase::Applying,
            Phase::Progressing,
            Phase::Failed,
            Phase::RollingBack,
            Phase::RolledBack
        ]
    );

    let history = engine.history("shop", "web").await.unwrap();
    let summary: Vec<(u32, RevisionStatus, Option<u32>)> = history
        .iter()
        .map(|r| (r.number, r.status, r.rollback_of))
        .collect();
    assert_eq!(
        summary,
        [
            (1, RevisionStatus::Superseded, None),
            (2, RevisionStatus::Failed, None),
            (3, RevisionStatus::Deployed, Some(1))
        ]
    );

    let live = get(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        "shop",
        "web",
    )
    .await
    .unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.0"
    );
    assert_eq!(
        deploy::health::assess(&live).status,
        proto::HealthStatus::Healthy
    );
    assert_eq!(live["metadata"]["labels"]["coxswain.dev/release"], "web");
    // The lock is free again.
    assert!(
        get(
            &client,
            "coordination.k8s.io/v1",
            "Lease",
            "leases",
            "shop",
            "coxswain-lock-web"
        )
        .await
        .is_none()
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn objects_leaving_the_release_are_pruned_after_success_and_kept_after_failure() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let cancel = CancellationToken::new();
    let quiet = |_: &Progress| {};
    let mut kept = config_map("kept");
    kept["metadata"]["annotations"] = json!({"coxswain.dev/keep": "true"});

    engine
        .deploy(
            release(
                "1",
                vec![
                    config_map("a"),
                    config_map("b"),
                    kept,
                    deployment("web:1", 30),
                ],
            ),
            &quiet,
            &cancel,
        )
        .await
        .unwrap();
    let r = engine
        .deploy(
            release("2", vec![config_map("a"), deployment("web:1", 30)]),
            &quiet,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "b")
            .await
            .is_none(),
        "b is pruned"
    );
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "kept")
            .await
            .is_some(),
        "the keep annotation holds"
    );

    // Revision 3 drops `a` and fails: nothing is pruned; the rollback restores revision 2.
    let r = engine
        .deploy(
            release("3", vec![config_map("c"), deployment("web:3-broken", 30)]),
            &quiet,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "a")
            .await
            .is_some(),
        "a survives the failure"
    );
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "c")
            .await
            .is_none(),
        "the failed revision's new object is removed by the rollback"
    );

    // Without rollback the failed revision stays failed and still nothing is pruned.
    let mut no_rollback = release("4", vec![deployment("web:4-broken", 30)]);
    no_rollback.rollback.enabled = false;
    let r = engine.deploy(no_rollback, &quiet, &cancel).await.unwrap();
    assert_eq!(r.phase, Phase::Failed);
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "a")
            .await
            .is_some()
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_crashed_operation_leaves_no_stuck_lock() {
    let (fleet, client) = setup();
    let cancel = CancellationToken::new();
    // The first operation is dropped mid-flight, as when its process dies.
    let crashing_client = client.clone();
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&started);
    let task = tokio::spawn(async move {
        let mut engine = Engine::new(crashing_client, config("agent-crashed"));
        let observe = move |p: &Progress| {
            if p.phase == Phase::Applying {
                signal.notify_one();
            }
        };
        let never = CancellationToken::new();
        let _ = engine
            .deploy(
                release("1", vec![config_map("a"), deployment("web:1-slow", 600)]),
                &observe,
                &never,
            )
            .await;
    });
    started.notified().await;
    task.abort();
    let _ = task.await;
    let lease = get(
        &client,
        "coordination.k8s.io/v1",
        "Lease",
        "leases",
        "shop",
        "coxswain-lock-web",
    )
    .await
    .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "agent-crashed");

    // A second agent waits for the lease to expire, marks the abandoned revision failed, and
    // completes.
    let mut engine = Engine::new(client.clone(), config("agent-new"));
    let quiet = |_: &Progress| {};
    let r = engine
        .deploy(
            release("1b", vec![config_map("a"), deployment("web:1", 30)]),
            &quiet,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!((r.phase, r.revision), (Phase::Succeeded, Some(2)));
    let history = engine.history("shop", "web").await.unwrap();
    assert_eq!(history[0].status, RevisionStatus::Failed);
    assert!(
        history[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("abandoned"),
        "{:?}",
        history[0].reason
    );
    assert_eq!(history[1].status, RevisionStatus::Deployed);
    assert!(
        get(
            &client,
            "coordination.k8s.io/v1",
            "Lease",
            "leases",
            "shop",
            "coxswain-lock-web"
        )
        .await
        .is_none()
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_concurrent_operation_is_refused_clearly_and_cancellation_supersedes() {
    let (fleet, client) = setup();
    let cancel = CancellationToken::new();
    let running = cancel.clone();
    let busy_client = client.clone();
    let progressing = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&progressing);
    let first = tokio::spawn(async move {
        let mut engine = Engine::new(busy_client, config("agent-a"));
        let observe = move |p: &Progress| {
            if p.phase == Phase::Progressing {
                signal.notify_one();
            }
        };
        engine
            .deploy(
                release("slow", vec![deployment("web:1-slow", 600)]),
                &observe,
                &running,
            )
            .await
    });
    progressing.notified().await;

    let mut impatient = EngineConfig {
        lock_wait: Duration::ZERO,
        ..config("agent-b")
    };
    impatient.lease = Duration::from_secs(5);
    let mut other = Engine::new(client.clone(), impatient);
    let err = other
        .deploy(
            release("other", vec![config_map("x")]),
            &|_: &Progress| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeployError::Locked { holder, .. } if holder == "agent-a"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("release web is locked by agent-a until"),
        "{err}"
    );

    // A newer intent cancels the running one during its health wait: superseded, no rollback.
    cancel.cancel();
    let report = first.await.unwrap().unwrap();
    assert_eq!(report.phase, Phase::Superseded);
    let history = other.history("shop", "web").await.unwrap();
    assert_eq!(history.last().unwrap().status, RevisionStatus::Superseded);
    assert_eq!(history.len(), 1, "no rollback revision");
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_crd_and_its_custom_resource_apply_in_one_release_and_intents_are_idempotent() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let cancel = CancellationToken::new();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}
    });
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gizmo"}, "spec": {"size": 3}});
    // The custom resource comes first in the file; install order puts the CRD before it.
    let r = engine
        .deploy(release("1", vec![widget, crd]), &|_: &Progress| {}, &cancel)
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded);
    let live = get(
        &client,
        "example.com/v1",
        "Widget",
        "widgets",
        "shop",
        "gizmo",
    )
    .await
    .unwrap();
    assert_eq!(live["spec"]["size"], 3);

    // The same intent again: replayed from history, nothing applied, no new revision.
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gizmo"}, "spec": {"size": 9}});
    let again = engine
        .deploy(release("1", vec![widget]), &|_: &Progress| {}, &cancel)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!((again.phase, again.revision), (Phase::Succeeded, Some(1)));
    assert_eq!(engine.history("shop", "web").await.unwrap().len(), 1);
    assert_eq!(
        get(
            &client,
            "example.com/v1",
            "Widget",
            "widgets",
            "shop",
            "gizmo"
        )
        .await
        .unwrap()["spec"]["size"],
        3
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn test_jobs_run_after_the_rollout_and_a_failing_test_rolls_back() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let cancel = CancellationToken::new();
    let test_job = |image: &str| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "smoke", "annotations": {"coxswain.dev/test": "true"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": image}]}}}
        })
    };
    let phases = Phases::default();
    let r = engine
        .deploy(
            release("1", vec![deployment("web:1", 30), test_job("smoke:1")]),
            &phases.observer(),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded);
    let job = get(&client, "batch/v1", "Job", "jobs", "shop", "smoke")
        .await
        .unwrap();
    assert_eq!(
        deploy::health::assess(&job).status,
        proto::HealthStatus::Healthy
    );

    let r = engine
        .deploy(
            release(
                "2",
                vec![deployment("web:2", 30), test_job("smoke:2-broken")],
            ),
            &phases.observer(),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("test smoke failed"),
        "{:?}",
        r.reason
    );
    let live = get(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        "shop",
        "web",
    )
    .await
    .unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_deadline_fails_the_release_and_a_failing_rollback_ends_rollback_failed() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let cancel = CancellationToken::new();
    let phases = Phases::default();

    // Revision 1 is recorded deployed without waiting, although its pods are slow.
    let mut slow = release("1", vec![deployment("web:1-slow", 600)]);
    slow.wait = false;
    assert_eq!(
        engine
            .deploy(slow, &phases.observer(), &cancel)
            .await
            .unwrap()
            .phase,
        Phase::Succeeded
    );
    phases.take();

    // Revision 2 is slow too: the 2 s release deadline passes; the rollback to revision 1
    // gets a deadline of its own, cannot become healthy either, and ends rollback_failed.
    let mut r2 = release("2", vec![deployment("web:2-slow", 600)]);
    r2.health.timeout_secs = 2;
    let report = engine
        .deploy(r2, &phases.observer(), &cancel)
        .await
        .unwrap();
    assert_eq!(report.phase, Phase::RollbackFailed);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .starts_with("rollback did not become healthy: health deadline passed"),
        "{:?}",
        report.reason
    );
    assert_eq!(
        phases.take(),
        [
            Phase::Applying,
            Phase::Progressing,
            Phase::Failed,
            Phase::RollingBack,
            Phase::RollbackFailed
        ]
    );
    let statuses: Vec<RevisionStatus> = engine
        .history("shop", "web")
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [
            RevisionStatus::Deployed,
            RevisionStatus::Failed,
            RevisionStatus::Failed
        ]
    );
    fleet.shutdown().await;
}

/// An HTTP server that answers 503 to everything and signals its first request.
async fn unavailable(asked: Arc<tokio::sync::Notify>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            asked.notify_one();
            let _ = s
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    format!("http://{addr}/healthz")
}

#[tokio::test]
async fn a_release_cancelled_while_probing_is_superseded_promptly_without_rollback() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let quiet = |_: &Progress| {};
    let v1 = engine
        .deploy(
            release("1", vec![deployment("web:1", 30)]),
            &quiet,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(v1.phase, Phase::Succeeded);

    let asked = Arc::new(tokio::sync::Notify::new());
    let mut probed = release("2", vec![deployment("web:2", 30)]);
    probed.health.timeout_secs = 60;
    probed.health.http_probes = vec![proto::HttpProbe {
        url: unavailable(Arc::clone(&asked)).await,
        successes: 1,
        timeout_ms: 500,
    }];
    let cancel = CancellationToken::new();
    let running = cancel.clone();
    let task = tokio::spawn(async move { engine.deploy(probed, &quiet, &running).await });
    asked.notified().await;
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("a cancelled probe stops within seconds, not at the 60 s deadline")
        .unwrap()
        .unwrap();
    assert_eq!(report.phase, Phase::Superseded);
    let statuses: Vec<RevisionStatus> = Engine::new(client, config("reader"))
        .history("shop", "web")
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [RevisionStatus::Deployed, RevisionStatus::Superseded],
        "no rollback revision"
    );
    fleet.shutdown().await;
}

/// Defect: at 50% API errors every new intent failed in discovery, which had to succeed in
/// one pass. Now each kind is discovered with one small request, retried like any call.
#[tokio::test]
async fn discovery_retries_like_every_other_api_call() {
    let fleet = Sim::new(Timing::fast());
    let cluster = fleet.add_cluster("beta");
    let client = kube::Client::new(sim::router(cluster.clone()), "default");
    cluster.set_faults(sim::Faults {
        error_rate: 0.5,
        ..Default::default()
    });
    let mut engine = Engine::new(client, config("agent-beta"));
    let phases = Phases::default();
    let report = engine
        .deploy(
            release(
                "1.0",
                vec![config_map("settings"), deployment("web:1.0", 30)],
            ),
            &phases.observer(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{report:?}");
}

/// A history Secret of release `web` in `shop` holding `body` gzip + base64, with `type`.
fn history_secret(name: &str, secret_type: &str, gz: &[u8]) -> Value {
    use base64::Engine as _;
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"owner": "coxswain", "name": "web", "status": "deployed"}},
        "type": secret_type,
        "data": {"release": base64::engine::general_purpose::STANDARD.encode(gz)}})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn forged_history_cannot_steer_prune_and_a_gzip_bomb_is_skipped() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let cancel = CancellationToken::new();
    let quiet = |_: &Progress| {};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let r = engine
        .deploy(
            release("1", vec![config_map("a"), deployment("web:1", 30)]),
            &quiet,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded);
    let cluster = deploy::Cluster::new(client.clone());
    // Someone else's ConfigMap, without the release's labels.
    cluster
        .apply(&config_map("foreign"), "shop", false, deadline)
        .await
        .unwrap();
    // The release `web` of another namespace owns its own ConfigMap.
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-2"}});
    cluster
        .apply(&namespace, "shop-2", false, deadline)
        .await
        .unwrap();
    let mut twin = config_map("twin");
    twin["metadata"]["labels"] =
        json!({deploy::MANAGED_BY: "coxswain", deploy::RELEASE_LABEL: "web"});
    twin["metadata"]["annotations"] = json!({deploy::RELEASE_NAMESPACE: "shop-2"});
    cluster
        .apply(&twin, "shop-2", false, deadline)
        .await
        .unwrap();
    // A forged inventory in the deployed revision's own record names both.
    let mut history = engine.history("shop", "web").await.unwrap();
    let mut forged = history.pop().unwrap();
    for (namespace, name) in [("shop", "foreign"), ("shop-2", "twin")] {
        forged.inventory.push(deploy::ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        });
    }
    deploy::history::save(&client, &forged, deadline)
        .await
        .unwrap();
    // A Secret with the labels but not the record type, claiming a newer deployed revision.
    let mut untyped = forged.clone();
    untyped.number = 7;
    let json = serde_json::to_vec(&untyped).unwrap();
    let opaque = history_secret("coxswain.release.v1.web.v7", "Opaque", &gzip(&json));
    cluster
        .apply(&opaque, "shop", false, deadline)
        .await
        .unwrap();
    // A gzip bomb with the right type and labels: 64 MiB of zeros in about 64 KiB.
    let bomb = history_secret(
        "coxswain.release.v1.web.v8",
        deploy::history::RECORD_TYPE,
        &gzip(&vec![0u8; 64 * 1024 * 1024]),
    );
    cluster.apply(&bomb, "shop", false, deadline).await.unwrap();

    let history = engine.history("shop", "web").await.unwrap();
    let numbers: Vec<u32> = history.iter().map(|r| r.number).collect();
    assert_eq!(
        numbers,
        [1],
        "the untyped Secret and the bomb are not records"
    );

    // The next revision drops nothing of its own; `foreign` leaves the forged inventory.
    let r = engine
        .deploy(
            release("2", vec![config_map("a"), deployment("web:2", 30)]),
            &quiet,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!((r.phase, r.revision), (Phase::Succeeded, Some(2)));
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "foreign")
            .await
            .is_some(),
        "an object without the release's labels is never pruned"
    );
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop-2", "twin")
            .await
            .is_some(),
        "nor one of the release of the same name in another namespace"
    );
    // A real object that leaves the release is still pruned.
    let r = engine
        .deploy(release("3", vec![deployment("web:3", 30)]), &quiet, &cancel)
        .await
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(
        get(&client, "v1", "ConfigMap", "configmaps", "shop", "a")
            .await
            .is_none(),
        "the release's own object is pruned"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn secret_values_never_reach_progress_events() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let cancel = CancellationToken::new();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let observe = move |p: &Progress| log.lock().unwrap().push(format!("{p:?}"));
    let secret = |data: Value| {
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db"}, "data": data})
    };
    // "old-s3cret", then "new-s3cret" with a broken rollout (reasons, resources, rollback).
    let releases = [
        release(
            "1",
            vec![
                secret(json!({"password": "b2xkLXMzY3JldA=="})),
                deployment("web:1", 30),
            ],
        ),
        release(
            "2",
            vec![
                secret(json!({"password": "bmV3LXMzY3JldA=="})),
                deployment("web:2-broken", 30),
            ],
        ),
        // Not base64: an apply the server may refuse, quoting the value in its error.
        release(
            "3",
            vec![
                secret(json!({"password": "raw s3cret!"})),
                deployment("web:3", 30),
            ],
        ),
    ];
    for r in releases {
        engine.deploy(r, &observe, &cancel).await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() > 6, "{seen:?}");
    for event in seen.iter() {
        for value in ["b2xkLXMzY3JldA", "bmV3LXMzY3JldA", "s3cret"] {
            assert!(!event.contains(value), "{value} in {event}");
        }
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_probe_aimed_outside_the_release_is_refused_before_anything_is_applied() {
    let (fleet, client) = setup();
    let mut engine = Engine::new(client.clone(), config("agent-beta"));
    let mut aimed = release("1", vec![config_map("settings")]);
    aimed.health.http_probes = vec![proto::HttpProbe {
        url: "http://169.254.169.254/latest/meta-data/".into(),
        successes: 1,
        timeout_ms: 500,
    }];
    let phases = Phases::default();
    let err = engine
        .deploy(aimed, &phases.observer(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, DeployError::ProbeRefused(_)), "{err}");
    assert!(err.to_string().contains("169.254.169.254"), "{err}");
    assert!(err.to_string().contains("--probe-allow"), "{err}");
    assert!(phases.take().is_empty(), "no phase reached");
    let history = Engine::new(client, config("reader"))
        .history("shop", "web")
        .await
        .unwrap();
    assert!(history.is_empty(), "nothing recorded: {history:?}");
    fleet.shutdown().await;
}
