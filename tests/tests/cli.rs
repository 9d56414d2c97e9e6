//! The binary's own surface: help, the published JSON Schemas, intent validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use tests::coxswain;

fn sample_intent() -> serde_json::Value {
    json!({
        "schema_version": 1,
        "id": "gh-run-981.web.beta",
        "cluster": "beta",
        "release": "web",
        "namespace": "web",
        "environment": "beta",
        "version": "1.4.2",
        "images": {"web": "registry.example/web:1.4.2"},
        "manifests": {
            "source": "inline",
            "digest": format!("sha256:{}", "c".repeat(64)),
            "objects": [{"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "web", "namespace": "web"}, "data": {"a": "b"}}]
        },
        "health": {"timeout_secs": 120, "http_probes": [{"url": "http://web.web.svc/healthz"}]},
        "requested_by": "github-actions",
        "created_at": "2026-11-26T10:00:00Z"
    })
}

#[test]
fn help_explains_the_subcommands() {
    let out = coxswain(&["--help"]).unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("schema"), "{text}");
    assert!(text.contains("intent"), "{text}");
    assert!(text.contains("--log-level"), "{text}");
}

#[test]
fn the_intent_schema_accepts_a_sample_and_refuses_a_broken_one() {
    let out = coxswain(&["schema", "intent"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();

    let good = sample_intent();
    let errors: Vec<String> = validator
        .iter_errors(&good)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    let mut bad = sample_intent();
    bad["manifests"] = json!({"source": "carrier-pigeon"});
    bad.as_object_mut().unwrap().remove("release");
    assert!(!validator.is_valid(&bad));

    // The sample the schema accepts is one the agent's decoder accepts too.
    let intent: proto::DeployIntent = proto::decode(
        Some("application/json"),
        &serde_json::to_vec(&good).unwrap(),
    )
    .unwrap();
    assert_eq!(intent.release, "web");
}

#[test]
fn every_message_has_a_schema() {
    for message in ["intent", "outcome", "cluster", "state"] {
        let out = coxswain(&["schema", message]).unwrap();
        assert!(out.status.success(), "{message}");
        let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(schema["type"], "object", "{message}");
    }
}

#[test]
fn intent_validate_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("intent.json");
    let mut bad = sample_intent();
    bad["cluster"] = json!("Prod_East");
    bad["namespace"] = json!("web.team");
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = coxswain(&["intent", "validate", path.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(
        err.contains("cluster: \"Prod_East\" is not a DNS-1123 label"),
        "{err}"
    );
    assert!(
        err.contains("namespace: \"web.team\" is not a DNS-1123 label"),
        "{err}"
    );

    std::fs::write(&path, serde_json::to_vec(&sample_intent()).unwrap()).unwrap();
    let out = coxswain(&["intent", "validate", path.to_str().unwrap()]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fenced blocks of `language` in a Markdown text.
fn fenced(markdown: &str, language: &str) -> Vec<String> {
    let open = format!("```{language}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == open => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Every `coxswain ...` command line of a text (continuation lines joined), as words.
fn commands(text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line
            .trim()
            .trim_start_matches("- ")
            .trim_start_matches("run: ");
        if !line.starts_with("coxswain ") {
            continue;
        }
        let mut command = line.to_owned();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().unwrap_or_default().trim());
        }
        found.push(command.split_whitespace().map(str::to_owned).collect());
    }
    found
}

/// docs/ci.md: every YAML block parses, the GitHub Actions and GitLab CI recipes are there,
/// and every `coxswain` command in them uses a subcommand and flags that exist.
#[test]
fn the_ci_recipes_parse_and_use_only_commands_that_exist() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ci.md")).unwrap();
    let blocks = fenced(&doc, "yaml");
    let parsed: Vec<serde_json::Value> = blocks
        .iter()
        .map(|b| serde_saphyr::from_str(b).unwrap_or_else(|e| panic!("{e}:\n{b}")))
        .collect();
    assert!(
        parsed
            .iter()
            .any(|y| y["jobs"].is_object() && !y["on"].is_null()),
        "a GitHub Actions workflow"
    );
    assert!(
        parsed.iter().any(|y| y["stages"].is_array()),
        "a GitLab CI pipeline"
    );
    let commands: Vec<Vec<String>> = blocks.iter().flat_map(|b| commands(b)).collect();
    assert!(commands.len() >= 4, "{commands:?}");
    for words in &commands {
        let subcommand = &words[1];
        let out = coxswain(&[subcommand, "--help"]).unwrap();
        assert!(out.status.success(), "coxswain {subcommand} does not exist");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in words.iter().filter(|w| w.starts_with('-')) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag},"))
                    || help.contains(&format!("{flag}\n")),
                "coxswain {subcommand} has no {flag} ({})",
                words.join(" ")
            );
        }
        if subcommand == "deploy" {
            assert!(
                words.iter().any(|w| w == "--wait"),
                "CI follows its deploy: {words:?}"
            );
        }
    }
}
