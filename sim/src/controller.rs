//! The controllers and the kubelet of a virtual cluster: Deployments make ReplicaSets, which
//! make Pods; StatefulSets, DaemonSets and Jobs make Pods; Pods start, crash or hang according
//! to their behaviour; every workload's status is written the way the real controllers write it.
//!
//! `reconcile` is synchronous: one pass over the store, under the cluster's lock. It returns
//! the next moment something is due to change by itself (a pod becoming ready, a deadline).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::behavior::{self, Behavior};
use crate::resource::{ResourceType, fnv_hex};
use crate::store::{Store, suffix};

/// The simulated nodes; a DaemonSet runs one pod on each.
pub const NODES: [&str; 2] = ["sim-node-0", "sim-node-1"];

/// Annotation with the delay, in milliseconds, after which a pod becomes ready.
const READY_AFTER: &str = "sim.coxswain.dev/ready-after-ms";

/// How fast simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From pod creation to Ready.
    pub pod_ready: Duration,
    /// How long one simulated second lasts (progress deadlines are in seconds).
    pub second: Duration,
    /// How long a deleted namespace stays Terminating before it and its contents are gone.
    pub namespace_grace: Duration,
}

impl Timing {
    /// Milliseconds: for tests.
    pub fn fast() -> Self {
        Self {
            pod_ready: Duration::from_millis(50),
            second: Duration::from_millis(20),
            namespace_grace: Duration::from_secs(1),
        }
    }

    /// Seconds: for the demo, where a person watches.
    pub fn demo() -> Self {
        Self {
            pod_ready: Duration::from_millis(1500),
            second: Duration::from_secs(1),
            namespace_grace: Duration::from_secs(2),
        }
    }

    fn seconds(&self, n: u64) -> Duration {
        self.second
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// What the controllers remember between passes (a real controller keeps it in its caches).
#[derive(Debug, Default)]
pub struct Memory {
    pods: HashMap<String, Instant>,
    terminating: HashMap<String, Instant>,
    progress: HashMap<String, Progress>,
}

#[derive(Debug, Clone, PartialEq)]
struct Progress {
    generation: i64,
    counts: (i64, i64, i64),
    last: Instant,
}

/// Types the controllers work with, looked up once per pass.
struct Types {
    pod: ResourceType,
    rs: ResourceType,
    deploy: ResourceType,
    sts: ResourceType,
    ds: ResourceType,
    job: ResourceType,
}

/// One pass of every controller. Returns when the next change falls due by itself.
pub fn reconcile(
    store: &mut Store,
    memory: &mut Memory,
    timing: &Timing,
    now: Instant,
) -> Option<Instant> {
    let types = Types {
        pod: store.find_kind("", "Pod")?,
        rs: store.find_kind("apps", "ReplicaSet")?,
        deploy: store.find_kind("apps", "Deployment")?,
        sts: store.find_kind("apps", "StatefulSet")?,
        ds: store.find_kind("apps", "DaemonSet")?,
        job: store.find_kind("batch", "Job")?,
    };
    let mut next: Option<Instant> = None;
    namespaces(store, memory, timing, now, &mut next);
    pods(store, memory, timing, &types, now, &mut next);
    deployments(store, timing, &types);
    replica_sets(store, timing, &types);
    stateful_sets(store, timing, &types);
    daemon_sets(store, timing, &types);
    jobs(store, timing, &types);
    deployment_status(store, memory, timing, &types, now, &mut next);
    next
}

/// The namespace controller: a Terminating namespace goes, with its contents, after a grace.
fn namespaces(
    store: &mut Store,
    memory: &mut Memory,
    timing: &Timing,
    now: Instant,
    next: &mut Option<Instant>,
) {
    let Some(rt) = store.find_kind("", "Namespace") else {
        return;
    };
    let terminating: Vec<String> = store
        .scan(&rt)
        .filter(|n| !n["metadata"]["deletionTimestamp"].is_null())
        .map(|n| meta(n, "uid").to_owned())
        .collect();
    memory
        .terminating
        .retain(|uid, _| terminating.contains(uid));
    let mut due = Vec::new();
    for uid in terminating {
        let since = *memory.terminating.entry(uid.clone()).or_insert(now);
        if now >= since + timing.namespace_grace {
            due.push(uid);
        } else {
            earliest(next, since + timing.namespace_grace);
        }
    }
    if !due.is_empty() {
        store.finalize_namespaces(&due);
    }
}

fn earliest(next: &mut Option<Instant>, at: Instant) {
    *next = Some(next.map_or(at, |n| n.min(at)));
}

fn meta<'a>(o: &'a Value, field: &str) -> &'a str {
    o["metadata"][field].as_str().unwrap_or_default()
}

