//! Pruning: deleting the objects that left the release after a successful attempt, never
//! Namespaces, CRDs or objects annotated `coxswain.dev/keep: "true"`; and removing a failed
//! first install when the policy asks for it. Only objects that carry this release's labels
//! and namespace (`app.kubernetes.io/managed-by=coxswain`, `coxswain.dev/release=<release>`,
//! `coxswain.dev/release-namespace: <namespace>`, set by every apply) are deleted: an inventory is read from a history record, and a forged record must not
//! be able to delete anything else.

use std::collections::BTreeSet;

use serde_json::Value;
use tokio::time::Instant;

use super::Observation;
use super::Release;
use super::run::Run;
use crate::cluster::{Cluster, MANAGED_BY, ObjectRef, RELEASE_LABEL, RELEASE_NAMESPACE};
use crate::history::Revision;

/// Annotation that keeps an object when it leaves the release (no prune).
pub const KEEP_ANNOTATION: &str = "coxswain.dev/keep";

/// What a successful attempt prunes against: the revision it replaces.
#[derive(Debug, Default)]
pub(super) struct PruneBase {
    /// What that revision applied.
    inventory: Vec<ObjectRef>,
    /// Its manifests, where the keep annotation is read.
    manifests: Vec<Value>,
}

impl PruneBase {
    /// The base of a revision: what it applied and its manifests.
    pub(super) fn of(revision: &Revision) -> Self {
        Self {
            inventory: revision.inventory.clone(),
            manifests: revision.objects.clone(),
        }
    }
}

impl Run<'_> {
    /// Deletes what left the release since the revision it replaces. Failures are logged, not
    /// fatal: the release is healthy; a leftover object is reported and retried next deploy.
    pub(super) async fn prune(&mut self) -> Observation {
        let base = &self.prune_base;
        let leaving = leaving(&base.inventory, &self.current.inventory, &base.manifests);
        delete(self.cluster, self.release, &leaving, self.deadline).await;
        Observation::Pruned
    }
}

/// Removes every object a failed first install applied, but its Namespaces and CRDs.
pub(super) async fn uninstall(
    cluster: &Cluster,
    release: &Release,
    inventory: &[ObjectRef],
    deadline: Instant,
) {
    delete(cluster, release, &leaving(inventory, &[], &[]), deadline).await;
}

/// What leaves: `before` minus `after`, last applied first, except Namespaces, CRDs and
/// objects whose manifest in `manifests` is annotated to be kept.
fn leaving<'a>(
    before: &'a [ObjectRef],
    after: &[ObjectRef],
    manifests: &[Value],
) -> Vec<&'a ObjectRef> {
    let staying: BTreeSet<&ObjectRef> = after.iter().collect();
    let kept_by_annotation = |t: &ObjectRef| {
        manifests.iter().any(|m| {
            m["kind"] == t.kind.as_str()
                && m["metadata"]["name"] == t.name.as_str()
                && m["metadata"]["annotations"][KEEP_ANNOTATION] == "true"
        })
    };
    before
        .iter()
        .rev()
        .filter(|t| {
            !staying.contains(t)
                && !matches!(t.kind.as_str(), "Namespace" | "CustomResourceDefinition")
                && !kept_by_annotation(t)
        })
        .collect()
}

/// Whether a live object belongs to the release `name` in `namespace`: it carries the labels
/// and the annotation every apply sets.
fn owned(live: &Value, name: &str, namespace: &str) -> bool {
    let labels = &live["metadata"]["labels"];
    labels[MANAGED_BY] == "coxswain"
        && labels[RELEASE_LABEL] == name
        && live["metadata"]["annotations"][RELEASE_NAMESPACE] == namespace
}

/// Deletes each object of `release` in turn, after reading it to check that it carries the
/// release's labels (one that does not is left alone with a warning); a failure is logged and
/// the next one tried.
async fn delete(cluster: &Cluster, release: &Release, targets: &[&ObjectRef], deadline: Instant) {
    let (name, namespace) = (release.name.as_str(), release.namespace.as_str());
    for target in targets {
        let live = match cluster.get(target, deadline).await {
            Ok(Some(live)) => live,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(object = %target, %error, "cannot prune");
                continue;
            }
        };
        if !owned(&live, name, namespace) {
            tracing::warn!(object = %target, release = name, namespace, "not pruned: it does not carry the labels {MANAGED_BY}=coxswain and {RELEASE_LABEL}={name} and the annotation {RELEASE_NAMESPACE}={namespace}");
            continue;
        }
        match cluster.delete(target, deadline).await {
            Ok(()) => tracing::info!(object = %target, "pruned"),
            Err(error) => tracing::warn!(object = %target, %error, "cannot prune"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: None,
            name: name.into(),
        }
    }

    #[test]
    fn only_objects_that_left_go_last_applied_first_and_never_namespaces_crds_or_kept_ones() {
        let before = [
            object("Namespace", "shop"),
            object("CustomResourceDefinition", "widgets.example.com"),
            object("ConfigMap", "kept"),
            object("ConfigMap", "stays"),
            object("ConfigMap", "old"),
            object("Service", "old"),
        ];
        let after = [object("ConfigMap", "stays")];
        let manifests = [json!({"kind": "ConfigMap", "metadata": {"name": "kept",
            "annotations": {KEEP_ANNOTATION: "true"}}})];
        assert_eq!(
            leaving(&before, &after, &manifests),
            [&object("Service", "old"), &object("ConfigMap", "old")]
        );
        assert_eq!(
            leaving(&before, &[], &[]).len(),
            4,
            "an uninstall still keeps the namespace and the CRD"
        );
    }

    #[test]
    fn only_objects_labelled_for_the_release_are_owned() {
        let labelled = |labels: Value| json!({"metadata": {"labels": labels, "annotations": {RELEASE_NAMESPACE: "shop"}}});
        let ours = labelled(json!({MANAGED_BY: "coxswain", RELEASE_LABEL: "web"}));
        assert!(owned(&ours, "web", "shop"));
        assert!(!owned(&ours, "api", "shop"), "another release's object");
        assert!(
            !owned(&ours, "web", "shop-2"),
            "the release web of another namespace"
        );
        assert!(
            !owned(&labelled(json!({RELEASE_LABEL: "web"})), "web", "shop"),
            "not managed by coxswain"
        );
        assert!(!owned(
            &labelled(json!({MANAGED_BY: "coxswain"})),
            "web",
            "shop"
        ));
        assert!(
            !owned(&json!({"metadata": {}}), "web", "shop"),
            "a foreign object"
        );
    }
}
