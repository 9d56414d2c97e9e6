//! The checks an intent passes before the agent touches the cluster, as pure functions: each
//! returns the reason for a rejection, so each can be tested alone.

use jiff::Timestamp;
use proto::{
    DecodeError, DeployIntent, Manifests, ReleaseSubject, Signature, SubjectError, Validate,
};

use crate::{AgentConfig, Trust, limits};

/// How an intent arrived: what the checks need besides the intent and the agent's config.
#[derive(Debug)]
pub(crate) struct Arrival<'a> {
    /// The subject it was published on, parsed.
    pub(crate) subject: &'a Result<ReleaseSubject, SubjectError>,
    /// The subject as given.
    pub(crate) subject_text: &'a str,
    /// Its `Coxswain-Signature` and `Coxswain-Key-Id` headers.
    pub(crate) signature: Option<&'a Signature>,
    /// Now, for the expiry.
    pub(crate) now: Timestamp,
}

/// Why an intent is refused: the reason, and the intent when it is what it says it is (it
/// passed validation and its signature). A refusal of anything else is reported under the
/// message's stream sequence, never under the id it claims: a forged or replayed message must
/// not take the final event of the real intent with that id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub(crate) reason: String,
    pub(crate) intent: Option<Box<DeployIntent>>,
}

impl Rejection {
    /// A refusal of an authentic intent, reported under its id.
    pub(crate) fn of(intent: DeployIntent, reason: String) -> Self {
        Self {
            reason,
            intent: Some(Box::new(intent)),
        }
    }

    /// A refusal of a message whose id cannot be believed.
    pub(crate) fn unauthenticated(reason: String) -> Self {
        Self {
            reason,
            intent: None,
        }
    }
}

/// The message must decode as an intent.
pub(crate) fn decoded(
    decoded: Result<DeployIntent, DecodeError>,
) -> Result<DeployIntent, Rejection> {
    decoded.map_err(|error| Rejection {
        reason: format!("undecodable intent: {error}"),
        intent: None,
    })
}

/// Every field must be valid.
pub(crate) fn valid(intent: &DeployIntent) -> Result<(), String> {
    intent
        .validate()
        .map_err(|problems| format!("invalid intent: {problems}"))
}

/// The intent, the subject it arrived on and this agent must all name the same cluster, and
/// the subject the intent's release.
pub(crate) fn addressed_here(
    intent: &DeployIntent,
    subject: &Result<ReleaseSubject, SubjectError>,
    subject_text: &str,
    cluster: &str,
) -> Result<(), String> {
    let subject_ok = subject
        .as_ref()
        .is_ok_and(|s| s.cluster == intent.cluster && s.release == intent.release);
    if intent.cluster == cluster && subject_ok {
        Ok(())
    } else {
        Err(format!(
            "intent for cluster {} release {} arrived on {subject_text}; this agent serves cluster {cluster}",
            intent.cluster, intent.release,
        ))
    }
}

/// The intent's environment must be this cluster's.
pub(crate) fn same_environment(intent: &DeployIntent, config: &AgentConfig) -> Result<(), String> {
    if Some(intent.environment.as_str()) == config.environment() {
        Ok(())
    } else {
        Err(format!(
            "intent for environment {} refused: cluster {} is environment {}",
            intent.environment,
            config.cluster,
            config.environment().unwrap_or("?")
        ))
    }
}

/// The intent must carry a valid signature by a trusted key (unless the agent runs insecure).
pub(crate) fn signed(
    intent: &DeployIntent,
    signature: Option<&Signature>,
    trust: &Trust,
) -> Result<(), String> {
    match trust {
        Trust::InsecureAcceptUnsigned => Ok(()),
        Trust::Signed(keys) => keys.verify(intent, signature).map_err(|e| e.to_string()),
    }
}

/// A signed intent must say until when it is valid, and that time must not have passed.
pub(crate) fn unexpired(
    intent: &DeployIntent,
    now: Timestamp,
    trust: &Trust,
) -> Result<(), String> {
    match (intent.expires_at, trust) {
        (Some(at), _) if at <= now => Err(format!("intent expired at {at}")),
        (None, Trust::Signed(_)) => Err("signed intent has no expiry (expires_at)".into()),
        _ => Ok(()),
    }
}

/// Inline manifests must be what their digest says, since the signature covers the digest.
pub(crate) fn manifests_match(intent: &DeployIntent) -> Result<(), String> {
    let Manifests::Inline { digest, objects } = &intent.manifests else {
        return Ok(());
    };
    let actual = proto::manifests_digest(objects);
    if &actual == digest {
        Ok(())
    } else {
        Err(format!(
            "inline manifests do not match their digest: stated {digest}, computed {actual}"
        ))
    }
}

