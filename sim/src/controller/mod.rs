//! The controllers and the kubelet of a virtual cluster: Deployments make ReplicaSets, which
//! make Pods; StatefulSets, DaemonSets and Jobs make Pods; Pods start, crash or hang according
//! to their behaviour; every workload's status is written the way the real controllers write it;
//! LoadBalancer Services and Ingresses get an address, autoscalers a status.
//!
//! `reconcile` is synchronous: one pass over the store, under the cluster's lock. It returns
//! the next moment something is due to change by itself (a pod becoming ready, a deadline).
//! Each controller has its own file; what they share (owner references, new pods, conditions)
//! is here.

mod address;
mod autoscaler;
mod daemon_set;
mod deployment;
mod job;
mod kubelet;
mod namespace;
mod replica_set;
mod stateful_set;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::behavior::{self, Behavior};
use crate::hash::fnv_hex;
use crate::metadata::{self, meta};
use crate::resource::ResourceType;
use crate::store::Store;
use crate::timing::Timing;

/// Annotation with the delay, in milliseconds, after which a pod becomes ready.
const READY_AFTER: &str = "sim.coxswain.dev/ready-after-ms";

/// The label with which StatefulSets and DaemonSets mark the template revision of a pod.
const REVISION_LABEL: &str = "controller-revision-hash";

/// What the controllers remember between passes (a real controller keeps it in its caches).
#[derive(Debug, Default)]
pub struct Memory {
    pods: HashMap<String, Instant>,
    terminating: HashMap<String, Instant>,
    progress: HashMap<String, deployment::Progress>,
    /// LoadBalancer Services and Ingresses waiting for an address, since when.
    addresses: HashMap<String, Instant>,
}

/// Types the controllers work with, looked up once per pass.
struct Types {
    pod: ResourceType,
    rs: ResourceType,
    deploy: ResourceType,
    sts: ResourceType,
    ds: ResourceType,
    job: ResourceType,
    svc: ResourceType,
    ing: ResourceType,
    hpa: ResourceType,
}

impl Types {
    fn find(store: &Store) -> Option<Self> {
        Some(Self {
            pod: store.find_kind("", "Pod")?,
            rs: store.find_kind("apps", "ReplicaSet")?,
            deploy: store.find_kind("apps", "Deployment")?,
            sts: store.find_kind("apps", "StatefulSet")?,
            ds: store.find_kind("apps", "DaemonSet")?,
            job: store.find_kind("batch", "Job")?,
            svc: store.find_kind("", "Service")?,
            ing: store.find_kind("networking.k8s.io", "Ingress")?,
            hpa: store.find_kind("autoscaling", "HorizontalPodAutoscaler")?,
        })
    }
}

/// One pass of the controllers: what they work with, and the earliest moment something falls
/// due by itself.
struct Pass<'a> {
    timing: &'a Timing,
    t: Types,
    now: Instant,
    next: Option<Instant>,
}

impl Pass<'_> {
    /// Something falls due at `at`.
    fn due_at(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }
}

/// One pass of every controller. Returns when the next change falls due by itself.
pub fn reconcile(
    store: &mut Store,
    memory: &mut Memory,
    timing: &Timing,
    now: Instant,
) -> Option<Instant> {
    let mut pass = Pass {
        timing,
        t: Types::find(store)?,
        now,
        next: None,
    };
    namespace::reconcile(store, memory, &mut pass);
    kubelet::reconcile(store, memory, &mut pass);
    deployment::reconcile(store, &pass);
    replica_set::reconcile(store, &pass);
    stateful_set::reconcile(store, &pass);
    daemon_set::reconcile(store, &pass);
    job::reconcile(store, &pass);
    address::reconcile(store, memory, &mut pass);
    autoscaler::reconcile(store, &pass);
    deployment::write_status(store, memory, &mut pass);
    pass.next
}

/// Passes until one changes nothing (at most eight): controllers feed each other
/// (Deployment -> ReplicaSet -> Pod), so a change settles in a few. Returns when the next
/// change falls due by itself.
pub fn settle(store: &mut Store, memory: &mut Memory, timing: &Timing) -> Option<Instant> {
    let mut next = None;
    for _ in 0..8 {
        let before = store.resource_version();
        next = reconcile(store, memory, timing, Instant::now());
        if store.resource_version() == before {
            break;
        }
    }
    next
}

/// Copies of every object of a type, so the store can be written while they are walked.
fn snapshot(store: &Store, rt: &ResourceType) -> Vec<Value> {
    store.scan(rt).cloned().collect()
}

/// Runs `f` on every object of type `rt` (copies, so `f` can write the store), each as the
/// owner of what it makes.
fn each(store: &mut Store, rt: &ResourceType, mut f: impl FnMut(&mut Store, &Workload)) {
    for object in snapshot(store, rt) {
        f(
            store,
            &Workload {
                object: &object,
                rt,
            },
        );
    }
}

