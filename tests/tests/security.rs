//! The attack suite. A real nats-server runs with the roles `coxswain auth init` wrote, the
//! admin key creates the topology, and three agents (beta, prod-east, prod-west) and the
//! coordinator each use their own key; the coordinator signs intents and the agents trust its
//! key. Each row names an attack, the refusal it must meet and the evidence that no cluster
//! changed. The legitimate path runs in the same suite: beta, then prod in waves, with the
//! promotion gate and a revert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus::{Bus, ConnectOptions};
use proto::{DeployIntent, Manifests, Outcome, Phase, Signature, Signer};
use serde_json::{Value, json};
use tests::{AgentProcess, CoordinatorProcess, NatsServer, SimProcess, eventually, kubectl_bin};

const TOKEN: &str = "security-token";

/// The secured system and what an attacker (or the test) holds.
struct System {
    dir: tempfile::TempDir,
    nats: NatsServer,
    sim: SimProcess,
    _agents: Vec<AgentProcess>,
    coordinator: CoordinatorProcess,
    admin: Bus,
    signer: Signer,
}

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/web")
        .join(path)
}

fn coxswain_ok(args: &[&str]) -> String {
    let out = tests::coxswain(args).unwrap();
    assert!(
        out.status.success(),
        "coxswain {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn system() -> System {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let keys_arg = keys.to_str().unwrap().to_owned();
    coxswain_ok(&[
        "auth",
        "init",
        "--dir",
        &keys_arg,
        "--clusters",
        "beta,prod-east,prod-west",
    ]);
    let nats = NatsServer::start_with_config(&keys.join("nats-server.conf")).unwrap();
    let key = |name: &str| keys.join(name).to_str().unwrap().to_owned();
    coxswain_ok(&[
        "topology",
        "--nats",
        &nats.url(),
        "--nats-nkey",
        &key("admin.nk"),
    ]);
    let sim = SimProcess::start(&["beta", "prod-east", "prod-west"]).unwrap();
    let agents = [
        ("beta", "beta", "east"),
        ("prod-east", "prod", "east"),
        ("prod-west", "prod", "west"),
    ]
    .iter()
    .map(|(c, env, region)| {
        let seed = key(&format!("agent-{c}.nk"));
        let trust = key("signing.pub");
        let label = format!("region={region}");
        let extra = [
            "--label",
            label.as_str(),
            "--nats-nkey",
            seed.as_str(),
            "--trust-key",
            trust.as_str(),
        ];
        AgentProcess::start(c, env, &nats.url(), &sim.kubeconfig(c), &extra).unwrap()
    })
    .collect();
    std::fs::write(dir.path().join("policy.yaml"), tests::FLEET_POLICY).unwrap();
    let coordinator = CoordinatorProcess::start_with(
        &nats.url(),
        TOKEN,
        &dir.path().join("policy.yaml"),
        &[
            "--nats-nkey",
            &key("coordinator.nk"),
            "--signing-key",
            &key("signing.nk"),
        ],
    )
    .unwrap();
    write_app(dir.path());
    let admin = login(&nats, Some(&keys.join("admin.nk"))).await.unwrap();
    let signer =
        Signer::from_seed(&std::fs::read_to_string(keys.join("signing.nk")).unwrap()).unwrap();
    let topology = admin.open_topology().await.unwrap();
    eventually(
        Duration::from_secs(30),
        "every agent registered",
        || async {
            let n = topology.registry.all().await.unwrap().len();
            if n == 3 { Ok(()) } else { Err(n) }
        },
    )
    .await;
    System {
        dir,
        nats,
        sim,
        _agents: agents,
        coordinator,
        admin,
        signer,
    }
}

/// The application repository: the example's manifests, its own copy so a template can change.
fn write_app(dir: &Path) {
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for entry in std::fs::read_dir(example("manifests")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("coxswain.yaml"),
        format!(
            "releases:\n  web:\n    manifests: manifests\n    namespace: shop\n    health: {{timeout_secs: 15}}\n\
             environments:\n  beta:\n    values: {}\n  prod:\n    values: {}\n",
            example("environments/beta.yaml").display(),
            example("environments/prod.yaml").display(),
        ),
    )
    .unwrap();
}

async fn login(nats: &NatsServer, seed: Option<&Path>) -> Result<Bus, bus::BusError> {
    let options = ConnectOptions {
        url: nats.url(),
        nkey_seed_file: seed.map(Path::to_owned),
        request_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    match tokio::time::timeout(Duration::from_secs(5), bus::connect(&options)).await {
        Ok(result) => result,
        Err(_) => Err(bus::BusError::Options("no connection within 5 s".into())),
    }
}

impl System {
    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join("keys").join(name)
    }

    async fn role(&self, role: &str) -> Bus {
        login(&self.nats, Some(&self.key(&format!("{role}.nk"))))
            .await
            .unwrap()
    }

    fn kubectl(&self, cluster: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(kubectl_bin().unwrap())
            .env("KUBECONFIG", self.sim.kubeconfig(cluster))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Is there no object `kind/name` (in `namespace`) on `cluster`?
    fn absent(&self, cluster: &str, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let mut args = vec!["get", kind, name];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        self.kubectl(cluster, &args).contains("NotFound")
    }

    fn deploy(&self, env: &str, tag: &str) -> (i32, String) {
        let config = self.dir.path().join("coxswain.yaml");
        let out = tests::coxswain(&[
            "deploy",
            "--config",
            config.to_str().unwrap(),
            "--env",
            env,
            "--release",
            "web",
            "--set",
            &format!("image.tag={tag}"),
            "--coordinator",
            &self.coordinator.url,
            "--token",
            TOKEN,
            "--wait",
            "--timeout",
            "2m",
        ])
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    /// A signed intent for `cluster` carrying `objects`, valid for `ttl` seconds (negative:
    /// already expired).
    fn intent(
        &self,
        id: &str,
        cluster: &str,
        env: &str,
        objects: Vec<Value>,
        ttl: i64,
    ) -> (DeployIntent, Signature) {
        let now = jiff::Timestamp::now();
        let intent = DeployIntent {
            schema_version: proto::SCHEMA_VERSION,
            id: id.into(),
            cluster: cluster.into(),
            // Each attack its own release, so no row supersedes another.
            release: id.trim_end_matches("-old").trim_end_matches("-new").into(),
            namespace: "shop".into(),
            environment: env.into(),
            version: "1.0".into(),
            images: Default::default(),
            manifests: Manifests::Inline {
                digest: proto::manifests_digest(&objects),
                objects,
            },
            health: proto::HealthPolicy {
                timeout_secs: 30,
                ..Default::default()
            },
            rollback: Default::default(),
            requested_by: "attacker".into(),
            created_at: now,
            rollout_id: None,
            expires_at: Some(now + jiff::SignedDuration::from_secs(ttl)),
        };
        let signature = self.signer.sign(&intent).unwrap();
        (intent, signature)
    }

    /// Publishes as the admin (who may publish anything) on `subject`, with `signature` in
    /// the headers when given, under a fresh `Nats-Msg-Id`.
    /// The intent id the agent reports a refusal of this message under: its stream sequence
    /// (a refused message's claimed id is never believed).
    async fn inject(
        &self,
        subject: &str,
        intent: &DeployIntent,
        signature: Option<&Signature>,
    ) -> String {
        let msg_id = format!("inject-{}", uuid_like());
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Nats-Msg-Id", msg_id.as_str()),
        ];
        if let Some(s) = signature {
            headers.push(("Coxswain-Signature", s.value.as_str()));
            headers.push(("Coxswain-Key-Id", s.key_id.as_str()));
        }
        let sequence = self
            .admin
            .publish_raw(subject, &headers, serde_json::to_vec(intent).unwrap())
            .await
            .unwrap();
        format!("seq-{sequence}")
    }

    /// The final event of `intent_id` on `cluster`.
    async fn outcome(&self, cluster: &str, intent_id: &str) -> Outcome {
        eventually(
            Duration::from_secs(60),
            &format!("an outcome for {intent_id}"),
            || async {
                let events = tests::cluster_events(&self.admin, cluster).await.unwrap();
                events
                    .into_iter()
                    .rfind(|e| e.intent_id == intent_id && e.terminal)
                    .ok_or(())
            },
        )
        .await
    }
}

fn uuid_like() -> String {
    format!("{}", jiff::Timestamp::now().as_nanosecond())
}

fn config_map(name: &str, namespace: Option<&str>, data: &str) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"v": data}})
}

