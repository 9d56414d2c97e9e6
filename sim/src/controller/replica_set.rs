//! The ReplicaSet controller: as many pods as `replicas`, not-ready and newest pods removed
//! first when there are too many.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Pass, Workload, annotated_delay, count, each, fnv_seed, int, is_ready, owned, ready_after,
    ready_count,
};
use crate::metadata::{meta, suffix};
use crate::store::Store;

/// ReplicaSet -> Pods.
pub(super) fn reconcile(store: &mut Store, pass: &Pass) {
    each(store, &pass.t.rs, |store, w| scale(store, pass, w));
}

/// Keeps a ReplicaSet at `replicas` pods and writes its status.
fn scale(store: &mut Store, pass: &Pass, w: &Workload) {
    let t = &pass.t;
    let rs = w.object;
    let desired = int(&rs["spec"]["replicas"], 1);
    let mut pods = owned(store, &t.pod, w.uid());
    let delay = annotated_delay(rs).unwrap_or_else(|| ready_after(w.behavior(), pass.timing, 600));
    fill(store, pass, w, &mut pods, desired, delay);
    let have = count(pods.iter());
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
            let _ = store.delete(&t.pod, Some(w.ns()), meta(&p, "name"), false, false);
        }
    }
    let pods = owned(store, &t.pod, w.uid());
    store.set_status(&t.rs, w.ns(), w.name(), status(rs, &pods));
}

/// Creates pods until there are `desired`, each with a generated name not yet taken.
fn fill(
    store: &mut Store,
    pass: &Pass,
    w: &Workload,
    pods: &mut Vec<Value>,
    desired: i64,
    delay: Duration,
) {
    let mut have = count(pods.iter());
    let mut seq = 0u64;
    while have < desired {
        seq += 1;
        let pod_name = format!("{}-{}", w.name(), suffix(fnv_seed(w.uid(), have, seq)));
        if pods.iter().any(|p| meta(p, "name") == pod_name) {
            continue;
        }
        let pod = w.new_pod(pod_name, &[], delay);
        store.put_internal(&pass.t.pod, pod.clone());
        pods.push(pod);
        have += 1;
    }
}

fn status(rs: &Value, pods: &[Value]) -> Value {
    let ready = ready_count(pods);
    let mut status = json!({
        "replicas": count(pods.iter()),
        "fullyLabeledReplicas": count(pods.iter()),
        "observedGeneration": int(&rs["metadata"]["generation"], 1),
    });
    if ready > 0 {
        status["readyReplicas"] = ready.into();
        status["availableReplicas"] = ready.into();
    }
    status
}
