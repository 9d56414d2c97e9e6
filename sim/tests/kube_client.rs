//! The simulator through the real kube client: discovery, server-side apply, lists, watches,
//! errors, and workloads moving through their rollouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sim::{Cluster, Sim, Timing};

fn client(cluster: &Arc<Cluster>) -> Client {
    Client::new(sim::router(Arc::clone(cluster)), "default")
}

async fn api(client: &Client, group: &str, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.group == group && ar.kind == kind)
        .unwrap_or_else(|| panic!("{group}/{kind} not discovered"));
    match (caps.scope, ns) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        (Scope::Namespaced, None) => Api::all_with(client.clone(), &ar),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    }
}

fn apply() -> PatchParams {
    PatchParams::apply("coxswain-test").force()
}

async fn namespace(client: &Client, name: &str) {
    let ns = api(client, "", "Namespace", None).await;
    ns.patch(
        name,
        &apply(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
    )
    .await
    .unwrap();
}

fn deployment(name: &str, image: &str, replicas: i64, deadline: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, "team": "shop"}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "main", "image": image}]}}
        }
    })
}

/// Polls until `check` holds for the object, or fails after `within`.
async fn wait_until(
    api: &Api<DynamicObject>,
    name: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let object = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        if check(&object) {
            return object;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {within:?}: {object:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

#[tokio::test]
async fn discovery_lists_builtins_and_custom_resources_once_their_crd_exists() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for (group, kind, plural) in [
        ("", "ConfigMap", "configmaps"),
        ("apps", "Deployment", "deployments"),
        ("batch", "CronJob", "cronjobs"),
        ("networking.k8s.io", "Ingress", "ingresses"),
        ("rbac.authorization.k8s.io", "ClusterRole", "clusterroles"),
        ("policy", "PodDisruptionBudget", "poddisruptionbudgets"),
        (
            "autoscaling",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    ] {
        let found = discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .any(|(ar, _)| ar.group == group && ar.kind == kind && ar.plural == plural);
        assert!(found, "{group}/{kind}");
    }
    assert!(!discovery.has_group("example.com"));

    let crds = api(
        &client,
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        None,
    )
    .await;
    crds.patch(
        "widgets.example.com",
        &apply(),
        &Patch::Apply(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]}
        })),
    )
    .await
    .unwrap();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("example.com"));
    namespace(&client, "shop").await;
    let widgets = api(&client, "example.com", "Widget", Some("shop")).await;
    widgets
        .patch("gizmo", &apply(), &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gizmo"}, "spec": {"size": 3}})))
        .await
        .unwrap();
    assert_eq!(widgets.get("gizmo").await.unwrap().data["spec"]["size"], 3);
    fleet.shutdown().await;
}