/// One row's result: the attack, what refused it, and whether the evidence held.
struct Row {
    attack: &'static str,
    expected: &'static str,
    observed: String,
    untouched: bool,
}

impl Row {
    fn passed(&self) -> bool {
        self.observed.contains(self.expected) && self.untouched
    }
}

/// The rows about who may talk on NATS at all.
async fn nats_rows(s: &System) -> Vec<Row> {
    let mut rows = Vec::new();
    let no_credentials = login(&s.nats, None).await;
    rows.push(Row {
        attack: "no credentials",
        expected: "refused",
        observed: match no_credentials {
            Ok(_) => "connected".into(),
            Err(e) => format!("refused: {e}"),
        },
        untouched: s.absent("prod-east", "deploy", Some("shop"), "web"),
    });
    let (intent, signature) = s.intent(
        "atk-observer",
        "prod-east",
        "prod",
        vec![config_map("atk-observer", None, "x")],
        60,
    );
    let observer = s.role("observer").await;
    let sent = observer
        .publish_signed_intent(&intent, Some(&signature), proto::ContentType::Json, None)
        .await;
    rows.push(Row {
        attack: "observer publishes an intent",
        expected: "refused",
        observed: if sent.is_err() {
            "refused".into()
        } else {
            "stored".into()
        },
        untouched: s.absent("prod-east", "configmap", Some("shop"), "atk-observer"),
    });
    let beta = s.role("agent-beta").await;
    let (intent, signature) = s.intent(
        "atk-beta-intent",
        "prod-east",
        "prod",
        vec![config_map("atk-beta-intent", None, "x")],
        60,
    );
    let sent = beta
        .publish_signed_intent(&intent, Some(&signature), proto::ContentType::Json, None)
        .await;
    rows.push(Row {
        attack: "agent-beta publishes an intent for prod",
        expected: "refused",
        observed: if sent.is_err() {
            "refused".into()
        } else {
            "stored".into()
        },
        untouched: s.absent("prod-east", "configmap", Some("shop"), "atk-beta-intent"),
    });
    let forged: Outcome = serde_json::from_value(json!({
        "schema_version": 1, "event_id": "prod-east.atk-event.succeeded", "intent_id": "atk-event",
        "cluster": "prod-east", "release": "web", "phase": "succeeded", "terminal": true,
        "attempt": 1, "at": jiff::Timestamp::now(),
    }))
    .unwrap();
    let sent = beta
        .publish_outcome(&forged, proto::ContentType::Json, None)
        .await;
    let stored = tests::cluster_events(&s.admin, "prod-east").await.unwrap();
    rows.push(Row {
        attack: "agent-beta publishes an event for prod",
        expected: "refused",
        observed: if sent.is_err() {
            "refused".into()
        } else {
            "stored".into()
        },
        untouched: !stored.iter().any(|e| e.intent_id == "atk-event"),
    });
    let deleted = beta
        .request_raw("$JS.API.STREAM.DELETE.COXSWAIN_EVENTS", Vec::new())
        .await;
    let edited = beta
        .request_raw(
            "$JS.API.STREAM.UPDATE.COXSWAIN_INTENTS",
            json!({"name": "COXSWAIN_INTENTS", "subjects": [">"]})
                .to_string()
                .into_bytes(),
        )
        .await;
    rows.push(Row {
        attack: "agent-beta deletes or edits a stream",
        expected: "refused",
        observed: if deleted.is_err() && edited.is_err() {
            "refused".into()
        } else {
            format!("answered: {deleted:?} {edited:?}")
        },
        untouched: s.admin.open_topology().await.is_ok(),
    });
    rows
}

