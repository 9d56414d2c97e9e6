//! Real kubectl against `coxswain sim`: the simulator is a cluster as far as kubectl can tell.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use tests::{SimProcess, kubectl_bin};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .display()
        .to_string()
}

fn kubectl(sim: &SimProcess, args: &[&str]) -> Output {
    Command::new(kubectl_bin().unwrap())
        .env("KUBECONFIG", sim.kubeconfig("beta"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_applies_rolls_out_and_deletes_against_the_simulator() {
    let mut sim = SimProcess::start(&["beta", "prod"]).unwrap();

    let namespaces = ok(&kubectl(&sim, &["get", "ns"]));
    assert!(
        namespaces.contains("default") && namespaces.contains("Active"),
        "{namespaces}"
    );

    // Namespace, ConfigMap, Deployment, Service and a CRD in one multi-document file...
    let applied = ok(&kubectl(
        &sim,
        &["apply", "--server-side", "-f", &fixture("kubectl-app.yaml")],
    ));
    for object in [
        "namespace/shop",
        "configmap/web-config",
        "deployment.apps/web",
        "service/web",
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com",
    ] {
        assert!(
            applied.contains(&format!("{object} serverside-applied")),
            "{applied}"
        );
    }
    // ... then a custom resource of that CRD.
    let widget = ok(&kubectl(
        &sim,
        &[
            "apply",
            "--server-side",
            "-f",
            &fixture("kubectl-widget.yaml"),
        ],
    ));
    assert!(
        widget.contains("widget.example.com/gizmo serverside-applied"),
        "{widget}"
    );
    assert!(ok(&kubectl(&sim, &["get", "widgets", "-n", "shop"])).contains("gizmo"));

    let yaml = ok(&kubectl(
        &sim,
        &["get", "deploy", "web", "-n", "shop", "-o", "yaml"],
    ));
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("image: registry.local/web:1.0"),
        "{yaml}"
    );

    let status = ok(&kubectl(
        &sim,
        &[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "shop",
            "--timeout=30s",
        ],
    ));
    assert!(status.contains("successfully rolled out"), "{status}");

    // v2, then `kubectl rollout undo` back to v1: the revisions kubectl reads are kept.
    let v2 = tempfile::tempdir().unwrap();
    let v2_file = v2.path().join("kubectl-app-v2.yaml");
    let v1_text = std::fs::read_to_string(fixture("kubectl-app.yaml")).unwrap();
    std::fs::write(
        &v2_file,
        v1_text.replace("registry.local/web:1.0", "registry.local/web:2.0"),
    )
    .unwrap();
    ok(&kubectl(
        &sim,
        &[
            "apply",
            "--server-side",
            "-f",
            &v2_file.display().to_string(),
        ],
    ));
    let rollout_status = || {
        ok(&kubectl(
            &sim,
            &[
                "rollout",
                "status",
                "deployment/web",
                "-n",
                "shop",
                "--timeout=30s",
            ],
        ))
    };
    assert!(rollout_status().contains("successfully rolled out"));
    let image = || {
        ok(&kubectl(
            &sim,
            &[
                "get",
                "deployment/web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        ))
    };
    assert_eq!(image(), "registry.local/web:2.0");
    let history = || {
        let out = ok(&kubectl(
            &sim,
            &["rollout", "history", "deployment/web", "-n", "shop"],
        ));
        let revisions: Vec<String> = out
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        revisions
    };
    assert_eq!(history(), ["1", "2"]);
    let undone = ok(&kubectl(
        &sim,
        &["rollout", "undo", "deployment/web", "-n", "shop"],
    ));
    assert!(undone.contains("rolled back"), "{undone}");
    assert!(rollout_status().contains("successfully rolled out"));
    assert_eq!(image(), "registry.local/web:1.0");
    // The v1 ReplicaSet came back under a new revision.
    assert_eq!(history(), ["2", "3"]);
    let revision = ok(&kubectl(
        &sim,
        &[
            "get",
            "deployment/web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ],
    ));
    assert_eq!(revision, "3");

    // A crash-looping image: rollout status fails (progress deadline of 100 simulated seconds).
    // The undo's update owns the image now, so the apply takes it back, as on a real cluster.
    ok(&kubectl(
        &sim,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &fixture("kubectl-app-broken.yaml"),
        ],
    ));
    let failed = kubectl(
        &sim,
        &[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "shop",
            "--timeout=30s",
        ],
    );
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let pods = ok(&kubectl(&sim, &["get", "pods", "-n", "shop"]));
    assert!(pods.contains("CrashLoopBackOff"), "{pods}");

    ok(&kubectl(
        &sim,
        &["delete", "-f", &fixture("kubectl-widget.yaml")],
    ));
    ok(&kubectl(
        &sim,
        &["delete", "-f", &fixture("kubectl-app.yaml")],
    ));
    let after = ok(&kubectl(&sim, &["get", "ns"]));
    assert!(!after.contains("shop"), "{after}");

    // The other cluster is separate.
    let prod = Command::new(kubectl_bin().unwrap())
        .env("KUBECONFIG", sim.kubeconfig("prod"))
        .args(["get", "deploy", "-A"])
        .output()
        .unwrap();
    assert!(ok(&prod).is_empty() || !String::from_utf8_lossy(&prod.stdout).contains("web"));

    assert!(
        sim.stop().unwrap().success(),
        "coxswain sim exits 0 on SIGTERM"
    );
}
