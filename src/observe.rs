//! Observers that read NATS directly: `coxswain watch` (events live), `coxswain history` (the
//! audit trail), `coxswain status` (clusters x releases).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use proto::{Outcome, ReleaseState};

use crate::agent::NatsArgs;
use crate::release::Output;

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
    fn subject(&self) -> anyhow::Result<String> {
        for name in [&self.cluster, &self.release].into_iter().flatten() {
            if let Err(p) = proto::check_dns_label(name) {
                bail!("{name:?} is not a cluster or release name: {p:?}");
            }
        }
        Ok(format!(
            "coxswain.event.{}.{}",
            self.cluster.as_deref().unwrap_or("*"),
            self.release.as_deref().unwrap_or("*")
        ))
    }
}

/// Parses `90s`, `15m`, `2h`, `7d`.
fn parse_age(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 15m"))?;
    let seconds = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("{text:?}: use s, m, h or d"),
    };
    Ok(Duration::from_secs(seconds))
}

async fn jetstream(nats: &NatsArgs) -> anyhow::Result<jetstream::Context> {
    let client = nats.connect("coxswain-observer".into()).await?;
    Ok(jetstream::new(client))
}

fn decode(m: &jetstream::Message) -> Option<Outcome> {
    let ct = m
        .headers
        .as_ref()
        .and_then(|h| h.get(proto::header::CONTENT_TYPE))
        .map(|v| v.as_str().to_owned());
    proto::decode(ct.as_deref(), &m.payload).ok()
}

fn line(e: &Outcome) -> String {
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
    #[arg(long)]
    since: Option<String>,
    /// Output format: text lines, or one JSON event per line.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
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
        let js = jetstream(&nats).await?;
        let deliver = match since {
            Some(age) => {
                let from =
                    jiff::Timestamp::now() - jiff::SignedDuration::try_from(parse_age(&age)?)?;
                consumer::DeliverPolicy::ByStartTime {
                    start_time: async_nats::datetime::parse_rfc3339(&from.to_string())
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                }
            }
            None => consumer::DeliverPolicy::New,
        };
        let stream = js
            .get_stream(proto::stream::EVENTS)
            .await
            .context("no event stream yet: is anything deployed?")?;
        let feed = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.subject()?,
                deliver_policy: deliver,
                ..Default::default()
            })
            .await?;
        let mut messages = feed.messages().await?;
        let mut seen = BTreeSet::new();
        loop {
            tokio::select! {
                () = crate::shutdown::signalled() => return Ok(ExitCode::SUCCESS),
                next = messages.next() => match next {
                    Some(Ok(m)) => {
                        let Some(e) = decode(&m) else { continue };
                        // Delivered at least once: show each event id once.
                        if !seen.insert(e.event_id.clone()) {
                            continue;
                        }
                        if output == Output::Json {
                            println!("{}", serde_json::to_string(&e)?);
                        } else {
                            println!("{}", line(&e));
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, "event stream interrupted; resuming"),
                    None => return Ok(ExitCode::SUCCESS),
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
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
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
        let js = jetstream(&nats).await?;
        let stream = js
            .get_stream(proto::stream::EVENTS)
            .await
            .context("no event stream yet: is anything deployed?")?;
        let mut feed = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.subject()?,
                ..Default::default()
            })
            .await?;
        let pending = feed.info().await?.num_pending;
        let mut messages = feed.messages().await?;
        let mut events = Vec::new();
        let mut seen = BTreeSet::new();
        let mut read = 0;
        while read < pending {
            match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => {
                    read += 1;
                    if let Some(e) = decode(&m)
                        && seen.insert(e.event_id.clone())
                        && (all || e.terminal)
                    {
                        events.push(e);
                    }
                }
                _ => break,
            }
        }
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&events)?);
        } else if events.is_empty() {
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
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    nats: NatsArgs,
}

