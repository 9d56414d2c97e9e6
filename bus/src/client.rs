//! `Bus`: one connection to NATS and its JetStream context, the handle every other crate holds.

use async_nats::HeaderMap;
use async_nats::jetstream;

use crate::BusError;

/// A connection to NATS with JetStream. Cheap to clone; every clone shares the connection.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
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
    pub(crate) fn new(client: async_nats::Client, timeout: Option<std::time::Duration>) -> Self {
        let js = match timeout {
            Some(t) => jetstream::ContextBuilder::new()
                .timeout(t)
                .build(client.clone()),
            None => jetstream::new(client.clone()),
        };
        Self { client, js }
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
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