fn owned(store: &Store, rt: &ResourceType, uid: &str) -> Vec<Value> {
    store
        .scan(rt)
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .cloned()
        .collect()
}

fn owner_ref(owner: &Value, rt: &ResourceType) -> Value {
    json!([{
        "apiVersion": rt.api_version(),
        "kind": rt.kind,
        "name": meta(owner, "name"),
        "uid": meta(owner, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

fn template_hash(template: &Value) -> String {
    fnv_hex(template.to_string().as_bytes())[..10].to_owned()
}

/// A new pod from a template, owned by `owner`, with its behaviour and ready delay fixed now.
#[allow(
    clippy::too_many_arguments,
    reason = "each pod-making controller passes its own"
)]
fn new_pod(
    template: &Value,
    name: String,
    ns: &str,
    owner: &Value,
    owner_rt: &ResourceType,
    extra_labels: &[(&str, String)],
    behavior: Behavior,
    ready_after: Duration,
) -> Value {
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_owned(), v.clone().into());
    }
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(behavior::ANNOTATION.into(), behavior.word().into());
    annotations.insert(
        READY_AFTER.into(),
        ready_after.as_millis().to_string().into(),
    );
    let mut spec = template["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owner_ref(owner, owner_rt),
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    })
}

fn pod_behavior(pod: &Value) -> Behavior {
    let as_template = json!({"metadata": pod["metadata"].clone(), "spec": pod["spec"].clone()});
    behavior::of_template(&as_template, &Value::Null)
}

/// The kubelet: each pod's status follows from its behaviour and age.
fn pods(
    store: &mut Store,
    memory: &mut Memory,
    timing: &Timing,
    t: &Types,
    now: Instant,
    next: &mut Option<Instant>,
) {
    let all: Vec<Value> = store.scan(&t.pod).cloned().collect();
    memory
        .pods
        .retain(|uid, _| all.iter().any(|p| meta(p, "uid") == uid));
    for pod in all {
        let uid = meta(&pod, "uid").to_owned();
        let created = *memory.pods.entry(uid).or_insert(now);
        let delay = pod["metadata"]["annotations"][READY_AFTER]
            .as_str()
            .and_then(|ms| ms.parse().ok())
            .map_or(timing.pod_ready, Duration::from_millis);
        let is_job = pod["metadata"]["ownerReferences"][0]["kind"] == "Job";
        let behavior = pod_behavior(&pod);
        let elapsed = now.saturating_duration_since(created);
        let started = elapsed >= delay;
        if !started {
            earliest(next, created + delay);
        }
        let status = pod_status(&pod, behavior, started, is_job);
        store.set_status(&t.pod, meta(&pod, "namespace"), meta(&pod, "name"), status);
    }
}

