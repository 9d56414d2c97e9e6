//! `fanout`: the coordinator in this process, and ONE rollout through its API
//! (`POST /v1/rollouts`) to all N clusters in one wave: time from the POST until every cluster
//! is `received`, and until every cluster is `succeeded`, stamped on arrival.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proto::Phase;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{self, Coordinator};
use crate::events::Arrival;
use crate::fleet::Rig;
use crate::intents;
use crate::report;
use crate::server::Server;

/// The release the rollout deploys.
const RELEASE: &str = "fan";

/// How long the fleet idles after the start before the rollout.
const SETTLE: Duration = Duration::from_secs(2);

/// When each cluster's events arrived.
#[derive(Debug, Default, Clone, Copy)]
struct Stamps {
    received: Option<Instant>,
    succeeded: Option<Instant>,
}

/// Runs the bench at size `n`.
pub async fn run(n: usize) -> anyhow::Result<()> {
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
    let mut arrivals = crate::events::reader(admin, &bus::EventQuery::release(RELEASE)).await?;
    let request = intents::rollout(&format!("fanout-{n}"), RELEASE, "1.0.0");
    let deadline = Instant::now() + Duration::from_secs(300) + Duration::from_millis(30) * n as u32;
    let posted = Instant::now();
    let id = coordinator.submit(&request).await?;
    let answered = posted.elapsed();
    eprintln!("rollout {id} accepted after {} ms", report::ms(answered));
    let stamps = collect(&mut arrivals, &fleet.names, deadline, server).await?;
    let rollout_done = api::wait_rollouts(
        &topology.rollouts,
        &[id],
        Duration::from_millis(10),
        deadline,
    )
    .await?;
    coordinator.check_running()?;
    fleet.check(admin).await?;
    eprintln!("{n} of {n} clusters received and succeeded; rollout succeeded");
    let since = |at: Option<Instant>| at.map(|a| a - posted).unwrap_or_default();
    let received: Vec<Duration> = stamps.values().map(|s| since(s.received)).collect();
    let succeeded: Vec<Duration> = stamps.values().map(|s| since(s.succeeded)).collect();
    report::millis("fanout", n, "post", answered);
    report::percentiles("fanout", n, "received", &received);
    report::percentiles("fanout", n, "succeeded", &succeeded);
    report::millis("fanout", n, "all_received", max(&received));
    report::millis("fanout", n, "all_succeeded", max(&succeeded));
    report::millis("fanout", n, "rollout_succeeded", rollout_done - posted);
    coordinator.stop().await;
    fleet.stop().await;
    Ok(())
}

fn max(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().unwrap_or_default()
}

/// Reads events until every cluster of `names` has succeeded; fails on any other ending, an
/// event from a cluster outside the fleet, or the deadline (naming how many are missing).
async fn collect(
    arrivals: &mut UnboundedReceiver<Arrival>,
    names: &[String],
    deadline: Instant,
    server: &Server,
) -> anyhow::Result<HashMap<String, Stamps>> {
    let mut stamps: HashMap<String, Stamps> = names
        .iter()
        .map(|c| (c.clone(), Stamps::default()))
        .collect();
    let mut done = 0;
    while done < names.len() {
        let Some(arrival) = crate::events::next(arrivals, deadline, server).await? else {
            let received = stamps.values().filter(|s| s.received.is_some()).count();
            bail!(
                "at the deadline {received} of {} clusters received and {done} succeeded",
                names.len()
            );
        };
        if arrival.is_failure() {
            bail!("{}", arrival.describe());
        }
        let cluster = &arrival.event.cluster;
        let entry = stamps
            .get_mut(cluster)
            .with_context(|| format!("an event from {cluster}, which is not in the fleet"))?;
        match arrival.event.phase {
            Phase::Received => {
                entry.received.get_or_insert(arrival.at);
            }
            Phase::Succeeded if entry.succeeded.is_none() => {
                if entry.received.is_none() {
                    bail!("{cluster} succeeded without a received event");
                }
                entry.succeeded = Some(arrival.at);
                done += 1;
            }
            _ => {}
        }
    }
    Ok(stamps)
}
