//! Connecting to NATS: URL, credentials (a `.creds` file, an nkey seed, user and password, a
//! token), TLS (a CA, and a client certificate for mutual TLS), retry on the first connect,
//! reconnect forever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::client::Denials;
use crate::{Bus, BusError};

/// How to reach NATS. The binary fills it from flags and `COXSWAIN_NATS_*` variables.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Server URL(s), comma separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// A file holding the nkey user seed (`SU...`) of this process's role, as
    /// `coxswain auth init` writes them. Replies then come to the role's own inbox prefix
    /// ([`crate::auth::inbox_prefix`] of its public key), the one subject its permissions let
    /// it subscribe to.
    pub nkey_seed_file: Option<PathBuf>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`.
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A PEM file with the CA that signed the server's certificate; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), with `tls_key`, for servers that verify clients
    /// (mutual TLS, `verify: true`); turns TLS on.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Connection name shown by the server's monitoring (`coxswain-agent-beta`).
    pub name: Option<String>,
    /// How long a request or a publish's ack is awaited; async-nats' defaults when `None`. A
    /// request the user may not make is dropped by the server without an answer, so a denial
    /// ends with this timeout.
    pub request_timeout: Option<Duration>,
}

/// A user's nkey: its seed, and the public key derived from it. Never logged.
struct Nkey {
    seed: String,
    public_key: String,
}

/// Connects, trying again until a server answers, and reconnecting after any later loss of
/// connection (async-nats buffers publishes meanwhile). A server that refuses the credentials
/// or TLS ends the first connect at once with the reason.
pub async fn connect(options: &ConnectOptions) -> Result<Bus, BusError> {
    let (connected, connects) = tokio::sync::watch::channel(0);
    let denials = Denials::default();
    let client = connect_client(options, &connected, &denials).await?;
    Ok(Bus::new(client, options.request_timeout, connects, denials))
}

async fn connect_client(
    options: &ConnectOptions,
    connected: &tokio::sync::watch::Sender<u64>,
    denials: &Denials,
) -> Result<async_nats::Client, BusError> {
    let nkey = match &options.nkey_seed_file {
        Some(path) => Some(read_nkey(path).await?),
        None => None,
    };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let url = options.url.as_str();
    // async-nats parses one URL per string: split the comma-separated list, so the client
    // knows every server to connect and fail over to.
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (|| async {
        nats_options(options, nkey.as_ref(), connected.clone(), denials.clone())
            .await?
            .connect(servers.as_slice())
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_owned(),
                source,
            })
    })
    .retry(policy)
    .sleep(tokio::time::sleep)
    .when(|error| match error {
        BusError::Connect { source, .. } => {
            matches!(
                source.kind(),
                async_nats::ConnectErrorKind::Io
                    | async_nats::ConnectErrorKind::TimedOut
                    | async_nats::ConnectErrorKind::Dns
            ) && !tls_refused(source)
        }
        _ => false,
    })
    .notify(|error, wait| {
        tracing::warn!(error = %crate::error::chain(error), ?wait, "nats not reachable yet; retrying");
    })
    .await
}

/// Whether a connect failed in TLS itself (an untrusted server certificate, a client
/// certificate missing or refused): async-nats reports some of these as IO errors, but no
/// retry can fix them, so the first connect ends at once with the reason.
fn tls_refused(error: &async_nats::ConnectError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let inner_tls = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<async_nats::rustls::Error>());
        if inner_tls || e.is::<async_nats::rustls::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Reads and checks a user seed; neither the seed nor any part of it reaches an error.
async fn read_nkey(path: &Path) -> Result<Nkey, BusError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| BusError::Credentials {
            path: path.to_owned(),
            source,
        })?;
    let seed = text.trim();
    let invalid = |reason: String| BusError::Nkey {
        path: path.to_owned(),
        reason,
    };
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| invalid(e.kind().to_string()))?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err(invalid(format!(
            "its type is {:?}, not User: nats-server logs in user keys only",
            pair.key_pair_type()
        )));
    }
    Ok(Nkey {
        seed: seed.to_owned(),
        public_key: pair.public_key(),
    })
}

/// TLS: the CA that signed the server's certificate, and this client's certificate and key
/// for mutual TLS. Either turns TLS on; every file must exist.
fn tls(
    mut nats: async_nats::ConnectOptions,
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<async_nats::ConnectOptions, BusError> {
    let missing = |what: &str, path: &Path| {
        BusError::Options(format!("tls {what} file {} does not exist", path.display()))
    };
    if let Some(ca) = ca {
        if !ca.is_file() {
            return Err(missing("CA", ca));
        }
        nats = nats.add_root_certificates(ca.to_owned()).require_tls(true);
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if !cert.is_file() {
                return Err(missing("certificate", cert));
            }
            if !key.is_file() {
                return Err(missing("key", key));
            }
            nats = nats
                .add_client_certificate(cert.to_owned(), key.to_owned())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(BusError::Options(
                "a tls client certificate and its key go together: give both or neither".into(),
            ));
        }
    }
    Ok(nats)
}

/// The async-nats options for one connection attempt.
async fn nats_options(
    options: &ConnectOptions,
    nkey: Option<&Nkey>,
    connected: tokio::sync::watch::Sender<u64>,
    denials: Denials,
) -> Result<async_nats::ConnectOptions, BusError> {
    let ConnectOptions {
        url: _,
        creds_file,
        nkey_seed_file: _,
        user,
        password,
        token,
        tls_ca,
        tls_cert,
        tls_key,
        name,
        request_timeout,
    } = options;
    let mut nats = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    if let Some(timeout) = request_timeout {
        nats = nats.request_timeout(Some(*timeout));
    }
    if nkey.is_some() && (creds_file.is_some() || user.is_some() || token.is_some()) {
        return Err(BusError::Options(
            "an nkey seed file is the whole login: give no creds file, user or token with it"
                .into(),
        ));
    }
    if let Some(Nkey { seed, public_key }) = nkey {
        nats = nats
            .nkey(seed.clone())
            .custom_inbox_prefix(crate::auth::inbox_prefix(public_key));
    }
    if let Some(path) = creds_file {
        nats = nats
            .credentials_file(path)
            .await
            .map_err(|source| BusError::Credentials {
                path: path.clone(),
                source,
            })?;
    }
    match (user, password) {
        (Some(u), Some(p)) => nats = nats.user_and_password(u.clone(), p.clone()),
        (None, None) => {}
        _ => {
            return Err(BusError::Options(
                "user and password go together: give both or neither".into(),
            ));
        }
    }
    if let Some(token) = token {
        nats = nats.token(token.clone());
    }
    nats = tls(
        nats,
        tls_ca.as_deref(),
        tls_cert.as_deref(),
        tls_key.as_deref(),
    )?;
    if let Some(name) = name {
        nats = nats.name(name.clone());
    }
    Ok(nats.event_callback(move |event| {
        match &event {
            async_nats::Event::Connected => connected.send_modify(|n| *n += 1),
            async_nats::Event::ServerError(async_nats::ServerError::Other(text)) => {
                denials.record(text);
            }
            _ => {}
        }
        async move {
            match event {
                async_nats::Event::Connected | async_nats::Event::Closed => {
                    tracing::info!(%event, "nats connection event");
                }
                _ => tracing::warn!(%event, "nats connection event"),
            }
        }
    }))
}
