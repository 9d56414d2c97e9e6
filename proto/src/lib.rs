//! The Coxswain wire contract: what CI, the coordinator, the agents and any observer say to each
//! other over NATS.
//!
//! Every message carries a schema version and travels as MessagePack (maps, never positional
//! arrays) or JSON, chosen by its `Content-Type` header. New fields are optional, so an older
//! reader ignores what it does not know. This crate does no IO and has no async: it is types,
//! validation, the codec and the subject names.

mod cluster;
mod codec;
mod digest;
mod headers;
mod intent;
mod notice;
mod outcome;
mod rollout;
mod schema;
mod signing;
mod state;
mod subject;
mod validate;

pub use cluster::{AgentStatus, ClusterRecord};
pub use codec::{
    ContentType, DecodeError, EncodeError, MAX_MESSAGE_BYTES, decode, decode_with_limit, encode,
};
pub use digest::{manifests_digest, sha256_digest};
pub use headers::header;
pub use intent::{
    DeployIntent, DriftPolicy, HealthPolicy, HttpProbe, MAX_INLINE_MANIFEST_BYTES, Manifests,
    RollbackPolicy, probe_url,
};
pub use notice::{Notice, NoticeKind};
pub use outcome::{
    HealthStatus, MAX_EVENT_FIELD_CHARS, MAX_EVENT_RESOURCES, MAX_REASON_CHARS, Outcome, Phase,
    ResourceHealth,
};
pub use rollout::{
    AppliedPolicy, ClusterProgress, PLATFORM_FIELDS, RevertTarget, RollbackRequest, Rollout,
    RolloutRequest, RolloutStatus,
};
pub use schema::{Schema, schema_for};
pub use signing::{Signature, SignatureError, Signer, TrustedKeys, canonical};
pub use state::ReleaseState;
pub use subject::{
    ReleaseSubject, SubjectError, bucket, cluster_key, consumer_name, event_filter, event_subject,
    intent_filter, intent_subject, is_valid_key, notice_subject, parse_event_subject,
    parse_intent_subject, state_key, stream,
};
pub use validate::{Problem, ProblemKind, Validate, ValidationErrors, check_dns_label};

/// The schema version this build writes, and the only one it reads.
///
/// Additive changes (a new optional field) keep the version; anything an older reader would
/// misread bumps it.
pub const SCHEMA_VERSION: u32 = 1;