/// The rows about which intents an agent applies.
async fn intent_rows(s: &System) -> Vec<Row> {
    let mut rows = Vec::new();
    let prod = |release: &str| format!("coxswain.intent.prod-east.{release}");

    let (unsigned, _) = s.intent(
        "atk-unsigned",
        "prod-east",
        "prod",
        vec![config_map("atk-unsigned", None, "x")],
        60,
    );
    // Refusals before the signature holds are reported under the message's sequence.
    let unsigned_id = s.inject(&prod(&unsigned.release), &unsigned, None).await;
    let (mut tampered, signature) = s.intent(
        "atk-tampered",
        "prod-east",
        "prod",
        vec![config_map("atk-tampered", None, "x")],
        60,
    );
    tampered.version = "6.6.6".into();
    let tampered_id = s
        .inject(&prod(&tampered.release), &tampered, Some(&signature))
        .await;
    let (for_beta, signature_beta) = s.intent(
        "atk-cross",
        "beta",
        "beta",
        vec![config_map("atk-cross", None, "x")],
        60,
    );
    s.inject(&prod(&for_beta.release), &for_beta, Some(&signature_beta))
        .await;
    let (expired, signature_expired) = s.intent(
        "atk-expired",
        "prod-east",
        "prod",
        vec![config_map("atk-expired", None, "x")],
        -1,
    );
    s.inject(&prod(&expired.release), &expired, Some(&signature_expired))
        .await;
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "atk-crb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}]});
    let (escalate, signature_crb) = s.intent("atk-crb", "prod-east", "prod", vec![crb], 60);
    s.inject(&prod(&escalate.release), &escalate, Some(&signature_crb))
        .await;
    let (elsewhere, signature_ns) = s.intent(
        "atk-ns",
        "prod-east",
        "prod",
        vec![config_map("atk-ns", Some("kube-system"), "x")],
        60,
    );
    s.inject(&prod(&elsewhere.release), &elsewhere, Some(&signature_ns))
        .await;

    let cases = [
        (
            "admin publishes an unsigned intent",
            unsigned_id.as_str(),
            "unsigned intent",
            "configmap",
            Some("shop"),
            "atk-unsigned",
        ),
        (
            "a signed intent with its payload edited",
            tampered_id.as_str(),
            "signature does not match the intent",
            "configmap",
            Some("shop"),
            "atk-tampered",
        ),
        (
            "beta's signed intent replayed on prod's subject",
            "atk-cross",
            "arrived on coxswain.intent.prod-east.atk-cross",
            "configmap",
            Some("shop"),
            "atk-cross",
        ),
        (
            "an expired intent",
            "atk-expired",
            "intent expired at",
            "configmap",
            Some("shop"),
            "atk-expired",
        ),
        (
            "a ClusterRoleBinding in an intent",
            "atk-crb",
            "cluster-scoped kind ClusterRoleBinding is not allowed",
            "clusterrolebinding",
            None,
            "atk-crb",
        ),
        (
            "an object in a namespace not allowed",
            "atk-ns",
            "namespace kube-system is not allowed",
            "configmap",
            Some("kube-system"),
            "atk-ns",
        ),
    ];
    for (attack, id, expected, kind, namespace, name) in cases {
        let outcome = s.outcome("prod-east", id).await;
        rows.push(Row {
            attack,
            expected,
            observed: format!("{} {}", outcome.phase, outcome.reason.unwrap_or_default()),
            untouched: outcome.phase == Phase::Rejected
                && s.absent("prod-east", kind, namespace, name),
        });
    }
    rows.push(replay_row(s).await);
    rows
}

