//! `coxswain coordinator`: the service CI talks to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use coordinator::Policy;
use coordinator::policy::EXAMPLE;

use crate::args::{NatsArgs, cancel_on_signal, hostname};

/// Arguments of `coxswain coordinator`.
#[derive(Debug, clap::Args)]
pub(crate) struct CoordinatorArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "COXSWAIN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The API's identities: a file with one `<name> <roles> <token or sha256:hex>` per line,
    /// roles `deploy:<env>`, `deploy:*` or `read` (comma separated). `requested_by` in
    /// rollouts, events and history is the caller's identity.
    #[arg(long, env = "COXSWAIN_TOKENS_FILE", conflicts_with = "token")]
    tokens_file: Option<PathBuf>,
    /// A single bearer token with every right, for one CI system (identity `token`). Prefer
    /// the environment variable or --tokens-file: a command line is visible to every user.
    #[arg(long, env = "COXSWAIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve the API without authentication (only behind something that authenticates).
    #[arg(long, env = "COXSWAIN_NO_AUTH")]
    no_auth: bool,
    /// Name of this instance; two coordinators share rollouts by claims.
    #[arg(long, env = "COXSWAIN_INSTANCE")]
    instance: Option<String>,
    /// How long a claim on a rollout lasts without renewal (another instance takes over after).
    #[arg(long, alias = "claim-seconds", env = "COXSWAIN_CLAIM", default_value = "10s", value_parser = crate::duration::parse)]
    claim: Duration,
    /// The platform policy (YAML): environments, their cluster selectors, waves, promotion
    /// gates, and the releases and namespaces each may receive. Required.
    #[arg(long, env = "COXSWAIN_POLICY")]
    policy: Option<PathBuf>,
    /// The nkey seed (e.g. `signing.nk` from `coxswain auth init`) every per-cluster intent is
    /// signed with; agents accept only intents signed by a key they trust.
    #[arg(long, env = "COXSWAIN_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Publish unsigned intents (no --signing-key). Only agents run with
    /// --insecure-accept-unsigned take them: for local experiments only.
    #[arg(
        long,
        env = "COXSWAIN_INSECURE_UNSIGNED_INTENTS",
        conflicts_with = "signing_key"
    )]
    insecure_unsigned_intents: bool,
    /// How long a published intent stays valid (`30m`, `1h`, `2d`); an agent refuses it after
    /// that, so a cluster offline for longer gets the next rollout instead.
    #[arg(long, env = "COXSWAIN_INTENT_TTL", default_value = "24h", value_parser = crate::duration::parse)]
    intent_ttl: Duration,
    /// How long, beyond the release's health timeout, a cluster has to report a final outcome
    /// after its intent was sent (`60s`, `5m`). A cluster silent for longer (its agent died,
    /// its NATS link is down) fails its wave with "no outcome from <cluster> within <T>".
    #[arg(long, env = "COXSWAIN_OUTCOME_GRACE", default_value = "60s", value_parser = crate::duration::parse)]
    outcome_grace: Duration,
    /// Create or update the topology first, as `coxswain topology` does: for a single-user
    /// setup without roles, or with the admin key. Without it, the coordinator waits until
    /// the admin created the topology.
    #[arg(long, env = "COXSWAIN_CREATE_TOPOLOGY")]
    create_topology: bool,
    /// With --create-topology: replicas of every stream and bucket (1 for a single server, 3
    /// for a cluster), as `coxswain topology --replicas`.
    #[arg(long, env = "COXSWAIN_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Most HTTP connections open at once; more are refused and logged. Keep it under the
    /// process's file-descriptor limit.
    #[arg(long, env = "COXSWAIN_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// A client must send a request's headers within this long (`10s`), and an idle
    /// connection its next request, or it is closed.
    #[arg(long, env = "COXSWAIN_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse)]
    header_timeout: Duration,
    /// Serve the API over HTTPS with this certificate chain (PEM, the server's first); with
    /// --tls-key.
    #[arg(long, env = "COXSWAIN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "COXSWAIN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
}