/// The intent must stay within the agent's limits: a declared bundle size of at most
/// `MAX_BUNDLE_BYTES` (checked before any download), at most `MAX_OBJECTS_PER_RELEASE` inline
/// objects.
pub(crate) fn within_limits(intent: &DeployIntent) -> Result<(), String> {
    match &intent.manifests {
        Manifests::Bundle { digest, size } => limits::check_bundle_size(digest, *size),
        Manifests::Inline { objects, .. } => limits::check_object_count(objects.len()),
        Manifests::Revision { .. } => Ok(()),
    }
}

/// Every check in order; the intent when all pass.
pub(crate) fn admit(
    raw: Result<DeployIntent, DecodeError>,
    arrival: &Arrival<'_>,
    config: &AgentConfig,
) -> Result<DeployIntent, Rejection> {
    let intent = decoded(raw)?;
    valid(&intent)
        .and_then(|()| signed(&intent, arrival.signature, &config.trust))
        .map_err(Rejection::unauthenticated)?;
    let verdict = addressed_here(
        &intent,
        arrival.subject,
        arrival.subject_text,
        &config.cluster,
    )
    .and_then(|()| same_environment(&intent, config))
    .and_then(|()| unexpired(&intent, arrival.now, &config.trust))
    .and_then(|()| manifests_match(&intent))
    .and_then(|()| within_limits(&intent));
    match verdict {
        Ok(()) => Ok(intent),
        Err(reason) => Err(Rejection::of(intent, reason)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proto::{Manifests, SCHEMA_VERSION};

    use super::*;

    fn config() -> AgentConfig {
        let mut config = AgentConfig::new("beta");
        config.labels.insert("env".into(), "beta".into());
        config.trust = Trust::InsecureAcceptUnsigned;
        config
    }

    fn signed_config() -> (AgentConfig, proto::Signer) {
        let pair = nkeys::KeyPair::new_account();
        let signer = proto::Signer::from_seed(&pair.seed().unwrap()).unwrap();
        let keys = proto::TrustedKeys::new([pair.public_key().as_str()]).unwrap();
        let mut config = config();
        config.trust = Trust::Signed(std::sync::Arc::new(keys));
        (config, signer)
    }

    fn arrival<'a>(
        subject: &'a Result<ReleaseSubject, SubjectError>,
        text: &'a str,
        signature: Option<&'a Signature>,
    ) -> Arrival<'a> {
        Arrival {
            subject,
            subject_text: text,
            signature,
            now: Timestamp::now(),
        }
    }

    fn intent(cluster: &str, environment: &str) -> DeployIntent {
        DeployIntent {
            schema_version: SCHEMA_VERSION,
            id: "i1".into(),
            cluster: cluster.into(),
            release: "web".into(),
            namespace: "shop".into(),
            environment: environment.into(),
            version: "1.0".into(),
            images: Default::default(),
            manifests: {
                let objects = vec![serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}
                })];
                Manifests::Inline {
                    digest: proto::manifests_digest(&objects),
                    objects,
                }
            },
            health: Default::default(),
            rollback: Default::default(),
            requested_by: "test".into(),
            created_at: jiff::Timestamp::now(),
            rollout_id: None,
            expires_at: None,
        }
    }

    fn subject(text: &str) -> Result<ReleaseSubject, SubjectError> {
        proto::parse_intent_subject(text)
    }

    fn admit_on(intent: DeployIntent, on: &str) -> Result<DeployIntent, Rejection> {
        admit(Ok(intent), &arrival(&subject(on), on, None), &config())
    }

    #[test]
    fn a_2_gib_bundle_or_too_many_objects_are_refused_naming_limit_and_value() {
        let mut big = intent("beta", "beta");
        big.manifests = Manifests::Bundle {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 2 << 30,
        };
        let refused = admit_on(big, "coxswain.intent.beta.web").unwrap_err();
        assert!(
            refused.reason.contains("declares 2147483648 bytes")
                && refused.reason.contains("limit of 67108864 bytes"),
            "{}",
            refused.reason
        );
        let mut many = intent("beta", "beta");
        let objects: Vec<_> = (0..=deploy::limits::MAX_OBJECTS_PER_RELEASE)
            .map(|i| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}))
            .collect();
        many.manifests = Manifests::Inline {
            digest: proto::manifests_digest(&objects),
            objects,
        };
        assert_eq!(
            within_limits(&many).unwrap_err(),
            "the release has 1001 objects, over the limit of 1000 objects per release"
        );
        assert_eq!(within_limits(&intent("beta", "beta")), Ok(()));
    }

    #[test]
    fn a_good_intent_is_admitted() {
        let i = admit_on(intent("beta", "beta"), "coxswain.intent.beta.web").unwrap();
        assert_eq!(i.id, "i1");
    }

    #[test]
    fn each_check_names_its_reason() {
        let cases = [
            (
                intent("beta", "prod"),
                "coxswain.intent.beta.web",
                "intent for environment prod refused: cluster beta is environment beta",
            ),
            (
                intent("prod", "beta"),
                "coxswain.intent.beta.web",
                "intent for cluster prod release web arrived on coxswain.intent.beta.web; this agent serves cluster beta",
            ),
            (
                intent("beta", "beta"),
                "coxswain.intent.beta.api",
                "intent for cluster beta release web arrived on coxswain.intent.beta.api; this agent serves cluster beta",
            ),
        ];
        for (i, on, reason) in cases {
            let rejection = admit_on(i, on).unwrap_err();
            assert_eq!(rejection.reason, reason);
            assert!(rejection.intent.is_some());
        }
    }

    #[test]
    fn an_invalid_intent_is_refused_before_the_other_checks() {
        let mut i = intent("prod", "prod");
        i.release = "Not A Label".into();
        let rejection = admit_on(i, "coxswain.intent.beta.web").unwrap_err();
        assert!(
            rejection.reason.starts_with("invalid intent: "),
            "{}",
            rejection.reason
        );
    }

    #[test]
    fn undecodable_bytes_are_refused_without_an_intent() {
        let raw = proto::decode::<DeployIntent>(Some("application/json"), b"{not json");
        let on = subject("coxswain.intent.beta.web");
        let rejection = admit(raw, &arrival(&on, "s", None), &config()).unwrap_err();
        assert!(rejection.reason.starts_with("undecodable intent: "));
        assert!(rejection.intent.is_none());
    }

    /// Admits `intent` signed as `signature` (after `edit`) on the beta agent that trusts
    /// `signer`; the reason when refused.
    fn verdict(edit: fn(&mut DeployIntent), sign: bool, on: &str) -> Result<(), String> {
        let (config, signer) = signed_config();
        let mut i = intent("beta", "beta");
        i.expires_at = Some(Timestamp::now() + jiff::SignedDuration::from_secs(60));
        let signature = signer.sign(&i).unwrap();
        edit(&mut i);
        let parsed = subject(on);
        let signature = sign.then_some(&signature);
        admit(Ok(i), &arrival(&parsed, on, signature), &config)
            .map(drop)
            .map_err(|r| r.reason)
    }

    /// A row: name, edit after signing, signed at all, subject, expected refusal.
    type Row<'a> = (
        &'a str,
        fn(&mut DeployIntent),
        bool,
        &'a str,
        Option<&'a str>,
    );

    #[test]
    fn signatures_expiry_and_digests_are_checked() {
        let here = "coxswain.intent.beta.web";
        let cases: [Row<'_>; 6] = [
            ("signed", |_| {}, true, here, None),
            ("unsigned", |_| {}, false, here, Some("unsigned intent")),
            (
                "payload edited, headers kept",
                |i| i.version = "6.6.6".into(),
                true,
                here,
                Some("signature does not match the intent"),
            ),
            (
                "replayed on another cluster's subject",
                |_| {},
                true,
                "coxswain.intent.prod.web",
                Some("arrived on coxswain.intent.prod.web"),
            ),
            (
                "expiry moved after signing",
                |i| i.expires_at = Some(Timestamp::UNIX_EPOCH),
                true,
                here,
                Some("signature does not match"),
            ),
            (
                "objects swapped under a signed digest",
                |i| {
                    if let Manifests::Inline { objects, .. } = &mut i.manifests {
                        objects.push(
                            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1",
                            "kind": "ClusterRoleBinding", "metadata": {"name": "pwn"}}),
                        );
                    }
                },
                true,
                here,
                Some("inline manifests do not match their digest"),
            ),
        ];
        for (name, edit, sign, on, refused) in cases {
            match (verdict(edit, sign, on), refused) {
                (Ok(()), None) => {}
                (Err(reason), Some(wanted)) => {
                    assert!(reason.contains(wanted), "{name}: {reason}");
                }
                (got, wanted) => panic!("{name}: got {got:?}, wanted a refusal {wanted:?}"),
            }
        }
    }

    #[test]
    fn an_expired_or_undated_signed_intent_is_refused() {
        let (config, _) = signed_config();
        let mut i = intent("beta", "beta");
        let now = Timestamp::now();
        assert_eq!(
            unexpired(&i, now, &config.trust),
            Err("signed intent has no expiry (expires_at)".into())
        );
        i.expires_at = Some(now - jiff::SignedDuration::from_secs(1));
        assert!(
            unexpired(&i, now, &config.trust)
                .unwrap_err()
                .starts_with("intent expired at ")
        );
        i.expires_at = Some(now + jiff::SignedDuration::from_secs(1));
        assert_eq!(unexpired(&i, now, &config.trust), Ok(()));
        assert_eq!(
            unexpired(&intent("beta", "beta"), now, &Trust::InsecureAcceptUnsigned),
            Ok(())
        );
    }
}
