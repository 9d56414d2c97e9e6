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

    // A crash-looping image: rollout status fails (progress deadline of 100 simulated seconds).
    ok(&kubectl(
        &sim,
        &[
            "apply",
            "--server-side",
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
