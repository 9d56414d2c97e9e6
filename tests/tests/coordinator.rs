//! The coordinator and `coxswain deploy` over a simulated fleet (beta, prod-east, prod-west)
//! with three real agents: the platform policy (requests cannot name clusters, waves or
//! gates), waves, the promotion gate on version and content digest, idempotency, halt and
//! revert, restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use proto::{Outcome, Phase, Rollout, RolloutStatus};
use serde_json::json;
use tests::{
    AgentProcess, CoordinatorProcess, NatsServer, SimProcess, coxswain_bin, eventually, http_get,
    http_post, kubectl_bin,
};

const TOKEN: &str = "test-token";

struct Fleet {
    nats: NatsServer,
    sim: SimProcess,
    agents: Vec<AgentProcess>,
    coordinator: CoordinatorProcess,
    config: tempfile::TempDir,
    bus: bus::Bus,
    topology: bus::Topology,
}

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/web")
        .join(path)
}

async fn fleet(timeout_secs: u64) -> Fleet {
    fleet_logging(timeout_secs, "info,kube=warn,async_nats=warn").await
}

/// The fleet, with every agent logging at `filter` (`COXSWAIN_LOG`).
async fn fleet_logging(timeout_secs: u64, filter: &str) -> Fleet {
    let nats = NatsServer::start().unwrap();
    let sim = SimProcess::start(&["beta", "prod-east", "prod-west"]).unwrap();
    let agents = [
        ("beta", "beta", "east"),
        ("prod-east", "prod", "east"),
        ("prod-west", "prod", "west"),
    ]
    .iter()
    .map(|(c, env, region)| {
        AgentProcess::start_with_env(
            c,
            env,
            &nats.url(),
            &sim.kubeconfig(c),
            &["--label", &format!("region={region}")],
            &[("COXSWAIN_LOG", filter)],
        )
        .unwrap()
    })
    .collect();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("policy.yaml"), tests::FLEET_POLICY).unwrap();
    let coordinator =
        CoordinatorProcess::start(&nats.url(), TOKEN, &config.path().join("policy.yaml")).unwrap();
    // The app's own copy of the manifests, so a scenario can edit a template.
    let manifests = config.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for entry in std::fs::read_dir(example("manifests")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        config.path().join("coxswain.yaml"),
        format!(
            "releases:\n  web:\n    manifests: manifests\n    namespace: shop\n    health: {{timeout_secs: {timeout_secs}}}\n\
             environments:\n  beta:\n    values: {}\n\
             \x20 prod:\n    values: {}\n\
             \x20 staging:\n    values: {}\n",
            example("environments/beta.yaml").display(),
            example("environments/prod.yaml").display(),
            example("environments/beta.yaml").display(),
        ),
    )
    .unwrap();
    let bus = bus::connect(&bus::ConnectOptions {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    let topology = bus
        .ensure_topology(&bus::TopologyConfig::default())
        .await
        .unwrap();
    // Every agent registered before anything is deployed.
    eventually(
        Duration::from_secs(30),
        "every agent registered",
        || async {
            let registered = topology.registry.all().await.unwrap();
            if registered.len() == 3 {
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
        agents,
        coordinator,
        config,
        bus,
        topology,
    }
}

impl Fleet {
    fn policy(&self) -> PathBuf {
        self.config.path().join("policy.yaml")
    }

    fn manifests(&self) -> PathBuf {
        self.config.path().join("manifests")
    }

    fn deploy(&self, env: &str, tag: &str, extra: &[&str]) -> (i32, String, String) {
        self.deploy_as(&["--token", TOKEN], env, tag, extra)
    }

    /// `coxswain deploy` with these credentials flags.
    fn deploy_as(
        &self,
        auth: &[&str],
        env: &str,
        tag: &str,
        extra: &[&str],
    ) -> (i32, String, String) {
        let config = self.config.path().join("coxswain.yaml");
        let out: Output = std::process::Command::new(coxswain_bin().unwrap())
            .args([
                "deploy",
                "--config",
                config.to_str().unwrap(),
                "--env",
                env,
                "--release",
                "web",
            ])
            .args([
                "--set",
                &format!("image.tag={tag}"),
                "--coordinator",
                &self.coordinator.url,
            ])
            .args(auth)
            .args(["--requested-by", "ci-job-42"])
            .args(extra)
            .env("COXSWAIN_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn image(&self, cluster: &str) -> String {
        self.web_field(cluster, "{.spec.template.spec.containers[0].image}")
    }

    /// A field of the `web` Deployment on `cluster` (a kubectl jsonpath), empty when absent.
    fn web_field(&self, cluster: &str, jsonpath: &str) -> String {
        let out = std::process::Command::new(kubectl_bin().unwrap())
            .env("KUBECONFIG", self.sim.kubeconfig(cluster))
            .args(["get", "deploy", "web", "-n", "shop", "-o"])
            .arg(format!("jsonpath={jsonpath}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn events(&self) -> Vec<Outcome> {
        bus::events::stored_events(&self.bus, &bus::EventQuery::default())
            .await
            .unwrap()
    }

    async fn rollout(&self, id: &str) -> Rollout {
        self.topology.rollouts.get(id).await.unwrap().unwrap().0
    }
}

fn rollout_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn gate_waves_idempotency_and_exit_codes() {
    let f = fleet(30).await;
    // prod before beta: refused by the promotion gate, nothing deployed.
    let (code, _, err) = f.deploy("prod", "1.0", &["--wait"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("promotion gate: version 1.0 of web has not succeeded in beta"),
        "{err}"
    );
    // An environment whose selector matches no cluster is an error, not a silent success.
    let (code, _, err) = f.deploy("staging", "1.0", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("selector env=staging matches no registered cluster"),
        "{err}"
    );

    let (code, out, err) = f.deploy("beta", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("succeeded on every cluster"), "{out}");
    // A CI retry: the same rollout, nothing deployed twice.
    let (code, again, _) = f.deploy("beta", "1.0", &[]);
    assert_eq!(code, 0);
    assert!(again.contains("(already submitted)"), "{again}");
    assert_eq!(rollout_id(&again), rollout_id(&out));

    let (code, out, err) = f.deploy("prod", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let events = f.events().await;
    let beta_received = events
        .iter()
        .filter(|e| e.cluster == "beta" && e.phase == Phase::Received)
        .count();
    assert_eq!(beta_received, 1, "the resubmission sent no second intent");
    let east_done = events
        .iter()
        .find(|e| e.cluster == "prod-east" && e.terminal)
        .unwrap();
    let west_start = events
        .iter()
        .find(|e| e.cluster == "prod-west" && e.phase == Phase::Received)
        .unwrap();
    assert!(
        east_done.at <= west_start.at,
        "wave 2 starts after wave 1 finished"
    );
    // The single --token identity, whatever the request claimed (ci-job-42).
    assert_eq!(east_done.requested_by.as_deref(), Some("token"));
    assert_eq!(f.image("prod-west"), "registry.example.com/shop/web:1.0");

    // A broken version fails in beta (rolled back there) and the CLI exits non-zero.
    let (code, out, _) = f.deploy("beta", "2.0-broken", &["--wait"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed: cluster beta ended rolled_back"),
        "{out}"
    );
    let (code, _, err) = f.deploy("prod", "2.0-broken", &["--wait"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("promotion gate"),
        "prod is never touched: {err}"
    );
    assert_eq!(f.image("prod-east"), "registry.example.com/shop/web:1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_wave_halts_and_reverts_earlier_waves() {
    let f = fleet(6).await;
    for (env, tag) in [("beta", "1.0"), ("prod", "1.0"), ("beta", "3.0")] {
        let (code, out, err) = f.deploy(env, tag, &["--wait"]);
        assert_eq!(code, 0, "{env} {tag}: {out}{err}");
    }
    // prod-west's API goes down: wave 2 fails, wave 1 (prod-east) is reverted to 1.0.
    f.sim
        .set_faults("prod-west", &json!({"unavailable": true}))
        .unwrap();
    let (code, out, _) = f.deploy("prod", "3.0", &["--wait"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed and reverted: cluster prod-west ended failed"),
        "{out}"
    );
    assert_eq!(f.image("prod-east"), "registry.example.com/shop/web:1.0");
    let r = f.rollout(&rollout_id(&out)).await;
    assert_eq!(r.status, RolloutStatus::Reverted);
    assert_eq!(r.clusters["prod-east"].revert_phase, Some(Phase::Succeeded));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_coordinator_resumes_the_rollout() {
    let mut f = fleet(60).await;
    let (code, _, err) = f.deploy("beta", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{err}");
    // Slow clusters keep wave 1 busy while the coordinator dies.
    f.sim
        .set_faults("prod-east", &json!({"latency_ms": 100}))
        .unwrap();
    let (code, out, err) = f.deploy("prod", "1.0", &[]);
    assert_eq!(code, 0, "{err}");
    let id = rollout_id(&out);
    eventually(Duration::from_secs(30), "wave 1 published", || async {
        let r = f.rollout(&id).await;
        r.clusters["prod-east"]
            .intent_id
            .as_ref()
            .map(drop)
            .ok_or(r.current_wave)
    })
    .await;
    f.coordinator.kill();
    assert_eq!(f.rollout(&id).await.status, RolloutStatus::Running);
    f.coordinator = CoordinatorProcess::start(&f.nats.url(), TOKEN, &f.policy()).unwrap();
    let r = eventually(
        Duration::from_secs(90),
        "the rollout resumed and finished",
        || async {
            let r = f.rollout(&id).await;
            if r.status.is_final() { Ok(r) } else { Err(r) }
        },
    )
    .await;
    assert_eq!(r.status, RolloutStatus::Succeeded, "{r:?}");
    assert_eq!(f.image("prod-west"), "registry.example.com/shop/web:1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_drive_each_rollout_once() {
    let f = fleet(30).await;
    let second = CoordinatorProcess::start(&f.nats.url(), TOKEN, &f.policy()).unwrap();
    let (code, out, err) = f.deploy("beta", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    // Submitted through the second instance this time; both instances scan for work.
    let config = f.config.path().join("coxswain.yaml");
    let out = std::process::Command::new(coxswain_bin().unwrap())
        .args([
            "deploy",
            "--config",
            config.to_str().unwrap(),
            "--env",
            "prod",
            "--release",
            "web",
        ])
        .args([
            "--set",
            "image.tag=1.0",
            "--coordinator",
            &second.url,
            "--token",
            TOKEN,
            "--wait",
        ])
        .env("COXSWAIN_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let events = f.events().await;
    for cluster in ["beta", "prod-east", "prod-west"] {
        let received = events
            .iter()
            .filter(|e| e.cluster == cluster && e.phase == Phase::Received)
            .count();
        assert_eq!(
            received, 1,
            "{cluster} got one intent, not one per coordinator"
        );
    }
    // And only one coordinator published each intent (JetStream would hide a duplicate).
    let published = |log: String| {
        log.lines()
            .filter(|l| l.contains("intent published"))
            .count()
    };
    assert_eq!(
        published(f.coordinator.log()) + published(second.log()),
        3,
        "beta once, prod-east and prod-west once each"
    );
}

/// `POST /v1/rollouts` with a raw JSON body over a plain socket, as any CI could send it:
/// the status code and the body.
fn post_rollout(url: &str, body: &serde_json::Value) -> (u16, String) {
    tests::http_post(url, "/v1/rollouts", TOKEN, body)
}

/// A valid request of `web` 1.0 to prod, as JSON, with `extra` fields laid over it.
fn raw_request(extra: serde_json::Value) -> serde_json::Value {
    let objects =
        [json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"}})];
    let mut body = json!({
        "schema_version": 1,
        "idempotency_key": "raw-1",
        "release": "web",
        "namespace": "shop",
        "environment": "prod",
        "version": "1.0",
        "content_digest": proto::sha256_digest(b"content"),
        "manifests": {
            "source": "inline",
            "digest": proto::sha256_digest(&serde_json::to_vec(&objects).unwrap()),
            "objects": objects,
        },
        "requested_by": "a-ci-job",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_cannot_choose_its_clusters_waves_or_gate() {
    let f = fleet(30).await;
    // Skipping beta by asking for no gate: refused by name, not silently ignored.
    let (status, body) = post_rollout(&f.coordinator.url, &raw_request(json!({"requires": []})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("requires set by the platform policy, not by the request"),
        "{body}"
    );
    let (status, body) = post_rollout(
        &f.coordinator.url,
        &raw_request(json!({"selector": {"env": "beta"}, "waves": []})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("selector, waves set by the platform policy"),
        "{body}"
    );
    // What the platform decides instead: no such environment, a namespace prod does not
    // allow, and the gate itself.
    let cases = [
        (
            json!({"environment": "qa"}),
            422,
            "no environment \\\"qa\\\" in the platform policy",
        ),
        (
            json!({"namespace": "kube-system"}),
            403,
            "environment prod does not allow namespace",
        ),
        (
            json!({"after": ["r0000000000000000000a"]}),
            422,
            "after names rollout r0000000000000000000a, which does not exist",
        ),
        (
            json!({}),
            412,
            "version 1.0 of web has not succeeded in beta",
        ),
    ];
    for (extra, code, needle) in cases {
        let (status, body) = post_rollout(&f.coordinator.url, &raw_request(extra.clone()));
        assert_eq!(status, code, "{extra}: {body}");
        assert!(body.contains(needle), "{extra}: {body}");
    }
    assert!(
        f.topology.rollouts.all().await.unwrap().is_empty(),
        "no rollout stored"
    );
    assert!(f.events().await.is_empty(), "nothing deployed anywhere");
    assert_eq!(f.image("prod-east"), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_compares_content_not_just_the_version() {
    let f = fleet(30).await;
    let passed = deploy::render::content_digest(&f.manifests()).unwrap();
    let (code, out, err) = f.deploy("beta", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let beta = f.rollout(&rollout_id(&out)).await;
    assert_eq!(beta.request.content_digest, passed);
    assert_eq!(
        beta.policy.selector["env"], "beta",
        "the record keeps the policy applied"
    );

    // Same version string, edited template: what beta tested is not what would reach prod.
    let config = f.manifests().join("config.yaml");
    let edited = std::fs::read_to_string(&config).unwrap() + "  untested: \"yes\"\n";
    std::fs::write(&config, edited).unwrap();
    let changed = deploy::render::content_digest(&f.manifests()).unwrap();
    assert_ne!(changed, passed);
    let (code, out, err) = f.deploy("prod", "1.0", &["--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    let both = format!(
        "version 1.0 of web in prod has content {changed}, but beta succeeded with {passed}"
    );
    assert!(err.contains("(412 Precondition Failed)"), "{err}");
    assert!(err.contains(&both), "{err}");
    for cluster in ["prod-east", "prod-west"] {
        assert_eq!(f.image(cluster), "", "{cluster} untouched");
    }
    assert!(f.events().await.iter().all(|e| e.cluster == "beta"));
}

/// A plain `GET` with the token; the status code, 0 when nothing answered.
fn get_status(url: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })()
    .unwrap_or_default();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Defect: half-open connections were never timed out, so 1,100 of them made the API
/// unreachable under a 1,024 file-descriptor limit, and nothing was logged; a rollout id with
/// `.`, `*` or `>` answered 503. Now idle connections are closed after the header timeout, a
/// connection over the limit is refused and logged, and a bad id is a 400.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_time_out_and_a_bad_id_is_400() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), tests::FLEET_POLICY).unwrap();
    let coordinator = CoordinatorProcess::start_with(
        &nats.url(),
        TOKEN,
        &dir.path().join("policy.yaml"),
        &[
            "--create-topology",
            "--insecure-unsigned-intents",
            "--max-connections",
            "16",
            "--header-timeout",
            "1s",
        ],
    )
    .unwrap();
    let address = coordinator.url.trim_start_matches("http://").to_owned();
    let idle: Vec<std::net::TcpStream> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(&address).ok())
        .collect();
    assert!(idle.len() >= 16, "opened {} idle connections", idle.len());
    eventually(Duration::from_secs(10), "the API answers again", || async {
        match get_status(&coordinator.url, "/healthz") {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert!(
        coordinator.log().contains("connection limit reached"),
        "refusals are logged"
    );
    for bad in ["a*b", "a.>", "..", "%2A"] {
        assert_eq!(
            get_status(&coordinator.url, &format!("/v1/rollouts/{bad}")),
            400,
            "{bad}"
        );
    }
    assert_eq!(get_status(&coordinator.url, "/v1/rollouts/r0123"), 404);
    // A rollout request over the API's body limit is refused before it is read.
    let padding = "x".repeat(1024 * 1024);
    let (status, body) = post_rollout(&coordinator.url, &raw_request(json!({"padding": padding})));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("POST /v1/rollouts is"), "{body}");
    assert!(body.contains("over the limit of 1048576 bytes"), "{body}");
    drop(idle);
}

/// Two rollouts of the same release to the same environment: the newer takes over. The older
/// ends `superseded` (not failed), and no cluster is reverted under the newer one's feet.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_rollout_supersedes_an_older_one_without_reverts() {
    let f = fleet(30).await;
    for tag in ["1.0", "2.0"] {
        let (code, out, err) = f.deploy("beta", tag, &["--wait"]);
        assert_eq!(code, 0, "beta {tag}: {out}{err}");
    }
    // A slow API server keeps the older rollout's first wave busy.
    f.sim
        .set_faults("prod-east", &json!({"latency_ms": 150}))
        .unwrap();
    let (code, out, err) = f.deploy("prod", "1.0", &[]);
    assert_eq!(code, 0, "{out}{err}");
    let older = rollout_id(&out);
    eventually(
        Duration::from_secs(30),
        "prod-east received 2.0-slow",
        || async {
            let r = f.rollout(&older).await;
            r.clusters["prod-east"]
                .intent_id
                .clone()
                .ok_or(r.current_wave)
        },
    )
    .await;
    let (code, out, err) = f.deploy("prod", "2.0", &["--wait"]);
    assert_eq!(code, 0, "the newer rollout succeeds: {out}{err}");
    let newer = rollout_id(&out);
    let r = eventually(
        Duration::from_secs(30),
        "the older rollout final",
        || async {
            let r = f.rollout(&older).await;
            if r.status.is_final() {
                Ok(r)
            } else {
                Err(r.status)
            }
        },
    )
    .await;
    assert_eq!(r.status, RolloutStatus::Superseded, "{r:?}");
    assert_eq!(
        r.reason.as_deref(),
        Some(format!("superseded by rollout {newer}").as_str())
    );
    assert!(
        r.clusters.values().all(|c| c.revert_intent_id.is_none()),
        "nothing reverted: {r:?}"
    );
    let reverts = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.intent_id.ends_with(".revert"))
        .count();
    assert_eq!(reverts, 0);
    for cluster in ["prod-east", "prod-west"] {
        assert_eq!(f.image(cluster), "registry.example.com/shop/web:2.0");
    }
}

/// An agent that dies mid-rollout never answers: its wave fails by the cluster's deadline
/// (health timeout + `--outcome-grace`), naming it, instead of waiting forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_whose_agent_died_fails_its_wave_by_the_deadline() {
    let mut f = fleet(3).await;
    f.coordinator.kill();
    f.coordinator = CoordinatorProcess::start_with(
        &f.nats.url(),
        TOKEN,
        &f.policy(),
        &[
            "--create-topology",
            "--insecure-unsigned-intents",
            "--outcome-grace",
            "2s",
        ],
    )
    .unwrap();
    // The beta agent is gone (kill -9): its registry record is still fresh.
    f.agents[0].kill();
    let started = std::time::Instant::now();
    let (code, out, err) = f.deploy("beta", "1.0", &["--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failed: cluster beta ended failed: no outcome from beta within 5s"),
        "{out}{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// API identities from a tokens file: each may deploy only where its roles say, `read` only
/// reads, `requested_by` is the identity whatever the request claims, and every call leaves
/// an audit line (identity, action, result).
#[tokio::test(flavor = "multi_thread")]
async fn identities_decide_who_may_deploy_where_and_every_call_is_audited() {
    let mut f = fleet(30).await;
    let dir = f.config.path().to_owned();
    let dashboard_digest = proto::sha256_digest(b"dash-token-0123456789");
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "# identities\nci-beta deploy:beta beta-token-0123456789\n\
             release-bot deploy:* bot-token-0123456789\ndashboard read {dashboard_digest}\n"
        ),
    )
    .unwrap();
    for (file, token) in [
        ("beta.token", "beta-token-0123456789"),
        ("bot.token", "bot-token-0123456789"),
    ] {
        std::fs::write(dir.join(file), format!("{token}\n")).unwrap();
    }
    f.coordinator.kill();
    let tokens_arg = tokens.to_str().unwrap();
    f.coordinator = CoordinatorProcess::start_with(
        &f.nats.url(),
        "",
        &f.policy(),
        &[
            "--tokens-file",
            tokens_arg,
            "--create-topology",
            "--insecure-unsigned-intents",
        ],
    )
    .unwrap();
    let as_beta = dir.join("beta.token");
    let as_beta = ["--token-file", as_beta.to_str().unwrap()];
    let (code, out, err) = f.deploy_as(&as_beta, "beta", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let r = f.rollout(&rollout_id(&out)).await;
    assert_eq!(
        r.request.requested_by, "ci-beta",
        "not the claimed ci-job-42"
    );
    let events = f.events().await;
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.requested_by.as_deref() == Some("ci-beta")),
        "{events:?}"
    );

    let (code, _, err) = f.deploy_as(&as_beta, "prod", "1.0", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("identity ci-beta may not deploy to prod (its roles: deploy:beta)"),
        "{err}"
    );
    let url = &f.coordinator.url;
    assert_eq!(
        http_get(url, "/v1/rollouts", "dash-token-0123456789").0,
        200
    );
    let body = serde_json::json!({
        "schema_version": proto::SCHEMA_VERSION, "idempotency_key": "dash", "release": "web",
        "namespace": "shop", "environment": "beta", "version": "9",
        "manifests": {"source": "bundle", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1},
        "requested_by": "dashboard",
    });
    let (status, answer) = http_post(url, "/v1/rollouts", "dash-token-0123456789", &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("identity dashboard may not deploy to"),
        "{answer}"
    );
    assert_eq!(
        http_get(url, "/v1/rollouts", "guessed-token-0123456").0,
        401
    );

    let as_bot = dir.join("bot.token");
    let (code, out, err) = f.deploy_as(
        &["--token-file", as_bot.to_str().unwrap()],
        "prod",
        "1.0",
        &["--wait"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let log = f.coordinator.log();
    for line in [
        "identity=\"ci-beta\" action=\"POST /v1/rollouts\" result=201",
        "identity=\"ci-beta\" action=\"POST /v1/rollouts\" result=403",
        "identity=\"dashboard\" action=\"GET /v1/rollouts\" result=200",
        "identity=\"-\" action=\"GET /v1/rollouts\" result=401",
        "identity=\"release-bot\" action=\"POST /v1/rollouts\" result=201",
    ] {
        assert!(log.contains(line), "no audit line {line} in:\n{log}");
    }
    assert!(!log.contains("0123456789"), "a token reached the log");
}

/// A Secret's value never reaches a log (agents and coordinator at debug), an event, an API
/// answer or the CLI's output: not on a deploy, not on the failed deploy after it, not on
/// its automatic rollback.
#[tokio::test(flavor = "multi_thread")]
async fn secret_values_never_reach_a_log_an_event_or_an_answer() {
    const VALUE: &str = "pa55-Wr0ng-h0rse-7781";
    let f = fleet_logging(6, "debug").await;
    std::fs::write(
        f.manifests().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-db\nstringData:\n  password: \"{{ values.db_password }}\"\n",
    )
    .unwrap();
    let mut shown = String::new();
    for (tag, code) in [("1.0", 0), ("2.0-broken", 1)] {
        let (got, out, err) = f.deploy(
            "beta",
            tag,
            &["--wait", "--set", &format!("db_password={VALUE}")],
        );
        assert_eq!(got, code, "{tag}: {out}{err}");
        let (status, answer) = http_get(
            &f.coordinator.url,
            &format!("/v1/rollouts/{}", rollout_id(&out)),
            TOKEN,
        );
        assert_eq!(status, 200, "{answer}");
        shown += &(out + &err + &answer);
    }
    let events = f.events().await;
    assert!(
        events.iter().any(|e| e.phase == Phase::RolledBack),
        "{events:?}"
    );
    shown += &serde_json::to_string(&events).unwrap();
    shown += &http_get(&f.coordinator.url, "/v1/rollouts", TOKEN).1;
    shown += &f.coordinator.log();
    for agent in &f.agents {
        shown += &agent.log();
    }
    assert!(
        shown.contains("web-db"),
        "the Secret itself was deployed and named"
    );
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, VALUE);
    for needle in [VALUE, encoded.as_str()] {
        assert!(!shown.contains(needle), "{needle} was shown");
    }
}

/// One trace from CI to the agents: `coxswain deploy` continues CI's `TRACEPARENT`, the
/// coordinator's API call and each published intent continue it, and the agent's span of
/// the intent does too; each process exports to its own stand-in collector. The same run
/// reads the coordinator's metrics and both processes' health and readiness probes.
#[tokio::test(flavor = "multi_thread")]
async fn one_trace_runs_from_ci_through_the_coordinator_to_an_agent() {
    let nats = NatsServer::start().unwrap();
    let sim = SimProcess::start(&["beta"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (agent_otlp, agent_spans) = tests::otlp_collector().unwrap();
    let (coordinator_otlp, coordinator_spans) = tests::otlp_collector().unwrap();
    let (cli_otlp, cli_spans) = tests::otlp_collector().unwrap();
    let probes = tests::free_address().unwrap();
    let _agent = AgentProcess::start_with_env(
        "beta",
        "beta",
        &nats.url(),
        &sim.kubeconfig("beta"),
        &["--metrics-addr", &probes],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", agent_otlp.as_str())],
    )
    .unwrap();
    std::fs::write(dir.path().join("policy.yaml"), tests::FLEET_POLICY).unwrap();
    let coordinator = CoordinatorProcess::start_with_env(
        &nats.url(),
        TOKEN,
        &dir.path().join("policy.yaml"),
        &["--create-topology", "--insecure-unsigned-intents"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", coordinator_otlp.as_str())],
    )
    .unwrap();
    let config = tests::example_app_config(dir.path()).unwrap();
    let probe = format!("http://{probes}");
    eventually(Duration::from_secs(30), "the agent is ready", || async {
        match get_status(&probe, "/readyz") {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let (code, out) = run_deploy(
        &config,
        &coordinator.url,
        &[
            "--env",
            "beta",
            "--release",
            "web",
            "--set",
            "image.tag=1.0",
            "--wait",
            "--timeout",
            "1m",
        ],
        &[
            ("TRACEPARENT", &traceparent),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &cli_otlp),
        ],
    );
    assert_eq!(code, 0, "{out}");
    for (who, spans) in [
        ("coxswain deploy", &cli_spans),
        ("the coordinator", &coordinator_spans),
        ("the agent", &agent_spans),
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("{who} exported a span of CI's trace"),
            || async {
                if tests::exported_trace(spans, trace_id) {
                    Ok(())
                } else {
                    Err(spans.lock().map(|s| s.len()).unwrap_or(0))
                }
            },
        )
        .await;
    }
    let (status, metrics) = http_get(&coordinator.url, "/metrics", "");
    assert_eq!(status, 200);
    for line in [
        "coordinator_rollouts{status=\"succeeded\"} 1",
        "coordinator_api_request_duration_seconds_count{method=\"POST\",route=\"/v1/rollouts\",code=\"201\"} 1",
        "coordinator_wave_duration_seconds_count{environment=\"beta\",outcome=\"succeeded\"} 1",
        "coordinator_events_rejected_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    for (url, path) in [
        (&coordinator.url, "/healthz"),
        (&coordinator.url, "/readyz"),
        (&probe, "/healthz"),
        (&probe, "/readyz"),
    ] {
        assert_eq!(get_status(url, path), 200, "{url}{path}");
    }
}

/// The dashboard in a real browser (Debian's headless Chromium through chromedriver): signed
/// in with a token typed into its form, it shows every cluster; a deploy made while the page
/// is open turns its cell `succeeded` without a reload; a failed rollout shows its reason.
/// A screenshot is left in `target/dashboard.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_fleet_and_follows_deploys_live_in_a_browser() {
    let f = fleet(6).await;
    let browser = tests::webdriver::Browser::start().unwrap();
    browser.goto(&f.coordinator.url).unwrap();
    browser.type_into("#token", TOKEN).unwrap();
    browser.click("#sign-in").unwrap();
    let in_page = |script: &'static str| {
        let browser = &browser;
        move || async move { browser.script(script).map_err(|e| e.to_string()) }
    };
    let rows = "return [...document.querySelectorAll('#matrix tr[data-cluster]')].map(r => r.dataset.cluster)";
    eventually(
        Duration::from_secs(20),
        "every cluster on the page",
        || async {
            match in_page(rows)().await {
                Ok(v) if v == json!(["beta", "prod-east", "prod-west"]) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let live = "return document.getElementById('live').className";
    eventually(
        Duration::from_secs(20),
        "the event stream is connected",
        || async {
            match in_page(live)().await {
                Ok(v) if v == json!("live on") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // The browser holds a random session id, not the token; it reads, and never writes.
    let session = browser.cookie("coxswain_session").unwrap();
    assert_eq!(session.len(), 64, "{session}");
    assert!(!session.contains(&hex(TOKEN)));
    let with_cookie = |method: &str, path: &str| {
        use std::io::{Read, Write};
        let address = f.coordinator.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nCookie: coxswain_session={session}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(with_cookie("GET", "/v1/clusters"), "200");
    assert_eq!(
        with_cookie("POST", "/v1/rollouts"),
        "401",
        "a cookie never authorizes a write"
    );
    // A marker that a reload would lose.
    browser
        .script("window.coxswainKept = 42; return null")
        .unwrap();

    let (code, out, err) = f.deploy("beta", "1.0", &["--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let cell = "const td = document.querySelector('td[data-cluster=\"beta\"][data-release=\"web\"]'); \
                return td ? [td.dataset.phase, td.className, window.coxswainKept ?? null] : null";
    eventually(
        Duration::from_secs(20),
        "beta's web cell turns succeeded live",
        || async {
            match in_page(cell)().await {
                Ok(v) if v == json!(["succeeded", "cell healthy", 42]) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let (code, out, err) = f.deploy("beta", "2.0-broken", &["--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    let id = rollout_id(&out);
    let script = format!(
        "const a = document.querySelector('article[data-rollout=\"{id}\"]'); \
         return a ? [a.dataset.status, a.querySelector('.reason')?.textContent ?? '', window.coxswainKept ?? null] : null"
    );
    eventually(
        Duration::from_secs(30),
        "the failed rollout shows its reason",
        || async {
            match browser.script(&script) {
                Ok(v)
                    if v[0] == "failed"
                        && v[1].as_str().is_some_and(|r| r.contains("beta"))
                        && v[2] == 42 =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    browser.screenshot(&shot).unwrap();
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
}

/// A kustomize tree as an application keeps it: a base and an overlay per environment.
fn kustomize_tree(root: &Path) {
    let base = root.join("deploy/base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("kustomization.yaml"),
        "resources: [deployment.yaml]\nlabels:\n  - pairs: {app: web}\n    includeSelectors: true\n",
    )
    .unwrap();
    std::fs::write(
        base.join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: web\n          image: registry.example.com/shop/web:0.1\n",
    )
    .unwrap();
    for (env, replicas) in [("beta", 1), ("prod", 3)] {
        let overlay = root.join("deploy/overlays").join(env);
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(
            overlay.join("kustomization.yaml"),
            format!(
                "resources: [../../base]\nimages:\n  - name: registry.example.com/shop/web\n    newTag: \"2.0\"\n\
                 replicas:\n  - name: web\n    count: {replicas}\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("coxswain.yaml"),
        "releases:\n  web:\n    kustomize: deploy/overlays/{env}\n    namespace: shop\n    health: {timeout_secs: 60}\n",
    )
    .unwrap();
}

/// A release whose manifests are a kustomize overlay per environment deploys through the
/// coordinator (rendered by `kubectl kustomize`); beta's and prod's overlays share one
/// content digest (the whole tree), so the promotion gate passes prod; `--set` is refused
/// for it, and a Helm source without helm says what to install.
#[tokio::test(flavor = "multi_thread")]
async fn a_kustomize_release_deploys_through_the_coordinator() {
    let f = fleet(60).await;
    let app = tempfile::tempdir().unwrap();
    kustomize_tree(app.path());
    let kubectl = kubectl_bin().unwrap();
    let config = app.path().join("coxswain.yaml");
    let deploy = |env: &str, extra: &[&str], vars: &[(&str, &str)]| {
        let args = [&["--env", env, "--release", "web"], extra].concat();
        let vars = [&[("COXSWAIN_KUBECTL", kubectl.to_str().unwrap())], vars].concat();
        run_deploy(&config, &f.coordinator.url, &args, &vars)
    };
    let (code, out) = deploy(
        "beta",
        &["--app-version", "2.0", "--set", "image.tag=3"],
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is a kustomize source, which takes no values"),
        "{out}"
    );
    let (code, out) = deploy("beta", &[], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("pass --app-version"), "{out}");

    for env in ["beta", "prod"] {
        let (code, out) = deploy(env, &["--app-version", "2.0", "--wait"], &[]);
        assert_eq!(code, 0, "{env}: {out}");
    }
    for cluster in ["beta", "prod-east", "prod-west"] {
        assert_eq!(
            f.image(cluster),
            "registry.example.com/shop/web:2.0",
            "{cluster}"
        );
    }
    let replicas = |cluster: &str| f.web_field(cluster, "{.spec.replicas}");
    assert_eq!(
        (replicas("beta"), replicas("prod-east")),
        ("1".into(), "3".into()),
        "each overlay"
    );

    std::fs::write(
        app.path().join("coxswain.yaml"),
        "releases:\n  web:\n    helm: deploy/base\n    namespace: shop\n",
    )
    .unwrap();
    let (code, out) = deploy(
        "beta",
        &["--app-version", "2.0"],
        &[("COXSWAIN_HELM", "/nonexistent/helm")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not found. Helm charts are rendered with `helm template`: install Helm 3"),
        "{out}"
    );
}

/// A version that passed beta and is rolled back there while its prod rollout runs: the prod
/// rollout halts before its next wave (prod-west is never touched), and a new prod rollout of
/// it is refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_beta_rollback_halts_a_running_prod_rollout_before_its_next_wave() {
    let f = fleet(60).await;
    for tag in ["0.9", "1.0"] {
        let (code, out, err) = f.deploy("beta", tag, &["--wait"]);
        assert_eq!(code, 0, "beta {tag}: {out}{err}");
    }
    // prod-east (wave 1) answers slowly, so the rollback lands while it deploys.
    f.sim
        .set_faults("prod-east", &json!({"latency_ms": 300}))
        .unwrap();
    let sent_to_prod_east = || {
        let (_, body) = http_get(&f.coordinator.url, "/v1/rollouts", TOKEN);
        let rollouts: Vec<Rollout> = serde_json::from_str(&body).unwrap_or_default();
        rollouts.iter().any(|r| {
            r.request.environment == "prod"
                && r.clusters["prod-east"].intent_id.is_some()
                && r.status == RolloutStatus::Running
        })
    };
    let (prod, rollback) = std::thread::scope(|s| {
        let prod = s.spawn(|| f.deploy("prod", "1.0", &["--wait"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !sent_to_prod_east() {
            assert!(
                std::time::Instant::now() < deadline,
                "prod-east never got its intent"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let rollback = std::process::Command::new(coxswain_bin().unwrap())
            .args(["rollback", "--release", "web", "--cluster", "beta"])
            .args(["--coordinator", &f.coordinator.url, "--token", TOKEN])
            .env("COXSWAIN_LOG", "warn")
            .output()
            .unwrap();
        (prod.join().unwrap(), rollback)
    });
    assert!(
        rollback.status.success(),
        "{}",
        String::from_utf8_lossy(&rollback.stdout)
    );
    let (code, out, err) = prod;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("halted before wave 2: promotion withdrawn: version 1.0 of web passed beta"),
        "{out}"
    );
    assert_eq!(f.image("prod-west"), "", "the next wave never started");
    assert_eq!(
        f.image("beta"),
        "registry.example.com/shop/web:0.9",
        "beta is back"
    );
    // Observers were told, on the notice subject.
    eventually(
        Duration::from_secs(10),
        "a promotion_withdrawn notice",
        || async {
            match f.bus.last_notice("web").await {
                Ok(Some(n)) if n.kind == proto::NoticeKind::PromotionWithdrawn => Ok(n),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let notice = f.bus.last_notice("web").await.unwrap().unwrap();
    assert_eq!(
        (notice.version.as_str(), notice.environment.as_str()),
        ("1.0", "beta")
    );
    assert!(
        notice
            .reason
            .starts_with("promotion withdrawn: version 1.0 of web passed beta"),
        "{notice:?}"
    );
    let (code, out, err) = f.deploy(
        "prod",
        "1.0",
        &["--wait", "--idempotency-key", "prod-again"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("(412 Precondition Failed)") && err.contains("promotion withdrawn"),
        "{err}"
    );
}

/// Lower-case hex of a text's bytes.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `db` and `web` (after db) deployed together to the two prod clusters in one wave (through a
/// coordinator whose policy has prod in a single wave, without a gate): db fails on prod-east
/// (its API is down), so web never starts there, while prod-west gets both; a dependency
/// cycle is refused before anything is sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dependency_stops_its_dependant_on_that_cluster_only() {
    let f = fleet(6).await;
    let policy = f.config.path().join("one-wave.yaml");
    std::fs::write(
        &policy,
        "environments:\n  prod:\n    selector: {env: prod}\n    releases: [web, db]\n    namespaces: [shop]\n",
    )
    .unwrap();
    let coordinator = CoordinatorProcess::start(&f.nats.url(), TOKEN, &policy).unwrap();
    let app = tempfile::tempdir().unwrap();
    let db = app.path().join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(
        db.join("values.yaml"),
        "image: {repository: registry.example.com/shop/db}\n",
    )
    .unwrap();
    std::fs::write(
        db.join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: db\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: db}\n\
         \x20 template:\n    metadata:\n      labels: {app: db}\n    spec:\n      containers:\n        - name: db\n          image: \"{{ values.image.repository }}:{{ values.image.tag }}\"\n",
    )
    .unwrap();
    let config = |web_after: &str, db_after: &str| {
        std::fs::write(
            app.path().join("coxswain.yaml"),
            format!(
                "releases:\n  web:\n    manifests: {}\n    namespace: shop\n    health: {{timeout_secs: 6}}\n    after: [{web_after}]\n\
                 \x20 db:\n    manifests: db\n    namespace: shop\n    health: {{timeout_secs: 6}}\n    after: [{db_after}]\n\
                 environments:\n  prod:\n    values: {}\n",
                example("manifests").display(),
                example("environments/beta.yaml").display(),
            ),
        )
        .unwrap();
    };
    let args = [
        "--env",
        "prod",
        "--release",
        "db,web",
        "--set",
        "image.tag=1.0",
        "--wait",
    ];
    let deploy = || {
        run_deploy(
            &app.path().join("coxswain.yaml"),
            &coordinator.url,
            &args,
            &[],
        )
    };
    config("db", "web");
    let (code, out) = deploy();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("dependency cycle db -> web -> db"), "{out}");
    assert!(
        f.topology.rollouts.all().await.unwrap().is_empty(),
        "nothing submitted"
    );

    config("db", "");
    f.sim
        .set_faults("prod-east", &json!({"unavailable": true}))
        .unwrap();
    let (code, out) = deploy();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not started: prod-east: dependency db failed on prod-east"),
        "{out}"
    );
    f.sim.set_faults("prod-east", &json!({})).unwrap();
    assert_eq!(
        f.image("prod-west"),
        "registry.example.com/shop/web:1.0",
        "prod-west went on: {out}"
    );
    assert_eq!(f.image("prod-east"), "", "web never started on prod-east");
    let events = f.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.cluster == "prod-east" && e.release == "web"),
        "no web intent ever reached prod-east"
    );
}

/// beta frozen for a few seconds: a rollout submitted inside the window is queued (the CLI
/// says until when and why, and keeps waiting), then runs when it ends; one that breaks glass
/// runs at once, and the audit trail (`coxswain history`) names who and why.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_inside_a_freeze_window_waits_for_its_end_unless_it_breaks_glass() {
    let f = fleet(30).await;
    let now = jiff::Timestamp::now();
    let ends = now + jiff::SignedDuration::from_secs(15);
    let policy = f.config.path().join("frozen.yaml");
    std::fs::write(
        &policy,
        format!(
            "environments:\n  beta:\n    selector: {{env: beta}}\n    releases: [\"*\"]\n    namespaces: [\"*\"]\n    freeze:\n\
             \x20     - {{from: \"{}\", to: \"{ends}\", reason: release party}}\n",
            now - jiff::SignedDuration::from_secs(60)
        ),
    )
    .unwrap();
    let coordinator = CoordinatorProcess::start(&f.nats.url(), TOKEN, &policy).unwrap();
    let config = f.config.path().join("coxswain.yaml");
    let deploy = |tag: &str, extra: &[&str]| {
        let set = format!("image.tag={tag}");
        let args = [
            &["--env", "beta", "--release", "web", "--set", &set, "--wait"],
            extra,
        ]
        .concat();
        run_deploy(&config, &coordinator.url, &args, &[])
    };
    let (code, out) = deploy("1.0", &["--break-glass", "INC-42 hotfix"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        jiff::Timestamp::now() < ends,
        "it did not wait for the window"
    );
    let r = f.rollout(&rollout_id(&out)).await;
    assert_eq!(r.request.break_glass.as_deref(), Some("INC-42 hotfix"));
    let history = tests::coxswain(&[
        "history",
        "--nats",
        &f.nats.url(),
        "--release",
        "web",
        "-o",
        "json",
    ])
    .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("token (break glass: INC-42 hotfix)"),
        "{history}"
    );

    let (code, out) = deploy("2.0", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("queued until {ends}: release party")),
        "{out}"
    );
    let events = f.events().await;
    let first = events
        .iter()
        .filter(|e| e.version.as_deref() == Some("2.0"))
        .map(|e| e.at)
        .min()
        .unwrap();
    assert!(
        first >= ends,
        "2.0 started at {first}, before the window ended at {ends}"
    );
    assert_eq!(f.image("beta"), "registry.example.com/shop/web:2.0");
}

/// `coxswain deploy` with TOKEN (`tests::deploy_cli`): the exit code, and stdout and stderr
/// together.
fn run_deploy(
    config: &Path,
    coordinator: &str,
    args: &[&str],
    vars: &[(&str, &str)],
) -> (i32, String) {
    let (code, out, err) = tests::deploy_cli(config, coordinator, TOKEN, args, vars).unwrap();
    (code, out + &err)
}
