//! Strategic merge patch, enough for what kubectl sends (`set image`, `scale`, `annotate`,
//! `rollout restart`): maps merge, well-known lists merge by their merge key, `$patch`
//! directives are honoured and ordering directives ignored.

use serde_json::{Map, Value};

/// The merge key of a well-known list field, by field name.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Applies `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    let (Value::Object(t), Value::Object(p)) = (&mut *target, patch) else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *t = replaced;
        return;
    }
    for (key, value) in p {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            t.remove(key);
            continue;
        }
        if value.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(key);
            continue;
        }
        match (t.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => apply(existing, value),
            (Some(Value::Array(existing)), Value::Array(items)) => match merge_key(key, items) {
                Some(mk)
                    if items
                        .iter()
                        .all(|i| i.get(mk).is_some() || i.get("$patch").is_some()) =>
                {
                    merge_list(existing, items, mk);
                }
                _ => *existing = items.clone(),
            },
            _ => {
                t.insert(key.clone(), strip_directives(value));
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = &item[key];
        let position = existing.iter().position(|e| &e[key] == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => apply(&mut existing[i], item),
            (None, false) => existing.push(strip_directives(item)),
            (None, true) => {}
        }
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_image_keeps_the_rest_of_the_container() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "side:1"}
        ]}}}});
        apply(
            &mut d,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"name": "web", "image": "web:2"}]
            }}}}),
        );
        assert_eq!(
            d,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "side:1"}
            ]}}}})
        );
    }

    #[test]
    fn delete_directives_and_nulls() {
        let mut o = json!({"metadata": {"annotations": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        apply(
            &mut o,
            &json!({"metadata": {"annotations": {"a": null}},
                "spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
        );
        assert_eq!(
            o,
            json!({"metadata": {"annotations": {"b": "2"}}, "spec": {"containers": [{"name": "a"}]}})
        );
    }
}
