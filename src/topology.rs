//! `coxswain topology`: the admin creates or updates the streams, key-value buckets and object
//! store. Every other process only opens them, and waits until they exist.

use std::process::ExitCode;

use crate::args::NatsArgs;

/// Arguments of `coxswain topology`.
#[derive(Debug, clap::Args)]
pub(crate) struct TopologyArgs {
    /// Replicas of every stream and bucket (1 for a single server, 3 for a cluster).
    #[arg(long, env = "COXSWAIN_REPLICAS", default_value_t = 1)]
    replicas: usize,
    #[command(flatten)]
    nats: NatsArgs,
}

impl TopologyArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self { replicas, nats } = self;
        let bus = nats.connect("coxswain-topology".into()).await?;
        let config = bus::TopologyConfig {
            replicas,
            ..Default::default()
        };
        bus.ensure_topology(&config).await?;
        println!("topology ready: streams, key-value buckets and object store are up to date");
        Ok(ExitCode::SUCCESS)
    }
}
