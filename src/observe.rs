//! Observers that only read NATS: `coxswain watch` (events live), `coxswain history` (the
//! audit trail), `coxswain status` (clusters x releases).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bus::{EventFeed, EventQuery, Since};
use proto::Outcome;

use crate::args::{NatsArgs, Output};

/// Which events.
#[derive(Debug, clap::Args)]
pub(crate) struct EventFilter {
    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only this release.
    #[arg(long)]
    release: Option<String>,
}

impl EventFilter {
    fn query(&self) -> EventQuery {
        EventQuery {
            cluster: self.cluster.clone(),
            release: self.release.clone(),
        }
    }
}

async fn observer(nats: &NatsArgs) -> anyhow::Result<bus::Bus> {
    nats.connect("coxswain-observer".into()).await
}

pub(crate) fn line(e: &Outcome) -> String {
    let mut l = format!(
        "{}  {:<12} {:<12} {:<16} {:<14}",
        e.at.strftime("%Y-%m-%d %H:%M:%S"),
        e.cluster,
        e.release,
        e.phase.to_string(),
        e.version.as_deref().unwrap_or("-"),
    );
    if let Some(r) = e.revision {
        l.push_str(&format!(" rev {r}"));
    }
    if let Some(by) = &e.requested_by {
        l.push_str(&format!(" by {by}"));
    }
    if let Some(reason) = &e.reason {
        l.push_str(&format!(" ({reason})"));
    }
    l
}

/// Arguments of `coxswain watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    filter: EventFilter,
    /// Also show events from this long ago (`15m`, `2h`); default: only new ones.
    #[arg(long, value_parser = crate::duration::parse)]
    since: Option<Duration>,
    /// Output format: text lines, or one JSON event per line.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    nats: NatsArgs,
}

impl WatchArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            filter,
            since,
            output,
            nats,
        } = self;
        let bus = observer(&nats).await?;
        let since = match since {
            Some(age) => Since::Time(jiff::Timestamp::now() - jiff::SignedDuration::try_from(age)?),
            None => Since::New,
        };
        let mut feed = EventFeed::open(&bus, &filter.query(), since)
            .await
            .context("cannot follow events: is anything deployed?")?;
        loop {
            tokio::select! {
                () = crate::shutdown::signalled() => return Ok(ExitCode::SUCCESS),
                next = feed.next() => match next {
                    Ok(Some(e)) => if !output.print_item(&e)? {
                        println!("{}", line(&e));
                    },
                    Ok(None) => return Ok(ExitCode::SUCCESS),
                    Err(error) => tracing::warn!(%error, "event stream interrupted; resuming"),
                },
            }
        }
    }
}

/// Arguments of `coxswain history`.
#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    filter: EventFilter,
    /// Every phase, not only how each intent ended.
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    nats: NatsArgs,
}

impl HistoryArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            filter,
            all,
            output,
            nats,
        } = self;
        let bus = observer(&nats).await?;
        let feed = EventFeed::open(&bus, &filter.query(), Since::All)
            .await
            .context("cannot read events: is anything deployed?")?;
        let mut events = feed.backlog(Duration::from_secs(5)).await?;
        events.retain(|e| all || e.terminal);
        if output.print(&events)? {
            return Ok(ExitCode::SUCCESS);
        }
        if events.is_empty() {
            println!("no deployments recorded");
        } else {
            println!(
                "{:<19}  {:<12} {:<12} {:<16} {:<14}",
                "WHEN (UTC)", "CLUSTER", "RELEASE", "OUTCOME", "VERSION"
            );
            for e in &events {
                println!("{}", line(e));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `coxswain status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    nats: NatsArgs,
}

impl StatusArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self { output, nats } = self;
        let bus = observer(&nats).await?;
        let topology = bus
            .open_topology()
            .await
            .context("no release state yet: is anything deployed?")?;
        let mut states = topology.states.all().await?;
        states.sort_by(|a, b| (&a.cluster, &a.release).cmp(&(&b.cluster, &b.release)));
        if output.print(&states)? {
            return Ok(ExitCode::SUCCESS);
        }
        let releases: BTreeSet<&str> = states.iter().map(|s| s.release.as_str()).collect();
        let mut rows: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
        let now = jiff::Timestamp::now();
        for s in &states {
            let age = (now.as_second() - s.updated_at.as_second()).max(0);
            let age = if age < 120 {
                format!("{age}s")
            } else if age < 7200 {
                format!("{}m", age / 60)
            } else {
                format!("{}h", age / 3600)
            };
            rows.entry(&s.cluster).or_default().insert(
                &s.release,
                match &s.drift {
                    Some(_) => format!("{} {} drifted {age}", s.version, s.phase),
                    None => format!("{} {} {age}", s.version, s.phase),
                },
            );
        }
        print!("{:<14}", "CLUSTER");
        for r in &releases {
            print!(" {r:<32}");
        }
        println!();
        for (cluster, cells) in rows {
            print!("{cluster:<14}");
            for r in &releases {
                print!(" {:<32}", cells.get(r).map_or("-", String::as_str));
            }
            println!();
        }
        Ok(ExitCode::SUCCESS)
    }
}