#[tokio::test]
async fn forced_apply_list_by_label_and_a_watch_through_a_rollout() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    namespace(&client, "shop").await;
    let deploys = api(&client, "apps", "Deployment", Some("shop")).await;

    let start = deploys.list(&ListParams::default()).await.unwrap();
    let rv = start.metadata.resource_version.clone().unwrap();
    let mut events = deploys
        .watch(&WatchParams::default().labels("team=shop"), &rv)
        .await
        .unwrap()
        .boxed();

    deploys
        .patch(
            "web",
            &apply(),
            &Patch::Apply(deployment("web", "web:1.0", 2, 600)),
        )
        .await
        .unwrap();
    deploys.patch("other", &apply(), &Patch::Apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "other", "labels": {"team": "else"}},
        "spec": {"selector": {"matchLabels": {"app": "o"}},
                 "template": {"metadata": {"labels": {"app": "o"}}, "spec": {"containers": [{"name": "c", "image": "o:1"}]}}}
    }))).await.unwrap();

    let listed = deploys
        .list(&ListParams::default().labels("team=shop"))
        .await
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|d| d.name_any())
            .collect::<Vec<_>>(),
        ["web"]
    );

    // ADDED, then MODIFIED events until the status reports both replicas ready.
    let mut seen_added = false;
    let mut ready_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready_seen {
        let event = tokio::time::timeout_at(deadline, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            WatchEvent::Added(d) => {
                assert_eq!(d.name_any(), "web");
                seen_added = true;
            }
            WatchEvent::Modified(d) => {
                assert_eq!(d.name_any(), "web", "the label selector filters the watch");
                ready_seen = d.data["status"]["readyReplicas"] == 2;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen_added);

    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout_at(deadline, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WatchEvent::Deleted(d) = event {
            assert_eq!(d.name_any(), "web");
            break;
        }
    }
    // Garbage collection took the ReplicaSets and Pods with it.
    let pods = api(&client, "", "Pod", Some("shop")).await;
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(left.iter().all(|p| !p.starts_with("web-")), "{left:?}");
    fleet.shutdown().await;
}

#[tokio::test]
async fn error_paths_carry_the_real_codes() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    let cms = api(&client, "", "ConfigMap", Some("default")).await;
    let code = |e: kube::Error| match e {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("not an API error: {other:?}"),
    };

    let created: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}
    }))
    .unwrap();
    let first = cms.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(
        code(
            cms.create(&PostParams::default(), &created)
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );

    // Stale resourceVersion: 409 Conflict.
    let mut changed = first.clone();
    changed.data["data"]["a"] = json!("2");
    cms.replace("cfg", &PostParams::default(), &changed)
        .await
        .unwrap();
    let mut stale = first.clone();
    stale.data["data"]["a"] = json!("3");
    assert_eq!(
        code(
            cms.replace("cfg", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );

    // No name: 422 Invalid.
    let nameless: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}))
            .unwrap();
    assert_eq!(
        code(
            cms.create(&PostParams::default(), &nameless)
                .await
                .unwrap_err()
        ),
        (422, "Invalid".into())
    );
    // A name that is no DNS subdomain: 422 as well.
    let bad: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
    )
    .unwrap();
    assert_eq!(
        code(cms.create(&PostParams::default(), &bad).await.unwrap_err()),
        (422, "Invalid".into())
    );

    // Missing namespace: 404 NotFound, for create and for apply.
    let elsewhere = api(&client, "", "ConfigMap", Some("nowhere")).await;
    assert_eq!(
        code(
            elsewhere
                .create(&PostParams::default(), &created)
                .await
                .unwrap_err()
        ),
        (404, "NotFound".into())
    );
    let applied = elsewhere
        .patch(
            "cfg",
            &apply(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(code(applied), (404, "NotFound".into()));
    assert_eq!(
        code(cms.get("absent").await.unwrap_err()),
        (404, "NotFound".into())
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn apply_conflicts_unless_forced_and_removes_fields_no_longer_applied() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    let cms = api(&client, "", "ConfigMap", Some("default")).await;
    let cm = |data: Value| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": data}),
        )
    };
    let mine = PatchParams::apply("coxswain");
    cms.patch("cfg", &mine, &cm(json!({"a": "1", "b": "2"})))
        .await
        .unwrap();
    // Another manager takes `a` by force; a plain re-apply by us now conflicts.
    cms.patch(
        "cfg",
        &PatchParams::apply("someone").force(),
        &cm(json!({"a": "9"})),
    )
    .await
    .unwrap();
    let err = cms
        .patch("cfg", &mine, &cm(json!({"a": "1", "b": "2"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.message.contains("conflict with \"someone\"")),
        "{err:?}"
    );
    // Forced, and without `b`: `a` is ours again, `b` is gone.
    let after = cms
        .patch("cfg", &mine.clone().force(), &cm(json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(after.data["data"], json!({"a": "1"}));
    // Dry run changes nothing.
    let dry = cms
        .patch(
            "cfg",
            &PatchParams::apply("coxswain").force().dry_run(),
            &cm(json!({"a": "dry"})),
        )
        .await
        .unwrap();
    assert_eq!(dry.data["data"]["a"], "dry");
    assert_eq!(cms.get("cfg").await.unwrap().data["data"]["a"], "1");
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_broken_image_crash_loops_and_exceeds_the_progress_deadline() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    namespace(&client, "shop").await;
    let deploys = api(&client, "apps", "Deployment", Some("shop")).await;
    deploys
        .patch(
            "web",
            &apply(),
            &Patch::Apply(deployment("web", "web:1.0", 2, 30)),
        )
        .await
        .unwrap();
    wait_until(&deploys, "web", Duration::from_secs(10), |d| {
        condition(d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable")
    })
    .await;

    deploys
        .patch(
            "web",
            &apply(),
            &Patch::Apply(deployment("web", "web:2.0-broken", 2, 30)),
        )
        .await
        .unwrap();
    let failed = wait_until(&deploys, "web", Duration::from_secs(10), |d| {
        condition(d, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded")
    })
    .await;
    assert_eq!(failed["status"]["observedGeneration"], 2);
    assert_eq!(
        failed["status"]["readyReplicas"], 2,
        "the old pods keep serving"
    );
    let pods = api(&client, "", "Pod", Some("shop")).await;
    let crashing = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.data["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "CrashLoopBackOff"
        })
        .count();
    assert_eq!(crashing, 2);

    // Rolling back to the good template completes again.
    deploys
        .patch(
            "web",
            &apply(),
            &Patch::Apply(deployment("web", "web:1.0", 2, 30)),
        )
        .await
        .unwrap();
    let back = wait_until(&deploys, "web", Duration::from_secs(10), |d| {
        condition(d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable")
            && d["status"]["replicas"] == 2
    })
    .await;
    assert_eq!(back["status"]["observedGeneration"], 3);
    fleet.shutdown().await;
}

#[tokio::test]
async fn statefulsets_daemonsets_and_jobs_roll_out() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    namespace(&client, "data").await;
    let template = |image: &str| json!({"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}});

    let sts = api(&client, "apps", "StatefulSet", Some("data")).await;
    let sts_spec = |image: &str, partition: i64| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                     "template": template(image)}
        })
    };
    sts.patch("db", &apply(), &Patch::Apply(sts_spec("db:1", 0)))
        .await
        .unwrap();
    let ready = wait_until(&sts, "db", Duration::from_secs(10), |s| {
        s["status"]["readyReplicas"] == 3
    })
    .await;
    let first_rev = ready["status"]["updateRevision"].clone();
    assert_eq!(ready["status"]["currentRevision"], first_rev);
    // Partition 2: only ordinal 2 moves to the new revision.
    sts.patch("db", &apply(), &Patch::Apply(sts_spec("db:2", 2)))
        .await
        .unwrap();
    let partial = wait_until(&sts, "db", Duration::from_secs(10), |s| {
        s["status"]["updatedReplicas"] == 1
            && s["status"]["readyReplicas"] == 3
            && s["status"]["observedGeneration"] == 2
    })
    .await;
    assert_ne!(partial["status"]["updateRevision"], first_rev);
    assert_eq!(partial["status"]["currentRevision"], first_rev);

    let ds = api(&client, "apps", "DaemonSet", Some("data")).await;
    ds.patch(
        "agent",
        &apply(),
        &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "template": template("agent:1")}
        })),
    )
    .await
    .unwrap();
    wait_until(&ds, "agent", Duration::from_secs(10), |d| {
        d["status"]["numberReady"] == 2 && d["status"]["desiredNumberScheduled"] == 2
    })
    .await;

    let jobs = api(&client, "batch", "Job", Some("data")).await;
    let job = |name: &str, image: &str| {
        Patch::Apply(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}
        }))
    };
    jobs.patch("migrate", &apply(), &job("migrate", "migrate:1"))
        .await
        .unwrap();
    jobs.patch("doomed", &apply(), &job("doomed", "migrate:1-broken"))
        .await
        .unwrap();
    wait_until(&jobs, "migrate", Duration::from_secs(10), |j| {
        condition(j, "Complete").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let failed = wait_until(&jobs, "doomed", Duration::from_secs(10), |j| {
        condition(j, "Failed").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        condition(&failed, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(failed["status"]["failed"], 2);
    fleet.shutdown().await;
}

#[tokio::test]
async fn served_over_http_with_a_kubeconfig_and_faults_switch_at_run_time() {
    let fleet = Sim::new(Timing::fast());
    let beta = fleet.add_cluster("beta");
    fleet.add_cluster("prod");
    let dir = tempfile::tempdir().unwrap();
    let served = fleet
        .serve("127.0.0.1".parse().unwrap(), Some(dir.path()))
        .await
        .unwrap();
    assert_eq!(served.len(), 2);
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.path().join("beta.yaml")).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    // kube retries 503s with backoff by itself; this test wants to see the fault.
    config.default_retry = false;
    let client = Client::try_from(config).unwrap();
    let ns = api(&client, "", "Namespace", None).await;
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    beta.set_faults(sim::Faults {
        unavailable: true,
        ..Default::default()
    });
    let err = ns.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 503),
        "{err:?}"
    );
    beta.set_faults(sim::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let err = ns.get("default").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 500),
        "{err:?}"
    );
    beta.set_faults(sim::Faults::default());
    ns.get("default").await.unwrap();
    fleet.shutdown().await;
}

