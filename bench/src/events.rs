//! The event reader: an ordered feed opened before anything is published, read by its own
//! task that stamps every event the moment it arrives. Latencies are arrival stamps minus send
//! stamps, so nothing the bench does after a publish can inflate them.

use std::time::{Duration, Instant};

use proto::{Outcome, Phase};
use tokio::sync::mpsc;

/// An event and when the reader got it.
#[derive(Debug)]
pub struct Arrival {
    /// When it arrived.
    pub at: Instant,
    /// The event.
    pub event: Outcome,
}

impl Arrival {
    /// An ending that is no success: the run cannot count this cluster.
    pub fn is_failure(&self) -> bool {
        self.event.terminal && self.event.phase != Phase::Succeeded
    }

    /// One line about the event, for a failure message.
    pub fn describe(&self) -> String {
        let e = &self.event;
        format!(
            "{} {} intent {} ended {}: {}",
            e.cluster,
            e.release,
            e.intent_id,
            e.phase,
            e.reason.as_deref().unwrap_or("(no reason)")
        )
    }
}

/// How often a wait for the next event checks that the server still runs.
const CHECK: Duration = Duration::from_secs(5);

/// The next event, or `None` once `deadline` passed; fails when the reader stopped or the
/// server died meanwhile.
pub async fn next(
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    deadline: Instant,
    server: &crate::server::Server,
) -> anyhow::Result<Option<Arrival>> {
    loop {
        let slice = deadline.min(Instant::now() + CHECK);
        match tokio::time::timeout_at(slice.into(), arrivals.recv()).await {
            Ok(Some(arrival)) => return Ok(Some(arrival)),
            Ok(None) => anyhow::bail!("the event reader stopped"),
            Err(_) if Instant::now() >= deadline => return Ok(None),
            Err(_) => server.check_alive()?,
        }
    }
}

/// Opens a feed of the events `query` matches from now on and starts its reader. The
/// channel closes when the feed fails (said on stderr).
pub async fn reader(
    bus: &bus::Bus,
    query: &bus::EventQuery,
) -> anyhow::Result<mpsc::UnboundedReceiver<Arrival>> {
    let mut feed = bus::EventFeed::open(bus, query, bus::Since::New).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match feed.next().await {
                Ok(Some(event)) => {
                    let at = Instant::now();
                    if tx.send(Arrival { at, event }).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    eprintln!("event feed ended");
                    return;
                }
                Err(e) => {
                    eprintln!("event feed failed: {:#}", anyhow::Error::new(e));
                    return;
                }
            }
        }
    });
    Ok(rx)
}
