//! Property tests of rendering: whatever the templates, values and `--set` expressions,
//! `render`, `layered_values`, `apply_set`, `merge_values` and `Rendered::from_objects` return
//! an answer or a typed error and never panic. `$PROPTEST_CASES` scales them (`scripts/chaos
//! fuzz`); the default test run keeps a small sample.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;

use deploy::render::{Rendered, apply_set, layered_values, merge_values, render};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

thread_local! {
    /// One release folder per test thread, rewritten for every case.
    static DIR: RefCell<tempfile::TempDir> = RefCell::new(tempfile::tempdir().unwrap());
}

/// Pieces templates are made of: YAML structure, Jinja expressions and statements (good and
/// broken), and arbitrary text.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n".to_owned()),
        Just("---\n".to_owned()),
        Just("  key: \"{{ values.a }}\"\n".to_owned()),
        Just("{{ values.image.tag }}".to_owned()),
        Just("{{ release.name }}-{{ release.namespace }}".to_owned()),
        Just("{% if values.a %}x{% endif %}".to_owned()),
        Just("{% for i in values.list %}- {{ i }}\n{% endfor %}".to_owned()),
        Just("{{ values.a | upper }}".to_owned()),
        Just("{{".to_owned()),
        Just("{%".to_owned()),
        Just("}}".to_owned()),
        Just("{{ values[".to_owned()),
        Just("{{ 1/0 }}".to_owned()),
        Just("{{ range(100000000) | length }}".to_owned()),
        Just("- [".to_owned()),
        Just("&a [*a, *a]\n".to_owned()),
        Just("!!binary AAAA\n".to_owned()),
        Just("kind: Deployment\n".to_owned()),
        "[ -~\n]{0,40}",
        ".{0,20}",
    ]
}

fn template() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..16).prop_map(|parts| parts.concat())
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn values() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}|image|tag|a|list", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn rendering_any_template_with_any_values_never_panics(
        files in prop::collection::vec(("[a-z]{1,8}\\.(yaml|yml|txt)", template()), 1..4),
        defaults in prop::option::of(template()),
        values in values(),
        name in ".{0,20}",
    ) {
        DIR.with(|dir| {
            let dir = dir.borrow();
            let path = dir.path();
            for entry in std::fs::read_dir(path).unwrap().flatten() {
                std::fs::remove_file(entry.path()).unwrap();
            }
            for (file, text) in &files {
                std::fs::write(path.join(file), text).unwrap();
            }
            if let Some(defaults) = &defaults {
                std::fs::write(path.join("values.yaml"), defaults).unwrap();
            }
            let release = json!({"name": name, "namespace": "shop"});
            let _ = render(path, &values, &release);
            if let Ok(layered) = layered_values(path, None, &[])
                && let Ok(rendered) = render(path, &layered, &release)
            {
                // Whatever renders has a digest and an install order.
                prop_assert!(rendered.digest.starts_with("sha256:"));
            }
            let _ = deploy::render::content_digest(path);
            Ok(())
        })?;
    }

    #[test]
    fn set_expressions_and_merges_never_panic(
        base in values(),
        over in values(),
        sets in prop::collection::vec("[a-z.\\[\\]0-9=,{}\"' -]{0,30}", 0..6),
        objects in prop::collection::vec(values(), 0..6),
    ) {
        let mut merged = base.clone();
        merge_values(&mut merged, &over);
        for expr in &sets {
            let _ = apply_set(&mut merged, expr);
        }
        let _ = Rendered::from_objects(objects);
    }
}
