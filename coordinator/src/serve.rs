//! The HTTP server loop of the coordinator: a limit on open connections (refusals are logged,
//! never silent), a timeout on reading request headers that also closes idle and half-open
//! connections, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
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

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish for a few
/// seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
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

/// One connection, until it ends, times out, or the server stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let served = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
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