/// Forgets what was remembered about objects (by uid) that are gone.
fn forget_gone<T>(remembered: &mut HashMap<String, T>, objects: &[Value]) {
    remembered.retain(|uid, _| objects.iter().any(|o| meta(o, "uid") == uid));
}

/// The objects of a type that `uid` owns.
fn owned(store: &Store, rt: &ResourceType, uid: &str) -> Vec<Value> {
    store
        .scan(rt)
        .filter(|o| metadata::is_owned_by(o, uid))
        .cloned()
        .collect()
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

fn count<T>(iter: impl Iterator<Item = T>) -> i64 {
    i64::try_from(iter.count()).unwrap_or(i64::MAX)
}

fn ready_count(pods: &[Value]) -> i64 {
    count(pods.iter().filter(|p| is_ready(p)))
}

/// The hash of a pod template, the same for templates that differ only by empty values: a
/// client that decodes a template into typed structs and sends it back (`kubectl rollout undo`)
/// adds `resources: {}` and the like, and the template is still the same one.
fn template_hash(template: &Value) -> String {
    fnv_hex(without_empty(template).to_string().as_bytes())[..10].to_owned()
}

/// `value` without nulls, empty objects and empty lists in its objects, recursively.
fn without_empty(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), without_empty(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_empty).collect()),
        other => other.clone(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The template revision a StatefulSet or DaemonSet pod was made from.
fn revision(pod: &Value) -> &str {
    pod["metadata"]["labels"][REVISION_LABEL]
        .as_str()
        .unwrap_or_default()
}

/// Ready delay of a new pod: the pod-ready delay, or, for a slow one, past `deadline`.
fn ready_after(behavior: Behavior, timing: &Timing, deadline_secs: u64) -> Duration {
    match behavior {
        Behavior::Slow => timing.seconds(deadline_secs) + timing.pod_ready * 2,
        _ => timing.pod_ready,
    }
}

/// The ready delay an object's [`READY_AFTER`] annotation fixed, if any.
fn annotated_delay(object: &Value) -> Option<Duration> {
    object["metadata"]["annotations"][READY_AFTER]
        .as_str()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
}

/// A seed for a generated pod name, stable for the same owner, count and attempt.
fn fnv_seed(uid: &str, have: i64, seq: u64) -> u64 {
    let h = fnv_hex(format!("{uid}/{have}/{seq}").as_bytes());
    u64::from_str_radix(&h[..12], 16).unwrap_or(seq)
}

/// The conditions an object's status has now.
fn conditions_of(object: &Value) -> Vec<Value> {
    object["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A condition that keeps its timestamps while its status and reason stay the same.
fn condition(old: &[Value], kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let previous = old.iter().find(|c| c["type"] == kind);
    let same = previous
        .is_some_and(|c| c["status"] == status && c["reason"] == reason && c["message"] == message);
    let (transition, update) = match previous {
        Some(c) if same => (c["lastTransitionTime"].clone(), c["lastUpdateTime"].clone()),
        Some(c) if c["status"] == status => {
            (c["lastTransitionTime"].clone(), metadata::now().into())
        }
        _ => (metadata::now().into(), metadata::now().into()),
    };
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": transition, "lastUpdateTime": update,
    })
}

/// A workload and its type: the owner of the ReplicaSets or pods it makes.
struct Workload<'a> {
    object: &'a Value,
    rt: &'a ResourceType,
}

impl Workload<'_> {
    fn ns(&self) -> &str {
        meta(self.object, "namespace")
    }

    fn name(&self) -> &str {
        meta(self.object, "name")
    }

    fn uid(&self) -> &str {
        meta(self.object, "uid")
    }

    fn template(&self) -> &Value {
        &self.object["spec"]["template"]
    }

    /// How the pods made from its template behave.
    fn behavior(&self) -> Behavior {
        behavior::of_template(self.template(), &self.object["metadata"])
    }

    /// `ownerReferences` naming it as the controller.
    fn owner_ref(&self) -> Value {
        json!([{
            "apiVersion": self.rt.api_version(),
            "kind": self.rt.kind,
            "name": self.name(),
            "uid": self.uid(),
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    }

    /// A new pod from its template, owned by it, with its behaviour and ready delay fixed now.
    fn new_pod(
        &self,
        name: String,
        extra_labels: &[(&str, String)],
        ready_after: Duration,
    ) -> Value {
        let template = self.template();
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
        annotations.insert(behavior::ANNOTATION.into(), self.behavior().word().into());
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
                "namespace": self.ns(),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": self.owner_ref(),
            },
            "spec": spec,
            "status": {"phase": "Pending"},
        })
    }
}
