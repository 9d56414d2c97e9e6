//! `chaos`: Coxswain's fault campaigns over real processes (nats-server, `coxswain sim`,
//! `coxswain agent`, `coxswain coordinator`): kill -9 at random moments, API faults, bad input.
//! Each campaign prints one line `<campaign>: N trials, lost L, duplicated D, stuck S, wrong W`
//! on stdout (trial details on stderr) and the program exits 1 when any count but N is above 0.
//!
//! Run through `scripts/chaos`, which builds the release binary and sets `COXSWAIN_BIN`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proto::{ContentType, DeployIntent, Manifests, Outcome, Phase, SCHEMA_VERSION};
use serde_json::{Value, json};
use tests::{AgentProcess, CoordinatorProcess, NatsServer, SimProcess, kubectl_bin};

const CAMPAIGNS: [(&str, usize); 5] = [
    ("agent-kill", 12),
    ("coordinator-kill", 4),
    ("nats-kill", 5),
    ("api-faults", 10),
    ("bad-input", 16),
];

/// How long one intent may take to end before it counts as lost.
const FINAL_WITHIN: Duration = Duration::from_secs(60);
/// How long the release may take to settle (lease free, consumer idle) after its final event.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(std::env::args().skip(1).collect())) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Parses `[campaign] [--trials N] [--seed S]`, runs the campaigns, prints their summaries;
/// true when every count but the trials is zero.
async fn run(args: Vec<String>) -> anyhow::Result<bool> {
    let mut campaign = None;
    let mut trials = None;
    let mut seed = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trials" => trials = Some(args.next().context("--trials N")?.parse()?),
            "--seed" => seed = Some(args.next().context("--seed S")?.parse()?),
            "-h" | "--help" => {
                println!(
                    "chaos [agent-kill|coordinator-kill|nats-kill|api-faults|bad-input] [--trials N] [--seed S]"
                );
                return Ok(true);
            }
            name if campaign.is_none() && !name.starts_with('-') => campaign = Some(arg),
            other => bail!("unexpected argument {other}"),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    eprintln!("chaos: seed {seed}");
    let mut rng = Rng(seed);
    let selected: Vec<(&str, usize)> = match &campaign {
        None => CAMPAIGNS.to_vec(),
        Some(name) => vec![
            CAMPAIGNS
                .iter()
                .copied()
                .find(|(c, _)| c == name)
                .with_context(|| format!("unknown campaign {name}"))?,
        ],
    };
    let mut clean = true;
    for (name, default_trials) in selected {
        let trials = trials.unwrap_or(default_trials);
        let started = Instant::now();
        let mut tally = Tally::default();
        let result = match name {
            "agent-kill" => agent_kill(trials, &mut rng, &mut tally).await,
            "coordinator-kill" => coordinator_kill(trials, &mut rng, &mut tally).await,
            "nats-kill" => nats_kill(trials, &mut rng, &mut tally).await,
            "api-faults" => api_faults(trials, &mut rng, &mut tally).await,
            "bad-input" => bad_input(trials, &mut rng, &mut tally).await,
            _ => unreachable!("campaign names come from CAMPAIGNS"),
        };
        if let Err(error) = result {
            // A campaign that cannot go on counts the trials it did not run as stuck.
            eprintln!("{name}: aborted: {error:#}");
            tally.stuck += trials.saturating_sub(tally.trials);
            tally.trials = trials;
        }
        eprintln!("{name}: took {:.0?}", started.elapsed());
        println!(
            "{name}: {} trials, lost {}, duplicated {}, stuck {}, wrong {}",
            tally.trials, tally.lost, tally.duplicated, tally.stuck, tally.wrong
        );
        clean &= tally.lost + tally.duplicated + tally.stuck + tally.wrong == 0;
    }
    Ok(clean)
}

/// The counts of one campaign: lost, duplicated and wrong per intent; stuck per release.
#[derive(Debug, Default)]
struct Tally {
    trials: usize,
    lost: usize,
    duplicated: usize,
    stuck: usize,
    wrong: usize,
}

impl Tally {
    /// Adds one trial's verdict and prints it when anything went wrong.
    fn add(&mut self, campaign: &str, trial: usize, label: &str, verdict: Verdict) {
        self.trials += 1;
        self.lost += verdict.lost;
        self.duplicated += verdict.duplicated;
        self.stuck += verdict.stuck;
        self.wrong += verdict.wrong;
        if verdict.notes.is_empty() {
            eprintln!("{campaign} #{trial} [{label}]: ok");
        } else {
            eprintln!(
                "{campaign} #{trial} [{label}]: FAILED\n    {}",
                verdict.notes.join("\n    ")
            );
        }
    }
}

/// What one trial found.
#[derive(Debug, Default)]
struct Verdict {
    lost: usize,
    duplicated: usize,
    stuck: usize,
    wrong: usize,
    notes: Vec<String>,
}

/// A small xorshift generator: campaigns are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `0..=max`.
    fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.below(max.as_millis() as u64 + 1))
    }
}

/// `2026-11-26T14:40:07Z` for now, without a date crate.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "progressDeadlineSeconds": 30,
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}
    })
}

