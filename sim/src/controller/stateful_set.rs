//! The StatefulSet controller: ordered pods `<name>-<i>`, each started once the ones before it
//! are ready; a rolling update from the highest ordinal down to the partition, or nothing
//! until a pod is deleted (OnDelete).

use serde_json::{Value, json};

use super::{
    Pass, REVISION_LABEL, Workload, count, each, int, is_ready, owned, ready_after, ready_count,
    revision, template_hash,
};
use crate::metadata::meta;
use crate::store::Store;

/// StatefulSet -> ordered pods `<name>-<i>`, rolling update from the highest ordinal down to
/// the partition, or nothing until a pod is deleted (OnDelete).
pub(super) fn reconcile(store: &mut Store, pass: &Pass) {
    each(store, &pass.t.sts, |store, w| roll(store, pass, w));
}

/// One StatefulSet: pods in order, the rolling update, its status.
fn roll(store: &mut Store, pass: &Pass, w: &Workload) {
    let t = &pass.t;
    let s = w.object;
    let desired = int(&s["spec"]["replicas"], 1);
    let strategy = &s["spec"]["updateStrategy"];
    let update_rev = format!("{}-{}", w.name(), template_hash(w.template()));
    let pods = owned(store, &t.pod, w.uid());
    for p in pods
        .iter()
        .filter(|p| ordinal(w, p).is_none_or(|i| i >= desired))
    {
        let _ = store.delete(&t.pod, Some(w.ns()), meta(p, "name"), false, false);
    }
    start_next(store, pass, w, &pods, &update_rev);
    let pods = owned(store, &t.pod, w.uid());
    let all_ready = ready_count(&pods) == desired && count(pods.iter()) == desired;
    if strategy["type"] != "OnDelete" && all_ready {
        let partition = int(&strategy["rollingUpdate"]["partition"], 0);
        let outdated = pods
            .iter()
            .filter(|p| ordinal(w, p).is_some_and(|i| i >= partition) && revision(p) != update_rev)
            .max_by_key(|p| ordinal(w, p));
        if let Some(p) = outdated {
            let _ = store.delete(&t.pod, Some(w.ns()), meta(p, "name"), false, false);
        }
    }
    let pods = owned(store, &t.pod, w.uid());
    store.set_status(&t.sts, w.ns(), w.name(), status(s, &pods, update_rev));
}

/// The ordinal `<i>` of a pod named `<name>-<i>`.
fn ordinal(w: &Workload, pod: &Value) -> Option<i64> {
    meta(pod, "name")
        .strip_prefix(&format!("{}-", w.name()))
        .and_then(|i| i.parse().ok())
}

/// Ordered start: the first missing ordinal is created once all before it are ready.
fn start_next(store: &mut Store, pass: &Pass, w: &Workload, pods: &[Value], update_rev: &str) {
    let desired = int(&w.object["spec"]["replicas"], 1);
    for i in 0..desired {
        match pods.iter().find(|p| ordinal(w, p) == Some(i)) {
            Some(p) if is_ready(p) => {}
            Some(_) => break,
            None => {
                let name = format!("{}-{i}", w.name());
                let labels = [
                    (REVISION_LABEL, update_rev.to_owned()),
                    ("statefulset.kubernetes.io/pod-name", name.clone()),
                ];
                let delay = ready_after(w.behavior(), pass.timing, 60);
                store.put_internal(&pass.t.pod, w.new_pod(name, &labels, delay));
                break;
            }
        }
    }
}

/// The status: counts per revision; the current revision becomes the update revision once
/// every pod has it.
fn status(s: &Value, pods: &[Value], update_rev: String) -> Value {
    let desired = int(&s["spec"]["replicas"], 1);
    let ready = ready_count(pods);
    let updated = count(pods.iter().filter(|p| revision(p) == update_rev));
    let current_rev = match s["status"]["currentRevision"].as_str() {
        Some(rev) if updated != desired => rev.to_owned(),
        _ => update_rev.clone(),
    };
    let current = count(pods.iter().filter(|p| revision(p) == current_rev));
    json!({
        "observedGeneration": int(&s["metadata"]["generation"], 1),
        "replicas": count(pods.iter()),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_rev,
        "updateRevision": update_rev,
        "collisionCount": 0,
    })
}
