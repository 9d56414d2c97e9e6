//! One cluster's intent consumer: a durable pull consumer that hands out one message at a time,
//! so each message's ack timer starts only when the agent is ready to work on it.
//!
//! The pulling is ours, not async-nats' `Stream`, which sends pull requests of its own (on a
//! timer, after a reconnect) whether or not the caller is ready. Here one subscription lives
//! as long as the consumer, and a pull request for exactly one message is sent only when the
//! caller asks for the next message. A request waits up to `pull_expires` (a minute) with
//! idle heartbeats, so an idle agent costs the server a few messages a minute, not one a
//! second. A request lost to a reconnect or a server restart is noticed (the reconnect, or
//! missed heartbeats) and sent again.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use async_nats::{StatusCode, Subscriber};
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use proto::{ReleaseSubject, SubjectError, header, stream};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::{Bus, BusError};

/// Settings of a cluster's intent consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// How long the server waits for an ack (or a progress ack) before it redelivers.
    pub ack_wait: Duration,
    /// Most messages handed out and not yet acked; bounds the agent's concurrency.
    pub max_ack_pending: i64,
    /// How long one pull request waits for a message before the server ends it.
    pub pull_expires: Duration,
    /// How often the server says "still here" while a pull request waits; two missed
    /// heartbeats and the request is sent again.
    pub idle_heartbeat: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 64,
            pull_expires: Duration::from_secs(60),
            idle_heartbeat: Duration::from_secs(30),
        }
    }
}

/// The durable pull consumer `agent-<cluster>` on `coxswain.intent.<cluster>.>`.
///
/// A consumer created after intents were published starts from the latest intent of every
/// release (deliver policy "last per subject"): a cluster that joins late or was offline is
/// given what is current, not the history.
#[derive(Debug)]
pub struct IntentConsumer {
    name: String,
    consumer: consumer::PullConsumer,
    bus: Bus,
    options: ConsumerOptions,
    puller: Option<Puller>,
}

/// The long-lived subscription pull requests are answered on, and the one request in flight.
#[derive(Debug)]
struct Puller {
    subscriber: Subscriber,
    /// Replies to request `n` come to `<inbox>.<n>`.
    inbox: String,
    /// The number of the request in flight, if one is.
    waiting: Option<u64>,
    requests: u64,
    /// When anything last came from the server for the request in flight.
    heard_at: Instant,
    connects: tokio::sync::watch::Receiver<u64>,
}

/// What a message on the pull subscription means.
enum Reply {
    /// An intent.
    Message,
    /// The server is still holding the request.
    Heartbeat,
    /// The request ended without a message (expired, leadership change, ...): send another.
    Ended,
    /// The consumer is gone.
    Deleted,
}