/// A valid intent deploying `image` as release `release` into namespace `release`.
fn intent(id: &str, cluster: &str, release: &str, image: &str, timeout_secs: u64) -> DeployIntent {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"id": id}}),
        deployment(image),
    ];
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id: id.into(),
        cluster: cluster.into(),
        release: release.into(),
        namespace: release.into(),
        environment: "chaos".into(),
        version: image.rsplit(':').next().unwrap_or(image).into(),
        images: Default::default(),
        manifests: Manifests::Inline {
            digest: proto::manifests_digest(&objects),
            objects,
        },
        health: proto::HealthPolicy {
            timeout_secs,
            ..Default::default()
        },
        rollback: Default::default(),
        requested_by: "chaos".into(),
        created_at: serde_json::from_value(json!(now_rfc3339())).expect("an RFC 3339 time"),
        rollout_id: None,
        expires_at: None,
    }
}

/// An intent the campaign published and what the scenario allows for it.
#[derive(Debug, Clone)]
struct Expected {
    id: String,
    /// The image it deploys.
    image: String,
    /// Final phases the scenario allows.
    allowed: Vec<Phase>,
}

/// One NATS server, one simulator and a bus client: what every campaign stands on.
struct Ground {
    nats: NatsServer,
    sim: SimProcess,
    bus: bus::Bus,
    topology: bus::Topology,
}

