//! Typed access to the key-value buckets and the bundle store: every value is a `proto` type
//! stored as JSON, so any NATS client can read it. Nobody outside `bus` sees a bucket handle.

use async_nats::jetstream::{kv, object_store};
use futures::StreamExt;
use proto::{ClusterRecord, ContentType, ReleaseState, Rollout, bucket};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;

use crate::BusError;

/// A bucket of JSON values.
#[derive(Clone)]
struct JsonBucket {
    name: &'static str,
    store: kv::Store,
}

impl JsonBucket {
    fn kv_error(&self, key: &str, action: &'static str, source: async_nats::Error) -> BusError {
        BusError::KeyValue {
            bucket: self.name,
            key: key.to_owned(),
            action,
            source,
        }
    }

    fn check_key(&self, key: &str) -> Result<(), BusError> {
        if proto::is_valid_key(key) {
            Ok(())
        } else {
            Err(BusError::InvalidKey {
                bucket: self.name,
                key: key.chars().take(64).collect(),
            })
        }
    }

    fn encode<T: Serialize>(&self, key: &str, value: &T) -> Result<bytes::Bytes, BusError> {
        proto::encode(ContentType::Json, value)
            .map(Into::into)
            .map_err(|source| BusError::EncodeEntry {
                bucket: self.name,
                key: key.to_owned(),
                source,
            })
    }

    /// Decodes a value; an unreadable entry is logged and skipped, never fatal to a reader.
    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Option<T> {
        match proto::decode(Some(ContentType::Json.as_str()), bytes) {
            Ok(v) => Some(v),
            Err(error) => {
                tracing::warn!(bucket = self.name, key, %error, "unreadable key-value entry skipped");
                None
            }
        }
    }

    /// The value at `key` and the revision it was read at.
    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, BusError> {
        self.check_key(key)?;
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| self.kv_error(key, "get", Box::new(e)))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| self.decode(key, &e.value).map(|v| (v, e.revision))))
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, BusError> {
        self.check_key(key)?;
        let bytes = self.encode(key, value)?;
        self.store
            .put(key, bytes)
            .await
            .map_err(|e| self.kv_error(key, "put", Box::new(e)))
    }

    /// Writes `value` only if `key` has no value yet; `false` when it had one.
    async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<bool, BusError> {
        self.check_key(key)?;
        let bytes = self.encode(key, value)?;
        match self.store.create(key, bytes).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.kv_error(key, "create", Box::new(e))),
        }
    }

    /// Writes `value` only if `key` is still at `revision`.
    async fn update<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<Result<u64, Conflict>, BusError> {
        self.check_key(key)?;
        let bytes = self.encode(key, value)?;
        match self.store.update(key, bytes, revision).await {
            Ok(r) => Ok(Ok(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Err(Conflict)),
            Err(e) => Err(self.kv_error(key, "update", Box::new(e))),
        }
    }

    /// Every readable value of the bucket.
    async fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, BusError> {
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| self.kv_error("*", "list", Box::new(e)))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| self.kv_error("*", "list", Box::new(e)))?;
            if let Some((value, _)) = self.get(&key).await? {
                out.push(value);
            }
        }
        Ok(out)
    }
}

/// Someone else wrote the entry since it was read: read it again and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the entry changed since it was read")]
pub struct Conflict;

/// The cluster registry, `coxswain-clusters`: one record per cluster.
#[derive(Clone)]
pub struct Registry(JsonBucket);

impl Registry {
    pub(crate) fn new(store: kv::Store) -> Self {
        Self(JsonBucket {
            name: bucket::CLUSTERS,
            store,
        })
    }

    /// Writes a cluster's record.
    pub async fn put(&self, record: &ClusterRecord) -> Result<u64, BusError> {
        self.0.put(&proto::cluster_key(&record.name)?, record).await
    }

    /// A cluster's record.
    pub async fn get(&self, cluster: &str) -> Result<Option<ClusterRecord>, BusError> {
        let key = proto::cluster_key(cluster)?;
        Ok(self.0.get(&key).await?.map(|(r, _)| r))
    }

    /// Every registered cluster.
    pub async fn all(&self) -> Result<Vec<ClusterRecord>, BusError> {
        self.0.all().await
    }
}