/// An old signed intent replayed after a newer one ran: refused, the newer stays.
async fn replay_row(s: &System) -> Row {
    let subject = "coxswain.intent.beta.atk-replay";
    let (old, old_signature) = s.intent(
        "atk-replay-old",
        "beta",
        "beta",
        vec![config_map("replay", None, "old")],
        300,
    );
    let (new, new_signature) = s.intent(
        "atk-replay-new",
        "beta",
        "beta",
        vec![config_map("replay", None, "new")],
        300,
    );
    s.inject(subject, &old, Some(&old_signature)).await;
    let first = s.outcome("beta", "atk-replay-old").await;
    s.inject(subject, &new, Some(&new_signature)).await;
    let second = s.outcome("beta", "atk-replay-new").await;
    assert_eq!(
        (first.phase, second.phase),
        (Phase::Succeeded, Phase::Succeeded)
    );
    let replay_id = s.inject(subject, &old, Some(&old_signature)).await;
    let replayed = s.outcome("beta", &replay_id).await;
    let data = s.kubectl(
        "beta",
        &[
            "get",
            "configmap",
            "replay",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.v}",
        ],
    );
    Row {
        attack: "an old signed intent replayed after a newer one",
        expected: "replay refused",
        observed: format!("{} {}", replayed.phase, replayed.reason.unwrap_or_default()),
        untouched: data == "new",
    }
}

