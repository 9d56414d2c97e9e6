//! Admission: what the API server does to an object on write, before it is stored: the
//! shape every object must have, kind-specific validation, defaults, and the status a new
//! object starts with.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::resource::ResourceType;
use crate::selector::LabelSelector;

/// Field errors, `(field, message)`.
pub type Causes = Vec<(String, String)>;

/// A DNS-1123 subdomain: what most object names must be.
pub fn check_subdomain(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    })
}

/// A DNS-1123 label: what namespace names must be.
pub fn check_label(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case \
             alphanumeric characters or '-', and must start and end with an alphanumeric character"
        )
    })
}

/// The shape every object must have before anything indexes into it: a map, with map
/// `metadata` (string-valued `labels` and `annotations`) and, when present, map `spec`.
pub fn well_formed(object: &Value) -> Causes {
    let mut causes = Causes::new();
    if !object.is_object() {
        causes.push((
            "".into(),
            "Invalid value: an object must be a JSON map".into(),
        ));
        return causes;
    }
    let meta = &object["metadata"];
    if !meta.is_object() {
        causes.push(("metadata".into(), "Required value: must be a map".into()));
        return causes;
    }
    for field in ["labels", "annotations"] {
        match &meta[field] {
            Value::Null => {}
            Value::Object(map) if map.values().all(Value::is_string) => {}
            _ => causes.push((
                format!("metadata.{field}"),
                "Invalid value: must be a map of strings".into(),
            )),
        }
    }
    if !matches!(meta["ownerReferences"], Value::Null | Value::Array(_)) {
        causes.push((
            "metadata.ownerReferences".into(),
            "Invalid value: must be a list".into(),
        ));
    }
    for field in ["spec", "status"] {
        if !matches!(object[field], Value::Null | Value::Object(_)) {
            causes.push((field.into(), "Invalid value: must be a map".into()));
        }
    }
    causes
}

/// Kind-specific validation of an object about to be stored (after [`well_formed`]).
pub fn validate(rt: &ResourceType, object: &Value) -> Causes {
    let mut causes = Causes::new();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let name_problem = if rt.kind == "Namespace" {
        check_label(name)
    } else {
        check_subdomain(name)
    };
    if let Some(problem) = name_problem {
        causes.push(("metadata.name".into(), problem));
    }
    for (key, _) in object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if key.is_empty() || key.len() > 317 {
            causes.push((
                format!("metadata.labels.{key}"),
                "Invalid value: label key".into(),
            ));
        }
    }
    match rt.kind.as_str() {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            validate_workload(object, &mut causes);
        }
        "CustomResourceDefinition" => {
            let spec = &object["spec"];
            for field in ["group", "names.kind", "names.plural"] {
                let value = field.split('.').fold(spec, |v, k| &v[k]);
                if value.as_str().is_none_or(str::is_empty) {
                    causes.push((format!("spec.{field}"), "Required value".into()));
                }
            }
            if spec["versions"].as_array().is_none_or(Vec::is_empty) {
                causes.push(("spec.versions".into(), "Required value".into()));
            }
            let expected = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or_default(),
                spec["group"].as_str().unwrap_or_default()
            );
            if name != expected {
                causes.push((
                    "metadata.name".into(),
                    format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
                ));
            }
        }
        _ => {}
    }
    causes
}

fn validate_workload(object: &Value, causes: &mut Causes) {
    let spec = &object["spec"];
    let selector = &spec["selector"];
    if !selector.is_object() {
        causes.push(("spec.selector".into(), "Required value".into()));
        return;
    }
    let labels = &spec["template"]["metadata"]["labels"];
    if !LabelSelector::from_object(selector).matches(labels) {
        causes.push((
            "spec.template.metadata.labels".into(),
            "Invalid value: `selector` does not match template `labels`".into(),
        ));
    }
    let containers = spec["template"]["spec"]["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        causes.push((
            "spec.template.spec.containers".into(),
            "Required value".into(),
        ));
    }
    for (i, c) in containers.into_iter().flatten().enumerate() {
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push((
                format!("spec.template.spec.containers[{i}].image"),
                "Required value".into(),
            ));
        }
    }
}

/// A Secret's `stringData` folded into `data` (base64), as the API server converts it on every
/// write: `stringData` is write-only, never stored, and wins over `data` for the same key.
pub fn fold_string_data(rt: &ResourceType, object: &mut Value) -> Causes {
    if !(rt.group.is_empty() && rt.kind == "Secret") {
        return Causes::new();
    }
    let Some(string_data) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return Causes::new();
    };
    let must_be = |field: String, what: &str| vec![(field, format!("Invalid value: {what}"))];
    let entries = match string_data {
        Value::Null => return Causes::new(),
        Value::Object(entries) => entries,
        _ => return must_be("stringData".into(), "must be a map of strings"),
    };
    if !matches!(object["data"], Value::Null | Value::Object(_)) {
        return must_be("data".into(), "must be a map of base64 strings");
    }
    let mut causes = Causes::new();
    for (key, value) in entries {
        match value.as_str() {
            Some(text) => object["data"][key.as_str()] = BASE64.encode(text).into(),
            None => causes.extend(must_be(format!("stringData.{key}"), "must be a string")),
        }
    }
    causes
}

/// Defaults the API server fills in, and the status a new object starts with.
pub fn default_new(rt: &ResourceType, object: &mut Value, cluster_ip: impl FnOnce() -> String) {
    let spec = &mut object["spec"];
    match rt.kind.as_str() {
        "Deployment" => {
            default(spec, "replicas", json!(1));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        "StatefulSet" => {
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
        }
        "DaemonSet" => {
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
            );
        }
        "ReplicaSet" => default(spec, "replicas", json!(1)),
        "Job" => {
            default(spec, "completions", json!(1));
            default(spec, "parallelism", json!(1));
            default(spec, "backoffLimit", json!(6));
        }
        "Service" => {
            default(spec, "type", json!("ClusterIP"));
            if spec["clusterIP"].as_str().is_none_or(str::is_empty) {
                spec["clusterIP"] = json!(cluster_ip());
            }
        }
        _ => {}
    }
    if spec.is_null()
        && let Some(map) = object.as_object_mut()
    {
        map.remove("spec");
    }
    match rt.kind.as_str() {
        "Namespace" => {
            object["status"] = json!({"phase": "Active"});
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            let name = object["metadata"]["name"].clone();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
        }
        "Pod" => object["status"] = json!({"phase": "Pending"}),
        "CustomResourceDefinition" => {
            let names = object["spec"]["names"].clone();
            object["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ],
                "storedVersions": object["spec"]["versions"].as_array().into_iter().flatten()
                    .filter(|v| v["storage"].as_bool().unwrap_or(false))
                    .map(|v| v["name"].clone()).collect::<Vec<_>>(),
            });
        }
        _ => {}
    }
}

fn default(spec: &mut Value, key: &str, value: Value) {
    if !spec.is_object() {
        *spec = json!({});
    }
    if spec.get(key).is_none_or(Value::is_null) {
        spec[key] = value;
    }
}

/// Does a change from `old` to `new` bump `metadata.generation` (anything but metadata and
/// status changed)?
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}
