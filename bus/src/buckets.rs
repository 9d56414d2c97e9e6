//! Typed access to the key-value buckets and the bundle store: every value is a `proto` type
//! stored as JSON, so any NATS client can read it. Nobody outside `bus` sees a bucket handle.

use async_nats::jetstream::{kv, object_store};
use futures::StreamExt;
use proto::{ClusterRecord, ContentType, ReleaseState, Rollout, bucket};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;

use crate::BusError;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    match encoder.write_all(bytes).and_then(|()| encoder.finish()) {
        Ok(compressed) => compressed,
        Err(_) => bytes.to_vec(),
    }
}

/// Expands a gzip entry, refusing one that grows past [`MAX_EXPANDED_BYTES`].
fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_EXPANDED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not valid gzip: {e}"))?;
    if out.len() as u64 > MAX_EXPANDED_BYTES {
        return Err(format!("expands past {MAX_EXPANDED_BYTES} bytes"));
    }
    Ok(out)
}

/// The longest wait for the next entry of a bucket's snapshot.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A bucket of JSON values.
#[derive(Clone)]
struct JsonBucket {
    name: &'static str,
    store: kv::Store,
    /// Values whose JSON is longer than this are stored gzip-compressed (see [`GZIP_OVER`]).
    gzip_over: Option<usize>,
}

/// Rollout records over this size are stored gzip-compressed: a rollout to 10,000 clusters
/// is about 1.3 MB of JSON, over NATS' default 1 MiB payload, and compresses about tenfold.
/// Readers tell the two apart by the gzip magic bytes (`1f 8b`; JSON starts with `{`).
const GZIP_OVER: usize = 64 * 1024;