impl Ground {
    async fn start(clusters: &[&str]) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let sim = SimProcess::start(clusters)?;
        let bus = bus::connect(&bus::ConnectOptions {
            url: nats.url(),
            ..Default::default()
        })
        .await?;
        let topology = bus.ensure_topology(&bus::TopologyConfig::default()).await?;
        Ok(Self {
            nats,
            sim,
            bus,
            topology,
        })
    }

    fn agent(&self, cluster: &str, env: &str, extra: &[&str]) -> anyhow::Result<AgentProcess> {
        AgentProcess::start(
            cluster,
            env,
            &self.nats.url(),
            &self.sim.kubeconfig(cluster),
            extra,
        )
    }

    /// Waits until the cluster's durable consumer exists: an intent published before it would
    /// not be delivered at all (the consumer starts from the last intent per subject).
    async fn consumer_ready(&self, cluster: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            tokio::time::timeout(Duration::from_secs(5), self.bus.intent_backlog(cluster)).await,
            Ok(Ok(_))
        ) {
            if Instant::now() > deadline {
                bail!("the consumer of {cluster} does not exist 30 s after its agent started");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn publish(&self, intent: &DeployIntent) -> anyhow::Result<()> {
        // The server may be restarting (nats-kill): retry for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .bus
                .publish_intent(intent, ContentType::MsgPack, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => return Err(error.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Every event of `release` on `cluster` stored now (empty while the server is away).
    async fn events(&self, cluster: &str, release: &str) -> Vec<Outcome> {
        let query = bus::EventQuery::release(release);
        match tokio::time::timeout(
            Duration::from_secs(15),
            bus::events::stored_events(&self.bus, &query),
        )
        .await
        {
            Ok(Ok(events)) => events
                .into_iter()
                .filter(|e| e.cluster == cluster)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Polls until every id in `ids` has a terminal event on `release`, or `within` passes;
    /// returns the events seen last.
    async fn until_final(
        &self,
        cluster: &str,
        release: &str,
        ids: &[&str],
        within: Duration,
    ) -> Vec<Outcome> {
        let deadline = Instant::now() + within;
        loop {
            let events = self.events(cluster, release).await;
            let done = ids
                .iter()
                .all(|id| events.iter().any(|e| e.terminal && e.intent_id == *id));
            if done || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kubectl(&self, cluster: &str, args: &[&str]) -> (bool, String) {
        let kubectl = match kubectl_bin() {
            Ok(kubectl) => kubectl,
            Err(e) => return (false, format!("no kubectl: {e}")),
        };
        match std::process::Command::new(kubectl)
            .env("KUBECONFIG", self.sim.kubeconfig(cluster))
            .args(["--request-timeout", "5s"])
            .args(args)
            .output()
        {
            Ok(out) => (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    fn image(&self, cluster: &str, namespace: &str) -> String {
        let (ok, out) = self.kubectl(
            cluster,
            &[
                "get",
                "deploy",
                "web",
                "-n",
                namespace,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        );
        if ok {
            out
        } else {
            format!("<none: {}>", out.trim())
        }
    }

    /// Status labels of the release's history Secrets, oldest first.
    fn history(&self, cluster: &str, namespace: &str, release: &str) -> Vec<String> {
        let (_, out) = self.kubectl(
            cluster,
            &[
                "get",
                "secrets",
                "-n",
                namespace,
                "-l",
                &format!("owner=coxswain,name={release}"),
                "-o",
                "jsonpath={range .items[*]}{.metadata.labels.version}={.metadata.labels.status} {end}",
            ],
        );
        out.split_whitespace().map(str::to_owned).collect()
    }

    /// The holder of the release's Lease; `None` when it is free or gone.
    fn lease_holder(&self, cluster: &str, namespace: &str, release: &str) -> Option<String> {
        let (ok, out) = self.kubectl(
            cluster,
            &[
                "get",
                "lease",
                &format!("coxswain-lock-{release}"),
                "-n",
                namespace,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        (ok && !out.trim().is_empty()).then(|| out.trim().to_owned())
    }

    /// Waits (bounded) until the consumer is idle, the Lease free and no revision pending;
    /// notes what never settled and returns 1 if anything did not (stuck), else 0.
    async fn settle(
        &self,
        cluster: &str,
        namespace: &str,
        release: &str,
        notes: &mut Vec<String>,
    ) -> usize {
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let backlog =
                tokio::time::timeout(Duration::from_secs(5), self.bus.intent_backlog(cluster))
                    .await;
            let idle = matches!(backlog, Ok(Ok(b)) if b.pending == 0 && b.unacked == 0);
            let holder = self.lease_holder(cluster, namespace, release);
            let history = self.history(cluster, namespace, release);
            let pending = history.iter().any(|h| h.ends_with("=pending"));
            if idle && holder.is_none() && !pending {
                return 0;
            }
            if Instant::now() > deadline {
                let mut why = Vec::new();
                if !idle {
                    why.push(format!("consumer not idle: {backlog:?}"));
                }
                if let Some(holder) = holder {
                    why.push(format!("lease still held by {holder}"));
                }
                if pending {
                    why.push(format!("revision left pending: history {history:?}"));
                }
                notes.push(format!(
                    "stuck {:.0?} after the final events: {}",
                    SETTLE_WITHIN,
                    why.join("; ")
                ));
                return 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Judges each expected intent by its events: lost (no terminal event), duplicated (more than
/// one distinct terminal event id or phase), wrong (a final phase the scenario does not allow).
/// Returns the final phase of each intent that has exactly one.
fn judge_intents(
    events: &[Outcome],
    expected: &[Expected],
    verdict: &mut Verdict,
) -> Vec<Option<Phase>> {
    expected
        .iter()
        .map(|want| {
            let mine: Vec<&Outcome> = events.iter().filter(|e| e.intent_id == want.id).collect();
            let finals: Vec<&Outcome> = mine.iter().copied().filter(|e| e.terminal).collect();
            let ids: BTreeSet<&str> = finals.iter().map(|e| e.event_id.as_str()).collect();
            let mut phases: Vec<Phase> = Vec::new();
            for e in &finals {
                if !phases.contains(&e.phase) {
                    phases.push(e.phase);
                }
            }
            let trail = || {
                mine.iter()
                    .map(|e| format!("{}@{}{}", e.phase, e.attempt, if e.terminal { "!" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            if finals.is_empty() {
                verdict.lost += 1;
                verdict
                    .notes
                    .push(format!("lost {}: no final event; events: [{}]", want.id, trail()));
                return None;
            }
            if ids.len() > 1 || phases.len() > 1 {
                verdict.duplicated += 1;
                verdict.notes.push(format!(
                    "duplicated {}: {} final events {ids:?}; events: [{}]",
                    want.id,
                    finals.len(),
                    trail()
                ));
            }
            let phase = finals[0].phase;
            if phases.iter().any(|p| !want.allowed.contains(p)) {
                verdict.wrong += 1;
                verdict.notes.push(format!(
                    "wrong {}: ended {phases:?}, the scenario allows {:?} (reason: {}); events: [{}]",
                    want.id,
                    want.allowed,
                    finals[0].reason.as_deref().unwrap_or("-"),
                    trail()
                ));
            }
            Some(phase)
        })
        .collect()
}

/// The image the cluster must run after `expected` (in publication order) ended with `finals`,
/// starting from `previous_good` (the image before the first of them; `None` on a first
/// install). `None` when nothing can be said (a lost intent, a failed first install).
fn expected_image(
    expected: &[Expected],
    finals: &[Option<Phase>],
    previous_good: Option<&str>,
) -> Option<Option<String>> {
    let mut good = previous_good.map(str::to_owned);
    for (want, phase) in expected.iter().zip(finals) {
        match phase {
            Some(Phase::Succeeded) => good = Some(want.image.clone()),
            Some(Phase::RolledBack | Phase::Superseded | Phase::Rejected) => {}
            // Failed (nothing to roll back to), rollback_failed, lost: the cluster's state is
            // not determined by the outcome.
            _ => return None,
        }
    }
    Some(good)
}

/// Checks the cluster runs what the outcomes say; counts one `wrong` if not.
fn judge_image(
    ground: &Ground,
    cluster: &str,
    namespace: &str,
    expected: &[Expected],
    finals: &[Option<Phase>],
    previous_good: Option<&str>,
    verdict: &mut Verdict,
) {
    let Some(want) = expected_image(expected, finals, previous_good) else {
        return;
    };
    let Some(want) = want else { return };
    let got = ground.image(cluster, namespace);
    if got != want {
        verdict.wrong += 1;
        verdict.notes.push(format!(
            "wrong image: the outcomes {finals:?} say {want}, the cluster runs {got}"
        ));
    }
}

/// Polls the events until `id` has a terminal event; returns how long it took.
async fn time_to_final(ground: &Ground, cluster: &str, release: &str, id: &str) -> Duration {
    let started = Instant::now();
    ground
        .until_final(cluster, release, &[id], FINAL_WITHIN)
        .await;
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// agent-kill

#[derive(Debug, Clone, Copy)]
enum KillWhen {
    /// Uniformly over a forward rollout of a good image.
    Forward,
    /// Uniformly over a `-broken` rollout and its rollback.
    Rollback,
    /// As soon as the final event is stored.
    AtFinal,
}

async fn agent_kill(trials: usize, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<()> {
    const CLUSTER: &str = "beta";
    let ground = Ground::start(&[CLUSTER]).await?;
    // A little API latency stretches a rollout over enough API calls to land kills in each step.
    ground.sim.set_faults(CLUSTER, &json!({"latency_ms": 20}))?;
    let mut agent = ground.agent(CLUSTER, "chaos", &[])?;
    ground.consumer_ready(CLUSTER).await?;

    // Calibration: how long an undisturbed forward rollout and a rollback take.
    ground
        .publish(&intent("cal-1", CLUSTER, "cal", "web:cal-1", 60))
        .await?;
    let forward = time_to_final(&ground, CLUSTER, "cal", "cal-1").await;
    ground
        .publish(&intent("cal-2", CLUSTER, "cal", "web:cal-2-broken", 60))
        .await?;
    let rollback = time_to_final(&ground, CLUSTER, "cal", "cal-2").await;
    eprintln!("agent-kill: an undisturbed rollout takes {forward:.0?}, a rollback {rollback:.0?}");

    for trial in 0..trials {
        let release = format!("ak{trial}");
        let when = match trial % 3 {
            0 => KillWhen::Forward,
            1 => KillWhen::Rollback,
            _ => KillWhen::AtFinal,
        };
        let newer = rng.chance(50);
        let mut verdict = Verdict::default();
        let mut expected = Vec::new();
        let mut previous_good = None;
        let mut label = format!("{when:?}");

        // A rollback needs a deployed revision to go back to.
        if matches!(when, KillWhen::Rollback) || rng.chance(50) {
            let base = format!("{release}-base");
            let image = format!("web:{release}-base");
            ground
                .publish(&intent(&base, CLUSTER, &release, &image, 60))
                .await?;
            let events = ground
                .until_final(CLUSTER, &release, &[&base], FINAL_WITHIN)
                .await;
            let ok = events
                .iter()
                .any(|e| e.intent_id == base && e.phase == Phase::Succeeded);
            if !ok {
                verdict.notes.push(format!("base {base} did not succeed"));
            }
            previous_good = Some(image);
        }
        let (id, image, allowed) = match when {
            KillWhen::Rollback => (
                format!("{release}-a"),
                format!("web:{release}-a-broken"),
                vec![Phase::RolledBack],
            ),
            _ => (
                format!("{release}-a"),
                format!("web:{release}-a"),
                vec![Phase::Succeeded],
            ),
        };
        let mut allowed = allowed;
        if newer {
            allowed.push(Phase::Superseded);
        }
        ground
            .publish(&intent(&id, CLUSTER, &release, &image, 60))
            .await?;
        let published = Instant::now();
        expected.push(Expected {
            id: id.clone(),
            image,
            allowed,
        });

        match when {
            KillWhen::Forward | KillWhen::Rollback => {
                let span = if matches!(when, KillWhen::Forward) {
                    forward
                } else {
                    rollback
                };
                let at = rng.duration(span + span / 5);
                tokio::time::sleep(at.saturating_sub(published.elapsed())).await;
                label.push_str(&format!(" kill@{}ms", at.as_millis()));
            }
            KillWhen::AtFinal => {
                let deadline = Instant::now() + FINAL_WITHIN;
                loop {
                    let events = ground.events(CLUSTER, &release).await;
                    if events.iter().any(|e| e.intent_id == id && e.terminal)
                        || Instant::now() > deadline
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                label.push_str(&format!(
                    " kill@final({}ms)",
                    published.elapsed().as_millis()
                ));
            }
        }
        let phases_at_kill: Vec<String> = ground
            .events(CLUSTER, &release)
            .await
            .iter()
            .filter(|e| e.intent_id == id)
            .map(|e| e.phase.to_string())
            .collect();
        agent.kill();
        label.push_str(&format!(" after [{}]", phases_at_kill.join(" ")));
        agent = ground.agent(CLUSTER, "chaos", &[])?;
        if rng.chance(30) {
            // A second crash, while the restarted agent recovers.
            let again = rng.duration(forward);
            tokio::time::sleep(again).await;
            agent.kill();
            agent = ground.agent(CLUSTER, "chaos", &[])?;
            label.push_str(&format!(" kill-again@+{}ms", again.as_millis()));
        }
        if newer {
            let id = format!("{release}-b");
            let image = format!("web:{release}-b");
            ground
                .publish(&intent(&id, CLUSTER, &release, &image, 60))
                .await?;
            expected.push(Expected {
                id,
                image,
                allowed: vec![Phase::Succeeded],
            });
            label.push_str(" +newer");
        }
        let ids: Vec<&str> = expected.iter().map(|e| e.id.as_str()).collect();
        ground
            .until_final(CLUSTER, &release, &ids, FINAL_WITHIN)
            .await;
        verdict.stuck += ground
            .settle(CLUSTER, &release, &release, &mut verdict.notes)
            .await;
        let events = ground.events(CLUSTER, &release).await;
        let finals = judge_intents(&events, &expected, &mut verdict);
        judge_image(
            &ground,
            CLUSTER,
            &release,
            &expected,
            &finals,
            previous_good.as_deref(),
            &mut verdict,
        );
        if let Some(status) = agent.exited() {
            verdict.wrong += 1;
            verdict.notes.push(format!("the agent exited: {status}"));
            agent = ground.agent(CLUSTER, "chaos", &[])?;
        }
        tally.add("agent-kill", trial, &label, verdict);
    }
    drop(agent);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// coordinator-kill

const TOKEN: &str = "chaos-token";

const CHAOS_POLICY: &str = "environments:
  prod:
    selector: {env: prod}
    waves:
      - {region: east}
      - {region: west}
    releases: [\"*\"]
    namespaces: [\"*\"]
";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web")
}

/// `coxswain deploy` of `tag` to prod, without waiting: the rollout id.
fn submit(config: &Path, coordinator: &str, tag: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(tests::coxswain_bin()?)
        .args(["deploy", "--config"])
        .arg(config)
        .args(["--env", "prod", "--release", "web"])
        .args(["--set", &format!("image.tag={tag}")])
        .args(["--coordinator", coordinator, "--token", TOKEN])
        .args(["--requested-by", "chaos"])
        .env("COXSWAIN_LOG", "warn")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "coxswain deploy failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .split_whitespace()
        .nth(1)
        .map(|id| id.trim_end_matches(':').to_owned())
        .with_context(|| format!("no rollout id in {stdout:?}"))
}

async fn rollout_final(ground: &Ground, id: &str, within: Duration) -> Option<proto::Rollout> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Ok(Some((rollout, _)))) =
            tokio::time::timeout(Duration::from_secs(5), ground.topology.rollouts.get(id)).await
            && rollout.status.is_final()
        {
            return Some(rollout);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn coordinator_kill(trials: usize, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<()> {
    let clusters = ["prod-east", "prod-west"];
    let ground = Ground::start(&clusters).await?;
    let mut agents = Vec::new();
    for (cluster, region) in [("prod-east", "east"), ("prod-west", "west")] {
        agents.push(ground.agent(cluster, "prod", &["--label", &format!("region={region}")])?);
        ground.consumer_ready(cluster).await?;
    }
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, CHAOS_POLICY)?;
    let config = dir.path().join("coxswain.yaml");
    std::fs::write(
        &config,
        format!(
            "releases:\n  web:\n    manifests: {}\n    namespace: shop\n    health: {{timeout_secs: 60}}\n\
             environments:\n  prod:\n    values: {}\n",
            examples().join("manifests").display(),
            examples().join("environments/prod.yaml").display(),
        ),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ground.topology.registry.all().await.map_or(0, |r| r.len()) < 2 {
        if Instant::now() > deadline {
            bail!("the agents did not register within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut coordinator = CoordinatorProcess::start(&ground.nats.url(), TOKEN, &policy)?;

    // Calibration: an undisturbed rollout through both waves.
    let started = Instant::now();
    let id = submit(&config, &coordinator.url, "cal")?;
    let calibration = rollout_final(&ground, &id, Duration::from_secs(120)).await;
    let span = started.elapsed();
    eprintln!(
        "coordinator-kill: an undisturbed rollout takes {span:.0?} ({:?})",
        calibration.map(|r| r.status)
    );
    let mut previous = "registry.example.com/shop/web:cal".to_owned();

    for trial in 0..trials {
        let tag = format!("ck{trial}");
        let image = format!("registry.example.com/shop/web:{tag}");
        let mut verdict = Verdict::default();
        let id = submit(&config, &coordinator.url, &tag)?;
        let submitted = Instant::now();
        let at = rng.duration(span);
        tokio::time::sleep(at).await;
        coordinator.kill();
        let down = rng.duration(Duration::from_millis(1500));
        tokio::time::sleep(down).await;
        let label = format!("kill@{}ms down {}ms", at.as_millis(), down.as_millis());
        coordinator = CoordinatorProcess::start(&ground.nats.url(), TOKEN, &policy)?;
        let rollout = rollout_final(
            &ground,
            &id,
            (FINAL_WITHIN + FINAL_WITHIN).saturating_sub(submitted.elapsed()),
        )
        .await;
        // Every intent this rollout published, per cluster, must end exactly once.
        let events = bus::events::stored_events(&ground.bus, &bus::EventQuery::default())
            .await
            .unwrap_or_default();
        let mine: Vec<Outcome> = events
            .into_iter()
            .filter(|e| e.rollout_id.as_deref() == Some(id.as_str()))
            .collect();
        for cluster in clusters {
            let of_cluster: Vec<Outcome> = mine
                .iter()
                .filter(|e| e.cluster == cluster)
                .cloned()
                .collect();
            let intents: BTreeSet<String> =
                of_cluster.iter().map(|e| e.intent_id.clone()).collect();
            if intents.len() > 1 {
                verdict.duplicated += intents.len() - 1;
                verdict.notes.push(format!(
                    "duplicated: {cluster} got {} intents for one rollout: {intents:?}",
                    intents.len()
                ));
            }
            let expected: Vec<Expected> = if intents.is_empty() {
                // Not even received: judge the id the rollout record names, or a placeholder.
                let named = rollout
                    .as_ref()
                    .and_then(|r| r.clusters.get(cluster))
                    .and_then(|c| c.intent_id.clone())
                    .unwrap_or_else(|| format!("<no intent for {cluster}>"));
                vec![Expected {
                    id: named,
                    image: image.clone(),
                    allowed: vec![Phase::Succeeded],
                }]
            } else {
                intents
                    .iter()
                    .map(|i| Expected {
                        id: i.clone(),
                        image: image.clone(),
                        allowed: vec![Phase::Succeeded],
                    })
                    .collect()
            };
            let finals = judge_intents(&of_cluster, &expected, &mut verdict);
            let last = &expected[expected.len() - 1..];
            judge_image(
                &ground,
                cluster,
                "shop",
                last,
                &finals[finals.len() - 1..],
                Some(&previous),
                &mut verdict,
            );
            verdict.stuck += ground
                .settle(cluster, "shop", "web", &mut verdict.notes)
                .await;
        }
        match &rollout {
            None => {
                verdict.stuck += 1;
                let now = ground.topology.rollouts.get(&id).await.ok().flatten();
                verdict.notes.push(format!(
                    "stuck: rollout {id} not final within {:.0?}: {:?}",
                    FINAL_WITHIN + FINAL_WITHIN,
                    now.map(|(r, _)| (r.status, r.current_wave, r.owner, r.clusters))
                ));
            }
            Some(r) if r.status != proto::RolloutStatus::Succeeded => {
                verdict.wrong += 1;
                verdict.notes.push(format!(
                    "wrong: rollout {id} ended {:?} ({})",
                    r.status,
                    r.reason.as_deref().unwrap_or("-")
                ));
            }
            Some(_) => previous = image.clone(),
        }
        if let Some(status) = coordinator.exited() {
            verdict.wrong += 1;
            verdict
                .notes
                .push(format!("the coordinator exited: {status}"));
            coordinator = CoordinatorProcess::start(&ground.nats.url(), TOKEN, &policy)?;
        }
        tally.add("coordinator-kill", trial, &label, verdict);
    }
    drop(coordinator);
    drop(agents);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// nats-kill

async fn nats_kill(trials: usize, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<()> {
    const CLUSTER: &str = "beta";
    let mut ground = Ground::start(&[CLUSTER]).await?;
    ground.sim.set_faults(CLUSTER, &json!({"latency_ms": 40}))?;
    let mut agent = ground.agent(CLUSTER, "chaos", &[])?;
    ground.consumer_ready(CLUSTER).await?;
    ground
        .publish(&intent("cal-1", CLUSTER, "cal", "web:cal-1", 60))
        .await?;
    let span = time_to_final(&ground, CLUSTER, "cal", "cal-1").await;
    eprintln!("nats-kill: an undisturbed rollout takes {span:.0?}");

    for trial in 0..trials {
        let release = format!("nk{trial}");
        let mut verdict = Verdict::default();
        let newer = rng.chance(50);
        let id = format!("{release}-a");
        let image = format!("web:{release}-a");
        let mut allowed = vec![Phase::Succeeded];
        if newer {
            allowed.push(Phase::Superseded);
        }
        ground
            .publish(&intent(&id, CLUSTER, &release, &image, 60))
            .await?;
        let mut expected = vec![Expected { id, image, allowed }];
        let at = rng.duration(span);
        tokio::time::sleep(at).await;
        ground.nats.kill();
        let down = rng.duration(Duration::from_millis(3000));
        tokio::time::sleep(down).await;
        ground.nats.restart()?;
        let mut label = format!("kill@{}ms down {}ms", at.as_millis(), down.as_millis());
        if newer {
            let id = format!("{release}-b");
            let image = format!("web:{release}-b");
            ground
                .publish(&intent(&id, CLUSTER, &release, &image, 60))
                .await?;
            expected.push(Expected {
                id,
                image,
                allowed: vec![Phase::Succeeded],
            });
            label.push_str(" +newer");
        }
        let ids: Vec<&str> = expected.iter().map(|e| e.id.as_str()).collect();
        ground
            .until_final(CLUSTER, &release, &ids, FINAL_WITHIN)
            .await;
        verdict.stuck += ground
            .settle(CLUSTER, &release, &release, &mut verdict.notes)
            .await;
        let events = ground.events(CLUSTER, &release).await;
        let finals = judge_intents(&events, &expected, &mut verdict);
        judge_image(
            &ground,
            CLUSTER,
            &release,
            &expected,
            &finals,
            None,
            &mut verdict,
        );
        if let Some(status) = agent.exited() {
            verdict.wrong += 1;
            verdict.notes.push(format!("the agent exited: {status}"));
            agent = ground.agent(CLUSTER, "chaos", &[])?;
        }
        tally.add("nats-kill", trial, &label, verdict);
    }
    drop(agent);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// api-faults

async fn api_faults(trials: usize, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<()> {
    const CLUSTER: &str = "beta";
    let ground = Ground::start(&[CLUSTER]).await?;
    let mut agent = ground.agent(CLUSTER, "chaos", &[])?;
    ground.consumer_ready(CLUSTER).await?;
    for trial in 0..trials {
        let release = format!("af{trial}");
        let mut verdict = Verdict::default();
        // A deployed base revision, so a broken image has something to roll back to.
        let base = format!("{release}-base");
        let base_image = format!("web:{release}-base");
        ground
            .publish(&intent(&base, CLUSTER, &release, &base_image, 30))
            .await?;
        ground
            .until_final(CLUSTER, &release, &[&base], FINAL_WITHIN)
            .await;
        let (name, faults, outage) = match trial % 5 {
            0 => ("latency", json!({"latency_ms": 50 + rng.below(150)}), None),
            1 => (
                "5xx",
                json!({"error_rate": 0.1 + rng.below(40) as f64 / 100.0}),
                None,
            ),
            2 => ("dropped-watches", json!({"drop_watches": true}), None),
            3 => (
                "outage",
                json!({"unavailable": true}),
                Some(Duration::from_millis(500 + rng.below(5000))),
            ),
            _ => (
                "all",
                json!({"latency_ms": 30, "error_rate": 0.25, "drop_watches": true}),
                None,
            ),
        };
        let broken = rng.chance(40);
        let id = format!("{release}-a");
        let image = if broken {
            format!("web:{release}-a-broken")
        } else {
            format!("web:{release}-a")
        };
        let allowed = if broken {
            vec![Phase::RolledBack]
        } else {
            vec![Phase::Succeeded]
        };
        let mut label = format!("{name} {faults}");
        if broken {
            label.push_str(" broken");
        }
        // Faults start before the intent or at a random moment of its rollout.
        if rng.chance(50) {
            ground.sim.set_faults(CLUSTER, &faults)?;
            label.push_str(" from the start");
            ground
                .publish(&intent(&id, CLUSTER, &release, &image, 30))
                .await?;
        } else {
            ground
                .publish(&intent(&id, CLUSTER, &release, &image, 30))
                .await?;
            let at = rng.duration(Duration::from_millis(500));
            tokio::time::sleep(at).await;
            ground.sim.set_faults(CLUSTER, &faults)?;
            label.push_str(&format!(" from +{}ms", at.as_millis()));
        }
        if let Some(outage) = outage {
            tokio::time::sleep(outage).await;
            ground.sim.set_faults(CLUSTER, &json!({}))?;
            label.push_str(&format!(" for {}ms", outage.as_millis()));
        }
        let expected = vec![Expected { id, image, allowed }];
        let ids = [expected[0].id.as_str()];
        ground
            .until_final(CLUSTER, &release, &ids, FINAL_WITHIN)
            .await;
        ground.sim.set_faults(CLUSTER, &json!({}))?;
        verdict.stuck += ground
            .settle(CLUSTER, &release, &release, &mut verdict.notes)
            .await;
        let events = ground.events(CLUSTER, &release).await;
        let finals = judge_intents(&events, &expected, &mut verdict);
        judge_image(
            &ground,
            CLUSTER,
            &release,
            &expected,
            &finals,
            Some(&base_image),
            &mut verdict,
        );
        if let Some(status) = agent.exited() {
            verdict.wrong += 1;
            verdict.notes.push(format!("the agent exited: {status}"));
            agent = ground.agent(CLUSTER, "chaos", &[])?;
        }
        if !verdict.notes.is_empty() {
            // The agent's own account of the failure: its last warnings.
            let log = agent.log();
            let warnings: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            for line in warnings.iter().rev().take(3).rev() {
                let line: String = strip_ansi(line).chars().take(400).collect();
                verdict.notes.push(format!("agent log: {line}"));
            }
        }
        tally.add("api-faults", trial, &label, verdict);
    }
    drop(agent);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bad-input

/// One malformed message: a name, its headers, its bytes.
type Bad = (String, Vec<(&'static str, String)>, Vec<u8>);

fn json_ct() -> Vec<(&'static str, String)> {
    vec![("Content-Type", "application/json".to_owned())]
}

fn msgpack_ct() -> Vec<(&'static str, String)> {
    vec![("Content-Type", "application/msgpack".to_owned())]
}

/// The `n`th kind of bad message for release `release` (cycling through the kinds).
fn bad_message(n: usize, cluster: &str, release: &str, rng: &mut Rng) -> Bad {
    let id = format!("{release}-bad");
    let valid = intent(&id, cluster, release, &format!("web:{release}-bad"), 30);
    let valid_json = serde_json::to_value(&valid).expect("an intent is JSON");
    let with = |field: &str, value: Value| {
        let mut v = valid_json.clone();
        v[field] = value;
        serde_json::to_vec(&v).expect("JSON")
    };
    let random: Vec<u8> = (0..rng.below(2048)).map(|_| rng.next() as u8).collect();
    let big_len = 300 * 1024 + rng.below(600 * 1024) as usize;
    let big = || "x".repeat(big_len);
    let kinds = 16;
    match n % kinds {
        0 => ("random bytes as msgpack".into(), msgpack_ct(), random),
        1 => ("random bytes as json".into(), json_ct(), random),
        2 => {
            let bytes = serde_json::to_vec(&valid_json).expect("JSON");
            let cut = rng.below(bytes.len() as u64) as usize;
            ("truncated json".into(), json_ct(), bytes[..cut].to_vec())
        }
        3 => ("oversized id".into(), json_ct(), with("id", json!(big()))),
        4 => (
            "oversized version".into(),
            json_ct(),
            with("version", json!(big())),
        ),
        5 => (
            "oversized requested_by".into(),
            json_ct(),
            with("requested_by", json!(big())),
        ),
        6 => {
            let depth = 50_000;
            let mut v = valid_json.clone();
            let nested = "[".repeat(depth) + &"]".repeat(depth);
            v["manifests"] = json!("PLACEHOLDER");
            let text = serde_json::to_string(&v)
                .expect("JSON")
                .replace("\"PLACEHOLDER\"", &nested);
            ("deeply nested json".into(), json_ct(), text.into_bytes())
        }
        7 => {
            let mut bytes = vec![0x91u8; 100_000];
            bytes.push(0xc0);
            ("deeply nested msgpack".into(), msgpack_ct(), bytes)
        }
        8 => (
            "json body labelled msgpack".into(),
            msgpack_ct(),
            serde_json::to_vec(&valid_json).expect("JSON"),
        ),
        9 => (
            "msgpack body labelled json".into(),
            json_ct(),
            rmp_like(&valid_json),
        ),
        10 => (
            "unknown content type".into(),
            vec![("Content-Type", "text/x-evil; charset=utf-8".to_owned())],
            serde_json::to_vec(&valid_json).expect("JSON"),
        ),
        11 => (
            "release name with . * >".into(),
            json_ct(),
            with("release", json!(format!("{release}.*.>"))),
        ),
        12 => (
            "cluster name with . * >".into(),
            json_ct(),
            with("cluster", json!(format!("{cluster}.>"))),
        ),
        13 => ("namespace and id with . * >".into(), json_ct(), {
            let mut v = valid_json.clone();
            v["namespace"] = json!("a.*");
            v["id"] = json!(format!("{id}.*.>"));
            serde_json::to_vec(&v).expect("JSON")
        }),
        14 => ("empty body".into(), json_ct(), Vec::new()),
        _ => (
            "wrong types".into(),
            json_ct(),
            with("manifests", json!({"inline": 42, "objects": "nope"})),
        ),
    }
}

/// The MessagePack encoding of `value`, through proto's own codec.
fn rmp_like(value: &Value) -> Vec<u8> {
    let intent: DeployIntent = serde_json::from_value(value.clone()).expect("a valid intent");
    proto::encode(ContentType::MsgPack, &intent).expect("encodable")
}

async fn bad_input(trials: usize, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<()> {
    const CLUSTER: &str = "beta";
    let ground = Ground::start(&[CLUSTER]).await?;
    let mut agent = ground.agent(CLUSTER, "chaos", &[])?;
    ground.consumer_ready(CLUSTER).await?;
    for trial in 0..trials {
        let release = format!("bi{trial}");
        let mut verdict = Verdict::default();
        let (name, headers, payload) = bad_message(trial, CLUSTER, &release, rng);
        let subject = format!("coxswain.intent.{CLUSTER}.{release}");
        let label = format!("{name} ({} bytes)", payload.len());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let published = ground.bus.publish_raw(&subject, &headers, payload).await;
        let stored = published.is_ok();
        if let Err(error) = published {
            // The server refused it (e.g. over its size limit): nothing reached the agent.
            verdict
                .notes
                .push(format!("note: nats-server refused the message: {error}"));
        }
        let id = format!("{release}-good");
        let image = format!("web:{release}-good");
        ground
            .publish(&intent(&id, CLUSTER, &release, &image, 30))
            .await?;
        let expected = vec![Expected {
            id: id.clone(),
            image,
            allowed: vec![Phase::Succeeded],
        }];
        ground
            .until_final(CLUSTER, &release, &[&id], FINAL_WITHIN)
            .await;
        verdict.stuck += ground
            .settle(CLUSTER, &release, &release, &mut verdict.notes)
            .await;
        let events = ground.events(CLUSTER, &release).await;
        let finals = judge_intents(&events, &expected, &mut verdict);
        judge_image(
            &ground,
            CLUSTER,
            &release,
            &expected,
            &finals,
            None,
            &mut verdict,
        );
        // The bad message itself: at most one final event, and it should be a refusal.
        let others: Vec<&Outcome> = events.iter().filter(|e| e.intent_id != id).collect();
        let mut bad_ids: BTreeSet<&str> = BTreeSet::new();
        for e in &others {
            bad_ids.insert(e.intent_id.as_str());
        }
        for bad in bad_ids {
            let mut finals: Vec<(&str, Phase)> = Vec::new();
            for e in others.iter().filter(|e| e.intent_id == bad && e.terminal) {
                if !finals.contains(&(e.event_id.as_str(), e.phase)) {
                    finals.push((e.event_id.as_str(), e.phase));
                }
            }
            let short: String = bad.chars().take(40).collect();
            if finals.len() > 1 {
                verdict.duplicated += 1;
                verdict.notes.push(format!(
                    "duplicated: the bad message {short}... has final events {:?}",
                    finals.iter().map(|f| f.1).collect::<Vec<_>>()
                ));
            }
            if let Some((_, phase)) = finals.first()
                && !matches!(phase, Phase::Rejected | Phase::Superseded)
            {
                verdict.wrong += 1;
                verdict
                    .notes
                    .push(format!("wrong: the bad message {short}... ended {phase}"));
            }
        }
        if others.is_empty() && stored {
            // The server stored it and the consumer existed: it deserved a `rejected` event.
            verdict.lost += 1;
            verdict
                .notes
                .push("lost: no event at all for the bad message itself".to_owned());
        }
        if let Some(status) = agent.exited() {
            verdict.wrong += 1;
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            verdict
                .notes
                .push(format!("the agent exited: {status}; log tail: {tail:?}"));
            agent = ground.agent(CLUSTER, "chaos", &[])?;
        }
        tally.add("bad-input", trial, &label, verdict);
    }
    drop(agent);
    Ok(())
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
