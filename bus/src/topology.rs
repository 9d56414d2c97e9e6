//! The streams, key-value buckets and object store of the design: created or updated by the
//! admin (`coxswain topology`, idempotent and safe to race), only opened by everyone else.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use backon::{ExponentialBuilder, Retryable};
use proto::{MAX_MESSAGE_BYTES, bucket, stream as names};

use crate::{Bundles, Bus, BusError, Registry, ReleaseStates, Rollouts};

/// The stream behind key-value bucket `bucket` (a NATS convention).
pub(crate) fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The stream behind object store `bucket` (a NATS convention).
pub(crate) fn object_stream(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// Limits of the topology. The defaults are what production runs; tests shorten the windows.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// Window in which a repeated `Nats-Msg-Id` on the intents stream is dropped as duplicate.
    pub intent_duplicate_window: Duration,
    /// Intents kept per `<cluster>.<release>` subject; older ones are replaced.
    pub intents_per_subject: i64,
    /// How long an unconsumed intent is kept (a cluster offline longer misses it).
    pub intent_max_age: Duration,
    /// Window in which a re-published event (same event id) is dropped as duplicate.
    pub event_duplicate_window: Duration,
    /// How long outcome events (the audit trail) are kept.
    pub event_max_age: Duration,
    /// Largest message either stream accepts.
    pub max_message_bytes: i32,
    /// How long a manifest bundle is kept.
    pub bundle_max_age: Duration,
    /// Revisions of each release state kept in `coxswain-state`.
    pub state_history: i64,
    /// Replicas of every stream and bucket (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// How long a cluster's registry record outlives its last heartbeat (agents write theirs
    /// every minute): a dead cluster leaves the registry after this.
    pub registry_ttl: Duration,
    /// How long a rollout record is kept after it was last written. The promotion gate looks
    /// only at rollouts still kept.
    pub rollout_retention: Duration,
    /// Consumers each stream allows: one per cluster on the intents stream, one per open
    /// event feed (a rollout being driven, a `coxswain watch`) on the events stream. Set on
    /// the streams themselves, because nats-server 2.15 otherwise caps a stream at its
    /// `jetstream.limits.default_max_consumers` (1,000).
    pub max_consumers: i32,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            intent_duplicate_window: Duration::from_secs(10 * 60),
            intents_per_subject: 5,
            intent_max_age: Duration::from_secs(30 * DAY),
            event_duplicate_window: Duration::from_secs(60 * 60),
            event_max_age: Duration::from_secs(365 * DAY),
            max_message_bytes: i32::try_from(MAX_MESSAGE_BYTES).unwrap_or(i32::MAX),
            bundle_max_age: Duration::from_secs(90 * DAY),
            state_history: 10,
            replicas: 1,
            registry_ttl: Duration::from_secs(10 * 60),
            rollout_retention: Duration::from_secs(90 * DAY),
            max_consumers: 100_000,
        }
    }
}

/// Typed handles on the buckets and stores of the design.
#[derive(Clone)]
pub struct Topology {
    /// The cluster registry.
    pub registry: Registry,
    /// The latest state of each release on each cluster.
    pub states: ReleaseStates,
    /// The manifest bundle store.
    pub bundles: Bundles,
    /// The coordinator's rollouts.
    pub rollouts: Rollouts,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").finish_non_exhaustive()
    }
}

impl Bus {
    /// Creates or updates every stream, bucket and store of the design: the admin's job
    /// (`coxswain topology`). Safe to call from many processes at once, and again at any time.
    ///
    /// The key-value buckets refuse rollup headers (async-nats creates them allowed, so each
    /// call turns them off again): with them, a put on one's own key with `Nats-Rollup: all`
    /// would wipe every other key of the bucket. The intents stream allows direct get, so an
    /// agent reads the newest intent of its own subjects with a subject-scoped grant.
    pub async fn ensure_topology(&self, config: &TopologyConfig) -> Result<Topology, BusError> {
        let js = self.js();
        for stream_config in [intents_stream(config), events_stream(config)] {
            let name = stream_config.name.clone();
            js.create_or_update_stream(stream_config)
                .await
                .map_err(|source| BusError::Stream { name, source })?;
        }
        let [clusters, state, rollouts] = buckets(config);
        Ok(Topology {
            registry: Registry::new(ensure_kv(js, clusters).await?),
            states: ReleaseStates::new(ensure_kv(js, state).await?),
            rollouts: Rollouts::new(ensure_kv(js, rollouts).await?),
            bundles: Bundles::new(ensure_object_store(js, bundles(config)).await?),
        })
    }