/// The largest value a compressed entry may expand to.
const MAX_EXPANDED_BYTES: u64 = 64 * 1024 * 1024;

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
        let json = serde_json::to_vec(value).map_err(|e| BusError::EncodeEntry {
            bucket: self.name,
            key: key.to_owned(),
            source: proto::EncodeError::Json(e),
        })?;
        let bytes = match self.gzip_over {
            Some(limit) if json.len() > limit => gzip(&json),
            _ => json,
        };
        if bytes.len() > proto::MAX_MESSAGE_BYTES {
            return Err(BusError::EncodeEntry {
                bucket: self.name,
                key: key.to_owned(),
                source: proto::EncodeError::TooLarge {
                    size: bytes.len(),
                    limit: proto::MAX_MESSAGE_BYTES,
                },
            });
        }
        Ok(bytes.into())
    }

    /// Decodes a value; an unreadable entry is logged and skipped, never fatal to a reader.
    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Option<T> {
        let expanded;
        let (bytes, limit) = if bytes.starts_with(&[0x1f, 0x8b]) {
            match gunzip(bytes) {
                Ok(json) => {
                    expanded = json;
                    (expanded.as_slice(), MAX_EXPANDED_BYTES as usize)
                }
                Err(error) => {
                    tracing::warn!(bucket = self.name, key, %error, "unreadable compressed entry skipped");
                    return None;
                }
            }
        } else {
            (bytes, proto::MAX_MESSAGE_BYTES)
        };
        match proto::decode_with_limit(Some(ContentType::Json.as_str()), bytes, limit) {
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
        Ok(self.create_at(key, value).await?.is_ok())
    }

    /// Writes `value` only if `key` has none; its revision, or `Conflict`.
    async fn create_at<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Result<u64, Conflict>, BusError> {
        self.check_key(key)?;
        let bytes = self.encode(key, value)?;
        match self.store.create(key, bytes).await {
            Ok(revision) => Ok(Ok(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Err(Conflict)),
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

    /// Every readable value of the bucket, in one read of the bucket's stream (the last
    /// entry of every key) rather than a request per key: a registry of 10,000 clusters is
    /// read in one pass.
    async fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, BusError> {
        let list_error = |e: async_nats::Error| self.kv_error("*", "list", e);
        // Fresh stream info (the store's own `status` is the one read when it was opened).
        let mut stream = self.store.stream.clone();
        let info = stream.info().await.map_err(|e| list_error(Box::new(e)))?;
        if info.state.messages == 0 {
            return Ok(Vec::new());
        }
        let mut entries = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| list_error(Box::new(e)))?;
        let mut out = Vec::new();
        // The snapshot ends with the entry nothing follows (`delta` 0); a bucket emptied
        // meanwhile (entries expired) sends nothing, hence the bound on each wait.
        while let Ok(next) = tokio::time::timeout(SNAPSHOT_WAIT, entries.next()).await {
            let Some(entry) = next else { break };
            let entry = entry.map_err(|e| list_error(Box::new(e)))?;
            if entry.operation == kv::Operation::Put
                && let Some(value) = self.decode(&entry.key, &entry.value)
            {
                out.push(value);
            }
            if entry.delta == 0 {
                break;
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
            gzip_over: None,
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
            gzip_over: None,
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
        Ok(self.get_at(cluster, release).await?.map(|(s, _)| s))
    }

    /// A release's state on a cluster, and the revision it was read at.
    pub async fn get_at(
        &self,
        cluster: &str,
        release: &str,
    ) -> Result<Option<(ReleaseState, u64)>, BusError> {
        let key = proto::state_key(cluster, release)?;
        self.0.get(&key).await
    }

    /// Writes a release's state if nobody wrote it since `revision` (0: if there is none);
    /// the new revision, or `Conflict`.
    pub async fn update(
        &self,
        state: &ReleaseState,
        revision: u64,
    ) -> Result<Result<u64, Conflict>, BusError> {
        let key = proto::state_key(&state.cluster, &state.release)?;
        if revision == 0 {
            return self.0.create_at(&key, state).await;
        }
        self.0.update(&key, state, revision).await
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
            gzip_over: Some(GZIP_OVER),
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

    /// Every rollout as it is now, then every change as it happens: what keeps an in-memory
    /// index current without listing the bucket again.
    pub async fn watch(&self) -> Result<RolloutWatch, BusError> {
        let bucket = &self.0;
        let list_error = |e: async_nats::Error| bucket.kv_error("*", "watch", e);
        let mut stream = bucket.store.stream.clone();
        let info = stream.info().await.map_err(|e| list_error(Box::new(e)))?;
        let entries = bucket
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| list_error(Box::new(e)))?;
        Ok(RolloutWatch {
            bucket: bucket.clone(),
            entries,
            caught_up: info.state.messages == 0,
            snapshot_done: info.state.messages == 0,
        })
    }
}

/// A change to the rollouts bucket.
#[derive(Debug, Clone)]
pub enum RolloutChange {
    /// A rollout was written (or was there when the watch began).
    Put(Box<Rollout>),
    /// A rollout was deleted or expired.
    Removed(String),
    /// Everything that was in the bucket when the watch began has been delivered.
    CaughtUp,
}

/// The rollouts bucket, then its changes ([`Rollouts::watch`]).
pub struct RolloutWatch {
    bucket: JsonBucket,
    entries: kv::Watch,
    /// The "caught up" mark is due (the bucket was empty, or its last entry came).
    caught_up: bool,
    /// The entries there when the watch began have all come.
    snapshot_done: bool,
}

impl RolloutWatch {
    /// The next change; `None` when the watch ended (the connection closed). An unreadable
    /// entry is logged and skipped.
    pub async fn next(&mut self) -> Result<Option<RolloutChange>, BusError> {
        if std::mem::take(&mut self.caught_up) {
            return Ok(Some(RolloutChange::CaughtUp));
        }
        loop {
            let Some(entry) = self.entries.next().await else {
                return Ok(None);
            };
            let entry = entry.map_err(|e| self.bucket.kv_error("*", "watch", Box::new(e)))?;
            if entry.delta == 0 && !self.snapshot_done {
                self.snapshot_done = true;
                self.caught_up = true;
            }
            let change = match entry.operation {
                kv::Operation::Put => match self.bucket.decode(&entry.key, &entry.value) {
                    Some(rollout) => RolloutChange::Put(Box::new(rollout)),
                    None => continue,
                },
                kv::Operation::Delete | kv::Operation::Purge => RolloutChange::Removed(entry.key),
            };
            return Ok(Some(change));
        }
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
        let object = self.0.get(digest).await.map_err(|e| {
            if e.kind() == object_store::GetErrorKind::NotFound {
                BusError::BundleMissing {
                    digest: digest.to_owned(),
                }
            } else {
                fetch_error(Box::new(e))
            }
        })?;
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