fn pod_status(pod: &Value, behavior: Behavior, started: bool, is_job: bool) -> Value {
    let since = meta(pod, "creationTimestamp");
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let container = |ready: bool, state: Value, restarts: u32| -> Vec<Value> {
        containers
            .iter()
            .map(|c| {
                json!({
                    "name": c["name"], "image": c["image"], "imageID": "",
                    "ready": ready, "started": ready, "restartCount": restarts, "state": state,
                })
            })
            .collect()
    };
    let conditions = |ready: bool, reason: Option<&str>| {
        let status = if ready { "True" } else { "False" };
        let mut ready_cond = json!({"type": "Ready", "status": status});
        let mut containers_cond = json!({"type": "ContainersReady", "status": status});
        if let Some(r) = reason {
            ready_cond["reason"] = r.into();
            containers_cond["reason"] = r.into();
        }
        json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            containers_cond,
            ready_cond,
        ])
    };
    let base = |phase: &str, ready: bool, reason: Option<&str>, statuses: Vec<Value>| {
        json!({
            "phase": phase,
            "conditions": conditions(ready, reason),
            "hostIP": "10.0.0.10",
            "podIP": format!("10.244.0.{}", 2 + fnv_hex(meta(pod, "uid").as_bytes()).as_bytes()[0] % 250),
            "startTime": since,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        })
    };
    let waiting =
        |reason: &str, message: &str| json!({"waiting": {"reason": reason, "message": message}});
    if !started {
        return match behavior {
            Behavior::ImagePull => base(
                "Pending",
                false,
                Some("ContainersNotReady"),
                container(false, waiting("ErrImagePull", "failed to pull image"), 0),
            ),
            _ => base(
                "Pending",
                false,
                Some("ContainersNotReady"),
                container(false, waiting("ContainerCreating", ""), 0),
            ),
        };
    }
    match (behavior, is_job) {
        (Behavior::Healthy | Behavior::Slow, false) => base(
            "Running",
            true,
            None,
            container(true, json!({"running": {"startedAt": since}}), 0),
        ),
        (Behavior::Healthy | Behavior::Slow, true) => base(
            "Succeeded",
            false,
            Some("PodCompleted"),
            container(
                false,
                json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": since, "finishedAt": since}}),
                0,
            ),
        ),
        (Behavior::CrashLoop, false) => {
            let mut statuses = container(
                false,
                waiting(
                    "CrashLoopBackOff",
                    "back-off 10s restarting failed container",
                ),
                3,
            );
            for s in &mut statuses {
                s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": since, "finishedAt": since}});
            }
            base("Running", false, Some("ContainersNotReady"), statuses)
        }
        (Behavior::CrashLoop, true) => base(
            "Failed",
            false,
            Some("PodFailed"),
            container(
                false,
                json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": since, "finishedAt": since}}),
                0,
            ),
        ),
        (Behavior::ImagePull, _) => base(
            "Pending",
            false,
            Some("ContainersNotReady"),
            container(
                false,
                waiting("ImagePullBackOff", "Back-off pulling image"),
                0,
            ),
        ),
    }
}

/// Ready delay of a new pod: the pod-ready delay, or, for a slow one, past `deadline`.
fn ready_after(behavior: Behavior, timing: &Timing, deadline_secs: u64) -> Duration {
    match behavior {
        Behavior::Slow => timing.seconds(deadline_secs) + timing.pod_ready * 2,
        _ => timing.pod_ready,
    }
}

