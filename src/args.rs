//! Flags several subcommands share (`NatsArgs`, `KubeArgs`, `Output`), and the two helpers
//! every long-running subcommand uses: this host's name and a token cancelled on SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use tokio_util::sync::CancellationToken;

/// How to reach NATS.
#[derive(Debug, clap::Args)]
pub(crate) struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(
        long = "nats",
        env = "COXSWAIN_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    url: String,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long, env = "COXSWAIN_NATS_CREDS")]
    creds: Option<PathBuf>,
    /// File holding the nkey seed of this process's role, one of those `coxswain auth init`
    /// writes (`coordinator.nk`, `agent-<cluster>.nk`, `observer.nk`, `admin.nk`). Without it
    /// (and without other credentials) the server must run without authorization.
    #[arg(long, env = "COXSWAIN_NATS_NKEY")]
    nats_nkey: Option<PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "COXSWAIN_NATS_USER")]
    nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(long, env = "COXSWAIN_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "COXSWAIN_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// CA certificate (PEM) that signed the NATS server's certificate; turns TLS on.
    #[arg(long, env = "COXSWAIN_NATS_TLS_CA")]
    nats_tls_ca: Option<PathBuf>,
    /// How long a NATS request or a publish's ack is awaited (`5s`). A request caught on a
    /// server that just died fails after this and is retried on another: keep it short.
    #[arg(long, env = "COXSWAIN_NATS_TIMEOUT", default_value = "5s", value_parser = crate::duration::parse)]
    nats_timeout: std::time::Duration,
}

impl NatsArgs {
    pub(crate) async fn connect(&self, name: String) -> anyhow::Result<bus::Bus> {
        let options = bus::ConnectOptions {
            url: self.url.clone(),
            creds_file: self.creds.clone(),
            nkey_seed_file: self.nats_nkey.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            name: Some(name),
            request_timeout: Some(self.nats_timeout),
        };
        Ok(bus::connect(&options).await?)
    }
}

/// How to reach the cluster.
#[derive(Debug, clap::Args)]
pub(crate) struct KubeArgs {
    /// Kubeconfig file; without it, $KUBECONFIG, ~/.kube/config or the in-cluster account.
    #[arg(long, env = "COXSWAIN_KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "COXSWAIN_KUBE_CONTEXT", global = true)]
    context: Option<String>,
}

impl KubeArgs {
    pub(crate) async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer()
                .await
                .context("no kubeconfig found (use --kubeconfig)")?,
        };
        Ok(kube::Client::try_from(config)?)
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Output {
    /// Aligned text for people.
    Text,
    /// JSON for programs.
    Json,
}

/// This machine's host name, for lock holders and instance names; empty when unknown.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A token cancelled on the first SIGTERM or Ctrl-C.
pub(crate) fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        crate::shutdown::signalled().await;
        tracing::info!("shutdown requested");
        on_signal.cancel();
    });
    token
}