/// The latest state of each release on each cluster, `coxswain-state`.
#[derive(Clone)]
pub struct ReleaseStates(JsonBucket);

impl ReleaseStates {
    pub(crate) fn new(store: kv::Store) -> Self {
        Self(JsonBucket {
            name: bucket::STATE,
            store,
        })
    }

    /// Writes a release's state on its cluster.
    pub async fn put(&self, state: &ReleaseState) -> Result<u64, BusError> {
        let key = proto::state_key(&state.cluster, &state.release)?;
        self.0.put(&key, state).await
    }

    /// A release's state on a cluster.
    pub async fn get(
        &self,
        cluster: &str,
        release: &str,
    ) -> Result<Option<ReleaseState>, BusError> {
        let key = proto::state_key(cluster, release)?;
        Ok(self.0.get(&key).await?.map(|(s, _)| s))
    }

    /// Every release on every cluster.
    pub async fn all(&self) -> Result<Vec<ReleaseState>, BusError> {
        self.0.all().await
    }
}

/// The coordinator's rollouts, `coxswain-rollouts`, written with compare-and-set.
#[derive(Clone)]
pub struct Rollouts(JsonBucket);

impl Rollouts {
    pub(crate) fn new(store: kv::Store) -> Self {
        Self(JsonBucket {
            name: bucket::ROLLOUTS,
            store,
        })
    }

    /// A rollout and the revision it was read at. An id that cannot be a key is an error
    /// (`BusError::InvalidKey`), never a wildcard read.
    pub async fn get(&self, id: &str) -> Result<Option<(Rollout, u64)>, BusError> {
        self.0.get(id).await
    }

    /// Creates a rollout; `false` when one with its id exists already.
    pub async fn create(&self, rollout: &Rollout) -> Result<bool, BusError> {
        self.0.create(&rollout.id, rollout).await
    }

    /// Writes a rollout if nobody wrote it since `revision`; the new revision, or `Conflict`.
    pub async fn update(
        &self,
        rollout: &Rollout,
        revision: u64,
    ) -> Result<Result<u64, Conflict>, BusError> {
        self.0.update(&rollout.id, rollout, revision).await
    }

    /// Every rollout.
    pub async fn all(&self) -> Result<Vec<Rollout>, BusError> {
        self.0.all().await
    }
}

/// Rendered manifests too large to travel inline, `coxswain-bundles`, named by digest.
#[derive(Clone)]
pub struct Bundles(object_store::ObjectStore);

impl Bundles {
    pub(crate) fn new(store: object_store::ObjectStore) -> Self {
        Self(store)
    }

    /// Stores a bundle under its digest. A bundle already stored with that digest and size is
    /// left as it is (same digest, same bytes): rewriting it would purge its old chunks, a
    /// right the coordinator does not hold because a purge cannot be limited to one object.
    /// A bundle therefore lives `bundle_max_age` from its first upload.
    pub async fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), BusError> {
        if let Ok(info) = self.0.info(digest).await
            && !info.deleted
            && info.size == bytes.len()
        {
            tracing::debug!(digest, "bundle already stored");
            return Ok(());
        }
        let mut reader = bytes;
        self.0
            .put(digest, &mut reader)
            .await
            .map(drop)
            .map_err(|e| BusError::Bundle {
                action: "store",
                digest: digest.to_owned(),
                source: Box::new(e),
            })
    }

    /// Fetches a bundle, refusing one whose declared or actual size is over `limit` bytes.
    /// The caller verifies the digest.
    pub async fn get(&self, digest: &str, limit: u64) -> Result<Vec<u8>, BusError> {
        let fetch_error = |source: async_nats::Error| BusError::Bundle {
            action: "fetch",
            digest: digest.to_owned(),
            source,
        };
        let too_large = |size| BusError::BundleTooLarge {
            digest: digest.to_owned(),
            size,
            limit,
        };
        let object = self
            .0
            .get(digest)
            .await
            .map_err(|e| fetch_error(Box::new(e)))?;
        let declared = u64::try_from(object.info.size).unwrap_or(u64::MAX);
        if declared > limit {
            return Err(too_large(declared));
        }
        let mut bytes = Vec::new();
        object
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| fetch_error(Box::new(e)))?;
        let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if read > limit {
            return Err(too_large(read));
        }
        Ok(bytes)
    }
}
