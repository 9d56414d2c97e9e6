//! CI in any language: a Python client (nats-py) publishes a JSON intent on the documented
//! subject and reads JSON outcome events from the agent; the official Kubernetes client
//! (`kubernetes` on PyPI) works against the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tests::{AgentProcess, NatsServer, SimProcess};

#[test]
fn a_python_client_deploys_and_reads_outcomes() {
    let nats = NatsServer::start().unwrap();
    let topology = tests::coxswain(&["topology", "--nats", &nats.url()]).unwrap();
    assert!(topology.status.success(), "{topology:?}");
    let sim = SimProcess::start(&["beta"]).unwrap();
    let _agent =
        AgentProcess::start("beta", "beta", &nats.url(), &sim.kubeconfig("beta"), &[]).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/bin/python");
    assert!(python.exists(), "run scripts/install-tools first");
    let out = std::process::Command::new(python)
        .arg(root.join("tests/python/client.py"))
        .args([nats.url().as_str(), "beta", "beta"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        r#"["received", "applying", "progressing", "succeeded"]"#
    );
}

#[test]
fn the_official_kubernetes_client_scales_deployments_and_writes_secrets() {
    let sim = SimProcess::start(&["beta"]).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/bin/python");
    assert!(python.exists(), "run scripts/install-tools first");
    let out = std::process::Command::new(python)
        .arg(root.join("tests/python/kube_client.py"))
        .arg(sim.kubeconfig("beta"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the kubernetes client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        r#"{"ready": 3, "scaled_to": 3, "secret": {"password": "s3cret", "user": "admin"}}"#
    );
}
