//! `throughput`: rollouts/s and intents/s through one coordinator. N clusters (100 by default)
//! and many releases: every rollout (`BENCH_ROLLOUTS`, 20 by default), each a distinct
//! release to all N clusters, is POSTed at once; then the time until every intent is stored
//! on `COXSWAIN_INTENTS`, until every cluster succeeded every release, and until every
//! rollout record says succeeded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use proto::Phase;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{self, Coordinator};
use crate::events::Arrival;
use crate::fleet::Rig;
use crate::intents;
use crate::report;
use crate::server::Server;

/// Rollouts POSTed at once (`BENCH_ROLLOUTS` overrides it).
const ROLLOUTS: usize = 20;

/// How long the fleet idles after the start before the rollouts.
const SETTLE: Duration = Duration::from_secs(2);

/// How often the count of succeeded intents goes to stderr.
const PROGRESS: Duration = Duration::from_secs(10);

/// How often the intent stream's last sequence is read while intents are published.
const SEQUENCE_POLL: Duration = Duration::from_millis(5);

/// Runs the bench at size `n`.
pub async fn run(n: usize) -> anyhow::Result<()> {
    let rollouts = std::env::var("BENCH_ROLLOUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r: &usize| r > 0)
        .unwrap_or(ROLLOUTS);
    let rig = Rig::start(n).await?;
    let Rig {
        server,
        admin,
        topology,
        keys,
        fleet,
    } = &rig;
    let coordinator = Coordinator::start(server, keys).await?;
    tokio::time::sleep(SETTLE).await;
    let mut arrivals = crate::events::reader(admin, &bus::EventQuery::default()).await?;
    let expected = rollouts * n;
    eprintln!("{rollouts} rollouts of distinct releases to {n} clusters: {expected} intents");
    let deadline =
        Instant::now() + Duration::from_secs(600) + Duration::from_millis(100) * expected as u32;
    let first = admin.intent_last_sequence().await?;
    let requests: Vec<_> = (0..rollouts)
        .map(|i| intents::rollout(&format!("throughput-{i}"), &format!("t{i:04}"), "1.0.0"))
        .collect();
    let posted = Instant::now();
    let (ids, published) = tokio::join!(
        submit_all(&coordinator, &requests),
        published(admin, first + expected as u64, deadline)
    );
    let (ids, answered) = ids?;
    let published = published?;
    eprintln!(
        "all {rollouts} rollouts accepted after {} ms; {expected} intents stored after {} ms",
        report::ms(answered - posted),
        report::ms(published - posted)
    );
    let all_succeeded = succeeded(&mut arrivals, expected, deadline, server).await?;
    let rollouts_done = api::wait_rollouts(
        &topology.rollouts,
        &ids,
        Duration::from_millis(100),
        deadline,
    )
    .await?;
    coordinator.check_running()?;
    fleet.check(admin).await?;
    eprintln!(
        "{expected} of {expected} intents succeeded; {rollouts} of {rollouts} rollouts succeeded"
    );
    let times = Times {
        posted,
        answered,
        published,
        all_succeeded,
        rollouts_done,
    };
    times.report(n, rollouts, expected);
    coordinator.stop().await;
    fleet.stop().await;
    Ok(())
}

/// When each stage of a throughput run ended.
struct Times {
    posted: Instant,
    answered: Instant,
    published: Instant,
    all_succeeded: Instant,
    rollouts_done: Instant,
}

impl Times {
    /// Prints the measures.
    fn report(&self, n: usize, rollouts: usize, expected: usize) {
        let since = |at: Instant| at - self.posted;
        let rate =
            |count: usize, at: Instant| format!("{:.1}", count as f64 / since(at).as_secs_f64());
        report::value("throughput", n, "rollouts", rollouts);
        report::millis("throughput", n, "posts_answered", since(self.answered));
        report::value(
            "throughput",
            n,
            "rollouts_accepted_per_s",
            rate(rollouts, self.answered),
        );
        report::millis("throughput", n, "intents_published", since(self.published));
        report::value(
            "throughput",
            n,
            "intents_per_s",
            rate(expected, self.published),
        );
        report::millis("throughput", n, "all_succeeded", since(self.all_succeeded));
        report::millis(
            "throughput",
            n,
            "rollouts_succeeded",
            since(self.rollouts_done),
        );
        report::value(
            "throughput",
            n,
            "rollouts_per_s",
            rate(rollouts, self.rollouts_done),
        );
    }
}

/// POSTs every request at once; their rollout ids and when the last answer came.
async fn submit_all(
    coordinator: &Coordinator,
    requests: &[proto::RolloutRequest],
) -> anyhow::Result<(Vec<String>, Instant)> {
    let answers = futures::future::join_all(requests.iter().map(|r| coordinator.submit(r))).await;
    let at = Instant::now();
    let ids = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((ids, at))
}

/// Waits until `COXSWAIN_INTENTS` stored up to sequence `last`; when it did.
async fn published(admin: &bus::Bus, last: u64, deadline: Instant) -> anyhow::Result<Instant> {
    loop {
        let now = admin.intent_last_sequence().await?;
        if now >= last {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the intent stream reached sequence {now} of {last} by the deadline");
        }
        tokio::time::sleep(SEQUENCE_POLL).await;
    }
}

/// Reads events until `expected` distinct (cluster, release) pairs succeeded; when the last
/// one arrived. Any other ending fails the run.
async fn succeeded(
    arrivals: &mut UnboundedReceiver<Arrival>,
    expected: usize,
    deadline: Instant,
    server: &Server,
) -> anyhow::Result<Instant> {
    let mut done: HashSet<(String, String)> = HashSet::with_capacity(expected);
    let (mut last, mut said) = (Instant::now(), Instant::now());
    while done.len() < expected {
        if said.elapsed() > PROGRESS {
            eprintln!("{} of {expected} intents succeeded", done.len());
            said = Instant::now();
        }
        let Some(arrival) = crate::events::next(arrivals, deadline, server).await? else {
            bail!(
                "{} of {expected} intents succeeded by the deadline",
                done.len()
            );
        };
        if arrival.is_failure() {
            bail!("{}", arrival.describe());
        }
        if arrival.event.phase == Phase::Succeeded {
            let key = (arrival.event.cluster, arrival.event.release);
            if done.insert(key) {
                last = arrival.at;
            }
        }
    }
    Ok(last)
}
