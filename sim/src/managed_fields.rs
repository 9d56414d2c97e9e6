//! Field ownership for server-side apply, as `metadata.managedFields` records it: which
//! manager set which fields, the paths conflicts are found on, and the removal of fields a
//! manager stops applying. Maps merge key by key; lists are atomic (set as a whole), which is
//! what a re-apply of a previous revision needs.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A path of map keys from the object's root.
pub type FieldPath = Vec<String>;

/// The set of leaf fields one manager owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<FieldPath>);

/// Fields that identify or are kept by the server; nobody owns them.
fn is_identity(path: &[String]) -> bool {
    match path {
        [top] => top == "apiVersion" || top == "kind",
        [meta, field, ..] if meta == "metadata" => matches!(
            field.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "deletionTimestamp"
                | "selfLink"
        ),
        _ => false,
    }
}

impl FieldSet {
    /// The leaves of an object: scalars, lists and empty maps; `status` left out when the
    /// resource has a status subresource.
    pub fn leaves_of(object: &Value, skip_status: bool) -> Self {
        let mut set = BTreeSet::new();
        let mut path = Vec::new();
        collect(object, &mut path, &mut set);
        set.retain(|p| {
            !(is_identity(p) || skip_status && p.first().is_some_and(|f| f == "status"))
        });
        Self(set)
    }

    /// Leaves of `new` whose value differs from `old`, and leaves of `old` that `new` lacks.
    pub fn changed(old: &Value, new: &Value, skip_status: bool) -> (Self, Self) {
        let old_leaves = Self::leaves_of(old, skip_status);
        let new_leaves = Self::leaves_of(new, skip_status);
        let changed = new_leaves
            .0
            .iter()
            .filter(|p| get(old, p) != get(new, p))
            .cloned()
            .collect();
        let removed = old_leaves
            .0
            .iter()
            .filter(|p| get(new, p).is_none())
            .cloned()
            .collect();
        (Self(changed), Self(removed))
    }

    /// The paths.
    pub fn iter(&self) -> impl Iterator<Item = &FieldPath> {
        self.0.iter()
    }

    /// No fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does any path of this set overlap `path` (equal, a prefix, or an extension of it)?
    pub fn overlaps(&self, path: &[String]) -> bool {
        self.0.iter().any(|p| overlapping(p, path))
    }

    /// Removes every path overlapping `path`.
    pub fn remove_overlapping(&mut self, path: &[String]) {
        self.0.retain(|p| !overlapping(p, path));
    }

    /// Adds every path of `other`.
    pub fn extend(&mut self, other: &Self) {
        self.0.extend(other.0.iter().cloned());
    }

    /// Paths of this set not in `other`.
    pub fn minus(&self, other: &Self) -> Self {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    /// The `fieldsV1` form: `{"f:spec": {"f:replicas": {}}}`.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for key in path {
                let entry = node
                    .entry(format!("f:{key}"))
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                let Value::Object(next) = entry else {
                    break;
                };
                node = next;
            }
        }
        Value::Object(root)
    }

    /// Reads the `fieldsV1` form back; unknown entries (`k:`, `v:`, `.`) are kept as leaves.
    pub fn from_fields_v1(fields: &Value) -> Self {
        let mut set = BTreeSet::new();
        let mut path = Vec::new();
        read_fields(fields, &mut path, &mut set);
        Self(set)
    }
}

fn overlapping(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn collect(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                if v.is_null() {
                    continue;
                }
                path.push(k.clone());
                collect(v, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

fn read_fields(fields: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    let children: Vec<_> = map
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("f:").map(|k| (k, v)))
        .collect();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, v) in children {
        path.push(k.to_owned());
        read_fields(v, path, out);
        path.pop();
    }
}

/// The value at a path.
pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.as_object()?.get(k))
}

/// Removes the value at a path, and maps left empty on the way up (but never `metadata`).
pub fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = &mut *value;
    for key in parents {
        match node.as_object_mut().and_then(|m| m.get_mut(key)) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
    if parents.len() > 1 || parents.first().is_some_and(|p| p != "metadata") {
        let empty = get(value, parents).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
        if empty && !parents.is_empty() {
            remove(value, parents);
        }
    }
}

/// Merges an applied configuration into an object: maps key by key, everything else replaced;
/// nulls in the configuration are ignored.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `status` for writes through the status subresource, else empty.
    pub subresource: String,
    /// apiVersion the fields were set through.
    pub api_version: String,
    /// When.
    pub time: String,
    /// The fields.
    pub fields: FieldSet,
}

impl ManagedEntry {
    /// Reads `metadata.managedFields`.
    pub fn read_all(object: &Value) -> Vec<Self> {
        object["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| Self {
                manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                subresource: e["subresource"].as_str().unwrap_or_default().to_owned(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                time: e["time"].as_str().unwrap_or_default().to_owned(),
                fields: FieldSet::from_fields_v1(&e["fieldsV1"]),
            })
            .collect()
    }

    /// Writes `metadata.managedFields`, dropping entries that own nothing.
    pub fn write_all(object: &mut Value, entries: &[Self]) {
        let list: Vec<Value> = entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                if !e.subresource.is_empty() {
                    v["subresource"] = e.subresource.clone().into();
                }
                v
            })
            .collect();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            if list.is_empty() {
                meta.remove("managedFields");
            } else {
                meta.insert("managedFields".into(), Value::Array(list));
            }
        }
    }

    /// Is this the entry of `manager` for `operation` on `subresource`?
    pub fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// `.spec.replicas`, as conflict messages print a path.
pub fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn leaves_skip_identity_and_status() {
        let o = json!({"apiVersion": "v1", "kind": "X",
            "metadata": {"name": "a", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"containers": [{"name": "c"}]}, "empty": {}},
            "status": {"ready": 1}});
        let set = FieldSet::leaves_of(&o, true);
        let paths: Vec<String> = set.iter().map(|p| p.join(".")).collect();
        assert_eq!(
            paths,
            [
                "metadata.labels.app",
                "spec.empty",
                "spec.replicas",
                "spec.template.containers"
            ]
        );
        assert_eq!(FieldSet::from_fields_v1(&set.to_fields_v1()), set);
    }

    #[test]
    fn changed_and_removed() {
        let old = json!({"spec": {"a": 1, "b": 2}});
        let new = json!({"spec": {"a": 1, "b": 3, "c": 4}});
        let (changed, removed) = FieldSet::changed(&old, &new, false);
        assert_eq!(
            changed.iter().cloned().collect::<Vec<_>>(),
            [p("spec.b"), p("spec.c")]
        );
        assert!(removed.is_empty());
        let (_, removed) = FieldSet::changed(&new, &old, false);
        assert_eq!(removed.iter().cloned().collect::<Vec<_>>(), [p("spec.c")]);
    }

    #[test]
    fn remove_prunes_empty_parents_but_not_metadata() {
        let mut o = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": {"y": 1}}});
        remove(&mut o, &p("spec.x.y"));
        remove(&mut o, &p("metadata.labels.a"));
        assert_eq!(o, json!({"metadata": {}}));
    }

    #[test]
    fn merge_maps_and_replaces_lists() {
        let mut o = json!({"spec": {"a": 1, "list": [1, 2], "m": {"k": "v"}}});
        merge(
            &mut o,
            &json!({"spec": {"list": [3], "m": {"j": "w"}, "n": null}}),
        );
        assert_eq!(
            o,
            json!({"spec": {"a": 1, "list": [3], "m": {"k": "v", "j": "w"}}})
        );
    }
}
