//! Signed intents: the canonical form the coordinator signs with ed25519 (an nkey), and the
//! check an agent makes against the public keys it trusts before it touches the cluster.
//!
//! The canonical form binds what must not change between the coordinator and the agent: the
//! intent id, cluster, environment, release, namespace, version, the manifests digest (or the
//! revision a rollback returns to), when it was issued and when it expires. It is a JSON
//! array of strings, so it has one spelling whatever encoding the intent travelled in.

use crate::{DeployIntent, Manifests};

/// The domain tag that starts every canonical form, so no other signed text can pass as one.
const DOMAIN: &str = "coxswain-intent-v1";

/// What an intent's signature covers.
pub fn canonical(intent: &DeployIntent) -> Vec<u8> {
    let manifests = match &intent.manifests {
        Manifests::Inline { digest, .. } | Manifests::Bundle { digest, .. } => digest.clone(),
        Manifests::Revision { revision: Some(n) } => format!("revision:{n}"),
        Manifests::Revision { revision: None } => "revision:previous".to_owned(),
    };
    let expires = intent.expires_at.map(|t| t.to_string()).unwrap_or_default();
    let fields = [
        DOMAIN,
        &intent.id,
        &intent.cluster,
        &intent.environment,
        &intent.release,
        &intent.namespace,
        &intent.version,
        &manifests,
        &intent.created_at.to_string(),
        &expires,
    ];
    serde_json::to_vec(&fields).unwrap_or_default()
}

/// A signature and the key that made it, as they travel in the intent's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer's public nkey (`Coxswain-Key-Id`).
    pub key_id: String,
    /// The ed25519 signature, base64url without padding (`Coxswain-Signature`).
    pub value: String,
}

/// Why a signature is not accepted; each names the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The key is unusable (not an nkey seed or public key).
    #[error("invalid signing key: {0}")]
    Key(String),
    /// The intent carries no signature.
    #[error("unsigned intent: this agent accepts only intents signed by a trusted key")]
    Unsigned,
    /// Signed by a key this agent does not trust.
    #[error("intent signed by untrusted key {0}")]
    Untrusted(String),
    /// The signature does not match the intent.
    #[error("signature does not match the intent: forged or tampered")]
    Mismatch,
}

/// The coordinator's signing key.
pub struct Signer(nkeys::KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Signer").field(&self.0.public_key()).finish()
    }
}

impl Signer {
    /// A signer from an nkey seed (`S...`).
    pub fn from_seed(seed: &str) -> Result<Self, SignatureError> {
        nkeys::KeyPair::from_seed(seed.trim())
            .map(Self)
            .map_err(|e| SignatureError::Key(e.to_string()))
    }

    /// Its public key, the `Coxswain-Key-Id` of what it signs.
    pub fn key_id(&self) -> String {
        self.0.public_key()
    }

    /// Signs the intent's canonical form.
    pub fn sign(&self, intent: &DeployIntent) -> Result<Signature, SignatureError> {
        let raw = self
            .0
            .sign(&canonical(intent))
            .map_err(|e| SignatureError::Key(e.to_string()))?;
        Ok(Signature {
            key_id: self.key_id(),
            value: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw),
        })
    }
}

/// The public keys an agent trusts (several during a key rotation).
#[derive(Default)]
pub struct TrustedKeys(Vec<nkeys::KeyPair>);

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(nkeys::KeyPair::public_key))
            .finish()
    }
}

impl TrustedKeys {
    /// Trusts the public keys given (`A...`/`U...` nkeys, one per entry).
    pub fn new<'a>(public_keys: impl IntoIterator<Item = &'a str>) -> Result<Self, SignatureError> {
        public_keys
            .into_iter()
            .map(|k| {
                nkeys::KeyPair::from_public_key(k.trim())
                    .map_err(|e| SignatureError::Key(format!("{}: {e}", k.trim())))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Accepts the intent only with a valid signature by a trusted key.
    pub fn verify(
        &self,
        intent: &DeployIntent,
        signature: Option<&Signature>,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Unsigned)?;
        let key = self
            .0
            .iter()
            .find(|k| k.public_key() == signature.key_id)
            .ok_or_else(|| SignatureError::Untrusted(short(&signature.key_id)))?;
        let raw = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            signature.value.as_bytes(),
        )
        .map_err(|_| SignatureError::Mismatch)?;
        key.verify(&canonical(intent), &raw)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// A key id cut to a printable length (it came from outside).
fn short(key_id: &str) -> String {
    key_id.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::intent::tests_support::sample;

    fn keys() -> (Signer, TrustedKeys) {
        let pair = nkeys::KeyPair::new_account();
        let signer = Signer::from_seed(&pair.seed().unwrap()).unwrap();
        let trusted = TrustedKeys::new([pair.public_key().as_str()]).unwrap();
        (signer, trusted)
    }

    #[test]
    fn a_signed_intent_verifies() {
        let (signer, trusted) = keys();
        let intent = sample();
        let signature = signer.sign(&intent).unwrap();
        assert_eq!(trusted.verify(&intent, Some(&signature)), Ok(()));
    }

    #[test]
    fn every_bound_field_breaks_the_signature() {
        let (signer, trusted) = keys();
        let intent = sample();
        let signature = signer.sign(&intent).unwrap();
        let edits: [fn(&mut DeployIntent); 10] = [
            |i| i.id.push('x'),
            |i| i.cluster = "prod".into(),
            |i| i.environment = "prod".into(),
            |i| i.release = "api".into(),
            |i| i.namespace = "other".into(),
            |i| i.version.push('1'),
            |i| {
                if let Manifests::Inline { digest, .. } = &mut i.manifests {
                    digest.push('0');
                }
            },
            |i| i.created_at = jiff::Timestamp::UNIX_EPOCH,
            |i| i.expires_at = Some(jiff::Timestamp::UNIX_EPOCH),
            |i| i.manifests = Manifests::Revision { revision: Some(1) },
        ];
        for (n, edit) in edits.iter().enumerate() {
            let mut tampered = intent.clone();
            edit(&mut tampered);
            assert_eq!(
                trusted.verify(&tampered, Some(&signature)),
                Err(SignatureError::Mismatch),
                "edit {n}"
            );
        }
    }

    #[test]
    fn unsigned_untrusted_and_garbage_signatures_are_refused() {
        let (signer, trusted) = keys();
        let (other, _) = keys();
        let intent = sample();
        assert_eq!(trusted.verify(&intent, None), Err(SignatureError::Unsigned));
        let foreign = other.sign(&intent).unwrap();
        assert!(matches!(
            trusted.verify(&intent, Some(&foreign)),
            Err(SignatureError::Untrusted(_))
        ));
        let garbage = Signature {
            key_id: signer.key_id(),
            value: "!!not base64!!".into(),
        };
        assert_eq!(
            trusted.verify(&intent, Some(&garbage)),
            Err(SignatureError::Mismatch)
        );
        assert!(TrustedKeys::new(["not a key"]).is_err());
        assert!(Signer::from_seed("SNOTASEED").is_err());
    }
}
