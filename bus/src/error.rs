//! Errors of the NATS layer, one variant per step that can fail.

use std::path::PathBuf;

/// A NATS or JetStream step failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The connection options are unusable (for example a TLS CA file that does not exist).
    #[error("invalid nats connection options: {0}")]
    Options(String),
    /// The credentials file (or nkey seed file) could not be read.
    #[error("cannot read nats credentials file {path}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The nkey seed file holds no usable user seed. The message never contains the seed.
    #[error("{path} holds no nkey user seed (SU...): {reason}")]
    Nkey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to nats at {url}")]
    Connect {
        /// Server URL(s).
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A stream could not be created or updated.
    #[error("cannot create or update stream {name}")]
    Stream {
        /// Stream name.
        name: String,
        /// Why.
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    /// A key-value bucket could not be created or updated.
    #[error("cannot create or update key-value bucket {name}")]
    CreateKeyValue {
        /// Bucket name.
        name: String,
        /// Why.
        #[source]
        source: async_nats::jetstream::context::CreateKeyValueError,
    },
    /// An object store could not be created or opened.
    #[error("cannot create or open object store {name}")]
    ObjectStore {
        /// Bucket name.
        name: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A message could not be encoded.
    #[error("cannot encode the message for {subject}")]
    Encode {
        /// Where it was going.
        subject: String,
        /// Why.
        #[source]
        source: proto::EncodeError,
    },
    /// A subject could not be built from the message's names.
    #[error("cannot build a subject")]
    Subject(#[from] proto::SubjectError),
    /// The server did not store a published message.
    #[error("publish to {subject} was not acknowledged by jetstream")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    /// A consumer could not be created or read.
    #[error("consumer {name} failed")]
    Consumer {
        /// Consumer name.
        name: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// Acknowledging a message failed.
    #[error("{kind} of message {stream_sequence} failed")]
    Ack {
        /// Which acknowledgement (`ack`, `progress`, `nak`, `term`).
        kind: &'static str,
        /// The message's stream sequence.
        stream_sequence: u64,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A message came without the JetStream metadata a consumer needs.
    #[error("message on {subject} has no jetstream metadata")]
    NotJetStream {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A raw request got no answer.
    #[error("request on {subject} got no answer")]
    Request {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// Published messages could not be flushed to the server.
    #[error("cannot flush published messages to nats")]
    Flush(#[source] async_nats::Error),
    /// A stream, bucket or store the design needs does not exist (the admin creates them).
    #[error(
        "{kind} {name} does not exist; run `coxswain topology` with the admin key to create the topology"
    )]
    Missing {
        /// `stream`, `key-value bucket` or `object store`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
        /// Why it could not be opened.
        #[source]
        source: async_nats::Error,
    },
    /// A stream, bucket or store could not be opened for another reason than its absence
    /// (an outage, or a user not allowed to read it: a denied request looks like a timeout).
    #[error("cannot open {kind} {name}")]
    Open {
        /// `stream`, `key-value bucket` or `object store`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A setting of an existing stream could not be changed.
    #[error("cannot turn off rollup headers on stream {name}")]
    StreamSettings {
        /// The stream.
        name: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// Shutdown came while waiting.
    #[error("stopped while waiting for {waiting_for}")]
    Stopped {
        /// What was awaited.
        waiting_for: &'static str,
    },
    /// A key-value read or write failed.
    #[error("cannot {action} key {key} in bucket {bucket}")]
    KeyValue {
        /// The bucket.
        bucket: &'static str,
        /// The key.
        key: String,
        /// `get`, `put`, `create`, `update` or `list`.
        action: &'static str,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A key is not one the bucket can hold (wildcards, spaces, empty).
    #[error("{key:?} is not a valid key for bucket {bucket}")]
    InvalidKey {
        /// The bucket.
        bucket: &'static str,
        /// The key as given.
        key: String,
    },
    /// A stored value could not be encoded or decoded.
    #[error("entry {key} in bucket {bucket} cannot be encoded")]
    EncodeEntry {
        /// The bucket.
        bucket: &'static str,
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: proto::EncodeError,
    },
    /// The event stream could not be read.
    #[error("cannot read events matching {filter}")]
    Events {
        /// The subject filter.
        filter: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// No bundle is stored under this digest.
    #[error("no bundle {digest} is stored")]
    BundleMissing {
        /// Its digest.
        digest: String,
    },
    /// A manifest bundle could not be stored or fetched (NATS was unreachable, a leader
    /// election): worth trying again.
    #[error("cannot {action} bundle {digest}")]
    Bundle {
        /// `store` or `fetch`.
        action: &'static str,
        /// Its digest.
        digest: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A bundle is larger than the reader accepts.
    #[error("bundle {digest} is {size} bytes, over the limit of {limit} bytes")]
    BundleTooLarge {
        /// Its digest.
        digest: String,
        /// Its size (declared, or read so far).
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// An error and its sources, `: `-separated, for one log field.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

impl BusError {
    /// Will trying again never help? A message that cannot be encoded, a name that is no
    /// subject token, a key no bucket can hold, or a message over the server's size limit.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Encode { .. } | Self::Subject(_) | Self::InvalidKey { .. } => true,
            Self::Publish { source, .. } => matches!(
                source.kind(),
                async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded
            ),
            _ => false,
        }
    }
}