impl CoordinatorArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            listen,
            tokens_file,
            token,
            no_auth,
            instance,
            claim,
            policy,
            signing_key,
            insecure_unsigned_intents,
            intent_ttl,
            outcome_grace,
            create_topology,
            replicas,
            max_connections,
            header_timeout,
            tls_cert,
            tls_key,
            nats,
        } = self;
        let policy = load_policy(policy.as_deref())?;
        let tls = server_tls(tls_cert.as_deref(), tls_key.as_deref())?;
        let signer = signer(signing_key.as_deref(), insecure_unsigned_intents)?;
        let tokens = match (tokens_file, token, no_auth) {
            (_, _, true) => None,
            (Some(path), _, false) => Some(read_tokens(&path)?),
            (None, Some(token), false) => Some(coordinator::Tokens::single("token", &token)),
            (None, None, false) => bail!(
                "set --tokens-file (or COXSWAIN_TOKENS_FILE), COXSWAIN_TOKEN, or --no-auth to \
                 serve without authentication"
            ),
        };
        let instance = instance
            .unwrap_or_else(|| format!("coordinator-{}-{}", hostname(), std::process::id()));
        let bus = nats.connect(format!("coxswain-{instance}")).await?;
        if create_topology {
            let config = bus::TopologyConfig {
                replicas,
                ..Default::default()
            };
            bus.ensure_topology(&config).await?;
        }
        let config = coordinator::CoordinatorConfig {
            listen,
            tokens,
            instance,
            claim,
            policy,
            signer,
            intent_ttl,
            outcome_grace,
            limits: coordinator::ServerLimits {
                max_connections,
                header_timeout,
            },
            tls,
        };
        coordinator::run(config, bus, cancel_on_signal()).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The API's TLS from `--tls-cert` and `--tls-key` (clap requires both or neither).
fn server_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Option<coordinator::ServerTls>> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let tls = coordinator::ServerTls::from_pem_files(cert, key)
        .context("cannot set up TLS for the API (--tls-cert, --tls-key)")?;
    tracing::info!(cert = %cert.display(), "serving the API over HTTPS");
    Ok(Some(tls))
}

/// The intent-signing key, or nothing when asked to run insecure.
fn signer(
    path: Option<&Path>,
    insecure: bool,
) -> anyhow::Result<Option<std::sync::Arc<proto::Signer>>> {
    let Some(path) = path else {
        if insecure {
            tracing::warn!(
                "publishing unsigned intents (--insecure-unsigned-intents): only agents that \
                 accept unsigned intents will deploy them"
            );
            return Ok(None);
        }
        bail!(
            "set --signing-key FILE (the signing.nk written by `coxswain auth init`), or \
             --insecure-unsigned-intents for a local experiment"
        );
    };
    let seed = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    let signer = proto::Signer::from_seed(&seed)
        .with_context(|| format!("{} does not hold an nkey seed", path.display()))?;
    tracing::info!(key = signer.key_id(), "signing intents");
    Ok(Some(std::sync::Arc::new(signer)))
}

/// The platform policy, or an error that says what to write.
fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    let Some(path) = path else {
        bail!(
            "set --policy FILE (or COXSWAIN_POLICY): the platform policy, a YAML file with \
             `environments:`, each with a `selector` (cluster labels), optional `waves` and \
             `requires`, and the `releases` and `namespaces` it may receive ([\"*\"] for any); \
             start from {EXAMPLE}"
        );
    };
    Policy::load(path).map_err(|problems| {
        anyhow!(
            "the platform policy is invalid ({} problem(s)); fix them and start again \
             (see {EXAMPLE}):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        )
    })
}

/// Reads the API's identities; an error names the file and the line, never a token.
fn read_tokens(path: &std::path::Path) -> anyhow::Result<coordinator::Tokens> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
    let tokens = coordinator::Tokens::parse(&text)
        .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?;
    tracing::info!(identities = tokens.len(), file = %path.display(), "API identities loaded");
    Ok(tokens)
}