/// Deployment -> ReplicaSet per pod template; old sets scaled down once the new one is ready.
fn deployments(store: &mut Store, timing: &Timing, t: &Types) {
    let all: Vec<Value> = store.scan(&t.deploy).cloned().collect();
    for d in all {
        let (ns, name, uid) = (meta(&d, "namespace"), meta(&d, "name"), meta(&d, "uid"));
        let desired = int(&d["spec"]["replicas"], 1);
        let template = &d["spec"]["template"];
        let hash = template_hash(template);
        let rs_name = format!("{name}-{hash}");
        let behavior = behavior::of_template(template, &d["metadata"]);
        let deadline =
            u64::try_from(int(&d["spec"]["progressDeadlineSeconds"], 600)).unwrap_or(600);
        let sets = owned(store, &t.rs, uid);
        let revision = sets.len() + 1;
        match sets.iter().find(|rs| meta(rs, "name") == rs_name) {
            None => {
                let mut labels = template["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                labels.insert("pod-template-hash".into(), hash.clone().into());
                let mut match_labels = d["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                match_labels.insert("pod-template-hash".into(), hash.clone().into());
                let mut rs_template = template.clone();
                rs_template["metadata"]["labels"] = Value::Object(labels.clone());
                let mut annotations = Map::new();
                annotations.insert(
                    "deployment.kubernetes.io/revision".into(),
                    revision.to_string().into(),
                );
                annotations.insert(behavior::ANNOTATION.into(), behavior.word().into());
                annotations.insert(
                    READY_AFTER.into(),
                    ready_after(behavior, timing, deadline)
                        .as_millis()
                        .to_string()
                        .into(),
                );
                store.put_internal(
                    &t.rs,
                    json!({
                        "metadata": {
                            "name": rs_name, "namespace": ns, "labels": labels,
                            "annotations": annotations, "ownerReferences": owner_ref(&d, &t.deploy),
                        },
                        "spec": {"replicas": desired, "selector": {"matchLabels": match_labels}, "template": rs_template},
                    }),
                );
            }
            Some(rs) if int(&rs["spec"]["replicas"], 1) != desired => {
                let mut rs = rs.clone();
                rs["spec"]["replicas"] = desired.into();
                store.put_internal(&t.rs, rs);
            }
            Some(_) => {}
        }
        let new_ready = owned_pods_ready(store, t, &rs_name, ns);
        if new_ready >= desired {
            for mut old in sets.into_iter().filter(|rs| meta(rs, "name") != rs_name) {
                if int(&old["spec"]["replicas"], 1) != 0 {
                    old["spec"]["replicas"] = 0.into();
                    store.put_internal(&t.rs, old);
                }
            }
        }
    }
}

fn owned_pods_ready(store: &Store, t: &Types, rs_name: &str, ns: &str) -> i64 {
    let Some(rs) = store
        .scan(&t.rs)
        .find(|rs| meta(rs, "name") == rs_name && meta(rs, "namespace") == ns)
    else {
        return 0;
    };
    let uid = meta(rs, "uid").to_owned();
    count(owned(store, &t.pod, &uid).iter().filter(|p| is_ready(p)))
}

fn count<T>(iter: impl Iterator<Item = T>) -> i64 {
    i64::try_from(iter.count()).unwrap_or(i64::MAX)
}

/// ReplicaSet -> Pods.
fn replica_sets(store: &mut Store, timing: &Timing, t: &Types) {
    let all: Vec<Value> = store.scan(&t.rs).cloned().collect();
    for rs in all {
        let (ns, name, uid) = (meta(&rs, "namespace"), meta(&rs, "name"), meta(&rs, "uid"));
        let desired = int(&rs["spec"]["replicas"], 1);
        let mut pods = owned(store, &t.pod, uid);
        let behavior = behavior::of_template(&rs["spec"]["template"], &rs["metadata"]);
        let delay = rs["metadata"]["annotations"][READY_AFTER]
            .as_str()
            .and_then(|ms| ms.parse().ok())
            .map_or_else(|| ready_after(behavior, timing, 600), Duration::from_millis);
        let mut have = count(pods.iter());
        let mut seq = 0u64;
        while have < desired {
            seq += 1;
            let pod_name = format!("{name}-{}", suffix(fnv_seed(uid, have, seq)));
            if pods.iter().any(|p| meta(p, "name") == pod_name) {
                continue;
            }
            let pod = new_pod(
                &rs["spec"]["template"],
                pod_name,
                ns,
                &rs,
                &t.rs,
                &[],
                behavior,
                delay,
            );
            store.put_internal(&t.pod, pod.clone());
            pods.push(pod);
            have += 1;
        }
        if have > desired {
            // Not-ready pods go first, then the newest.
            pods.sort_by_key(|p| {
                (
                    is_ready(p),
                    std::cmp::Reverse(meta(p, "creationTimestamp").to_owned()),
                )
            });
            let extra = usize::try_from(have - desired).unwrap_or(0);
            for p in pods.drain(..extra) {
                let _ = store.delete(&t.pod, Some(ns), meta(&p, "name"), false, false);
            }
        }
        let pods = owned(store, &t.pod, uid);
        let ready = count(pods.iter().filter(|p| is_ready(p)));
        let mut status = json!({
            "replicas": count(pods.iter()),
            "fullyLabeledReplicas": count(pods.iter()),
            "observedGeneration": int(&rs["metadata"]["generation"], 1),
        });
        if ready > 0 {
            status["readyReplicas"] = ready.into();
            status["availableReplicas"] = ready.into();
        }
        store.set_status(&t.rs, ns, name, status);
    }
}

fn fnv_seed(uid: &str, have: i64, seq: u64) -> u64 {
    let h = fnv_hex(format!("{uid}/{have}/{seq}").as_bytes());
    u64::from_str_radix(&h[..12], 16).unwrap_or(seq)
}

/// Deployment status from its ReplicaSets' pods, with the Progressing deadline.
fn deployment_status(
    store: &mut Store,
    memory: &mut Memory,
    timing: &Timing,
    t: &Types,
    now: Instant,
    next: &mut Option<Instant>,
) {
    let all: Vec<Value> = store.scan(&t.deploy).cloned().collect();
    memory
        .progress
        .retain(|uid, _| all.iter().any(|d| meta(d, "uid") == uid));
    for d in all {
        let (ns, name, uid) = (meta(&d, "namespace"), meta(&d, "name"), meta(&d, "uid"));
        let generation = int(&d["metadata"]["generation"], 1);
        let desired = int(&d["spec"]["replicas"], 1);
        let rs_name = format!("{name}-{}", template_hash(&d["spec"]["template"]));
        let (mut total, mut updated, mut ready) = (0, 0, 0);
        for rs in owned(store, &t.rs, uid) {
            let pods = owned(store, &t.pod, meta(&rs, "uid"));
            total += count(pods.iter());
            ready += count(pods.iter().filter(|p| is_ready(p)));
            if meta(&rs, "name") == rs_name {
                updated += count(pods.iter());
            }
        }
        let available = ready;
        let counts = (updated, ready, total);
        let progress = memory.progress.entry(uid.to_owned()).or_insert(Progress {
            generation,
            counts,
            last: now,
        });
        if progress.generation != generation || progress.counts != counts {
            *progress = Progress {
                generation,
                counts,
                last: now,
            };
        }
        let deadline_secs =
            u64::try_from(int(&d["spec"]["progressDeadlineSeconds"], 600)).unwrap_or(600);
        let deadline = progress.last + timing.seconds(deadline_secs);
        let complete = updated == desired && total == desired && available == desired;
        let timed_out = !complete && now >= deadline;
        if !complete && !timed_out {
            earliest(next, deadline);
        }
        let max_unavailable = desired / 4;
        let (available_status, available_reason) = if available >= desired - max_unavailable {
            ("True", "MinimumReplicasAvailable")
        } else {
            ("False", "MinimumReplicasUnavailable")
        };
        let (progressing_status, progressing_reason, message) = if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            )
        } else if timed_out {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        };
        let old = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let conditions = vec![
            condition(
                &old,
                "Available",
                available_status,
                available_reason,
                "Deployment has minimum availability.",
            ),
            condition(
                &old,
                "Progressing",
                progressing_status,
                progressing_reason,
                &message,
            ),
        ];
        let mut status = json!({
            "observedGeneration": generation,
            "replicas": total,
            "updatedReplicas": updated,
            "conditions": conditions,
        });
        if ready > 0 {
            status["readyReplicas"] = ready.into();
            status["availableReplicas"] = available.into();
        }
        if total - available > 0 {
            status["unavailableReplicas"] = (total - available).into();
        }
        store.set_status(&t.deploy, ns, name, status);
    }
}

