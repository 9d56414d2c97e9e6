//! The HTTP server loop of the coordinator's API and the agent's metrics: a limit on open connections (refusals are logged,
//! never silent), a timeout on reading request headers that also closes idle and half-open
//! connections, optional TLS (rustls with ring; the handshake is bounded by the same timeout),
//! and a graceful stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many connections, and how long a silent one, the server tolerates.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections at once; more are refused (closed at once) and logged.
    pub max_connections: usize,
    /// A connection must send a request's headers within this long, and an idle keep-alive
    /// connection its next request: otherwise it is closed.
    pub header_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            // Well under the usual 1,024 file descriptors.
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The server's TLS: its certificate chain and key, served with rustls (ring), HTTP/1.1.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Reads a PEM certificate chain (the server's first) and its PEM private key; an error
    /// names the file, never a key's bytes.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, std::io::Error> {
        let invalid = |path: &Path, why: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| invalid(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(invalid(cert, "no certificate in it".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| invalid(key, format!("does not go with the certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown`, then lets
/// open requests finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    limit = limits.max_connections,
                    %peer,
                    "connection limit reached: refusing connections"
                );
            }
            continue;
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            tls.clone(),
            permit,
            shutdown.clone(),
        ));
    }
    connections.close();
    if tokio::time::timeout(Duration::from_secs(5), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within 5 s of the stop");
    }
}

/// One connection, until it ends, times out, or the server stops. Over TLS the handshake must
/// end within the header timeout too.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let Some(tls) = tls else {
        return http(stream, peer, router, limits, shutdown).await;
    };
    let handshake = tokio::time::timeout(limits.header_timeout, tls.acceptor.accept(stream));
    let stream = tokio::select! {
        () = shutdown.cancelled() => return,
        shaken = handshake => match shaken {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    http(stream, peer, router, limits, shutdown).await;
}

/// HTTP/1 on one connection (plain or TLS), until it ends, times out, or the server stops.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let served = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "connection closed");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A certificate for 127.0.0.1 and its key, written as PEM files in `dir`.
    fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }

    #[test]
    fn unusable_certificate_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certificate(dir.path());
        assert!(ServerTls::from_pem_files(&cert, &key).is_ok());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = ServerTls::from_pem_files(&empty, &key).unwrap_err();
        assert!(error.to_string().contains("empty.pem"), "{error}");
        let error = ServerTls::from_pem_files(&cert, &empty).unwrap_err();
        assert!(error.to_string().contains("empty.pem"), "{error}");
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = certificate(other.path());
        let error = ServerTls::from_pem_files(&cert, &other_key).unwrap_err();
        assert!(error.to_string().contains("does not go with"), "{error}");
    }

    #[tokio::test]
    async fn a_client_that_never_starts_the_handshake_is_closed_after_the_header_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certificate(dir.path());
        let tls = ServerTls::from_pem_files(&cert, &key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            max_connections: 4,
            header_timeout: Duration::from_millis(200),
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Router::new(),
            limits,
            Some(tls),
            shutdown.clone(),
        ));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("closed by the server within the header timeout, not left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        shutdown.cancel();
        server.await.unwrap();
    }
}
