//! Applying a revision: server-side apply of every object in install order, CRDs established
//! and discovered again before their custom resources; the release namespace; and the same
//! apply as a dry run, shown as a diff.

use std::time::Duration;

use proto::{HealthStatus, Phase};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::run::Run;
use super::{Attempt, Observation};
use crate::DeployError;
use crate::cluster::{Cluster, MANAGED_BY, ObjectRef, RELEASE_LABEL, RELEASE_NAMESPACE};
use crate::health;
use crate::poll::{Check, wait_until};
use crate::redact::{keys_changed_note, redact_secret, secret_keys_changed};
use crate::render::Rendered;

impl Run<'_> {
    /// Applies the current revision and records what it applied. A failed apply fails the
    /// attempt; a cancelled one supersedes it.
    pub(super) async fn apply(&mut self) -> Result<Observation, DeployError> {
        let (phase, why, failed) = match self.situation.attempt {
            Attempt::Forward => (Phase::Applying, None, "apply failed"),
            Attempt::Rollback => (
                Phase::RollingBack,
                self.reason.clone(),
                "rollback apply failed",
            ),
        };
        self.say(phase, why, &[], false);
        match self.apply_all().await {
            Ok(()) => {
                self.save_current(self.deadline).await?;
                Ok(if self.cancel.is_cancelled() {
                    Observation::Cancelled
                } else {
                    Observation::Applied
                })
            }
            Err(DeployError::Cancelled) => Ok(Observation::Cancelled),
            Err(e) => {
                self.reason = Some(format!("{failed}: {e}"));
                Ok(Observation::Failed)
            }
        }
    }

    /// Applies objects in install order into the current revision's inventory; after CRDs,
    /// waits until they are established and discovers again so their custom resources can
    /// follow in the same release.
    async fn apply_all(&mut self) -> Result<(), DeployError> {
        self.current.inventory.clear();
        let mut pending_crds: Vec<ObjectRef> = Vec::new();
        for object in &self.rendered.objects {
            let is_crd = object["kind"] == "CustomResourceDefinition";
            if !is_crd {
                self.establish(&mut pending_crds).await?;
            }
            let labelled = labelled(object, &self.release.name, &self.release.namespace);
            let (target, _) = self
                .cluster
                .apply(&labelled, &self.release.namespace, false, self.deadline)
                .await?;
            tracing::debug!(release = self.release.name, object = %target, "applied");
            if is_crd {
                pending_crds.push(target.clone());
            }
            self.current.inventory.push(target);
        }
        self.establish(&mut pending_crds).await
    }

    /// Waits until every CRD applied since the last call is established, then discovers again
    /// so their kinds resolve; nothing to do without any.
    async fn establish(&self, crds: &mut Vec<ObjectRef>) -> Result<(), DeployError> {
        if crds.is_empty() {
            return Ok(());
        }
        let (cluster, deadline) = (self.cluster, self.deadline);
        let pace = self.config.poll.min(Duration::from_millis(100));
        for crd in crds.iter() {
            let established = || async {
                let live = cluster.get(crd, deadline).await?;
                let healthy = live
                    .as_ref()
                    .is_some_and(|c| health::assess(c).status == HealthStatus::Healthy);
                Ok(if healthy {
                    Check::Done(())
                } else {
                    Check::Pending(())
                })
            };
            wait_until(established, pace, deadline, self.cancel)
                .await
                .map_err(|stopped| {
                    stopped.into_error(|()| DeployError::DeadlineExceeded {
                        during: format!("waiting for {crd} to be established"),
                    })
                })?;
        }
        crds.clear();
        cluster.forget_discovery();
        Ok(())
    }
}

/// The object as Coxswain applies it: labelled managed by Coxswain, part of `release`, and
/// annotated with the release's `namespace`.
pub(super) fn labelled(object: &Value, release: &str, namespace: &str) -> Value {
    let mut o = object.clone();
    for field in ["labels", "annotations"] {
        if !o["metadata"][field].is_object() {
            o["metadata"][field] = json!({});
        }
    }
    o["metadata"]["labels"][MANAGED_BY] = "coxswain".into();
    o["metadata"]["labels"][RELEASE_LABEL] = release.into();
    o["metadata"]["annotations"][RELEASE_NAMESPACE] = namespace.into();
    o
}

/// Makes sure the release namespace exists, for the lock and the history.
pub(super) async fn ensure_namespace(
    cluster: &Cluster,
    namespace: &str,
    deadline: Instant,
) -> Result<(), DeployError> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {MANAGED_BY: "coxswain"}}});
    let target = ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: namespace.into(),
    };
    if cluster.get(&target, deadline).await?.is_none() {
        cluster.apply(&ns, namespace, false, deadline).await?;
    }
    Ok(())
}

