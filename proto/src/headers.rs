//! Header names every Coxswain message carries on NATS.

/// NATS header names used on intents and outcome events.
pub mod header {
    /// `application/msgpack` (the default when absent) or `application/json`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// The message's schema version, also inside the payload, so a reader can refuse early.
    pub const SCHEMA_VERSION: &str = "Coxswain-Schema-Version";
    /// W3C trace context of the operation that produced the message.
    pub const TRACEPARENT: &str = "traceparent";
    /// JetStream's de-duplication key.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// CloudEvents NATS binding: spec version (`1.0`).
    pub const CE_SPECVERSION: &str = "ce-specversion";
    /// CloudEvents NATS binding: event type (`io.coxswain.outcome.<phase>`).
    pub const CE_TYPE: &str = "ce-type";
    /// CloudEvents NATS binding: source (`coxswain/agent/<cluster>`).
    pub const CE_SOURCE: &str = "ce-source";
    /// CloudEvents NATS binding: event id, equal to `Nats-Msg-Id`.
    pub const CE_ID: &str = "ce-id";
    /// The coordinator's ed25519 signature over the intent's canonical form (base64url).
    pub const SIGNATURE: &str = "Coxswain-Signature";
    /// The public nkey of the key that made `Coxswain-Signature`.
    pub const KEY_ID: &str = "Coxswain-Key-Id";
}
