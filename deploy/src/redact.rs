//! Secret data is never shown: not in `coxswain diff`, events or logs. A Secret's values are
//! replaced by [`REDACTED`] and what changed is told as "N keys changed".

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

/// What a Secret value is shown as.
pub const REDACTED: &str = "(redacted)";

/// The annotation client-side `kubectl apply` keeps the whole last object in, values included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn is_secret(object: &Value) -> bool {
    object["kind"] == "Secret"
}

/// The object with every Secret value (`data`, `stringData`, a last-applied annotation)
/// replaced by [`REDACTED`]; anything but a Secret is returned unchanged.
pub fn redact_secret(object: &Value) -> Value {
    let mut o = object.clone();
    if !is_secret(object) {
        return o;
    }
    for field in ["data", "stringData"] {
        if let Some(map) = o[field].as_object_mut() {
            for value in map.values_mut() {
                *value = REDACTED.into();
            }
        }
    }
    if let Some(annotations) = o["metadata"]["annotations"].as_object_mut()
        && let Some(value) = annotations.get_mut(LAST_APPLIED)
    {
        *value = REDACTED.into();
    }
    o
}

/// A Secret's keys and their values as base64 (`stringData` folded in as the server does).
fn secret_values(object: &Value) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        values.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
    }
    for (key, value) in object["stringData"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        values.insert(
            key.clone(),
            base64::engine::general_purpose::STANDARD.encode(text),
        );
    }
    values
}

/// How many keys of a Secret are added, removed or changed from `before` (absent: none) to
/// `after`.
pub fn secret_keys_changed(before: Option<&Value>, after: &Value) -> usize {
    let old = before.map(secret_values).unwrap_or_default();
    let new = secret_values(after);
    let changed = new.iter().filter(|(k, v)| old.get(*k) != Some(v)).count();
    changed + old.keys().filter(|k| !new.contains_key(*k)).count()
}

/// "1 key changed", "3 keys changed": what a diff says about a Secret's data.
pub fn keys_changed_note(count: usize) -> String {
    let keys = if count == 1 { "key" } else { "keys" };
    format!("Secret data: {count} {keys} changed (values not shown)")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_values_are_redacted_and_changes_counted_without_them() {
        let live = json!({"kind": "Secret", "metadata": {"name": "db",
            "annotations": {LAST_APPLIED: "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},
            "data": {"password": "aHVudGVyMg==", "user": "YXBw", "gone": "eA=="}});
        let after = json!({"kind": "Secret", "metadata": {"name": "db"},
            "data": {"user": "YXBw", "new": "eQ=="}, "stringData": {"password": "s3cret"}});
        let shown = format!("{}{}", redact_secret(&live), redact_secret(&after));
        for value in ["aHVudGVyMg==", "YXBw", "eA==", "eQ==", "s3cret"] {
            assert!(!shown.contains(value), "{value} shown in {shown}");
        }
        assert_eq!(redact_secret(&after)["data"]["user"], REDACTED);
        // password changed, gone removed, new added; user unchanged.
        assert_eq!(secret_keys_changed(Some(&live), &after), 3);
        assert_eq!(secret_keys_changed(Some(&live), &live), 0);
        assert_eq!(secret_keys_changed(None, &after), 3);
        assert_eq!(
            keys_changed_note(1),
            "Secret data: 1 key changed (values not shown)"
        );
        let config = json!({"kind": "ConfigMap", "data": {"k": "v"}});
        assert_eq!(redact_secret(&config), config, "only Secrets are redacted");
    }
}
