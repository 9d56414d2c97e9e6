//! `coxswain agent`: the per-cluster agent.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::args::{KubeArgs, NatsArgs, cancel_on_signal, hostname};

/// Arguments of `coxswain agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Name of the cluster this agent deploys to (DNS-1123 label).
    #[arg(long, env = "COXSWAIN_CLUSTER")]
    cluster: String,
    /// Labels of the cluster, `key=value`, repeatable (`--label env=prod --label region=eu`).
    /// `env` is required: intents for another environment are rejected.
    #[arg(long = "label", env = "COXSWAIN_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Releases deployed at the same time (one release is always strictly in order).
    #[arg(long, env = "COXSWAIN_MAX_CONCURRENT", default_value_t = 4)]
    max_concurrent: usize,
    /// Queue a newer intent behind a running one instead of cancelling the running one.
    #[arg(long, env = "COXSWAIN_NO_SUPERSEDE")]
    no_supersede: bool,
    /// Seconds in-flight work may continue after SIGTERM before it is handed back.
    #[arg(long, env = "COXSWAIN_GRACE_SECONDS", default_value_t = 30)]
    grace_seconds: u64,
    /// Seconds JetStream waits for an ack before redelivering (progress acks extend it).
    #[arg(long, env = "COXSWAIN_ACK_WAIT_SECONDS", default_value_t = 30)]
    ack_wait_seconds: u64,
    /// Seconds of the per-release lock lease: a crashed agent's lock frees after this.
    #[arg(long, env = "COXSWAIN_LOCK_LEASE_SECONDS", default_value_t = 15)]
    lock_lease_seconds: u64,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`); off when absent.
    #[arg(long, env = "COXSWAIN_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

impl AgentArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            cluster,
            labels,
            max_concurrent,
            no_supersede,
            grace_seconds,
            ack_wait_seconds,
            lock_lease_seconds,
            metrics_addr,
            nats,
            kube,
        } = self;
        let mut parsed = BTreeMap::new();
        for label in &labels {
            let Some((k, v)) = label.split_once('=') else {
                bail!("--label {label:?} is not key=value");
            };
            parsed.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let mut config = agent::AgentConfig::new(&cluster);
        config.labels = parsed;
        config.max_concurrent = max_concurrent;
        config.supersede = !no_supersede;
        config.grace = Duration::from_secs(grace_seconds);
        config.ack_wait = Duration::from_secs(ack_wait_seconds);
        config.engine.lease = Duration::from_secs(lock_lease_seconds);
        config.metrics_addr = metrics_addr;
        config.engine.holder = format!("agent-{cluster}/{}/{}", hostname(), std::process::id());

        let bus = nats.connect(format!("coxswain-agent-{cluster}")).await?;
        let kube = kube.client().await.context("cannot reach the cluster")?;
        agent::run(config, bus, kube, cancel_on_signal()).await?;
        Ok(ExitCode::SUCCESS)
    }
}
