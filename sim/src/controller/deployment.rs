//! The deployment controller: a ReplicaSet per pod template, old sets scaled down once the new
//! one is ready; and, after every other controller, the Deployment's status with its
//! Progressing deadline.

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    Memory, Pass, READY_AFTER, Types, Workload, condition, conditions_of, count, each, forget_gone,
    int, owned, ready_after, ready_count, snapshot, template_hash,
};
use crate::behavior;
use crate::metadata::meta;
use crate::store::Store;
use crate::timing::Timing;

/// The annotation with the revision of a Deployment's template, on it and its ReplicaSets.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// Pod counts of one Deployment, over all its ReplicaSets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    /// Pods of the ReplicaSet of the current template.
    updated: i64,
    ready: i64,
    total: i64,
}

/// The last change of a Deployment's spec or pod counts: the progress deadline runs from it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Progress {
    generation: i64,
    counts: Counts,
    last: Instant,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollout {
    Complete,
    TimedOut,
    Progressing,
}

/// Deployment -> ReplicaSet per pod template; old sets scaled down once the new one is ready.
pub(super) fn reconcile(store: &mut Store, pass: &Pass) {
    each(store, &pass.t.deploy, |store, w| roll(store, pass, w));
}

/// One Deployment: its current ReplicaSet, scaled and holding the newest revision; the old ones
/// scaled down once it is ready.
fn roll(store: &mut Store, pass: &Pass, w: &Workload) {
    let t = &pass.t;
    let d = w.object;
    let desired = int(&d["spec"]["replicas"], 1);
    let hash = template_hash(w.template());
    let rs_name = format!("{}-{hash}", w.name());
    let sets = owned(store, &t.rs, w.uid());
    // The current template's revision is newer than every other one's: a template that comes
    // back (`kubectl rollout undo`) re-uses its ReplicaSet under a new revision.
    let newest_old = sets
        .iter()
        .filter(|rs| meta(rs, "name") != rs_name)
        .map(revision_of)
        .max()
        .unwrap_or(0);
    let revision = match sets.iter().find(|rs| meta(rs, "name") == rs_name) {
        None => {
            let revision = newest_old + 1;
            store.put_internal(&t.rs, replica_set(w, &hash, revision, pass.timing));
            revision
        }
        Some(rs) => {
            let revision = revision_of(rs).max(newest_old + 1);
            if int(&rs["spec"]["replicas"], 1) != desired || revision_of(rs) != revision {
                let mut rs = rs.clone();
                rs["spec"]["replicas"] = desired.into();
                rs["metadata"]["annotations"][REVISION] = revision.to_string().into();
                store.put_internal(&t.rs, rs);
            }
            revision
        }
    };
    if revision_of(d) != revision {
        let mut d = d.clone();
        d["metadata"]["annotations"][REVISION] = revision.to_string().into();
        store.put_internal(&t.deploy, d);
    }
    if ready_in(store, t, &rs_name, w.ns()) >= desired {
        for mut old in sets.into_iter().filter(|rs| meta(rs, "name") != rs_name) {
            if int(&old["spec"]["replicas"], 1) != 0 {
                old["spec"]["replicas"] = 0.into();
                store.put_internal(&t.rs, old);
            }
        }
    }
}

