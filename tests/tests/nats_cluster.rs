//! Coxswain on a 3-node JetStream cluster with R3 streams (`coxswain topology --replicas 3`):
//! every process gets the whole URL list, and one node is killed (SIGKILL) mid-rollout, and
//! again mid fan-out, then restarted. No intent or outcome is lost or duplicated, the
//! rollouts complete, and every target cluster runs the new version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bus::testing::NatsCluster;
use proto::{Phase, Rollout, RolloutStatus};
use serde_json::json;
use tests::{
    AgentProcess, CoordinatorProcess, SimProcess, cluster_events, coxswain, coxswain_bin,
    eventually, kubectl_bin,
};

const TOKEN: &str = "test-token";

/// `prod` rolls out east, then west; `fleet` is one wave of every `env=fleet` cluster.
const POLICY: &str = "environments:
  prod:
    selector: {env: prod}
    waves:
      - {region: east}
      - {region: west}
    releases: [web]
    namespaces: [shop]
  fleet:
    selector: {env: fleet}
    releases: [web]
    namespaces: [shop]
";

struct Fleet {
    nats: NatsCluster,
    sim: SimProcess,
    _agents: Vec<AgentProcess>,
    _coordinator: CoordinatorProcess,
    coordinator_url: String,
    config: tempfile::TempDir,
    bus: bus::Bus,
    topology: bus::Topology,
}

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/web")
        .join(path)
}

/// Writes the policy and the app's `coxswain.yaml` (release `web` from the example).
fn write_config(dir: &Path) {
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    let values = example("environments/prod.yaml");
    std::fs::write(
        dir.join("coxswain.yaml"),
        format!(
            "releases:\n  web:\n    manifests: {}\n    namespace: shop\n    health: {{timeout_secs: 60}}\n\
             environments:\n  prod:\n    values: {}\n\
             \x20 fleet:\n    values: {}\n",
            example("manifests").display(),
            values.display(),
            values.display(),
        ),
    )
    .unwrap();
}

