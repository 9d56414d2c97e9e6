//! One cluster's intent consumer: a durable pull consumer that hands out one message at a time,
//! so each message's ack timer starts only when the agent is ready to work on it.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use proto::{ReleaseSubject, SubjectError, header, stream};
use serde::de::DeserializeOwned;

use crate::{Bus, BusError};

/// Settings of a cluster's intent consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// How long the server waits for an ack (or a progress ack) before it redelivers.
    pub ack_wait: Duration,
    /// Most messages handed out and not yet acked; bounds the agent's concurrency.
    pub max_ack_pending: i64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 64,
        }
    }
}

/// The durable pull consumer `agent-<cluster>` on `coxswain.intent.<cluster>.>`.
///
/// A consumer created after intents were published starts from the latest intent of every
/// release (deliver policy "last per subject"): a cluster that joins late or was offline is
/// given what is current, not the history.
#[derive(Debug, Clone)]
pub struct IntentConsumer {
    name: String,
    consumer: consumer::PullConsumer,
}

impl IntentConsumer {
    /// Creates the consumer, or updates it when it exists.
    pub async fn create(
        bus: &Bus,
        cluster: &str,
        options: &ConsumerOptions,
    ) -> Result<Self, BusError> {
        let filter = proto::intent_filter(cluster)?;
        let name = proto::consumer_name(cluster)?;
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("coxswain agent of cluster {cluster}")),
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: options.max_ack_pending,
            ..Default::default()
        };
        let consumer = bus
            .js()
            .create_consumer_on_stream(config, stream::INTENTS)
            .await
            .map_err(|source| BusError::Consumer {
                name: name.clone(),
                source: Box::new(source),
            })?;
        Ok(Self { name, consumer })
    }

    /// The consumer's durable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `wait` for the next message; `None` when none came.
    pub async fn next(&self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        let consumer_error = |source| BusError::Consumer {
            name: self.name.clone(),
            source,
        };
        let mut batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| consumer_error(Box::new(e)))?;
        match batch.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(consumer_error(e)),
            Some(Ok(message)) => Delivery::new(message).map(Some),
        }
    }

    /// Messages that match the filter and were not yet delivered.
    pub async fn pending(&self) -> Result<u64, BusError> {
        let mut consumer = self.consumer.clone();
        let info = consumer.info().await.map_err(|e| BusError::Consumer {
            name: self.name.clone(),
            source: Box::new(e),
        })?;
        Ok(info.num_pending)
    }
}

/// One delivered message and the acknowledgements that can be given for it.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    stream_sequence: u64,
    delivery_count: u64,
}

impl Delivery {
    fn new(message: jetstream::Message) -> Result<Self, BusError> {
        let (stream_sequence, delivered) = {
            let info = message.info().map_err(|source| BusError::NotJetStream {
                subject: message.subject.to_string(),
                source,
            })?;
            (info.stream_sequence, info.delivered)
        };
        Ok(Self {
            message,
            stream_sequence,
            delivery_count: u64::try_from(delivered).unwrap_or(1),
        })
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// The cluster and release the subject names.
    pub fn release_subject(&self) -> Result<ReleaseSubject, SubjectError> {
        proto::parse_intent_subject(self.subject())
    }

    /// Its sequence in the stream.
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// How many times it has been delivered, this time included (1 on first delivery).
    pub fn delivery_count(&self) -> u64 {
        self.delivery_count
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    }

    /// The signature it carries (`Coxswain-Signature` and `Coxswain-Key-Id`), if both are
    /// there.
    pub fn signature(&self) -> Option<proto::Signature> {
        Some(proto::Signature {
            value: self.header(header::SIGNATURE)?.to_owned(),
            key_id: self.header(header::KEY_ID)?.to_owned(),
        })
    }

    /// The W3C `traceparent` it carries.
    pub fn traceparent(&self) -> Option<&str> {
        self.header(header::TRACEPARENT)
    }

    /// The raw payload.
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// Decodes the payload according to its `Content-Type`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, proto::DecodeError> {
        proto::decode(self.header(header::CONTENT_TYPE), self.payload())
    }

    /// Tells the server work goes on, restarting its ack timer.
    pub async fn progress(&self) -> Result<(), BusError> {
        self.ack_with("progress", AckKind::Progress).await
    }

    /// Acknowledges and waits for the server to confirm, so the message is not redelivered.
    pub async fn double_ack(&self) -> Result<(), BusError> {
        self.message
            .double_ack()
            .await
            .map_err(|source| self.ack_error("ack", source))
    }

    /// Hands the message back for redelivery after `delay`.
    pub async fn nak_with_delay(&self, delay: Duration) -> Result<(), BusError> {
        self.ack_with("nak", AckKind::Nak(Some(delay))).await
    }

    /// Stops redelivery for good (a poison message).
    pub async fn terminate(&self) -> Result<(), BusError> {
        self.ack_with("term", AckKind::Term).await
    }

    async fn ack_with(&self, kind: &'static str, ack: AckKind) -> Result<(), BusError> {
        self.message
            .ack_with(ack)
            .await
            .map_err(|source| self.ack_error(kind, source))
    }

    fn ack_error(&self, kind: &'static str, source: async_nats::Error) -> BusError {
        BusError::Ack {
            kind,
            stream_sequence: self.stream_sequence,
            source,
        }
    }
}

/// What a cluster's intent consumer still has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Intents not yet delivered.
    pub pending: u64,
    /// Intents delivered and not yet acknowledged.
    pub unacked: u64,
}

impl Bus {
    /// The intents stream; a failure is reported as one of consumer `name`.
    async fn intents(&self, name: &str) -> Result<jetstream::stream::Stream, BusError> {
        self.js()
            .get_stream(stream::INTENTS)
            .await
            .map_err(|e| BusError::Consumer {
                name: name.to_owned(),
                source: Box::new(e),
            })
    }

    /// The stream sequence of the newest intent on `subject`; `None` when there is none. An
    /// intent older than that is superseded.
    ///
    /// A direct get with the subject in the request's subject
    /// (`$JS.API.DIRECT.GET.COXSWAIN_INTENTS.<subject>`), so an agent's permissions can let it
    /// read its own cluster's intents and no other's.
    pub async fn latest_intent_sequence(&self, subject: &str) -> Result<Option<u64>, BusError> {
        let consumer_error = |source: async_nats::Error| BusError::Consumer {
            name: stream::INTENTS.to_owned(),
            source,
        };
        let intents = self.intents(stream::INTENTS).await?;
        match intents.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(message.sequence)),
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(consumer_error(Box::new(e))),
        }
    }

    /// The backlog of cluster `cluster`'s intent consumer.
    pub async fn intent_backlog(&self, cluster: &str) -> Result<Backlog, BusError> {
        let name = proto::consumer_name(cluster)?;
        let consumer_error = |source: async_nats::Error| BusError::Consumer {
            name: name.clone(),
            source,
        };
        let intents = self.intents(&name).await?;
        let info = intents
            .consumer_info(&name)
            .await
            .map_err(|e| consumer_error(Box::new(e)))?;
        Ok(Backlog {
            pending: info.num_pending,
            unacked: u64::try_from(info.num_ack_pending).unwrap_or(0),
        })
    }
}
