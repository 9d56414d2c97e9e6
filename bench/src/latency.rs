//! `latency`: an idle fleet of N agents, then one intent at a time to a random cluster (a new
//! version each time, so each one really deploys): publish -> `received` and publish ->
//! `succeeded`, stamped when the event reaches the bench's reader.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proto::{ContentType, Phase};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::events::Arrival;
use crate::fleet::Rig;
use crate::intents;
use crate::report;
use crate::server::Server;

/// Intents sent, one after the other.
const SAMPLES: usize = 100;

/// The release every sample deploys, at a new version each time.
const RELEASE: &str = "web";

/// How long the fleet idles after the start before the first sample.
const SETTLE: Duration = Duration::from_secs(2);

/// How long one intent may take to end.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the bench at size `n`.
pub async fn run(n: usize) -> anyhow::Result<()> {
    let rig = Rig::start(n).await?;
    let Rig {
        server,
        admin,
        keys,
        fleet,
        ..
    } = &rig;
    tokio::time::sleep(SETTLE).await;
    let publisher = server.connect("coxswain-bench-publisher").await?;
    let mut arrivals = crate::events::reader(admin, &bus::EventQuery::default()).await?;
    let mut received = Vec::with_capacity(SAMPLES);
    let mut succeeded = Vec::with_capacity(SAMPLES);
    let mut random = Random::seeded();
    for i in 0..SAMPLES {
        let cluster = &fleet.names[random.below(n)];
        let id = format!("lat-{i:03}-{cluster}");
        let intent = intents::intent(&id, cluster, RELEASE, &format!("1.{i}.0"));
        let signature = keys.sign(&intent)?;
        let sent = Instant::now();
        publisher
            .publish_signed_intent(&intent, Some(&signature), ContentType::MsgPack, None)
            .await?;
        let (r, s) = ended(&mut arrivals, &id, sent, server)
            .await
            .with_context(|| format!("sample {} of {SAMPLES}", i + 1))?;
        received.push(r);
        succeeded.push(s);
    }
    fleet.check(admin).await?;
    eprintln!("{SAMPLES} of {SAMPLES} intents received and succeeded; {n} of {n} agents up");
    report::percentiles("latency", n, "received", &received);
    report::percentiles("latency", n, "succeeded", &succeeded);
    fleet.stop().await;
    Ok(())
}

/// Reads events until intent `id` succeeded: publish -> `received` and -> `succeeded`.
async fn ended(
    arrivals: &mut UnboundedReceiver<Arrival>,
    id: &str,
    sent: Instant,
    server: &Server,
) -> anyhow::Result<(Duration, Duration)> {
    let deadline = Instant::now() + PATIENCE;
    let mut received = None;
    loop {
        let arrival = crate::events::next(arrivals, deadline, server)
            .await?
            .with_context(|| format!("intent {id} did not end within {PATIENCE:?}"))?;
        if arrival.event.intent_id != id {
            continue;
        }
        if arrival.is_failure() {
            bail!("{}", arrival.describe());
        }
        match arrival.event.phase {
            Phase::Received => received = Some(arrival.at - sent),
            Phase::Succeeded => {
                let received = received
                    .with_context(|| format!("intent {id} succeeded without a received event"))?;
                return Ok((received, arrival.at - sent));
            }
            _ => {}
        }
    }
}

/// xorshift64*: enough to spread samples over the fleet, no dependency.
struct Random(u64);

impl Random {
    /// Seeded from the clock; the seed goes to stderr.
    fn seeded() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("random seed {seed}");
        Self(seed)
    }

    /// A number below `bound`.
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound as u64) as usize
    }
}