    /// Opens the topology as it is, creating nothing: what a process without admin rights
    /// does. A missing stream, bucket or store is `BusError::Missing`, naming it.
    pub async fn open_topology(&self) -> Result<Topology, BusError> {
        let js = self.js();
        for name in [names::INTENTS, names::EVENTS] {
            js.get_stream(name)
                .await
                .map_err(|e| not_opened("stream", name, Box::new(e)))?;
        }
        let open_kv = |name: &'static str| async move {
            js.get_key_value(name)
                .await
                .map_err(|e| not_opened("key-value bucket", name, Box::new(e)))
        };
        let bundles = js
            .get_object_store(bucket::BUNDLES)
            .await
            .map_err(|e| not_opened("object store", bucket::BUNDLES, Box::new(e)))?;
        Ok(Topology {
            registry: Registry::new(open_kv(bucket::CLUSTERS).await?),
            states: ReleaseStates::new(open_kv(bucket::STATE).await?),
            rollouts: Rollouts::new(open_kv(bucket::ROLLOUTS).await?),
            bundles: Bundles::new(bundles),
        })
    }

    /// Opens the topology, trying again (jittered backoff, up to 15 s apart, so thousands of
    /// agents starting at once do not ask in step) until the admin has created it, or until
    /// `stop` completes, which ends in `BusError::Stopped`. Each failed try is logged with
    /// what is missing.
    pub async fn wait_for_topology(
        &self,
        stop: impl Future<Output = ()>,
    ) -> Result<Topology, BusError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(15))
            .with_jitter()
            .without_max_times();
        let opened = (|| self.open_topology())
            .retry(policy)
            .sleep(tokio::time::sleep)
            .notify(|error, wait| match error {
                BusError::Missing { .. } => tracing::warn!(
                    %error, ?wait,
                    "topology not there yet: run `coxswain topology` with the admin key"
                ),
                _ => tracing::warn!(
                    error = %crate::error::chain(error), ?wait,
                    "cannot open the topology: is NATS up, and may this user read it?"
                ),
            });
        tokio::select! {
            opened = opened => opened,
            () = stop => Err(BusError::Stopped { waiting_for: "the topology" }),
        }
    }
}

/// `Missing` when the server said the stream does not exist, `Open` for anything else (an
/// outage, or a request the user's permissions deny, which looks like a timeout).
fn not_opened(kind: &'static str, name: &'static str, source: async_nats::Error) -> BusError {
    if stream_not_found(source.as_ref()) {
        BusError::Missing { kind, name, source }
    } else {
        BusError::Open { kind, name, source }
    }
}