/// A 3-node NATS cluster with the R3 topology, the simulator, one agent per `(cluster, env,
/// region)` and a coordinator, every process given the whole URL list; returns once every
/// agent registered.
async fn fleet(clusters: &[(&str, &str, &str)]) -> Fleet {
    let nats = NatsCluster::start().unwrap();
    let urls = nats.urls();
    let out = coxswain(&["topology", "--replicas", "3", "--nats", &urls]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<&str> = clusters.iter().map(|(c, _, _)| *c).collect();
    let sim = SimProcess::start(&names).unwrap();
    let agents = clusters
        .iter()
        .map(|(c, env, region)| {
            let label = format!("region={region}");
            AgentProcess::start(c, env, &urls, &sim.kubeconfig(c), &["--label", &label]).unwrap()
        })
        .collect();
    let config = tempfile::tempdir().unwrap();
    write_config(config.path());
    // No --create-topology: the topology is the admin's, R3, and stays so.
    let coordinator = CoordinatorProcess::start_with(
        &urls,
        TOKEN,
        &config.path().join("policy.yaml"),
        &["--insecure-unsigned-intents"],
    )
    .unwrap();
    // The test's own reads give up on a dead node after 2 s, not 10, and are tried again.
    let bus = bus::connect(&bus::ConnectOptions {
        url: urls,
        request_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .await
    .unwrap();
    let topology = bus.open_topology().await.unwrap();
    eventually(
        Duration::from_secs(30),
        "every agent registered",
        || async {
            let registered = topology.registry.all().await.unwrap();
            if registered.len() == clusters.len() {
                Ok(())
            } else {
                Err(registered.into_iter().map(|c| c.name).collect::<Vec<_>>())
            }
        },
    )
    .await;
    Fleet {
        nats,
        sim,
        _agents: agents,
        coordinator_url: coordinator.url.clone(),
        _coordinator: coordinator,
        config,
        bus,
        topology,
    }
}

impl Fleet {
    /// `coxswain deploy` of `web` at `tag` to `env`, without waiting: the rollout id.
    fn deploy(&self, env: &str, tag: &str) -> String {
        let config = self.config.path().join("coxswain.yaml");
        let out = std::process::Command::new(coxswain_bin().unwrap())
            .args(["deploy", "--config", config.to_str().unwrap()])
            .args(["--env", env, "--release", "web"])
            .args(["--set", &format!("image.tag={tag}")])
            .args(["--coordinator", &self.coordinator_url, "--token", TOKEN])
            .env("COXSWAIN_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{out:?}");
        stdout
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches(':')
            .to_owned()
    }

    /// The image of Deployment `shop/web` in `cluster`, as kubectl sees it.
    fn image(&self, cluster: &str) -> String {
        let out = std::process::Command::new(kubectl_bin().unwrap())
            .env("KUBECONFIG", self.sim.kubeconfig(cluster))
            .args(["get", "deploy", "web", "-n", "shop", "-o"])
            .arg("jsonpath={.spec.template.spec.containers[0].image}")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for the rollout to end, and for every cluster's consumer to be idle (nothing
    /// pending, nothing unacknowledged: no redelivery can still come).
    async fn finished(&self, id: &str, clusters: &[&str]) -> Rollout {
        let rollout = eventually(Duration::from_secs(120), "the rollout ended", || async {
            match self.topology.rollouts.get(id).await {
                Ok(Some((r, _))) if r.status.is_final() => Ok(r),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        for cluster in clusters {
            eventually(Duration::from_secs(30), "the consumer is idle", || async {
                let backlog = self.bus.intent_backlog(cluster).await;
                match backlog {
                    Ok(b) if b.pending == 0 && b.unacked == 0 => Ok(()),
                    other => Err(format!("{cluster}: {other:?}")),
                }
            })
            .await;
        }
        rollout
    }

    /// The rollout succeeded; each cluster has exactly one final event per intent it ever
    /// received, the rollout's own ending `succeeded`; and kubectl sees `tag` deployed.
    async fn assert_delivered_once(&self, rollout: &Rollout, clusters: &[&str], tag: &str) {
        assert_eq!(rollout.status, RolloutStatus::Succeeded, "{rollout:?}");
        for cluster in clusters {
            let events = cluster_events(&self.bus, cluster).await.unwrap();
            let mut finals: BTreeMap<&str, Vec<Phase>> = BTreeMap::new();
            for e in events.iter().filter(|e| e.terminal) {
                finals.entry(&e.intent_id).or_default().push(e.phase);
            }
            let intents: Vec<&str> = events.iter().map(|e| e.intent_id.as_str()).collect();
            for intent in &intents {
                let ended = finals.get(intent).map_or(0, Vec::len);
                assert_eq!(ended, 1, "{cluster}: intent {intent}: {finals:?}");
            }
            let intent = rollout.clusters[*cluster].intent_id.as_deref().unwrap();
            assert_eq!(finals[intent], [Phase::Succeeded], "{cluster}");
            assert_eq!(
                self.image(cluster),
                format!("registry.example.com/shop/web:{tag}"),
                "{cluster}"
            );
        }
    }

    /// Waits until `cluster` reported `phase` for the rollout. A read that fails while a
    /// node is down is tried again.
    async fn reached(&self, id: &str, cluster: &str, phase: Phase) {
        eventually(Duration::from_secs(60), "the phase is reported", || async {
            let events = cluster_events(&self.bus, cluster)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let seen: Vec<Phase> = events
                .iter()
                .filter(|e| e.rollout_id.as_deref() == Some(id))
                .map(|e| e.phase)
                .collect();
            if seen.contains(&phase) {
                Ok(())
            } else {
                Err(format!("{cluster} waiting for {phase:?}: {seen:?}"))
            }
        })
        .await;
    }
}

/// The JetStream meta leader dies (SIGKILL) while wave 1 deploys: wave 1 ends on the two
/// nodes left, the node comes back with its store, and wave 2 follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_rollout_loses_nothing() {
    let started = Instant::now();
    let clusters = ["prod-east", "prod-west"];
    let mut f = fleet(&[("prod-east", "prod", "east"), ("prod-west", "prod", "west")]).await;
    // A slow API keeps wave 1 busy while the node dies.
    f.sim
        .set_faults("prod-east", &json!({"latency_ms": 100}))
        .unwrap();
    eprintln!("{:?}: fleet up", started.elapsed());
    let id = f.deploy("prod", "1.0");
    f.reached(&id, "prod-east", Phase::Received).await;
    let leader = f.nats.meta_leader().unwrap();
    f.nats.kill(leader);
    eprintln!(
        "{:?}: killed n{} (meta leader)",
        started.elapsed(),
        leader + 1
    );
    f.reached(&id, "prod-east", Phase::Succeeded).await;
    eprintln!("{:?}: wave 1 succeeded on two nodes", started.elapsed());
    f.nats.restart(leader).unwrap();
    eprintln!("{:?}: n{} back", started.elapsed(), leader + 1);
    let rollout = f.finished(&id, &clusters).await;
    f.assert_delivered_once(&rollout, &clusters, "1.0").await;
    eprintln!(
        "killed n{} mid-rollout; took {:?}",
        leader + 1,
        started.elapsed()
    );
}

/// The leader of the intents stream dies (SIGKILL) right after a rollout to six clusters in
/// one wave was accepted, while the coordinator publishes the intents and six agents
/// consume them; it comes back once every cluster ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_fan_out_loses_nothing() {
    let started = Instant::now();
    let clusters = ["f1", "f2", "f3", "f4", "f5", "f6"];
    let spec: Vec<(&str, &str, &str)> = clusters.iter().map(|c| (*c, "fleet", "east")).collect();
    let mut f = fleet(&spec).await;
    let target = f.nats.stream_leader(proto::stream::INTENTS).unwrap();
    eprintln!("{:?}: fleet up", started.elapsed());
    let id = f.deploy("fleet", "2.0");
    f.nats.kill(target);
    eprintln!(
        "{:?}: killed n{} (intents leader)",
        started.elapsed(),
        target + 1
    );
    for cluster in clusters {
        f.reached(&id, cluster, Phase::Succeeded).await;
    }
    eprintln!(
        "{:?}: every cluster succeeded on two nodes",
        started.elapsed()
    );
    f.nats.restart(target).unwrap();
    eprintln!("{:?}: n{} back", started.elapsed(), target + 1);
    let rollout = f.finished(&id, &clusters).await;
    f.assert_delivered_once(&rollout, &clusters, "2.0").await;
    eprintln!(
        "killed n{} mid fan-out; took {:?}",
        target + 1,
        started.elapsed()
    );
}
