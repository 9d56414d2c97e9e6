//! The release engine from the command line: `coxswain health`, `release apply/history/
//! rollback` and `diff` against `coxswain sim`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;
use tests::{SimProcess, coxswain};

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn health_judges_a_folder_of_snapshots() {
    let folder = repo("tests/fixtures/health");
    let out = coxswain(&["health", "-f", &folder, "-o", "json"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "not everything is healthy");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("web-1", "failed"),
        ("migrate", "healthy"),
        ("doomed", "failed"),
        ("gizmo", "progressing"),
        ("rolled-out", "healthy"),
        ("not-observed-yet", "progressing"),
        ("deadline-exceeded", "failed"),
        ("db", "healthy"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(verdicts, expected);
    let deadline = rows
        .iter()
        .find(|r| r["name"] == "deadline-exceeded")
        .unwrap();
    assert!(
        deadline["message"]
            .as_str()
            .unwrap()
            .starts_with("ProgressDeadlineExceeded")
    );

    let text = coxswain(&["health", "-f", &format!("{folder}/workloads.yaml")]).unwrap();
    let table = String::from_utf8(text.stdout).unwrap();
    assert!(
        table.contains("shop/rolled-out") && table.contains("partitioned roll out complete"),
        "{table}"
    );
}

#[test]
fn a_missing_value_fails_before_any_api_call() {
    // The kubeconfig points nowhere: an API call would fail with a connection error instead.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("nowhere.yaml");
    sim::write_kubeconfig(&kubeconfig, "nowhere", "http://127.0.0.1:9").unwrap();
    let out = coxswain(&[
        "release",
        "apply",
        &repo("examples/web/manifests"),
        "--name",
        "web",
        "--namespace",
        "shop",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(
            "3 missing value(s): config.yaml: values.environment, deployment.yaml: values.image.tag, \
             smoke-test.yaml: values.image.tag"
        ),
        "{err}"
    );
    assert!(!err.contains("connect"), "{err}");
}

#[test]
fn apply_roll_back_and_history_from_the_command_line() {
    let sim = SimProcess::start(&["beta"]).unwrap();
    let kubeconfig = sim.kubeconfig("beta").display().to_string();
    let manifests = repo("examples/web/manifests");
    let env = repo("examples/web/environments/beta.yaml");
    let apply = |tag: &str| {
        coxswain(&[
            "release",
            "apply",
            &manifests,
            "--name",
            "web",
            "--namespace",
            "shop",
            "-f",
            &env,
            "--set",
            &format!("image.tag={tag}"),
            "--app-version",
            tag,
            "--wait",
            "--timeout",
            "60s",
            "--kubeconfig",
            &kubeconfig,
        ])
        .unwrap()
    };
    let first = apply("1.0");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "revision 1: succeeded"
    );

    // Nothing to change: diff exits 0; a new tag: diff shows it and exits 1.
    let same = coxswain(&[
        "diff",
        &manifests,
        "--name",
        "web",
        "--namespace",
        "shop",
        "-f",
        &env,
        "--set",
        "image.tag=1.0",
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap();
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let changed = coxswain(&[
        "diff",
        &manifests,
        "--name",
        "web",
        "--namespace",
        "shop",
        "-f",
        &env,
        "--set",
        "image.tag=1.1",
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap();
    assert_eq!(changed.status.code(), Some(1));
    let diff = String::from_utf8(changed.stdout).unwrap();
    assert!(
        diff.contains("-        image: registry.example.com/shop/web:1.0")
            && diff.contains("+        image: registry.example.com/shop/web:1.1"),
        "{diff}"
    );

    let broken = apply("2.0-broken");
    assert_eq!(broken.status.code(), Some(1));
    let out = String::from_utf8(broken.stdout).unwrap();
    assert!(
        out.contains("revision 3: rolled_back") && out.contains("CrashLoopBackOff"),
        "{out}"
    );

    let history = coxswain(&[
        "release",
        "history",
        "web",
        "--namespace",
        "shop",
        "-o",
        "json",
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["superseded", "failed", "deployed"]);

    let rollback = coxswain(&[
        "release",
        "rollback",
        "web",
        "--namespace",
        "shop",
        "--to",
        "1",
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap();
    assert!(
        rollback.status.success(),
        "{}",
        String::from_utf8_lossy(&rollback.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&rollback.stdout).trim(),
        "revision 4: succeeded"
    );
}

#[test]
fn secret_values_never_show_in_diff_and_a_set_value_cannot_inject_fields() {
    let sim = SimProcess::start(&["beta"]).unwrap();
    let kubeconfig = sim.kubeconfig("beta").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("db.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  user: app\n  password: \"{{ values.password }}\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  tag: {{ values.tag }}\n",
    )
    .unwrap();
    let manifests = dir.path().display().to_string();
    let run = |verb: &[&str], sets: &[&str]| {
        let mut args: Vec<&str> = verb.to_vec();
        args.extend([manifests.as_str(), "--name", "web", "--namespace", "shop"]);
        for set in sets {
            args.extend(["--set", set]);
        }
        args.extend(["--kubeconfig", kubeconfig.as_str()]);
        coxswain(&args).unwrap()
    };
    let output = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let first = run(&["release", "apply"], &["password=old-s3cret", "tag=1"]);
    assert!(first.status.success(), "{}", output(&first));
    assert!(!output(&first).contains("old-s3cret"));

    // A new password: the diff names the Secret and counts the key, never shows a value.
    let diff = run(&["diff"], &["password=new-s3cret", "tag=1"]);
    assert_eq!(diff.status.code(), Some(1), "{}", output(&diff));
    let shown = output(&diff);
    assert!(
        shown.contains("--- v1/Secret shop/db (live)")
            && shown.contains("# Secret data: 1 key changed (values not shown)"),
        "{shown}"
    );
    for value in [
        "old-s3cret",
        "new-s3cret",
        "b2xkLXMzY3JldA",
        "bmV3LXMzY3JldA",
        "YXBw",
    ] {
        assert!(!shown.contains(value), "{value} in {shown}");
    }

    // A line break in a --set value is refused before anything is rendered or applied.
    let injected = run(
        &["release", "apply"],
        &["password=x", "tag=1\nkind: ClusterRoleBinding"],
    );
    assert!(!injected.status.success());
    let err = output(&injected);
    assert!(err.contains("single-line scalar"), "{err}");
    let diff = run(&["diff"], &["password=old-s3cret", "tag=1"]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "nothing was applied: {}",
        output(&diff)
    );

    // A valid apply still works.
    let next = run(&["release", "apply"], &["password=new-s3cret", "tag=2"]);
    assert!(next.status.success(), "{}", output(&next));
    assert!(!output(&next).contains("new-s3cret"));
}
