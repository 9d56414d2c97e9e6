//! A value must stay one YAML scalar: a value with YAML syntax in it (`a", namespace: "x`,
//! `1 # c`, `{a: b}`) that a template writes verbatim must come out whole inside one string of
//! the parsed objects. If it does not, it added, changed or cut fields, and the render is
//! refused naming the value. (Line breaks in `--set` values are refused earlier.)

use serde_json::Value;

/// Whether a string holds YAML syntax that could change structure outside a quoted scalar.
fn has_yaml_syntax(s: &str) -> bool {
    [": ", " #", ", ", "{", "}", "[", "]", "\"", "'", "\n", "\r"]
        .iter()
        .any(|p| s.contains(p))
        || s.starts_with(['-', '?', ':', '&', '*', '!', '|', '>', '%', '@', '`'])
}

/// Every string value of `values` with YAML syntax in it, with its dotted path.
fn risky_strings<'a>(prefix: &str, values: &'a Value, out: &mut Vec<(String, &'a str)>) {
    match values {
        Value::String(s) if has_yaml_syntax(s) => out.push((prefix.to_owned(), s)),
        Value::Object(map) => {
            for (key, value) in map {
                risky_strings(&format!("{prefix}.{key}"), value, out);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                risky_strings(&format!("{prefix}[{i}]"), value, out);
            }
        }
        _ => {}
    }
}

/// Whether `needle` is inside one string (key or value) of `doc`.
fn in_one_scalar(doc: &Value, needle: &str) -> bool {
    match doc {
        Value::String(s) => s.contains(needle),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(needle) || in_one_scalar(v, needle)),
        Value::Array(items) => items.iter().any(|v| in_one_scalar(v, needle)),
        _ => false,
    }
}

/// The path of the first value with YAML syntax that appears in `rendered` (the template's
/// text output) but inside no single string of `objects` (what that text parsed to).
pub(crate) fn broken_scalar(values: &Value, rendered: &str, objects: &[Value]) -> Option<String> {
    let mut risky = Vec::new();
    risky_strings("values", values, &mut risky);
    risky
        .into_iter()
        .filter(|(_, s)| rendered.contains(s))
        .find(|(_, s)| !objects.iter().any(|o| in_one_scalar(o, s)))
        .map(|(path, _)| path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_value_that_leaves_its_scalar_is_named_and_one_that_stays_is_not() {
        let values =
            json!({"name": "a\", namespace: \"kube-system", "tag": "1 # cut", "plain": "v1"});
        // Written into a flow mapping, the name adds a namespace field.
        let rendered = "metadata: {name: \"a\", namespace: \"kube-system\"}\n";
        let objects = [json!({"metadata": {"name": "a", "namespace": "kube-system"}})];
        assert_eq!(
            broken_scalar(&values, rendered, &objects).as_deref(),
            Some("values.name")
        );
        // Unquoted, `#` starts a comment and cuts the value.
        let rendered = "data:\n  tag: 1 # cut\n";
        let objects = [json!({"data": {"tag": 1}})];
        assert_eq!(
            broken_scalar(&values, rendered, &objects).as_deref(),
            Some("values.tag")
        );
        // Inside one string it is fine; a value the template does not write is not checked.
        let rendered = "data:\n  tag: '1 # cut'\n";
        let objects = [json!({"data": {"tag": "1 # cut"}})];
        assert_eq!(broken_scalar(&values, rendered, &objects), None);
        assert!(!has_yaml_syntax("registry.example.com:5000/web:1.0"));
    }
}
