//! The agent's main loop: one owner (this task) for the map of running releases; workers are
//! spawned per intent and report back when done. SIGTERM stops the pulling, lets in-flight
//! work finish within the grace period, then hands the rest back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bus::{ConsumerOptions, IntentConsumer, TopologyConfig};
use proto::AgentStatus;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::reporter::Reporter;
use crate::worker::{self, Shared};
use crate::{AgentConfig, AgentError, registry};

/// Runs the agent until `shutdown` is cancelled, then drains.
pub async fn run(
    config: AgentConfig,
    nats: async_nats::Client,
    kube: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.check()?;
    let js = async_nats::jetstream::new(nats);
    let topology = bus::ensure_topology(&js, &TopologyConfig::default()).await?;
    let heartbeat = CancellationToken::new();
    tokio::spawn(registry::heartbeat(
        topology.clusters.clone(),
        config.clone(),
        heartbeat.clone(),
    ));
    let options = ConsumerOptions {
        ack_wait: config.ack_wait,
        max_ack_pending: i64::try_from(config.max_concurrent * 4).unwrap_or(64),
    };
    let consumer = IntentConsumer::create(&js, &config.cluster, &options).await?;
    tracing::info!(
        cluster = config.cluster,
        consumer = consumer.name(),
        "agent ready"
    );

    let hard_stop = CancellationToken::new();
    let metrics = Arc::new(crate::Metrics::default());
    let background = CancellationToken::new();
    if let Some(addr) = config.metrics_addr {
        let (m, cluster, stop) = (
            Arc::clone(&metrics),
            config.cluster.clone(),
            background.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(addr, m, cluster, stop).await {
                tracing::error!(%error, %addr, "cannot serve metrics");
            }
        });
    }
    {
        let (m, c, stop) = (Arc::clone(&metrics), consumer.clone(), background.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(n) = c.pending().await {
                    m.pending(n);
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        });
    }
    let shared = Arc::new(Shared {
        metrics: Arc::clone(&metrics),
        reporter: Reporter {
            metrics: Arc::clone(&metrics),
            js: js.clone(),
            state: topology.state.clone(),
            cluster: config.cluster.clone(),
            content_type: config.content_type,
            hard_stop: hard_stop.clone(),
        },
        kube,
        bundles: topology.bundles.clone(),
        js: js.clone(),
        config: config.clone(),
    });
    let permits = Arc::new(Semaphore::new(config.max_concurrent));
    let tracker = TaskTracker::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64)>();
    // Release -> (worker id, stream sequence, cancel token) of its newest worker.
    let mut running: HashMap<String, (u64, u64, CancellationToken)> = HashMap::new();
    let mut turns: HashMap<String, Arc<Mutex<()>>> = HashMap::new();
    let mut next_id = 0u64;

    loop {
        while let Ok((release, id)) = done_rx.try_recv() {
            if running.get(&release).is_some_and(|(r, _, _)| *r == id) {
                running.remove(&release);
            }
        }
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next(Duration::from_secs(1)) => next,
        };
        let delivery = match next {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot pull intents; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        next_id += 1;
        let release = delivery.release_subject().ok().map(|s| s.release);
        let sequence = delivery.stream_sequence();
        if let Some(r) = &release
            && running.get(r).is_some_and(|(_, seq, _)| *seq == sequence)
        {
            // A redelivery of the intent a worker is still on (its acks were lost, say during a
            // NATS restart): that worker answers for it.
            tracing::info!(
                release = r,
                sequence,
                "redelivery of an intent in progress; left to its worker"
            );
            continue;
        }
        let cancel = CancellationToken::new();
        if let Some(r) = &release {
            if config.supersede
                && let Some((_, _, older)) = running.get(r)
            {
                tracing::info!(release = r, "a newer intent supersedes the running one");
                older.cancel();
            }
            running.insert(r.clone(), (next_id, sequence, cancel.clone()));
        }
        let turn = Arc::clone(
            turns
                .entry(release.clone().unwrap_or_default())
                .or_default(),
        );
        let span = tracing::info_span!(
            "intent",
            cluster = config.cluster,
            release = release.as_deref().unwrap_or("?"),
            sequence = delivery.stream_sequence(),
            attempt = delivery.delivery_count(),
            traceparent = delivery.traceparent().unwrap_or_default(),
        );
        set_parent(&span, delivery.traceparent());
        tracker.spawn(
            worker::run(
                Arc::clone(&shared),
                delivery,
                turn,
                cancel,
                permit,
                done_tx.clone(),
                next_id,
                release,
            )
            .instrument(span),
        );
    }

    tracing::info!(grace = ?config.grace, "draining: no new intents; waiting for in-flight work");
    registry::put(&topology.clusters, &config, AgentStatus::Draining).await;
    heartbeat.cancel();
    tracker.close();
    if tokio::time::timeout(config.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: handing in-flight intents back for redelivery");
        hard_stop.cancel();
        tracker.wait().await;
    }
    background.cancel();
    tracing::info!("agent stopped");
    Ok(())
}

/// Reads a W3C `traceparent` header.
struct TraceParent<'a>(Option<&'a str>);

impl opentelemetry::propagation::Extractor for TraceParent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case("traceparent") {
            self.0
        } else {
            None
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Makes the intent's span a child of the trace that published the intent.
fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if traceparent.is_none() {
        return;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&TraceParent(traceparent)));
    let _ = span.set_parent(parent);
}
