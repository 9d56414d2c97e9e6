//! Publishing to JetStream with the headers every Coxswain message carries, awaiting the
//! server's ack so nothing counts as sent before it is stored.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use proto::{ContentType, DeployIntent, Outcome, SCHEMA_VERSION, Signature, header};
use serde::Serialize;

use crate::{Bus, BusError};

/// One message to publish: where, under which de-duplication id, how encoded, and its body.
#[derive(Debug)]
pub struct Envelope<'a, T> {
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id`: JetStream drops a repeat inside the stream's duplicate window.
    pub msg_id: String,
    /// Encoding of the body.
    pub content_type: ContentType,
    /// W3C `traceparent` of the operation, when there is one.
    pub traceparent: Option<String>,
    /// More headers (CloudEvents on outcomes).
    pub extra_headers: Vec<(&'static str, String)>,
    /// The message.
    pub body: &'a T,
}

/// What the server said about a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Stream that stored it.
    pub stream: String,
    /// Its sequence in that stream (of the original, when a duplicate).
    pub sequence: u64,
    /// True when the server had it already (same `Nats-Msg-Id` inside the window).
    pub duplicate: bool,
}

/// A message sent and not yet confirmed: [`PendingPublish::stored`] waits for the server's
/// ack. Sending several before awaiting any pipelines them (JetStream stores the messages of
/// one connection in the order they were sent).
pub struct PendingPublish {
    subject: String,
    ack: async_nats::jetstream::context::PublishAckFuture,
}

impl std::fmt::Debug for PendingPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPublish")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl PendingPublish {
    /// Waits until JetStream has stored the message (or says it will not).
    pub async fn stored(self) -> Result<Published, BusError> {
        let subject = self.subject;
        let ack = self
            .ack
            .await
            .map_err(|source| BusError::Publish { subject, source })?;
        Ok(Published {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

impl Bus {
    /// Encodes and publishes a message, then waits until JetStream has stored it.
    pub async fn publish<T: Serialize>(
        &self,
        envelope: Envelope<'_, T>,
    ) -> Result<Published, BusError> {
        self.send(envelope).await?.stored().await
    }

    /// Encodes and sends a message without waiting for the server's ack.
    pub async fn send<T: Serialize>(
        &self,
        envelope: Envelope<'_, T>,
    ) -> Result<PendingPublish, BusError> {
        let Envelope {
            subject,
            msg_id,
            content_type,
            traceparent,
            extra_headers,
            body,
        } = envelope;
        let payload = proto::encode(content_type, body).map_err(|source| BusError::Encode {
            subject: subject.clone(),
            source,
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.as_str());
        headers.insert(header::SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_str());
        if let Some(tp) = traceparent {
            headers.insert(header::TRACEPARENT, tp.as_str());
        }
        for (name, value) in extra_headers {
            headers.insert(name, value.as_str());
        }
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(headers)
            .message_id(msg_id);
        let publish_error = |source| BusError::Publish {
            subject: subject.clone(),
            source,
        };
        let ack = self
            .js()
            .send_publish(subject.clone(), message)
            .await
            .map_err(publish_error)?;
        Ok(PendingPublish { subject, ack })
    }

    /// Publishes an intent on `coxswain.intent.<cluster>.<release>`, de-duplicated by its id.
    pub async fn publish_intent(
        &self,
        intent: &DeployIntent,
        content_type: ContentType,
        traceparent: Option<String>,
    ) -> Result<Published, BusError> {
        self.publish_signed_intent(intent, None, content_type, traceparent)
            .await
    }

    /// Publishes an intent with its signature in the `Coxswain-Signature` and `Coxswain-Key-Id`
    /// headers.
    pub async fn publish_signed_intent(
        &self,
        intent: &DeployIntent,
        signature: Option<&Signature>,
        content_type: ContentType,
        traceparent: Option<String>,
    ) -> Result<Published, BusError> {
        self.publish(intent_envelope(
            intent,
            signature,
            content_type,
            traceparent,
        )?)
        .await
    }

    /// Sends a signed intent without waiting for the server's ack: publish a wave's intents,
    /// then confirm them with [`PendingPublish::stored`].
    pub async fn send_signed_intent(
        &self,
        intent: &DeployIntent,
        signature: Option<&Signature>,
        content_type: ContentType,
        traceparent: Option<String>,
    ) -> Result<PendingPublish, BusError> {
        self.send(intent_envelope(
            intent,
            signature,
            content_type,
            traceparent,
        )?)
        .await
    }

    /// Publishes an outcome event on `coxswain.event.<cluster>.<release>` with its CloudEvents
    /// headers, de-duplicated by its event id.
    pub async fn publish_outcome(
        &self,
        outcome: &Outcome,
        content_type: ContentType,
        traceparent: Option<String>,
    ) -> Result<Published, BusError> {
        self.publish(outcome_envelope(outcome, content_type, traceparent)?)
            .await
    }

    /// Sends an outcome event without waiting for the server's ack, to be confirmed later
    /// with [`PendingPublish::stored`].
    pub async fn send_outcome(
        &self,
        outcome: &Outcome,
        content_type: ContentType,
        traceparent: Option<String>,
    ) -> Result<PendingPublish, BusError> {
        self.send(outcome_envelope(outcome, content_type, traceparent)?)
            .await
    }
}

/// An intent on `coxswain.intent.<cluster>.<release>`, de-duplicated by cluster and id, its
/// signature (if any) in headers.
fn intent_envelope<'a>(
    intent: &'a DeployIntent,
    signature: Option<&Signature>,
    content_type: ContentType,
    traceparent: Option<String>,
) -> Result<Envelope<'a, DeployIntent>, BusError> {
    let extra_headers = signature
        .map(|s| {
            vec![
                (header::SIGNATURE, s.value.clone()),
                (header::KEY_ID, s.key_id.clone()),
            ]
        })
        .unwrap_or_default();
    Ok(Envelope {
        subject: proto::intent_subject(&intent.cluster, &intent.release)?,
        msg_id: format!("{}.{}", intent.cluster, intent.id),
        content_type,
        traceparent,
        extra_headers,
        body: intent,
    })
}

/// An outcome event with its CloudEvents headers, de-duplicated by its event id.
impl Bus {
    /// Publishes a notice of the coordinator on `coxswain.notice.<release>` (JSON), stored
    /// once however often it is sent.
    pub async fn publish_notice(&self, notice: &proto::Notice) -> Result<Published, BusError> {
        self.publish(Envelope {
            subject: proto::notice_subject(&notice.release)?,
            msg_id: notice.msg_id(),
            content_type: ContentType::Json,
            traceparent: None,
            extra_headers: Vec::new(),
            body: notice,
        })
        .await
    }

    /// The newest notice about `release`, if any.
    pub async fn last_notice(&self, release: &str) -> Result<Option<proto::Notice>, BusError> {
        let subject = proto::notice_subject(release)?;
        let stream_error = |e: String| BusError::Events {
            filter: subject.clone(),
            source: e.into(),
        };
        let stream = self
            .js()
            .get_stream(proto::stream::EVENTS)
            .await
            .map_err(|e| stream_error(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let notice = proto::decode(Some("application/json"), &message.payload)
                    .map_err(|e| stream_error(e.to_string()))?;
                Ok(Some(notice))
            }
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(stream_error(e.to_string())),
        }
    }
}

fn outcome_envelope(
    outcome: &Outcome,
    content_type: ContentType,
    traceparent: Option<String>,
) -> Result<Envelope<'_, Outcome>, BusError> {
    Ok(Envelope {
        subject: proto::event_subject(&outcome.cluster, &outcome.release)?,
        msg_id: outcome.event_id.clone(),
        content_type,
        traceparent,
        extra_headers: vec![
            (header::CE_SPECVERSION, "1.0".into()),
            (
                header::CE_TYPE,
                format!("io.coxswain.outcome.{}", outcome.phase),
            ),
            (
                header::CE_SOURCE,
                format!("coxswain/agent/{}", outcome.cluster),
            ),
            (header::CE_ID, outcome.event_id.clone()),
        ],
        body: outcome,
    })
}