/// The rows about what CI may ask the coordinator.
fn request_rows(s: &System, beta_digest: &str) -> Vec<Row> {
    let objects = [config_map("web-config", None, "x")];
    let request = |extra: Value| {
        let mut body = json!({
            "schema_version": 1, "idempotency_key": format!("atk-{}", uuid_like()),
            "release": "web", "namespace": "shop", "environment": "prod", "version": "1.0",
            "content_digest": format!("sha256:{}", "a".repeat(64)),
            "manifests": {"source": "inline", "digest": proto::manifests_digest(&objects), "objects": objects},
            "requested_by": "attacker",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (status, body) = tests::http_post(
        &s.coordinator.url,
        "/v1/rollouts",
        TOKEN,
        &request(json!({"requires": []})),
    );
    let mut rows = vec![Row {
        attack: "a request with requires: []",
        expected: "400 ",
        observed: format!("{status} {body}"),
        untouched: s.absent("prod-east", "configmap", Some("shop"), "web-config"),
    }];
    let (status, body) = tests::http_post(
        &s.coordinator.url,
        "/v1/rollouts",
        TOKEN,
        &request(json!({})),
    );
    let names_both = body.contains(&"a".repeat(64)) && body.contains(beta_digest);
    rows.push(Row {
        attack: "a version whose digest differs from the one that passed beta",
        expected: "412 ",
        observed: format!("{status} {body}"),
        untouched: names_both && s.absent("prod-east", "configmap", Some("shop"), "web-config"),
    });
    rows
}

/// The content digest beta's succeeded rollout of `web` carries.
async fn beta_digest(s: &System) -> String {
    let rollouts = s
        .admin
        .open_topology()
        .await
        .unwrap()
        .rollouts
        .all()
        .await
        .unwrap();
    rollouts
        .iter()
        .find(|r| r.request.environment == "beta" && r.status == proto::RolloutStatus::Succeeded)
        .map(|r| r.request.content_digest.clone())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_are_refused_and_the_legitimate_path_still_works() {
    let s = system().await;
    // The legitimate path, first half: beta with a signed intent.
    let (code, out) = s.deploy("beta", "1.0");
    assert_eq!(code, 0, "{out}");

    let mut rows = nats_rows(&s).await;
    rows.extend(intent_rows(&s).await);
    rows.extend(request_rows(&s, &beta_digest(&s).await));
    let table: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} | {:<58} | expected {:?} | observed {:?} | untouched {}",
                if r.passed() { "ok  " } else { "FAIL" },
                r.attack,
                r.expected,
                r.observed.chars().take(160).collect::<String>(),
                r.untouched
            )
        })
        .collect();
    eprintln!("{}", table.join("\n"));
    assert!(rows.iter().all(Row::passed), "{}", table.join("\n"));
    assert_eq!(rows.len(), 14, "every attack of the suite ran");

    // The legitimate path, second half: prod in waves, then a failing wave reverted.
    let (code, out) = s.deploy("prod", "1.0");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("prod-east (wave 1)") && out.contains("prod-west (wave 2)"),
        "{out}"
    );
    let (code, out) = s.deploy("beta", "2.0");
    assert_eq!(code, 0, "{out}");
    s.sim
        .set_faults("prod-west", &json!({"unavailable": true}))
        .unwrap();
    let (code, out) = s.deploy("prod", "2.0");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed and reverted"), "{out}");
    s.sim.set_faults("prod-west", &json!({})).unwrap();
    let image = s.kubectl(
        "prod-east",
        &[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert!(
        image.ends_with(":1.0"),
        "prod-east reverted to 1.0: {image}"
    );
}
