//! The Kubernetes packaging under `dist/kubernetes`: `kubectl kustomize` renders every overlay,
//! the API server (the simulator) accepts every object in a server-side dry run, and an agent
//! run with exactly the configuration the agent Deployment gives it (its args, its env, and
//! the env of its ConfigMap, with the files it mounts from the Secret and the ConfigMap
//! replaced by real keys) becomes ready on its `/readyz` probe and deploys the example through
//! a coordinator, on a nats-server that enforces the roles of `coxswain auth init`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::{
    CoordinatorProcess, NatsServer, SimProcess, coxswain, coxswain_bin, eventually, kubectl_bin,
};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn kubectl(kubeconfig: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(kubectl_bin().unwrap());
    if let Some(k) = kubeconfig {
        command.env("KUBECONFIG", k);
    }
    let out = command.args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `kubectl kustomize` of an overlay: the YAML, and its objects.
fn render(overlay: &str, dir: &Path) -> (PathBuf, Vec<Value>) {
    let path = repo("dist/kubernetes/overlays").join(overlay);
    let (ok, yaml) = kubectl(None, &["kustomize", path.to_str().unwrap()]);
    assert!(ok, "kubectl kustomize {overlay}: {yaml}");
    let folder = dir.join(overlay);
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("rendered.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let objects = deploy::sources::plain(&folder).unwrap().all();
    (file, objects)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name))
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_overlay_renders_and_the_api_server_accepts_every_object() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(&["pack"]).unwrap();
    let kubeconfig = sim.kubeconfig("pack");
    // A dry run persists nothing, so the namespaces the objects go to must exist, as on any
    // cluster (dist/kubernetes/README.md says so).
    let namespace = dir.path().join("namespace.yaml");
    std::fs::write(
        &namespace,
        ["coxswain-system", "shop", "shop-preview"]
            .map(|ns| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"))
            .join("---\n"),
    )
    .unwrap();
    let (ok, out) = kubectl(
        Some(&kubeconfig),
        &["apply", "-f", namespace.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    for overlay in ["agent", "coordinator", "example"] {
        let (file, objects) = render(overlay, dir.path());
        let (ok, out) = kubectl(
            Some(&kubeconfig),
            &["apply", "--dry-run=server", "-f", file.to_str().unwrap()],
        );
        assert!(ok, "{overlay}: {out}");
        let accepted = out
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            accepted,
            objects.len(),
            "{overlay}: every object accepted:\n{out}"
        );
        let component = if overlay == "coordinator" {
            "coxswain-coordinator"
        } else {
            "coxswain-agent"
        };
        let deployment = find(&objects, "Deployment", component);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{overlay}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{overlay}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{overlay}: limits"
        );
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{overlay}: requests"
        );
        assert_eq!(
            container["securityContext"]["runAsNonRoot"], true,
            "{overlay}"
        );
        for kind in [
            "ServiceAccount",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Service",
        ] {
            find(&objects, kind, component);
        }
    }
    let (_, agent) = render("agent", dir.path());
    // Least privilege: namespaces cluster-wide, everything else only by RoleBinding in the
    // release namespaces.
    let bindings: Vec<&Value> = agent
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding")
        .collect();
    assert!(
        bindings
            .iter()
            .all(|b| b["roleRef"]["name"] == "coxswain-agent-namespaces"),
        "{bindings:?}"
    );
    let namespaces = find(&agent, "ClusterRole", "coxswain-agent-namespaces");
    assert!(
        namespaces["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["resources"] == serde_json::json!(["namespaces"]))
    );
    let rolebinding = find(&agent, "RoleBinding", "coxswain-agent-release");
    assert_eq!(rolebinding["metadata"]["namespace"], "shop");
}

/// The agent Deployment's environment, as the kubelet would give it: its ConfigMap's data
/// (`envFrom`), then its own `env` values.
fn agent_environment(objects: &[Value]) -> (Vec<String>, BTreeMap<String, String>) {
    let deployment = find(objects, "Deployment", "coxswain-agent");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().unwrap() {
        let name = source["configMapRef"]["name"].as_str().unwrap();
        let map = find(objects, "ConfigMap", name);
        for (k, v) in map["data"].as_object().unwrap() {
            env.insert(k.clone(), v.as_str().unwrap().to_owned());
        }
    }
    for var in container["env"].as_array().unwrap() {
        env.insert(
            var["name"].as_str().unwrap().to_owned(),
            var["value"].as_str().unwrap().to_owned(),
        );
    }
    let args = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    (args, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_configured_as_the_manifests_say_deploys_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let (_, objects) = render("example", dir.path());
    let (args, mut env) = agent_environment(&objects);
    assert_eq!(args, ["agent"]);
    let cluster = env["COXSWAIN_CLUSTER"].clone();
    assert_eq!(cluster, "beta");

    let keys = dir.path().join("keys");
    coxswain(&[
        "auth",
        "init",
        "--dir",
        keys.to_str().unwrap(),
        "--clusters",
        &cluster,
    ])
    .unwrap();
    let nats = NatsServer::start_with_config(&keys.join("nats-server.conf")).unwrap();
    let admin = keys.join("admin.nk");
    let out = coxswain(&[
        "topology",
        "--nats",
        &nats.url(),
        "--nats-nkey",
        admin.to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sim = SimProcess::start(&[&cluster]).unwrap();

    // What the Secret and ConfigMap volumes would hold, and what only a test changes: the
    // NATS address, a free port for the probes, and a kubeconfig instead of the in-cluster
    // account.
    let mounted = |var: &str, file: PathBuf| {
        let path = PathBuf::from(&env[var]);
        assert!(path.is_absolute(), "{var} is a mounted file: {path:?}");
        file.to_str().unwrap().to_owned()
    };
    let nkey = mounted(
        "COXSWAIN_NATS_NKEY",
        keys.join(format!("agent-{cluster}.nk")),
    );
    let trust = mounted("COXSWAIN_TRUST_KEYS", keys.join("signing.pub"));
    let probes = tests::free_address().unwrap();
    env.insert("COXSWAIN_NATS_NKEY".into(), nkey);
    env.insert("COXSWAIN_TRUST_KEYS".into(), trust);
    env.insert("COXSWAIN_NATS_URL".into(), nats.url());
    env.insert("COXSWAIN_METRICS_ADDR".into(), probes.clone());
    env.insert(
        "COXSWAIN_KUBECONFIG".into(),
        sim.kubeconfig(&cluster).to_str().unwrap().to_owned(),
    );
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut command = Command::new(coxswain_bin().unwrap());
    command
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("COXSWAIN_")) {
        command.env_remove(k);
    }
    let mut agent = command.envs(&env).spawn().unwrap();

    eventually(
        Duration::from_secs(30),
        "the agent's readiness probe answers 200",
        || async {
            match tests::http_get(&format!("http://{probes}"), "/readyz", "") {
                (200, _) => Ok(()),
                other => Err(format!(
                    "{other:?} {}",
                    std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
                )),
            }
        },
    )
    .await;

    std::fs::write(dir.path().join("policy.yaml"), tests::FLEET_POLICY).unwrap();
    let coordinator = CoordinatorProcess::start_with(
        &nats.url(),
        "packaging-token",
        &dir.path().join("policy.yaml"),
        &[
            "--nats-nkey",
            keys.join("coordinator.nk").to_str().unwrap(),
            "--signing-key",
            keys.join("signing.nk").to_str().unwrap(),
        ],
    )
    .unwrap();
    let config = tests::example_app_config(dir.path()).unwrap();
    let args = [
        "--env",
        "beta",
        "--release",
        "web",
        "--set",
        "image.tag=1.0",
        "--wait",
        "--timeout",
        "2m",
    ];
    let (code, out, err) =
        tests::deploy_cli(&config, &coordinator.url, "packaging-token", &args, &[]).unwrap();
    let agent_log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    assert_eq!(code, 0, "{out}{err}\nagent:\n{agent_log}");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// The Containerfile (no image can be built here: no registry of base images is reachable)
/// runs non-root from a static binary, and its HEALTHCHECK calls a subcommand that exists and
/// passes and fails as a health check must.
#[test]
fn the_containerfile_runs_non_root_and_checks_itself_with_the_binary() {
    let file = std::fs::read_to_string(repo("Containerfile")).unwrap();
    let directive = |name: &str| {
        file.lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(directive("USER "), ["USER 65532:65532"]);
    assert!(
        directive("FROM ")
            .iter()
            .any(|l| l.contains("RUNTIME_IMAGE"))
    );
    assert!(file.contains("ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot"));
    assert!(
        file.contains("x86_64-unknown-linux-musl"),
        "a static (musl) binary"
    );
    let health = directive("HEALTHCHECK ");
    assert!(
        health
            .iter()
            .any(|l| l.contains("\"/coxswain\", \"healthcheck\"")),
        "{health:?}"
    );
    // The subcommand it calls: 0 on a 2xx, 1 otherwise.
    let sim = SimProcess::start(&["probe"]).unwrap();
    let address = sim.address("probe").unwrap();
    let ok = coxswain(&["healthcheck", &format!("http://{address}/version")]).unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = coxswain(&["healthcheck", &format!("http://{address}/no-such-path")]).unwrap();
    assert_eq!(missing.status.code(), Some(1));
}