/// A server-side dry run of every object, as a readable diff against the live objects.
pub(super) async fn diff(
    cluster: &Cluster,
    rendered: &Rendered,
    namespace: &str,
    release: &str,
    deadline: Instant,
) -> Result<String, DeployError> {
    let mut out = String::new();
    for object in rendered.objects.iter().chain(rendered.tests.iter()) {
        let object = labelled(object, release, namespace);
        let (_, target) = cluster.api_for(&object, namespace, deadline).await?;
        let live = cluster.get(&target, deadline).await?;
        let after = match cluster.apply(&object, namespace, true, deadline).await {
            Ok((_, after)) => after,
            // A namespace created by this release does not exist yet: show the object.
            Err(DeployError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => object.clone(),
            Err(e) => return Err(e),
        };
        out.push_str(&shown(&target, live.as_ref(), &after));
    }
    Ok(out)
}

/// The diff of one object; a Secret's values are redacted and its changes counted instead.
fn shown(target: &ObjectRef, live: Option<&Value>, after: &Value) -> String {
    let before = live.map(redact_secret);
    let note = (after["kind"] == "Secret")
        .then(|| secret_keys_changed(live, after))
        .filter(|&changed| changed > 0)
        .map(keys_changed_note);
    let before = before.as_ref().map(comparable).unwrap_or_default();
    unified(target, &before, &comparable(&redact_secret(after)), note)
}

/// The change from `before` to `after` of one object, line by line, then `note`; empty when
/// there is neither.
fn unified(target: &ObjectRef, before: &str, after: &str, note: Option<String>) -> String {
    if before == after && note.is_none() {
        return String::new();
    }
    let mut out = format!("--- {target} (live)\n+++ {target} (after apply)\n");
    for change in similar::TextDiff::from_lines(before, after).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => " ",
        };
        out.push_str(&format!("{sign}{change}"));
    }
    if let Some(note) = note {
        out.push_str(&format!("# {note}\n"));
    }
    out
}

/// An object as a diff shows it: YAML without the fields the server keeps.
fn comparable(object: &Value) -> String {
    let mut o = object.clone();
    if let Some(meta) = o["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    serde_saphyr::to_string(&o).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_labelled_with_their_release_and_their_own_labels_kept() {
        let o = labelled(
            &json!({"kind": "ConfigMap", "metadata": {"name": "a", "labels": {"tier": "web"}}}),
            "shop",
            "apps",
        );
        assert_eq!(
            o["metadata"]["labels"],
            json!({"tier": "web", MANAGED_BY: "coxswain", RELEASE_LABEL: "shop"})
        );
        assert_eq!(o["metadata"]["annotations"][RELEASE_NAMESPACE], "apps");
        let bare = labelled(&json!({"kind": "ConfigMap"}), "shop", "apps");
        assert_eq!(bare["metadata"]["labels"][RELEASE_LABEL], "shop");
    }

    #[test]
    fn a_diff_shows_changed_lines_and_nothing_for_an_unchanged_object() {
        let target = ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("shop".into()),
            name: "a".into(),
        };
        let live =
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "uid": "1"}, "data": {"k": "1"}});
        let after =
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "uid": "2"}, "data": {"k": "2"}});
        assert_eq!(
            unified(&target, &comparable(&live), &comparable(&live), None),
            ""
        );
        let shown = unified(&target, &comparable(&live), &comparable(&after), None);
        assert!(
            shown.starts_with(
                "--- v1/ConfigMap shop/a (live)\n+++ v1/ConfigMap shop/a (after apply)\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("-  k: '1'") || shown.contains("-  k: \"1\""),
            "{shown}"
        );
        assert!(!shown.contains("uid"), "{shown}");
    }

    #[test]
    fn a_secret_whose_value_changes_shows_the_number_of_keys_never_the_values() {
        let target = ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: Some("shop".into()),
            name: "db".into(),
        };
        let secret = |password: &str| {
            json!({"kind": "Secret", "metadata": {"name": "db"},
            "data": {"password": password, "user": "YXBw"}})
        };
        let (old, new) = (secret("b2xkLXMzY3JldA=="), secret("bmV3LXMzY3JldA=="));
        let shown = shown(&target, Some(&old), &new);
        assert!(
            shown.starts_with("--- v1/Secret shop/db (live)")
                && shown.ends_with("# Secret data: 1 key changed (values not shown)\n"),
            "{shown}"
        );
        assert!(
            !shown.contains("b2xk") && !shown.contains("bmV3") && !shown.contains("YXBw"),
            "{shown}"
        );
        assert_eq!(
            super::shown(&target, Some(&old), &old),
            "",
            "no change, no diff"
        );
    }
}