#[tokio::test]
async fn server_defaults_survive_a_reapply() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    let svcs = api(&client, "", "Service", Some("default")).await;
    let svc = || {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
    };
    let first = svcs.patch("web", &apply(), &svc()).await.unwrap();
    let ip = first.data["spec"]["clusterIP"].clone();
    assert!(ip.is_string());
    let again = svcs.patch("web", &apply(), &svc()).await.unwrap();
    assert_eq!(
        again.data["spec"]["clusterIP"], ip,
        "the applier does not own the defaulted clusterIP"
    );
    assert_eq!(again.data["spec"]["type"], "ClusterIP");
    fleet.shutdown().await;
}

#[tokio::test]
async fn patches_status_subresource_pull_failures_and_more_faults() {
    let fleet = Sim::new(Timing::fast());
    let beta = fleet.add_cluster("beta");
    let client = client(&beta);
    let cms = api(&client, "", "ConfigMap", Some("default")).await;
    let created: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &created).await.unwrap();
    let merged = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data["data"], json!({"b": "2", "c": "3"}));
    let ops = json!([
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "add", "path": "/data/d", "value": "4"}
    ]);
    let request = axum::http::Request::patch("/api/v1/namespaces/default/configmaps/cfg")
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    let patched: Value = client.request(request).await.unwrap();
    assert_eq!(patched["data"], json!({"b": "20", "c": "3", "d": "4"}));

    // Status goes through its subresource only; the main resource ignores it.
    namespace(&client, "shop").await;
    let deploys = api(&client, "apps", "Deployment", Some("shop")).await;
    deploys
        .patch(
            "pull",
            &apply(),
            &Patch::Apply(deployment("pull", "web:1-missing", 1, 600)),
        )
        .await
        .unwrap();
    let waiting = wait_until(&deploys, "pull", Duration::from_secs(10), |d| {
        d["status"]["observedGeneration"] == 1
    })
    .await;
    assert_eq!(waiting["status"]["updatedReplicas"], 1);
    let ignored = deploys
        .patch(
            "pull",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 99}})),
        )
        .await
        .unwrap();
    assert_ne!(ignored.data["status"]["observedGeneration"], 99);
    let written = deploys
        .patch_status(
            "pull",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"collisionCount": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(written.data["status"]["collisionCount"], 7);
    let pods = api(&client, "", "Pod", Some("shop")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = pods
            .list(&ListParams::default().labels("app=pull"))
            .await
            .unwrap();
        let reason = list.items.first().map(|p| {
            p.data["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone()
        });
        if reason == Some(json!("ImagePullBackOff")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ImagePullBackOff: {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Latency is added to every request; dropped watches end at once.
    beta.set_faults(sim::Faults {
        latency_ms: 150,
        drop_watches: true,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    cms.get("cfg").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    let mut stream = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut events = 0;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        event.unwrap();
        events += 1;
    }
    assert_eq!(
        events, 1,
        "the initial ADDED for cfg, then the watch is dropped"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn revisions_follow_templates_and_an_undo_reuses_the_old_replica_set() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    namespace(&client, "shop").await;
    let deploys = api(&client, "apps", "Deployment", Some("shop")).await;
    let sets = api(&client, "apps", "ReplicaSet", Some("shop")).await;
    let revision = |o: &Value| {
        o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let rolled_out = |d: &Value| {
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && condition(d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable")
    };
    for image in ["web:1.0", "web:2.0"] {
        deploys
            .patch(
                "web",
                &apply(),
                &Patch::Apply(deployment("web", image, 2, 600)),
            )
            .await
            .unwrap();
        wait_until(&deploys, "web", Duration::from_secs(10), rolled_out).await;
    }
    let d = serde_json::to_value(deploys.get("web").await.unwrap()).unwrap();
    assert_eq!(revision(&d), "2");

    // What `kubectl rollout undo` writes: the old ReplicaSet's template as typed structs
    // encode it again (with `resources: {}`), which is still the same template.
    let mut template = deployment("web", "web:1.0", 2, 600)["spec"]["template"].clone();
    template["spec"]["containers"][0]["resources"] = json!({});
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": template}})),
        )
        .await
        .unwrap();
    let back = wait_until(&deploys, "web", Duration::from_secs(10), rolled_out).await;
    assert_eq!(revision(&back), "3");
    let by_image: Vec<(String, String)> = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|rs| {
            let rs = serde_json::to_value(rs).unwrap();
            let image = rs["spec"]["template"]["spec"]["containers"][0]["image"].clone();
            (image.as_str().unwrap().to_owned(), revision(&rs))
        })
        .collect();
    assert_eq!(by_image.len(), 2, "{by_image:?}");
    assert!(
        by_image.contains(&("web:1.0".into(), "3".into())),
        "{by_image:?}"
    );
    assert!(
        by_image.contains(&("web:2.0".into(), "2".into())),
        "{by_image:?}"
    );

    // The scale subresource.
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app=web")
    );
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_until(&deploys, "web", Duration::from_secs(10), |d| {
        d["spec"]["replicas"] == 3 && d["status"]["readyReplicas"] == 3
    })
    .await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn load_balancers_and_ingresses_get_addresses_and_autoscalers_a_status() {
    let fleet = Sim::new(Timing::fast());
    let client = client(&fleet.add_cluster("beta"));
    namespace(&client, "shop").await;
    let services = api(&client, "", "Service", Some("shop")).await;
    let ingresses = api(&client, "networking.k8s.io", "Ingress", Some("shop")).await;
    let hpas = api(
        &client,
        "autoscaling",
        "HorizontalPodAutoscaler",
        Some("shop"),
    )
    .await;
    let deploys = api(&client, "apps", "Deployment", Some("shop")).await;
    for (name, kind) in [("public", "LoadBalancer"), ("internal", "ClusterIP")] {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": "web"}, "ports": [{"port": 80}]}});
        services
            .patch(name, &apply(), &Patch::Apply(service))
            .await
            .unwrap();
    }
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web"}, "spec": {"rules": [{"host": "shop.example.com"}]}});
    ingresses
        .patch("web", &apply(), &Patch::Apply(ingress))
        .await
        .unwrap();
    deploys
        .patch(
            "web",
            &apply(),
            &Patch::Apply(deployment("web", "web:1.0", 1, 600)),
        )
        .await
        .unwrap();
    for (name, target) in [("web", "web"), ("typo", "wbe")] {
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name}, "spec": {"minReplicas": 2, "maxReplicas": 5,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}}});
        hpas.patch(name, &apply(), &Patch::Apply(hpa))
            .await
            .unwrap();
    }

    let address = |o: &Value| o["status"]["loadBalancer"]["ingress"][0]["ip"].is_string();
    let within = Duration::from_secs(10);
    wait_until(&services, "public", within, address).await;
    wait_until(&ingresses, "web", within, address).await;
    let internal = wait_until(&services, "internal", within, |_| true).await;
    assert!(!address(&internal), "{internal:#}");

    let web = wait_until(&hpas, "web", within, |h| {
        condition(h, "ScalingActive").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(web["status"]["currentReplicas"], 1);
    assert_eq!(web["status"]["desiredReplicas"], 2);
    assert_eq!(
        condition(&web, "ScalingLimited").unwrap()["reason"],
        "TooFewReplicas"
    );
    let typo = wait_until(&hpas, "typo", within, |h| {
        condition(h, "AbleToScale").is_some()
    })
    .await;
    let able = condition(&typo, "AbleToScale").unwrap();
    assert_eq!(
        (&able["status"], &able["reason"]),
        (&json!("False"), &json!("FailedGetScale"))
    );
    fleet.shutdown().await;
}
