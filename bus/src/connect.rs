//! Connecting to NATS: URL, credentials, TLS, retry on the first connect, reconnect forever.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Bus, BusError};

/// How to reach NATS. The binary fills it from flags and `COXSWAIN_NATS_*` variables.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Server URL(s), comma separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`.
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A PEM file with the CA that signed the server's certificate; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// Connection name shown by the server's monitoring (`coxswain-agent-beta`).
    pub name: Option<String>,
}

/// Connects, retrying the first connection until the server answers, and reconnecting after
/// any later loss of connection (async-nats buffers publishes meanwhile).
pub async fn connect(options: &ConnectOptions) -> Result<Bus, BusError> {
    let client = connect_client(options).await?;
    Ok(Bus::new(client))
}

async fn connect_client(options: &ConnectOptions) -> Result<async_nats::Client, BusError> {
    let ConnectOptions {
        url,
        creds_file,
        user,
        password,
        token,
        tls_ca,
        name,
    } = options;
    let mut nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
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
    if let Some(ca) = tls_ca {
        if !ca.is_file() {
            return Err(BusError::Options(format!(
                "tls CA file {} does not exist",
                ca.display()
            )));
        }
        nats = nats.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some(name) = name {
        nats = nats.name(name.clone());
    }
    nats.event_callback(|event| async move {
        match event {
            async_nats::Event::Connected | async_nats::Event::Closed => {
                tracing::info!(%event, "nats connection event");
            }
            _ => tracing::warn!(%event, "nats connection event"),
        }
    })
    .connect(url.as_str())
    .await
    .map_err(|source| BusError::Connect {
        url: url.clone(),
        source,
    })
}
