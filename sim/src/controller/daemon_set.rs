//! The DaemonSet controller: one pod per node, replaced one at a time on update (unless
//! OnDelete).

use serde_json::{Value, json};

use super::{
    Pass, REVISION_LABEL, Workload, count, each, fnv_seed, int, owned, ready_after, ready_count,
    revision, template_hash,
};
use crate::metadata::{meta, suffix};
use crate::nodes::NODES;
use crate::store::Store;

/// DaemonSet -> one pod per node, replaced one at a time on update (unless OnDelete).
pub(super) fn reconcile(store: &mut Store, pass: &Pass) {
    each(store, &pass.t.ds, |store, w| run_daemons(store, pass, w));
}

/// One DaemonSet: a pod on every node, the outdated replaced one at a time, its status.
fn run_daemons(store: &mut Store, pass: &Pass, w: &Workload) {
    let t = &pass.t;
    let ds = w.object;
    let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
    let update_rev = template_hash(w.template());
    place(store, pass, w, &update_rev);
    let pods = owned(store, &t.pod, w.uid());
    let desired = count(NODES.iter());
    if !on_delete
        && ready_count(&pods) == desired
        && let Some(p) = pods.iter().find(|p| revision(p) != update_rev)
    {
        let _ = store.delete(&t.pod, Some(w.ns()), meta(p, "name"), false, false);
    }
    let pods = owned(store, &t.pod, w.uid());
    let ready = ready_count(&pods);
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
    store.set_status(&t.ds, w.ns(), w.name(), status);
}

/// A pod of revision `update_rev` on every node that has none.
fn place(store: &mut Store, pass: &Pass, w: &Workload, update_rev: &str) {
    let pods: Vec<Value> = owned(store, &pass.t.pod, w.uid());
    let delay = ready_after(w.behavior(), pass.timing, 60);
    for (i, node) in NODES.iter().enumerate() {
        if pods.iter().any(|p| p["spec"]["nodeName"] == *node) {
            continue;
        }
        let seq = u64::try_from(pods.len() + i).unwrap_or(0);
        let name = format!(
            "{}-{}",
            w.name(),
            suffix(fnv_seed(w.uid(), i64::try_from(i).unwrap_or(0), seq))
        );
        let mut pod = w.new_pod(name, &[(REVISION_LABEL, update_rev.to_owned())], delay);
        pod["spec"]["nodeName"] = (*node).into();
        store.put_internal(&pass.t.pod, pod);
    }
}
