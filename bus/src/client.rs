//! `Bus`: one connection to NATS and its JetStream context, the handle every other crate holds.

use async_nats::HeaderMap;
use async_nats::jetstream;

use crate::BusError;

/// A connection to NATS with JetStream. Cheap to clone; every clone shares the connection.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Counts the connection's (re)connects; a pull request does not survive a reconnect.
    connects: tokio::sync::watch::Receiver<u64>,
    /// The server's latest permission violations on this connection.
    denials: Denials,
}

/// The last few "Permissions Violation" errors the server sent on a connection. A denied
/// request gets no answer, only this error on the side; keeping it lets a caller tell "not
/// allowed" (stop, and say so) from "no answer yet" (try again).
#[derive(Clone, Default)]
pub(crate) struct Denials(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl Denials {
    const KEPT: usize = 256;

    /// Records the server's error text, if it is a permission violation.
    pub(crate) fn record(&self, error: &str) {
        if !error.contains("Permissions Violation") {
            return;
        }
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() == Self::KEPT {
            kept.pop_front();
        }
        kept.push_back(error.chars().take(512).collect());
    }

    /// The violation that names `subject`, if the server reported one.
    pub(crate) fn find(&self, subject: &str) -> Option<String> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter().rev().find(|e| e.contains(subject)).cloned()
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus over `client`; `timeout` bounds JetStream requests and publish acks (async-nats'
    /// defaults when `None`).
    pub(crate) fn new(
        client: async_nats::Client,
        timeout: Option<std::time::Duration>,
        connects: tokio::sync::watch::Receiver<u64>,
        denials: Denials,
    ) -> Self {
        let js = match timeout {
            Some(t) => jetstream::ContextBuilder::new()
                .timeout(t)
                .build(client.clone()),
            None => jetstream::new(client.clone()),
        };
        Self {
            client,
            js,
            connects,
            denials,
        }
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The permission violation the server reported for `subject`, if any.
    pub(crate) fn denial(&self, subject: &str) -> Option<String> {
        self.denials.find(subject)
    }

    /// Whether the connection to NATS is up right now (readiness probes).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Changes each time the connection is (re)established.
    pub(crate) fn connects(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut connects = self.connects.clone();
        connects.mark_unchanged();
        connects
    }

    /// Publishes raw bytes with the given headers and waits for JetStream to store them, with
    /// no encoding and no checks: for tests and fault campaigns that must send what a
    /// misbehaving client would.
    pub async fn publish_raw(
        &self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: Vec<u8>,
    ) -> Result<u64, BusError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        let publish_error = |source| BusError::Publish {
            subject: subject.to_owned(),
            source,
        };
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), map, payload.into())
            .await
            .map_err(publish_error)?
            .await
            .map_err(publish_error)?;
        Ok(ack.sequence)
    }

    /// Sends a raw request (a JetStream API call such as `$JS.API.STREAM.DELETE.<stream>`) and
    /// returns the raw answer, with no checks: for tests and fault campaigns that must try
    /// what a misbehaving client would. A request the server's permissions refuse gets no
    /// answer and fails by timeout.
    pub async fn request_raw(&self, subject: &str, payload: Vec<u8>) -> Result<Vec<u8>, BusError> {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.client.request(subject.to_owned(), payload.into()),
        )
        .await
        .map_err(|e| BusError::Request {
            subject: subject.to_owned(),
            source: Box::new(e),
        })?
        .map_err(|e| BusError::Request {
            subject: subject.to_owned(),
            source: Box::new(e),
        })?;
        Ok(answer.payload.to_vec())
    }

    /// Waits until everything published so far has reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Flush(Box::new(e)))
    }
}
