//! The resource catalog: which kinds this API server serves, built in or declared by a
//! CustomResourceDefinition. What discovery makes of them is in `discovery`.

use std::sync::LazyLock;

use serde_json::Value;

/// One served resource (a group/version/plural), as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Plural, the path segment (`deployments`).
    pub plural: String,
    /// Singular (`deployment`).
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl get deploy`.
    pub short_names: Vec<String>,
    /// Has a `status` subresource: writes to the main resource leave status alone.
    pub has_status: bool,
    /// Has a `scale` subresource (a `Scale` of autoscaling/v1 over `spec.replicas`).
    pub has_scale: bool,
    /// `all`, for `kubectl get all`.
    pub categories: Vec<String>,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The list kind (`DeploymentList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// Cluster-scoped (else namespaced).
const CLUSTER: u8 = 1;
/// Has a status subresource.
const STATUS: u8 = 2;
/// In the `all` category, for `kubectl get all`.
const ALL: u8 = 4;
/// Has a scale subresource.
const SCALE: u8 = 8;

/// A built-in type: group, version, kind, plural, short names, flags.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    u8,
);

/// The built-in types, one row each.
#[rustfmt::skip]
const TABLE: [Row; 25] = [
    ("", "v1", "Namespace", "namespaces", &["ns"], CLUSTER | STATUS),
    ("", "v1", "ConfigMap", "configmaps", &["cm"], 0),
    ("", "v1", "Secret", "secrets", &[], 0),
    ("", "v1", "Service", "services", &["svc"], STATUS | ALL),
    ("", "v1", "ServiceAccount", "serviceaccounts", &["sa"], 0),
    ("", "v1", "Pod", "pods", &["po"], STATUS | ALL),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", &["pvc"], STATUS),
    ("", "v1", "Event", "events", &["ev"], 0),
    ("", "v1", "Node", "nodes", &["no"], CLUSTER | STATUS),
    ("apps", "v1", "Deployment", "deployments", &["deploy"], STATUS | ALL | SCALE),
    ("apps", "v1", "StatefulSet", "statefulsets", &["sts"], STATUS | ALL | SCALE),
    ("apps", "v1", "DaemonSet", "daemonsets", &["ds"], STATUS | ALL),
    ("apps", "v1", "ReplicaSet", "replicasets", &["rs"], STATUS | ALL | SCALE),
    ("batch", "v1", "Job", "jobs", &[], STATUS | ALL),
    ("batch", "v1", "CronJob", "cronjobs", &["cj"], STATUS | ALL),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", &["ing"], STATUS),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", &["netpol"], 0),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", &[], 0),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", &[], 0),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", &[], CLUSTER),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", &[], CLUSTER),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", &["pdb"], STATUS),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", &["hpa"], STATUS | ALL),
    ("coordination.k8s.io", "v1", "Lease", "leases", &[], 0),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", &["crd", "crds"], CLUSTER | STATUS),
];

/// The built-in resources, shared by every virtual cluster.
pub static BUILTIN: LazyLock<Vec<ResourceType>> = LazyLock::new(|| {
    TABLE
        .iter()
        .map(
            |&(group, version, kind, plural, short, flags)| ResourceType {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: plural.into(),
                singular: kind.to_ascii_lowercase(),
                namespaced: flags & CLUSTER == 0,
                short_names: short.iter().map(|s| (*s).to_owned()).collect(),
                has_status: flags & STATUS != 0,
                has_scale: flags & SCALE != 0,
                categories: if flags & ALL != 0 {
                    vec!["all".into()]
                } else {
                    vec![]
                },
            },
        )
        .collect()
});

/// Resource types declared by one CRD object (one per served version); empty when the CRD
/// is not well-formed.
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let singular = spec["names"]["singular"]
        .as_str()
        .map_or_else(|| kind.to_ascii_lowercase(), str::to_owned);
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let short_names = strings(&spec["names"]["shortNames"]);
    let categories = strings(&spec["names"]["categories"]);
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| v["name"].as_str())
        .map(|version| ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: singular.clone(),
            namespaced,
            short_names: short_names.clone(),
            has_status: true,
            has_scale: false,
            categories: categories.clone(),
        })
        .collect()
}

/// The strings of a JSON list; nothing when it is not one.
fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builtin_rows_keep_their_flags() {
        let find = |plural: &str| BUILTIN.iter().find(|t| t.plural == plural);
        let ns = find("namespaces");
        assert!(ns.is_some_and(|t| !t.namespaced && t.has_status && t.categories.is_empty()));
        let deploy = find("deployments");
        assert!(deploy.is_some_and(|t| t.namespaced
            && t.has_status
            && t.short_names == ["deploy"]
            && t.categories == ["all"]
            && t.singular == "deployment"
            && t.has_scale
            && t.api_version() == "apps/v1"));
        let secret = find("secrets");
        assert!(secret.is_some_and(|t| t.namespaced
            && !t.has_status
            && !t.has_scale
            && t.short_names.is_empty()));
        let hpa = find("horizontalpodautoscalers");
        assert!(hpa.is_some_and(|t| t.api_version() == "autoscaling/v2"));
        assert_eq!(BUILTIN.len(), 25);
    }

    #[test]
    fn a_crd_declares_one_type_per_served_version() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Cluster",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{"name": "v1"}, {"name": "v2", "served": false}]}});
        let types = from_crd(&crd);
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].singular, "widget");
        assert_eq!(types[0].short_names, ["wd"]);
        assert_eq!(types[0].categories, ["all"]);
        assert!(!types[0].namespaced && types[0].has_status);
        assert!(from_crd(&json!({"spec": {}})).is_empty());
    }
}
