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
    /// NATS password (with --nats-user). Prefer COXSWAIN_NATS_PASSWORD or
    /// --nats-password-file: a command line is visible to every user of the machine.
    #[arg(
        long,
        env = "COXSWAIN_NATS_PASSWORD",
        hide_env_values = true,
        conflicts_with = "nats_password_file"
    )]
    nats_password: Option<String>,
    /// A file holding the NATS password (its first line).
    #[arg(long, env = "COXSWAIN_NATS_PASSWORD_FILE")]
    nats_password_file: Option<PathBuf>,
    /// NATS token. Prefer COXSWAIN_NATS_TOKEN or --nats-token-file.
    #[arg(
        long,
        env = "COXSWAIN_NATS_TOKEN",
        hide_env_values = true,
        conflicts_with = "nats_token_file"
    )]
    nats_token: Option<String>,
    /// A file holding the NATS token (its first line).
    #[arg(long, env = "COXSWAIN_NATS_TOKEN_FILE")]
    nats_token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the NATS server's certificate; turns TLS on.
    #[arg(long, env = "COXSWAIN_NATS_TLS_CA")]
    nats_tls_ca: Option<PathBuf>,
    /// This process's client certificate (PEM) for a NATS server that verifies clients
    /// (mutual TLS); with --nats-tls-key.
    #[arg(long, env = "COXSWAIN_NATS_TLS_CERT", requires = "nats_tls_key")]
    nats_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --nats-tls-cert.
    #[arg(long, env = "COXSWAIN_NATS_TLS_KEY", requires = "nats_tls_cert")]
    nats_tls_key: Option<PathBuf>,
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
            password: secret(
                self.nats_password.as_ref(),
                self.nats_password_file.as_deref(),
            )?,
            token: secret(self.nats_token.as_ref(), self.nats_token_file.as_deref())?,
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
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

/// Output format of a read command (`-o`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Output {
    /// Aligned columns for people (`text` is the same).
    #[value(alias = "text")]
    Table,
    /// JSON for programs.
    Json,
    /// YAML, for people and programs.
    Yaml,
}

impl Output {
    /// Prints `value` as JSON or YAML and answers true; prints nothing and answers false for a
    /// table, which the caller lays out.
    pub(crate) fn print<T: serde::Serialize>(self, value: &T) -> anyhow::Result<bool> {
        match self {
            Self::Table => return Ok(false),
            Self::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Self::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        }
        Ok(true)
    }

    /// Prints one item of a stream: a JSON line, or a YAML document; false for a table.
    pub(crate) fn print_item<T: serde::Serialize>(self, value: &T) -> anyhow::Result<bool> {
        match self {
            Self::Table => return Ok(false),
            Self::Json => println!("{}", serde_json::to_string(value)?),
            Self::Yaml => print!("---\n{}", serde_saphyr::to_string(value)?),
        }
        Ok(true)
    }
}

/// This machine's host name, for lock holders and instance names; empty when unknown.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A secret given directly, or the first line of a file; an unreadable or empty file is an
/// error naming the file (never the secret).
pub(crate) fn secret(
    given: Option<&String>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    let Some(path) = file else {
        return Ok(given.cloned());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(Some(line.to_owned())),
        _ => anyhow::bail!("{} is empty", path.display()),
    }
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
