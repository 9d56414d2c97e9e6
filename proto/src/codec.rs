//! The codec: MessagePack (named maps) or JSON, picked by the `Content-Type` header, with the
//! schema version checked before the body is decoded.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::SCHEMA_VERSION;

/// Largest message this build encodes or decodes (NATS' default `max_payload`).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Nesting a MessagePack reader follows before it gives up, so hostile input cannot exhaust
/// the stack.
const MAX_MSGPACK_DEPTH: usize = 64;

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// `application/msgpack`, the default.
    #[default]
    MsgPack,
    /// `application/json`, for any client that has no MessagePack at hand.
    Json,
}

impl ContentType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MsgPack => "application/msgpack",
            Self::Json => "application/json",
        }
    }

    /// Reads a `Content-Type` header; absent means MessagePack. Parameters (`; charset=utf-8`)
    /// and case are ignored; `application/x-msgpack` and `application/vnd.msgpack` are accepted.
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value else {
            return Ok(Self::MsgPack);
        };
        let essence = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Self::MsgPack)
            }
            "application/json" => Ok(Self::Json),
            _ => Err(DecodeError::UnknownContentType {
                content_type: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The `Content-Type` header names an encoding this build does not read.
    #[error("unknown content type {content_type:?} (use application/msgpack or application/json)")]
    UnknownContentType {
        /// The header as received.
        content_type: String,
    },
    /// The payload is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload has no `schema_version`.
    #[error("message has no schema_version")]
    MissingSchemaVersion,
    /// The payload's `schema_version` is not the one this build reads.
    #[error("schema version {found} is not supported (this build reads {supported})")]
    UnsupportedSchemaVersion {
        /// The version found.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// The bytes are not a valid message in the declared encoding.
    #[error("malformed {content_type} message: {reason}")]
    Malformed {
        /// The declared encoding.
        content_type: ContentType,
        /// What the decoder said.
        reason: String,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("encoded message of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// MessagePack encoding failed.
    #[error("msgpack encoding failed")]
    MsgPack(#[from] rmp_serde::encode::Error),
    /// JSON encoding failed.
    #[error("json encoding failed")]
    Json(#[from] serde_json::Error),
}

/// Encodes a message; MessagePack always as named maps so fields can be added compatibly.
pub fn encode<T: Serialize>(
    content_type: ContentType,
    message: &T,
) -> Result<Vec<u8>, EncodeError> {
    let bytes = match content_type {
        ContentType::MsgPack => rmp_serde::to_vec_named(message)?,
        ContentType::Json => serde_json::to_vec(message)?,
    };
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(EncodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes a message given its `Content-Type` header: size first, then the schema version,
/// then the body. Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    decode_with_limit(content_type, bytes, MAX_MESSAGE_BYTES)
}

/// Like [`decode`], for bytes that may be longer than one message: a stored record expanded
/// from its compressed form (a rollout to 10,000 clusters), up to `limit` bytes.
pub fn decode_with_limit<T: DeserializeOwned>(
    content_type: Option<&str>,
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    let content_type = ContentType::from_header(content_type)?;
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let probe: VersionProbe = parse(content_type, bytes)?;
    match probe.schema_version {
        None => return Err(DecodeError::MissingSchemaVersion),
        Some(v) if v != u64::from(SCHEMA_VERSION) => {
            return Err(DecodeError::UnsupportedSchemaVersion {
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        Some(_) => {}
    }
    parse(content_type, bytes)
}

/// Just the version, read before the body so a newer message gets a clear error.
#[derive(serde::Deserialize)]
struct VersionProbe {
    schema_version: Option<u64>,
}

fn parse<T: DeserializeOwned>(content_type: ContentType, bytes: &[u8]) -> Result<T, DecodeError> {
    let malformed = |reason: String| DecodeError::Malformed {
        content_type,
        reason,
    };
    match content_type {
        ContentType::Json => serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string())),
        ContentType::MsgPack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(MAX_MSGPACK_DEPTH);
            T::deserialize(&mut de).map_err(|e| malformed(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{DeployIntent, Outcome, Phase};

    fn intent() -> DeployIntent {
        crate::intent::tests_support::sample()
    }

    #[test]
    fn round_trip_in_both_codecs() {
        let original = intent();
        for ct in [ContentType::MsgPack, ContentType::Json] {
            let bytes = encode(ct, &original).unwrap();
            let back: DeployIntent = decode(Some(ct.as_str()), &bytes).unwrap();
            assert_eq!(back, original, "{ct}");
        }
        let outcome = Outcome {
            schema_version: 1,
            event_id: Outcome::event_id_for("beta", "i-1", Phase::RolledBack, 2, true),
            intent_id: "i-1".into(),
            cluster: "beta".into(),
            release: "web".into(),
            phase: Phase::RolledBack,
            terminal: true,
            revision: Some(3),
            attempt: 2,
            version: Some("1.2.3".into()),
            requested_by: Some("ci".into()),
            rollout_id: None,
            reason: Some("ProgressDeadlineExceeded".into()),
            resources: vec![],
            at: "2026-11-26T10:00:00Z".parse().unwrap(),
            elapsed_ms: Some(1200),
        };
        for ct in [ContentType::MsgPack, ContentType::Json] {
            let back: Outcome = decode(Some(ct.as_str()), &encode(ct, &outcome).unwrap()).unwrap();
            assert_eq!(back, outcome);
        }
        assert_eq!(outcome.event_id, "beta.i-1.final");
        assert_eq!(
            Outcome::event_id_for("beta", "i-1", Phase::Applying, 2, false),
            "beta.i-1.applying.2"
        );
    }

    #[test]
    fn msgpack_is_named_maps_and_is_the_default() {
        let bytes = encode(ContentType::MsgPack, &intent()).unwrap();
        // A fixmap/map16 header, and the field names travel with the values.
        assert!(matches!(bytes[0], 0x80..=0x8f | 0xde));
        assert!(bytes.windows(14).any(|w| w == b"schema_version"));
        let back: DeployIntent = decode(None, &bytes).unwrap();
        assert_eq!(back, intent());
    }

    #[test]
    fn json_with_parameters_and_case_is_accepted() {
        let bytes = encode(ContentType::Json, &intent()).unwrap();
        let back: DeployIntent = decode(Some("Application/JSON; charset=utf-8"), &bytes).unwrap();
        assert_eq!(back, intent());
    }

    #[test]
    fn unknown_content_type_is_rejected() {
        let err = decode::<DeployIntent>(Some("text/yaml"), b"a: 1").unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownContentType {
                content_type: "text/yaml".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown content type \"text/yaml\" (use application/msgpack or application/json)"
        );
    }

    #[test]
    fn unsupported_schema_version_is_rejected_before_the_body() {
        // Version 2 with a body this build could not read at all.
        let json = br#"{"schema_version": 2, "something": "new"}"#;
        assert_eq!(
            decode::<DeployIntent>(Some("application/json"), json).unwrap_err(),
            DecodeError::UnsupportedSchemaVersion {
                found: 2,
                supported: 1
            }
        );
        let mut value = serde_json::to_value(intent()).unwrap();
        value["schema_version"] = 9.into();
        let mp = rmp_serde::to_vec_named(&value).unwrap();
        assert_eq!(
            decode::<DeployIntent>(None, &mp).unwrap_err(),
            DecodeError::UnsupportedSchemaVersion {
                found: 9,
                supported: 1
            }
        );
    }

    #[test]
    fn missing_schema_version_is_rejected() {
        assert_eq!(
            decode::<DeployIntent>(Some("application/json"), br#"{"id": "x"}"#).unwrap_err(),
            DecodeError::MissingSchemaVersion
        );
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let err = decode::<DeployIntent>(Some("application/json"), b"{not json").unwrap_err();
        assert!(
            matches!(&err, DecodeError::Malformed { content_type: ContentType::Json, reason } if reason.contains("key must be a string")),
            "{err:?}"
        );
        // Right version, wrong shape: the missing field is named.
        let err = decode::<DeployIntent>(Some("application/json"), br#"{"schema_version": 1}"#)
            .unwrap_err();
        assert!(
            matches!(&err, DecodeError::Malformed { reason, .. } if reason.contains("missing field `id`")),
            "{err:?}"
        );
        let err = decode::<DeployIntent>(None, &[0xc1, 0x00, 0xff]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Malformed {
                content_type: ContentType::MsgPack,
                ..
            }
        ));
    }

    #[test]
    fn too_large_is_rejected_without_parsing() {
        let bytes = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode::<DeployIntent>(Some("application/json"), &bytes).unwrap_err(),
            DecodeError::TooLarge {
                size: MAX_MESSAGE_BYTES + 1,
                limit: MAX_MESSAGE_BYTES
            }
        );
    }

    #[test]
    fn deep_msgpack_nesting_is_refused_not_a_stack_overflow() {
        // 100k nested one-element arrays.
        let mut bytes = vec![0x91; 100_000];
        bytes.push(0x01);
        assert!(matches!(
            decode::<DeployIntent>(None, &bytes).unwrap_err(),
            DecodeError::Malformed { .. }
        ));
        let mut json = vec![b'['; 100_000];
        json.extend(vec![b']'; 100_000]);
        assert!(matches!(
            decode::<DeployIntent>(Some("application/json"), &json).unwrap_err(),
            DecodeError::Malformed { .. }
        ));
    }
}
