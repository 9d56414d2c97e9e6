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
    pub(crate) fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
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

    /// Waits until everything published so far has reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Flush(Box::new(e)))
    }
}
