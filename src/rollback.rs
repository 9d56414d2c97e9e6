//! `coxswain rollback`: a release back to an earlier revision on one cluster, through its
//! agent, followed until the agent reports how it ended.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bus::{EventFeed, EventQuery, Since};

use crate::args::NatsArgs;
use crate::observe::line;

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
        let timeout = self.timeout;
        let bus = self.nats.connect("coxswain-rollback".into()).await?;
        let intent = self.intent(&bus).await?;
        let query = EventQuery {
            cluster: Some(intent.cluster.clone()),
            release: Some(intent.release.clone()),
        };
        let mut feed = EventFeed::open(&bus, &query, Since::New).await?;
        bus.publish_intent(&intent, proto::ContentType::MsgPack, None)
            .await?;
        println!(
            "rollback {} of {} on {} sent",
            intent.id, intent.release, intent.cluster
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            match tokio::time::timeout_at(deadline, feed.next()).await {
                Ok(Ok(Some(e))) if e.intent_id == intent.id => {
                    println!("{}", line(&e));
                    if e.terminal {
                        return Ok(if e.phase == proto::Phase::Succeeded {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        });
                    }
                }
                Ok(Ok(Some(_))) => {}
                Ok(Err(error)) => tracing::warn!(%error, "event stream interrupted; resuming"),
                Ok(Ok(None)) => bail!("the event stream ended"),
                Err(_) => {
                    eprintln!("error: no outcome within {timeout} s");
                    return Ok(ExitCode::from(3));
                }
            }
        }
    }

    /// The rollback intent: the cluster's environment from the registry, the release's
    /// namespace from its last state.
    async fn intent(&self, bus: &bus::Bus) -> anyhow::Result<proto::DeployIntent> {
        let Self {
            release,
            cluster,
            to,
            requested_by,
            timeout,
            nats: _,
        } = self;
        let topology = bus.open_topology().await?;
        let record = topology
            .registry
            .get(cluster)
            .await?
            .with_context(|| format!("no cluster {cluster:?} is registered"))?;
        let environment = record
            .labels
            .get("env")
            .cloned()
            .context("the cluster has no env label")?;
        let state = topology
            .states
            .get(cluster, release)
            .await?
            .with_context(|| format!("release {release} was never deployed to {cluster}"))?;
        Ok(proto::DeployIntent {
            schema_version: proto::SCHEMA_VERSION,
            id: format!("rollback-{}", jiff::Timestamp::now().as_millisecond()),
            cluster: cluster.clone(),
            release: release.clone(),
            namespace: state.namespace,
            environment,
            version: to.map_or_else(|| "previous".to_owned(), |n| format!("revision {n}")),
            images: Default::default(),
            manifests: proto::Manifests::Revision { revision: *to },
            health: proto::HealthPolicy {
                timeout_secs: (*timeout).clamp(1, 86_400),
                ..Default::default()
            },
            rollback: Default::default(),
            requested_by: requested_by
                .clone()
                .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into())),
            created_at: jiff::Timestamp::now(),
            rollout_id: None,
        })
    }
}
