//! The coordinator's reads and writes in NATS KV: rollouts (with compare-and-set), the cluster
//! registry and the release states.

use async_nats::jetstream::kv;
use futures::StreamExt;
use proto::{ClusterRecord, ContentType, ReleaseState, Rollout};
use serde::de::DeserializeOwned;

/// A KV operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Someone else wrote the entry since it was read.
    #[error("the rollout changed under us")]
    Conflict,
    /// NATS failed.
    #[error("nats key-value {0}")]
    Nats(String),
    /// An entry could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[from] proto::EncodeError),
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<T> {
    match proto::decode(Some(ContentType::Json.as_str()), bytes) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(key, %error, "unreadable key-value entry skipped");
            None
        }
    }
}

/// Every value of a bucket.
async fn all<T: DeserializeOwned>(store: &kv::Store) -> Result<Vec<T>, StoreError> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| StoreError::Nats(e.to_string()))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| StoreError::Nats(e.to_string()))?;
        if let Some(bytes) = store
            .get(&key)
            .await
            .map_err(|e| StoreError::Nats(e.to_string()))?
            && let Some(v) = decode(&key, &bytes)
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// Registered clusters.
pub(crate) async fn clusters(store: &kv::Store) -> Result<Vec<ClusterRecord>, StoreError> {
    all(store).await
}

/// Release states.
pub(crate) async fn states(store: &kv::Store) -> Result<Vec<ReleaseState>, StoreError> {
    all(store).await
}

/// Every rollout.
pub(crate) async fn rollouts(store: &kv::Store) -> Result<Vec<Rollout>, StoreError> {
    all(store).await
}

/// A rollout and the revision it was read at.
pub(crate) async fn rollout(
    store: &kv::Store,
    id: &str,
) -> Result<Option<(Rollout, u64)>, StoreError> {
    let entry = store
        .entry(id)
        .await
        .map_err(|e| StoreError::Nats(e.to_string()))?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| decode::<Rollout>(id, &e.value).map(|r| (r, e.revision))))
}

/// Creates a rollout; `false` when one with that id exists already.
pub(crate) async fn create(store: &kv::Store, rollout: &Rollout) -> Result<bool, StoreError> {
    let bytes = proto::encode(ContentType::Json, rollout)?;
    match store.create(&rollout.id, bytes.into()).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(StoreError::Nats(e.to_string())),
    }
}

/// Writes a rollout if nobody wrote it since `revision`; returns the new revision.
pub(crate) async fn update(
    store: &kv::Store,
    rollout: &Rollout,
    revision: u64,
) -> Result<u64, StoreError> {
    let bytes = proto::encode(ContentType::Json, rollout)?;
    match store.update(&rollout.id, bytes.into(), revision).await {
        Ok(r) => Ok(r),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(StoreError::Conflict),
        Err(e) => Err(StoreError::Nats(e.to_string())),
    }
}