impl StatusArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self { output, nats } = self;
        let js = jetstream(&nats).await?;
        let kv = js
            .get_key_value(proto::bucket::STATE)
            .await
            .context("no release state yet: is anything deployed?")?;
        let mut keys = kv.keys().await?;
        let mut states: Vec<ReleaseState> = Vec::new();
        while let Some(key) = keys.next().await {
            if let Some(bytes) = kv.get(key?).await?
                && let Ok(s) = proto::decode::<ReleaseState>(Some("application/json"), &bytes)
            {
                states.push(s);
            }
        }
        states.sort_by(|a, b| (&a.cluster, &a.release).cmp(&(&b.cluster, &b.release)));
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&states)?);
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
            rows.entry(&s.cluster)
                .or_default()
                .insert(&s.release, format!("{} {} {age}", s.version, s.phase));
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

/// Arguments of `coxswain rollback`.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// Release to roll back.
    #[arg(long)]
    release: String,
    /// Cluster to roll it back on.
    #[arg(long)]
    cluster: String,
    /// Revision to return to (`coxswain release history`); default: the one deployed before
    /// the current one.
    #[arg(long)]
    to: Option<u32>,
    /// Who asks; default $USER.
    #[arg(long, env = "COXSWAIN_REQUESTED_BY")]
    requested_by: Option<String>,
    /// Give up waiting for the outcome after this many seconds (exit 3).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    nats: NatsArgs,
}

impl RollbackArgs {
    /// Publishes a rollback intent to the cluster's agent and follows it; exit 0 when the
    /// earlier revision is back and healthy.
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            release,
            cluster,
            to,
            requested_by,
            timeout,
            nats,
        } = self;
        let js = jetstream(&nats).await?;
        let registry = js.get_key_value(proto::bucket::CLUSTERS).await?;
        let record = registry
            .get(&cluster)
            .await?
            .with_context(|| format!("no cluster {cluster:?} is registered"))?;
        let record: proto::ClusterRecord = proto::decode(Some("application/json"), &record)?;
        let environment = record
            .labels
            .get("env")
            .cloned()
            .context("the cluster has no env label")?;
        let states = js.get_key_value(proto::bucket::STATE).await?;
        let state = states
            .get(format!("{cluster}.{release}"))
            .await?
            .with_context(|| format!("release {release} was never deployed to {cluster}"))?;
        let state: ReleaseState = proto::decode(Some("application/json"), &state)?;
        let id = format!("rollback-{}", jiff::Timestamp::now().as_millisecond());
        let intent = proto::DeployIntent {
            schema_version: proto::SCHEMA_VERSION,
            id: id.clone(),
            cluster: cluster.clone(),
            release: release.clone(),
            namespace: state.namespace.clone(),
            environment,
            version: to.map_or_else(|| "previous".to_owned(), |n| format!("revision {n}")),
            images: Default::default(),
            manifests: proto::Manifests::Revision { revision: to },
            health: proto::HealthPolicy {
                timeout_secs: timeout.clamp(1, 86_400),
                ..Default::default()
            },
            rollback: Default::default(),
            requested_by: requested_by
                .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into())),
            created_at: jiff::Timestamp::now(),
            rollout_id: None,
        };
        let stream = js.get_stream(proto::stream::EVENTS).await?;
        let feed = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: proto::event_subject(&cluster, &release)?,
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = feed.messages().await?;
        bus::publish_intent(&js, &intent, proto::ContentType::MsgPack, None).await?;
        println!("rollback {id} of {release} on {cluster} sent");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    let Some(e) = decode(&m) else { continue };
                    if e.intent_id != id {
                        continue;
                    }
                    println!("{}", line(&e));
                    if e.terminal {
                        return Ok(if e.phase == proto::Phase::Succeeded {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        });
                    }
                }
                Ok(Some(Err(error))) => {
                    tracing::warn!(%error, "event stream interrupted; resuming")
                }
                Ok(None) => bail!("the event stream ended"),
                Err(_) => {
                    eprintln!("error: no outcome within {timeout} s");
                    return Ok(ExitCode::from(3));
                }
            }
        }
    }
}
