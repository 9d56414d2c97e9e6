//! What the benches deploy: a small release (a ConfigMap and a one-replica Deployment) whose
//! content changes with its version, signed by a key every agent trusts.

use std::sync::Arc;

use proto::{DeployIntent, Manifests, RolloutRequest, SCHEMA_VERSION, Signature, Signer};
use serde_json::json;

/// The environment every bench cluster is in (its `env` label).
pub const ENVIRONMENT: &str = "bench";

/// The namespace every bench release goes to.
pub const NAMESPACE: &str = "bench";

/// The coordinator's signing key and the trust an agent puts in it.
#[derive(Clone)]
pub struct Keys {
    /// Signs intents (the bench's own, or the coordinator's).
    pub signer: Arc<Signer>,
    /// What agents are configured with.
    pub trust: agent::Trust,
    /// The public key, for a `--trust-key` file.
    pub public: String,
}

impl Keys {
    /// A fresh key pair.
    pub fn new() -> anyhow::Result<Self> {
        let pair = nkeys::KeyPair::new_account();
        let seed = pair.seed().map_err(|e| anyhow::anyhow!("nkey seed: {e}"))?;
        let signer = Arc::new(Signer::from_seed(&seed)?);
        let public = pair.public_key();
        let trusted = proto::TrustedKeys::new([public.as_str()])?;
        Ok(Self {
            signer,
            trust: agent::Trust::Signed(Arc::new(trusted)),
            public,
        })
    }

    /// The signature of an intent.
    pub fn sign(&self, intent: &DeployIntent) -> anyhow::Result<Signature> {
        Ok(self.signer.sign(intent)?)
    }
}

/// The manifests of `release` at `version`: the ConfigMap's data and the image tag change
/// with the version, so every new version really applies and rolls the Deployment.
pub fn manifests(release: &str, version: &str) -> Manifests {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": release},
               "data": {"version": version}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": release},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": release}},
                        "template": {"metadata": {"labels": {"app": release}},
                                     "spec": {"containers": [{"name": "app",
                                                              "image": format!("{release}:{version}")}]}}}}),
    ];
    Manifests::Inline {
        digest: proto::manifests_digest(&objects),
        objects,
    }
}

/// An intent for one cluster, valid for ten minutes.
pub fn intent(id: &str, cluster: &str, release: &str, version: &str) -> DeployIntent {
    let now = jiff::Timestamp::now();
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id: id.to_owned(),
        cluster: cluster.to_owned(),
        release: release.to_owned(),
        namespace: NAMESPACE.into(),
        environment: ENVIRONMENT.into(),
        version: version.to_owned(),
        images: Default::default(),
        manifests: manifests(release, version),
        health: Default::default(),
        rollback: Default::default(),
        requested_by: "bench".into(),
        created_at: now,
        rollout_id: None,
        expires_at: now.checked_add(jiff::SignedDuration::from_mins(10)).ok(),
    }
}

/// A rollout request for `release` at `version` to the bench environment.
pub fn rollout(key: &str, release: &str, version: &str) -> RolloutRequest {
    RolloutRequest {
        schema_version: SCHEMA_VERSION,
        idempotency_key: key.to_owned(),
        release: release.to_owned(),
        namespace: NAMESPACE.into(),
        environment: ENVIRONMENT.into(),
        version: version.to_owned(),
        content_digest: proto::sha256_digest(format!("{release}@{version}").as_bytes()),
        manifests: manifests(release, version),
        health: Default::default(),
        rollback: Default::default(),
        requested_by: "bench".into(),
        after: Vec::new(),
        break_glass: None,
    }
}