/// A condition that keeps its timestamps while its status and reason stay the same.
fn condition(old: &[Value], kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let previous = old.iter().find(|c| c["type"] == kind);
    let same = previous
        .is_some_and(|c| c["status"] == status && c["reason"] == reason && c["message"] == message);
    let (transition, update) = match previous {
        Some(c) if same => (c["lastTransitionTime"].clone(), c["lastUpdateTime"].clone()),
        Some(c) if c["status"] == status => {
            (c["lastTransitionTime"].clone(), crate::store::now().into())
        }
        _ => (crate::store::now().into(), crate::store::now().into()),
    };
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": transition, "lastUpdateTime": update,
    })
}

const REVISION_LABEL: &str = "controller-revision-hash";

/// StatefulSet -> ordered pods `<name>-<i>`, rolling update from the highest ordinal down to
/// the partition, or nothing until a pod is deleted (OnDelete).
fn stateful_sets(store: &mut Store, timing: &Timing, t: &Types) {
    let all: Vec<Value> = store.scan(&t.sts).cloned().collect();
    for s in all {
        let (ns, name, uid) = (meta(&s, "namespace"), meta(&s, "name"), meta(&s, "uid"));
        let desired = int(&s["spec"]["replicas"], 1);
        let strategy = &s["spec"]["updateStrategy"];
        let on_delete = strategy["type"] == "OnDelete";
        let partition = int(&strategy["rollingUpdate"]["partition"], 0);
        let update_rev = format!("{name}-{}", template_hash(&s["spec"]["template"]));
        let current_rev = s["status"]["currentRevision"]
            .as_str()
            .map_or_else(|| update_rev.clone(), str::to_owned);
        let behavior = behavior::of_template(&s["spec"]["template"], &s["metadata"]);
        let pods = owned(store, &t.pod, uid);
        let ordinal = |p: &Value| -> Option<i64> {
            meta(p, "name")
                .strip_prefix(&format!("{name}-"))
                .and_then(|i| i.parse().ok())
        };
        for p in pods
            .iter()
            .filter(|p| ordinal(p).is_none_or(|i| i >= desired))
        {
            let _ = store.delete(&t.pod, Some(ns), meta(p, "name"), false, false);
        }
        // Ordered start: the first missing ordinal is created once all before it are ready.
        for i in 0..desired {
            match pods.iter().find(|p| ordinal(p) == Some(i)) {
                Some(p) if is_ready(p) => continue,
                Some(_) => break,
                None => {
                    let pod = new_pod(
                        &s["spec"]["template"],
                        format!("{name}-{i}"),
                        ns,
                        &s,
                        &t.sts,
                        &[
                            (REVISION_LABEL, update_rev.clone()),
                            ("statefulset.kubernetes.io/pod-name", format!("{name}-{i}")),
                        ],
                        behavior,
                        ready_after(behavior, timing, 60),
                    );
                    store.put_internal(&t.pod, pod);
                    break;
                }
            }
        }
        let pods = owned(store, &t.pod, uid);
        let revision = |p: &Value| {
            p["metadata"]["labels"][REVISION_LABEL]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let all_ready =
            count(pods.iter().filter(|p| is_ready(p))) == desired && count(pods.iter()) == desired;
        if !on_delete && all_ready {
            let outdated = pods
                .iter()
                .filter(|p| ordinal(p).is_some_and(|i| i >= partition) && revision(p) != update_rev)
                .max_by_key(|p| ordinal(p));
            if let Some(p) = outdated {
                let _ = store.delete(&t.pod, Some(ns), meta(p, "name"), false, false);
            }
        }
        let pods = owned(store, &t.pod, uid);
        let ready = count(pods.iter().filter(|p| is_ready(p)));
        let updated = count(pods.iter().filter(|p| revision(p) == update_rev));
        let current_rev = if updated == desired {
            update_rev.clone()
        } else {
            current_rev
        };
        let current = count(pods.iter().filter(|p| revision(p) == current_rev));
        let status = json!({
            "observedGeneration": int(&s["metadata"]["generation"], 1),
            "replicas": count(pods.iter()),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        store.set_status(&t.sts, ns, name, status);
    }
}

/// DaemonSet -> one pod per node, replaced one at a time on update (unless OnDelete).
fn daemon_sets(store: &mut Store, timing: &Timing, t: &Types) {
    let all: Vec<Value> = store.scan(&t.ds).cloned().collect();
    for ds in all {
        let (ns, name, uid) = (meta(&ds, "namespace"), meta(&ds, "name"), meta(&ds, "uid"));
        let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
        let update_rev = template_hash(&ds["spec"]["template"]);
        let behavior = behavior::of_template(&ds["spec"]["template"], &ds["metadata"]);
        let pods = owned(store, &t.pod, uid);
        for (i, node) in NODES.iter().enumerate() {
            if !pods.iter().any(|p| p["spec"]["nodeName"] == *node) {
                let seq = u64::try_from(pods.len() + i).unwrap_or(0);
                let mut pod = new_pod(
                    &ds["spec"]["template"],
                    format!(
                        "{name}-{}",
                        suffix(fnv_seed(uid, i64::try_from(i).unwrap_or(0), seq))
                    ),
                    ns,
                    &ds,
                    &t.ds,
                    &[(REVISION_LABEL, update_rev.clone())],
                    behavior,
                    ready_after(behavior, timing, 60),
                );
                pod["spec"]["nodeName"] = (*node).into();
                store.put_internal(&t.pod, pod);
            }
        }
        let pods = owned(store, &t.pod, uid);
        let revision = |p: &Value| {
            p["metadata"]["labels"][REVISION_LABEL]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let desired = count(NODES.iter());
        if !on_delete
            && count(pods.iter().filter(|p| is_ready(p))) == desired
            && let Some(p) = pods.iter().find(|p| revision(p) != update_rev)
        {
            let _ = store.delete(&t.pod, Some(ns), meta(p, "name"), false, false);
        }
        let pods = owned(store, &t.pod, uid);
        let ready = count(pods.iter().filter(|p| is_ready(p)));
        let status = json!({
            "observedGeneration": int(&ds["metadata"]["generation"], 1),
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": count(pods.iter()),
            "updatedNumberScheduled": count(pods.iter().filter(|p| revision(p) == update_rev)),
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": desired - ready,
            "numberMisscheduled": 0,
        });
        store.set_status(&t.ds, ns, name, status);
    }
}

/// Job -> pods until `completions` succeeded (Complete) or more than `backoffLimit` failed
/// (Failed, BackoffLimitExceeded).
fn jobs(store: &mut Store, timing: &Timing, t: &Types) {
    let all: Vec<Value> = store.scan(&t.job).cloned().collect();
    for job in all {
        let (ns, name, uid) = (
            meta(&job, "namespace"),
            meta(&job, "name"),
            meta(&job, "uid"),
        );
        let finished = job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        let completions = int(&job["spec"]["completions"], 1);
        let parallelism = int(&job["spec"]["parallelism"], 1).max(1);
        let backoff = int(&job["spec"]["backoffLimit"], 6);
        let behavior = behavior::of_template(&job["spec"]["template"], &job["metadata"]);
        let pods = owned(store, &t.pod, uid);
        let succeeded = count(pods.iter().filter(|p| phase(p) == "Succeeded"));
        let failed = count(pods.iter().filter(|p| phase(p) == "Failed"));
        let active = count(pods.iter()) - succeeded - failed;
        let mut conditions = Vec::new();
        let mut completion_time = Value::Null;
        if succeeded >= completions {
            let old = job["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.push(condition(
                &old,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            conditions.push(condition(
                &old,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            completion_time = job["status"]["completionTime"]
                .as_str()
                .map_or_else(|| crate::store::now().into(), Value::from);
        } else if failed > backoff {
            let old = job["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.push(condition(
                &old,
                "FailureTarget",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
            conditions.push(condition(
                &old,
                "Failed",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if !finished {
            let want = (completions - succeeded).min(parallelism) - active;
            let mut seq = u64::try_from(count(pods.iter())).unwrap_or(0);
            for _ in 0..want.max(0) {
                seq += 1;
                let pod = new_pod(
                    &job["spec"]["template"],
                    format!("{name}-{}", suffix(fnv_seed(uid, 0, seq))),
                    ns,
                    &job,
                    &t.job,
                    &[
                        ("job-name", name.to_owned()),
                        ("batch.kubernetes.io/job-name", name.to_owned()),
                    ],
                    behavior,
                    timing.pod_ready,
                );
                store.put_internal(&t.pod, pod);
            }
        }
        let mut status = json!({
            "startTime": meta(&job, "creationTimestamp"),
            "succeeded": succeeded,
            "failed": failed,
        });
        let now_active = count(owned(store, &t.pod, uid).iter()) - succeeded - failed;
        if now_active > 0 && conditions.is_empty() {
            status["active"] = now_active.into();
        }
        if !conditions.is_empty() {
            status["conditions"] = Value::Array(conditions);
        } else if finished {
            status["conditions"] = job["status"]["conditions"].clone();
        }
        if !completion_time.is_null() {
            status["completionTime"] = completion_time;
        }
        store.set_status(&t.job, ns, name, status);
    }
}