/// Does the error, or one of its sources, say "stream not found"?
fn stream_not_found(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<jetstream::context::GetStreamError>()
            && let jetstream::context::GetStreamErrorKind::JetStream(e) = e.kind()
            && e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The registry, state and rollout buckets, in that order.
fn buckets(config: &TopologyConfig) -> [kv::Config; 3] {
    let bucket = |name: &str, description: &str, history: i64, max_value_size: i32| kv::Config {
        bucket: name.into(),
        description: description.into(),
        history,
        max_value_size,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    };
    [
        kv::Config {
            max_age: config.registry_ttl,
            ..bucket(
                bucket::CLUSTERS,
                "coxswain cluster registry: labels, agent version, heartbeat",
                1,
                64 * 1024,
            )
        },
        bucket(
            bucket::STATE,
            "coxswain latest release state per <cluster>.<release>",
            config.state_history,
            64 * 1024,
        ),
        kv::Config {
            max_age: config.rollout_retention,
            ..bucket(
                bucket::ROLLOUTS,
                "coxswain rollouts driven by the coordinator",
                5,
                i32::try_from(MAX_MESSAGE_BYTES).unwrap_or(i32::MAX),
            )
        },
    ]
}

fn bundles(config: &TopologyConfig) -> object_store::Config {
    object_store::Config {
        bucket: bucket::BUNDLES.into(),
        description: Some("coxswain rendered manifest bundles by sha256 digest".into()),
        max_age: config.bundle_max_age,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

fn intents_stream(config: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: names::INTENTS.into(),
        description: Some("coxswain per-cluster deploy intents".into()),
        subjects: vec![names::INTENT_SUBJECTS.into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_messages_per_subject: config.intents_per_subject,
        max_age: config.intent_max_age,
        max_message_size: config.max_message_bytes,
        duplicate_window: config.intent_duplicate_window,
        discard: stream::DiscardPolicy::Old,
        num_replicas: config.replicas,
        max_consumers: config.max_consumers,
        // `Bus::latest_intent_sequence` names the subject in the request's subject, so an
        // agent's grant covers its own intents only (a STREAM.MSG.GET body could name any).
        allow_direct: true,
        ..Default::default()
    }
}

fn events_stream(config: &TopologyConfig) -> stream::Config {
    stream::Config {
        name: names::EVENTS.into(),
        description: Some("coxswain outcome events: the audit trail".into()),
        subjects: vec![names::EVENT_SUBJECTS.into(), names::NOTICE_SUBJECTS.into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: config.event_max_age,
        max_message_size: config.max_message_bytes,
        duplicate_window: config.event_duplicate_window,
        discard: stream::DiscardPolicy::Old,
        num_replicas: config.replicas,
        max_consumers: config.max_consumers,
        ..Default::default()
    }
}

/// Creates or updates a bucket, then turns rollup headers off on its stream.
async fn ensure_kv(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, BusError> {
    let name = config.bucket.clone();
    let store = js
        .create_or_update_key_value(config)
        .await
        .map_err(|source| BusError::CreateKeyValue {
            name: name.clone(),
            source,
        })?;
    refuse_rollups(js, &kv_stream(&name)).await?;
    Ok(store)
}

/// Sets `allow_rollup_hdrs: false` on a stream, when it is not already.
async fn refuse_rollups(js: &jetstream::Context, name: &str) -> Result<(), BusError> {
    adjust_stream(js, name, |config| {
        std::mem::replace(&mut config.allow_rollup, false)
    })
    .await
}

/// Sets a stream's `num_replicas`, when it differs.
async fn set_replicas(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<(), BusError> {
    adjust_stream(js, name, |config| {
        std::mem::replace(&mut config.num_replicas, replicas) != replicas
    })
    .await
}

/// Reads a stream's configuration, lets `change` edit it, and writes it back only when
/// `change` says it changed something.
async fn adjust_stream(
    js: &jetstream::Context,
    name: &str,
    change: impl FnOnce(&mut stream::Config) -> bool,
) -> Result<(), BusError> {
    let settings_error = |source: async_nats::Error| BusError::StreamSettings {
        name: name.to_owned(),
        source,
    };
    let stream = js
        .get_stream(name)
        .await
        .map_err(|e| settings_error(Box::new(e)))?;
    let mut config = stream.cached_info().config.clone();
    if change(&mut config) {
        js.update_stream(config)
            .await
            .map_err(|e| settings_error(Box::new(e)))?;
    }
    Ok(())
}

/// async-nats cannot update an object store's settings; an existing store is opened as it is,
/// but for its replicas, set on its stream (a topology made for one server, then raised to a
/// cluster's three).
async fn ensure_object_store(
    js: &jetstream::Context,
    config: object_store::Config,
) -> Result<object_store::ObjectStore, BusError> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_object_store(&name).await {
        set_replicas(js, &object_stream(&name), config.num_replicas).await?;
        return Ok(store);
    }
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        // Another process may have created it between our look and our create.
        Err(create) => js
            .get_object_store(&name)
            .await
            .map_err(|_| BusError::ObjectStore {
                name,
                source: Box::new(create),
            }),
    }
}
