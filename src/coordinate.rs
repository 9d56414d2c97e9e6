//! `coxswain coordinator`: the service CI talks to.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use crate::args::{NatsArgs, cancel_on_signal, hostname};

/// Arguments of `coxswain coordinator`.
#[derive(Debug, clap::Args)]
pub(crate) struct CoordinatorArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "COXSWAIN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Bearer token every API call must carry.
    #[arg(long, env = "COXSWAIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve the API without authentication (only behind something that authenticates).
    #[arg(long, env = "COXSWAIN_NO_AUTH")]
    no_auth: bool,
    /// Name of this instance; two coordinators share rollouts by claims.
    #[arg(long, env = "COXSWAIN_INSTANCE")]
    instance: Option<String>,
    /// Seconds a claim on a rollout lasts without renewal (another instance takes over after).
    #[arg(long, env = "COXSWAIN_CLAIM_SECONDS", default_value_t = 10)]
    claim_seconds: u64,
    #[command(flatten)]
    nats: NatsArgs,
}

impl CoordinatorArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            listen,
            token,
            no_auth,
            instance,
            claim_seconds,
            nats,
        } = self;
        if token.is_none() && !no_auth {
            bail!("set --token (or COXSWAIN_TOKEN), or --no-auth to serve without authentication");
        }
        let instance = instance
            .unwrap_or_else(|| format!("coordinator-{}-{}", hostname(), std::process::id()));
        let bus = nats.connect(format!("coxswain-{instance}")).await?;
        let config = coordinator::CoordinatorConfig {
            listen,
            token: if no_auth { None } else { token },
            instance,
            claim: Duration::from_secs(claim_seconds),
        };
        coordinator::run(config, bus, cancel_on_signal()).await?;
        Ok(ExitCode::SUCCESS)
    }
}