/// The `deployment.kubernetes.io/revision` of a Deployment or ReplicaSet, 0 when it has none.
fn revision_of(object: &Value) -> i64 {
    object["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The `progressDeadlineSeconds` of a Deployment.
fn progress_deadline(d: &Value) -> u64 {
    u64::try_from(int(&d["spec"]["progressDeadlineSeconds"], 600)).unwrap_or(600)
}

/// The ReplicaSet for a Deployment's current template (hash `hash`), its `revision`th.
///
/// It carries the behaviour annotation only when the Deployment does: `kubectl rollout undo`
/// copies a ReplicaSet's annotations to its Deployment, where a behaviour read from the old
/// template would outlive it.
fn replica_set(d: &Workload, hash: &str, revision: i64, timing: &Timing) -> Value {
    let template = d.template();
    let behavior = d.behavior();
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert("pod-template-hash".into(), hash.into());
    let mut match_labels = d.object["spec"]["selector"]["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    match_labels.insert("pod-template-hash".into(), hash.into());
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"] = Value::Object(labels.clone());
    let mut annotations = Map::new();
    annotations.insert(REVISION.into(), revision.to_string().into());
    if d.object["metadata"]["annotations"][behavior::ANNOTATION].is_string() {
        annotations.insert(behavior::ANNOTATION.into(), behavior.word().into());
    }
    let delay = ready_after(behavior, timing, progress_deadline(d.object));
    annotations.insert(READY_AFTER.into(), delay.as_millis().to_string().into());
    json!({
        "metadata": {
            "name": format!("{}-{hash}", d.name()), "namespace": d.ns(), "labels": labels,
            "annotations": annotations, "ownerReferences": d.owner_ref(),
        },
        "spec": {
            "replicas": int(&d.object["spec"]["replicas"], 1),
            "selector": {"matchLabels": match_labels},
            "template": rs_template,
        },
    })
}

/// Ready pods of the ReplicaSet `rs_name` in `ns`.
fn ready_in(store: &Store, t: &Types, rs_name: &str, ns: &str) -> i64 {
    let Some(rs) = store
        .scan(&t.rs)
        .find(|rs| meta(rs, "name") == rs_name && meta(rs, "namespace") == ns)
    else {
        return 0;
    };
    let uid = meta(rs, "uid").to_owned();
    ready_count(&owned(store, &t.pod, &uid))
}

/// Deployment status from its ReplicaSets' pods, with the Progressing deadline.
pub(super) fn write_status(store: &mut Store, memory: &mut Memory, pass: &mut Pass) {
    let all = snapshot(store, &pass.t.deploy);
    forget_gone(&mut memory.progress, &all);
    for d in all {
        let (ns, name, uid) = (meta(&d, "namespace"), meta(&d, "name"), meta(&d, "uid"));
        let generation = int(&d["metadata"]["generation"], 1);
        let desired = int(&d["spec"]["replicas"], 1);
        let rs_name = format!("{name}-{}", template_hash(&d["spec"]["template"]));
        let counts = counts(store, &pass.t, uid, &rs_name);
        let last = memory.progressed(uid, generation, counts, pass.now);
        let deadline = last + pass.timing.seconds(progress_deadline(&d));
        let complete =
            counts.updated == desired && counts.total == desired && counts.ready == desired;
        let rollout = if complete {
            Rollout::Complete
        } else if pass.now >= deadline {
            Rollout::TimedOut
        } else {
            pass.due_at(deadline);
            Rollout::Progressing
        };
        let status = status(&d, counts, rollout, &rs_name);
        store.set_status(&pass.t.deploy, ns, name, status);
    }
}

fn counts(store: &Store, t: &Types, uid: &str, rs_name: &str) -> Counts {
    let mut counts = Counts {
        updated: 0,
        ready: 0,
        total: 0,
    };
    for rs in owned(store, &t.rs, uid) {
        let pods = owned(store, &t.pod, meta(&rs, "uid"));
        counts.total += count(pods.iter());
        counts.ready += ready_count(&pods);
        if meta(&rs, "name") == rs_name {
            counts.updated += count(pods.iter());
        }
    }
    counts
}

impl Memory {
    /// Records a Deployment's generation and counts; returns when they last changed.
    fn progressed(&mut self, uid: &str, generation: i64, counts: Counts, now: Instant) -> Instant {
        let fresh = Progress {
            generation,
            counts,
            last: now,
        };
        let progress = self
            .progress
            .entry(uid.to_owned())
            .or_insert_with(|| fresh.clone());
        if progress.generation != generation || progress.counts != counts {
            *progress = fresh;
        }
        progress.last
    }
}

/// The Deployment's status: counts and the Available and Progressing conditions.
fn status(d: &Value, counts: Counts, rollout: Rollout, rs_name: &str) -> Value {
    let desired = int(&d["spec"]["replicas"], 1);
    let Counts {
        updated,
        ready,
        total,
    } = counts;
    let available = ready;
    let max_unavailable = desired / 4;
    let (available_status, available_reason) = if available >= desired - max_unavailable {
        ("True", "MinimumReplicasAvailable")
    } else {
        ("False", "MinimumReplicasUnavailable")
    };
    let (progressing_status, progressing_reason, message) = match rollout {
        Rollout::Complete => (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        ),
        Rollout::TimedOut => (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
        ),
        Rollout::Progressing => (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        ),
    };
    let old = conditions_of(d);
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
        "observedGeneration": int(&d["metadata"]["generation"], 1),
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
    status
}