impl IntentConsumer {
    /// Creates the consumer, or finds it as it is: idempotent, and retried with jittered
    /// backoff while JetStream is busy or unreachable, so thousands of agents may start at
    /// once. A refusal (permissions, limits, a conflicting configuration) ends it at once.
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
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .with_max_times(30);
        // The create subject names the stream and the consumer: a denial of it says so.
        let subject = format!("CONSUMER.CREATE.{}.{name}", stream::INTENTS);
        let consumer = (|| {
            bus.js()
                .create_consumer_on_stream(config.clone(), stream::INTENTS)
        })
        .retry(policy)
        .when(|e| busy(e) && bus.denial(&subject).is_none())
        .sleep(tokio::time::sleep)
        .notify(|error, wait| tracing::warn!(%error, ?wait, consumer = name, "cannot create the intent consumer yet; retrying"))
        .await
        .map_err(|source| BusError::Consumer {
            name: name.clone(),
            source: match bus.denial(&subject) {
                Some(denied) => denied.into(),
                None => Box::new(source),
            },
        })?;
        Ok(Self {
            name,
            consumer,
            bus: bus.clone(),
            options: options.clone(),
            puller: None,
        })
    }

    /// The consumer's durable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `wait` for the next message; `None` when none came. A pull request for one
    /// message is sent only if none is in flight: a request outlives a call that timed out,
    /// and the next call goes on waiting for it.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        let deadline = Instant::now() + wait;
        if self.puller.is_none() {
            self.puller = Some(self.subscribe().await?);
        }
        loop {
            self.request_if_idle().await?;
            let Some(puller) = self.puller.as_mut() else {
                return Ok(None);
            };
            let silence = puller.heard_at + self.options.idle_heartbeat * 2;
            let message = tokio::select! {
                changed = puller.connects.changed() => {
                    if changed.is_ok() {
                        tracing::debug!(consumer = self.name, "reconnected: pulling again");
                        puller.waiting = None;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(silence) => {
                    tracing::info!(consumer = self.name, "no heartbeat from the server: pulling again");
                    puller.waiting = None;
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                message = puller.subscriber.next() => message,
            };
            let Some(message) = message else {
                self.puller = None;
                return Err(self.closed());
            };
            if let Some(delivery) = self.on_reply(message)? {
                return Ok(Some(delivery));
            }
        }
    }

    /// Handles one reply; a delivery when it was an intent.
    fn on_reply(&mut self, message: async_nats::Message) -> Result<Option<Delivery>, BusError> {
        let Some(puller) = self.puller.as_mut() else {
            return Ok(None);
        };
        // Status replies come on `<inbox>.<n>`; a message keeps its own subject, and always
        // answers the request in flight (one message per request).
        let request = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        let reply = classify(&message);
        let current = matches!(reply, Reply::Message) || request == puller.waiting;
        if current {
            puller.heard_at = Instant::now();
        }
        match reply {
            Reply::Message => {
                puller.waiting = None;
                let message = jetstream::Message {
                    message,
                    context: self.bus.js().clone(),
                };
                Delivery::new(message).map(Some)
            }
            Reply::Heartbeat => Ok(None),
            Reply::Ended => {
                if current {
                    puller.waiting = None;
                }
                Ok(None)
            }
            Reply::Deleted => Err(BusError::Consumer {
                name: self.name.clone(),
                source: "the consumer was deleted".into(),
            }),
        }
    }

    async fn subscribe(&self) -> Result<Puller, BusError> {
        let inbox = self.bus.client().new_inbox();
        let subscriber = self
            .bus
            .client()
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| BusError::Consumer {
                name: self.name.clone(),
                source: Box::new(e),
            })?;
        Ok(Puller {
            subscriber,
            inbox,
            waiting: None,
            requests: 0,
            heard_at: Instant::now(),
            connects: self.bus.connects(),
        })
    }

    /// Sends a pull request for one message unless one is in flight.
    async fn request_if_idle(&mut self) -> Result<(), BusError> {
        let Some(puller) = self.puller.as_mut() else {
            return Ok(());
        };
        if puller.waiting.is_some() {
            return Ok(());
        }
        puller.requests += 1;
        let n = puller.requests;
        let body = serde_json::json!({
            "batch": 1,
            "expires": nanos(self.options.pull_expires),
            "idle_heartbeat": nanos(self.options.idle_heartbeat),
        });
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            stream::INTENTS,
            self.name
        );
        self.bus
            .client()
            .publish_with_reply(
                subject,
                format!("{}.{n}", puller.inbox),
                body.to_string().into(),
            )
            .await
            .map_err(|e| BusError::Consumer {
                name: self.name.clone(),
                source: Box::new(e),
            })?;
        puller.waiting = Some(n);
        puller.heard_at = Instant::now();
        Ok(())
    }

    fn closed(&self) -> BusError {
        BusError::Consumer {
            name: self.name.clone(),
            source: "the pull subscription was closed".into(),
        }
    }

    /// Messages that match the filter and were not yet delivered, from the consumer's info
    /// (one request; the agent reads its backlog from message metadata instead).
    pub async fn pending(&self) -> Result<u64, BusError> {
        let mut consumer = self.consumer.clone();
        let info = consumer.info().await.map_err(|e| BusError::Consumer {
            name: self.name.clone(),
            source: Box::new(e),
        })?;
        Ok(info.num_pending)
    }
}

/// Whether creating a consumer failed for a reason that passes: a timeout, no JetStream to
/// answer yet, or JetStream saying it is busy.
fn busy(error: &jetstream::stream::ConsumerError) -> bool {
    use jetstream::stream::ConsumerErrorKind;
    match error.kind() {
        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => true,
        ConsumerErrorKind::JetStream(e) => {
            // 503: JetStream temporarily unavailable; 10008: not available (cluster
            // forming, leader election).
            e.code() == 503 || e.error_code() == jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
        }
        _ => false,
    }
}

fn classify(message: &async_nats::Message) -> Reply {
    match message.status {
        None | Some(StatusCode::OK) => Reply::Message,
        Some(StatusCode::IDLE_HEARTBEAT) => Reply::Heartbeat,
        Some(_) if message.description.as_deref() == Some("Consumer Deleted") => Reply::Deleted,
        // 408 expired, 409 leadership change / max waiting / ..., 404, 503.
        Some(_) => Reply::Ended,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One delivered message and the acknowledgements that can be given for it.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    stream_sequence: u64,
    delivery_count: u64,
    pending: u64,
}

impl Delivery {
    fn new(message: jetstream::Message) -> Result<Self, BusError> {
        let (stream_sequence, delivered, pending) = {
            let info = message.info().map_err(|source| BusError::NotJetStream {
                subject: message.subject.to_string(),
                source,
            })?;
            (info.stream_sequence, info.delivered, info.pending)
        };
        Ok(Self {
            message,
            stream_sequence,
            delivery_count: u64::try_from(delivered).unwrap_or(1),
            pending,
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

    /// Intents of the consumer still waiting behind this one when it was delivered (from the
    /// message's metadata: no request to the server).
    pub fn pending(&self) -> u64 {
        self.pending
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
    /// A handle on the intents stream, made without a request to the server.
    async fn intents(&self, name: &str) -> Result<jetstream::stream::Stream<()>, BusError> {
        self.js()
            .get_stream_no_info(stream::INTENTS)
            .await
            .map_err(|e| BusError::Consumer {
                name: name.to_owned(),
                source: Box::new(e),
            })
    }

    /// The stream sequence of the newest intent on `subject`; `None` when there is none. An
    /// intent older than that is superseded. One round trip.
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
