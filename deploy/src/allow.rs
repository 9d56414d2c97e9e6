//! The cluster-side allowlist: the namespaces and cluster-scoped kinds a release may touch,
//! set by the agent's operator, whoever signed the intent. An object outside it is refused
//! before anything is applied.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{DeployError, ObjectRef};

/// The reference of an object of a kind the cluster does not serve yet, scoped by the CRD
/// that comes with it in the same release; `UnknownKind` when no such CRD is there.
pub(crate) fn reference_by_crd(
    object: &Value,
    release_objects: &[Value],
    default_ns: &str,
) -> Result<ObjectRef, DeployError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let scope = release_objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .find(|crd| crd["spec"]["group"] == group && crd["spec"]["names"]["kind"] == kind)
        .and_then(|crd| crd["spec"]["scope"].as_str())
        .ok_or_else(|| DeployError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        })?;
    let namespace = (scope == "Namespaced").then(|| {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_ns)
            .to_owned()
    });
    Ok(ObjectRef {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace,
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// What releases may touch besides their own namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Namespaces besides the release's own.
    pub namespaces: BTreeSet<String>,
    /// Cluster-scoped kinds (`ClusterRole`, `CustomResourceDefinition`). A `Namespace` whose
    /// name is an allowed namespace is always fine.
    pub cluster_kinds: BTreeSet<String>,
}

impl Allowlist {
    fn namespace_allowed(&self, namespace: &str, release_namespace: &str) -> bool {
        namespace == release_namespace || self.namespaces.contains(namespace)
    }

    /// Why `object` is outside the list, if it is.
    fn refusal(&self, object: &ObjectRef, release_namespace: &str) -> Option<String> {
        match &object.namespace {
            Some(ns) if self.namespace_allowed(ns, release_namespace) => None,
            Some(ns) => Some(format!("{object}: namespace {ns} is not allowed")),
            None if object.kind == "Namespace"
                && self.namespace_allowed(&object.name, release_namespace) =>
            {
                None
            }
            None if self.cluster_kinds.contains(&object.kind) => None,
            None => Some(format!(
                "{object}: cluster-scoped kind {} is not allowed",
                object.kind
            )),
        }
    }

    /// Every object outside the list, each with its reason; empty when all are allowed.
    pub fn violations<'a>(
        &self,
        objects: impl IntoIterator<Item = &'a ObjectRef>,
        release_namespace: &str,
    ) -> Vec<String> {
        objects
            .into_iter()
            .filter_map(|o| self.refusal(o, release_namespace))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn object(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: namespace.map(Into::into),
            name: name.into(),
        }
    }

    #[test]
    fn only_the_release_namespace_and_what_is_listed_pass() {
        let allow = Allowlist {
            namespaces: ["monitoring".to_owned()].into(),
            cluster_kinds: ["ClusterRole".to_owned()].into(),
        };
        let cases = [
            (object("ConfigMap", Some("shop"), "a"), true),
            (object("ConfigMap", Some("monitoring"), "a"), true),
            (object("ConfigMap", Some("kube-system"), "a"), false),
            (object("Namespace", None, "shop"), true),
            (object("Namespace", None, "monitoring"), true),
            (object("Namespace", None, "kube-system"), false),
            (object("ClusterRole", None, "reader"), true),
            (object("ClusterRoleBinding", None, "admin"), false),
        ];
        for (o, allowed) in &cases {
            assert_eq!(allow.violations([o], "shop").is_empty(), *allowed, "{o}");
        }
    }

    #[test]
    fn a_custom_kind_takes_its_scope_from_the_crd_in_the_release() {
        let crd = serde_json::json!({"kind": "CustomResourceDefinition",
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}});
        let widget = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}});
        let release = [crd];
        let r = reference_by_crd(&widget, &release, "shop").unwrap();
        assert_eq!(r.namespace, None);
        let gadget = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Gadget",
            "metadata": {"name": "g"}});
        assert!(matches!(
            reference_by_crd(&gadget, &release, "shop"),
            Err(DeployError::UnknownKind { .. })
        ));
    }

    #[test]
    fn the_default_allows_only_the_release_namespace_and_names_every_offender() {
        let objects = [
            object("ConfigMap", Some("shop"), "ok"),
            object("ClusterRoleBinding", None, "pwn"),
            object("Secret", Some("kube-system"), "steal"),
        ];
        let found = Allowlist::default().violations(&objects, "shop");
        assert_eq!(
            found,
            [
                "v1/ClusterRoleBinding pwn: cluster-scoped kind ClusterRoleBinding is not allowed",
                "v1/Secret kube-system/steal: namespace kube-system is not allowed",
            ]
        );
    }
}
