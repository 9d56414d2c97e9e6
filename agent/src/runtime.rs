//! The agent's main loop, in three steps: `setup` (topology, registry heartbeat, consumer,
//! metrics), the dispatch loop (one owner, this task, for the map of running releases;
//! workers are spawned per intent and report back when done), and `drain`: SIGTERM stops the
//! pulling, lets in-flight work finish within the grace period, then hands the rest back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bus::{Bus, ConsumerOptions, Delivery, IntentConsumer, Registry};
use proto::AgentStatus;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::reporter::Reporter;
use crate::worker::{self, Job, Shared};
use crate::{AgentConfig, AgentError, registry};

/// Runs the agent until `shutdown` is cancelled, then drains.
pub async fn run(
    config: AgentConfig,
    bus: Bus,
    kube: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let (agent, consumer) = setup(config, bus, kube, &shutdown).await?;
    let mut dispatcher = Dispatcher::new(&agent, consumer);
    dispatcher.run(&agent, &shutdown).await;
    agent.drain(dispatcher.tracker).await;
    Ok(())
}

/// A started agent: what `setup` made and `drain` takes down.
struct Agent {
    config: AgentConfig,
    shared: Arc<Shared>,
    registry: Registry,
    heartbeat: (CancellationToken, JoinHandle<()>),
    /// The metrics server.
    background: CancellationToken,
    /// Set when draining starts: `/readyz` answers 503 from then on.
    draining: Arc<AtomicBool>,
    hard_stop: CancellationToken,
}

/// Opens the topology (the agent never creates it), creates its consumer, then starts the
/// registry heartbeat: an agent that cannot consume never announces itself.
async fn setup(
    config: AgentConfig,
    bus: Bus,
    kube: kube::Client,
    shutdown: &CancellationToken,
) -> Result<(Agent, IntentConsumer), AgentError> {
    config.check()?;
    let topology = bus.wait_for_topology(shutdown.cancelled()).await?;
    let options = ConsumerOptions {
        ack_wait: config.ack_wait,
        max_ack_pending: i64::try_from(config.max_concurrent * 4).unwrap_or(64),
        ..ConsumerOptions::default()
    };
    let consumer = IntentConsumer::create(&bus, &config.cluster, &options).await?;
    let heartbeat = start_heartbeat(&topology.registry, &config);
    tracing::info!(
        cluster = config.cluster,
        consumer = consumer.name(),
        "agent ready"
    );
    let metrics = Arc::new(crate::Metrics::default());
    let background = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    serve_metrics(&config, &metrics, readiness(&bus, &draining), &background);
    let hard_stop = CancellationToken::new();
    let deployed = crate::drift::Deployed::default();
    let shared = Arc::new(Shared {
        metrics: Arc::clone(&metrics),
        reporter: Reporter {
            metrics,
            bus: bus.clone(),
            states: topology.states.clone(),
            content_type: config.content_type,
            hard_stop: hard_stop.clone(),
            ledger: Arc::default(),
            deployed: deployed.clone(),
        },
        kube,
        bundles: topology.bundles.clone(),
        bus,
        config: config.clone(),
    });
    tokio::spawn(crate::drift::watch(
        Arc::clone(&shared),
        deployed,
        background.clone(),
    ));
    let agent = Agent {
        config,
        shared,
        registry: topology.registry,
        heartbeat,
        background,
        draining,
        hard_stop,
    };
    Ok((agent, consumer))
}

/// Starts the registry heartbeat: the token that stops it, and its task.
fn start_heartbeat(
    registry: &Registry,
    config: &AgentConfig,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(registry::heartbeat(
        registry.clone(),
        config.clone(),
        stop.clone(),
    ));
    (stop, task)
}

/// Ready while connected to NATS and not draining.
fn readiness(bus: &Bus, draining: &Arc<AtomicBool>) -> crate::metrics::Readiness {
    let (bus, draining) = (bus.clone(), Arc::clone(draining));
    Arc::new(move || {
        if draining.load(Ordering::Relaxed) {
            Err("draining: taking no new intents".into())
        } else if !bus.is_connected() {
            Err("not connected to NATS".into())
        } else {
            Ok(())
        }
    })
}

fn serve_metrics(
    config: &AgentConfig,
    metrics: &Arc<crate::Metrics>,
    ready: crate::metrics::Readiness,
    stop: &CancellationToken,
) {
    let Some(addr) = config.metrics_addr else {
        return;
    };
    let (metrics, cluster, stop) = (Arc::clone(metrics), config.cluster.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(error) = crate::metrics::serve(addr, metrics, cluster, ready, stop).await {
            tracing::error!(%error, %addr, "cannot serve metrics");
        }
    });
}

impl Agent {
    /// Marks the agent draining (after the heartbeat stopped, so the last word in the
    /// registry is `draining`), lets in-flight work finish within the grace period, then
    /// hands the rest back.
    async fn drain(self, tracker: TaskTracker) {
        tracing::info!(grace = ?self.config.grace, "draining: no new intents; waiting for in-flight work");
        self.draining.store(true, Ordering::Relaxed);
        let (stop_heartbeat, heartbeat) = self.heartbeat;
        stop_heartbeat.cancel();
        if let Err(error) = heartbeat.await {
            tracing::warn!(%error, "the heartbeat task ended abnormally");
        }
        registry::put(&self.registry, &self.config, AgentStatus::Draining).await;
        tracker.close();
        if tokio::time::timeout(self.config.grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: handing in-flight intents back for redelivery");
            self.hard_stop.cancel();
            tracker.wait().await;
        }
        self.background.cancel();
        tracing::info!("agent stopped");
    }
}

/// The newest worker of a release.
struct Running {
    worker: u64,
    sequence: u64,
    cancel: CancellationToken,
}

/// The one owner of what runs: pulls an intent when a permit is free and hands it to a
/// worker, cancelling the release's older worker when a newer intent arrives.
struct Dispatcher {
    consumer: IntentConsumer,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    done_tx: worker::Done,
    done_rx: mpsc::UnboundedReceiver<(String, u64)>,
    running: HashMap<String, Running>,
    turns: HashMap<String, Arc<Mutex<()>>>,
    next_id: u64,
    supersede: bool,
}

impl Dispatcher {
    fn new(agent: &Agent, consumer: IntentConsumer) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            consumer,
            permits: Arc::new(Semaphore::new(agent.config.max_concurrent)),
            tracker: TaskTracker::new(),
            done_tx,
            done_rx,
            running: HashMap::new(),
            turns: HashMap::new(),
            next_id: 0,
            supersede: agent.config.supersede,
        }
    }

    async fn run(&mut self, agent: &Agent, shutdown: &CancellationToken) {
        loop {
            self.forget_finished();
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
                permit = Arc::clone(&self.permits).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = self.consumer.next(Duration::from_secs(3600)) => next,
            };
            match next {
                Ok(Some(delivery)) => {
                    agent.shared.metrics.pending(delivery.pending());
                    self.dispatch(agent, delivery, permit);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot pull intents; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    fn forget_finished(&mut self) {
        while let Ok((release, id)) = self.done_rx.try_recv() {
            if self.running.get(&release).is_some_and(|r| r.worker == id) {
                self.running.remove(&release);
            }
        }
    }

    /// Records the newest worker of `release`, cancelling the one it supersedes. Newer means a
    /// higher stream sequence, never a later arrival: a redelivered older intent does not
    /// cancel a newer one (its own worker finds it superseded).
    fn track(&mut self, release: &str, sequence: u64, cancel: &CancellationToken) {
        if let Some(running) = self.running.get(release) {
            if running.sequence > sequence {
                tracing::info!(
                    release,
                    sequence,
                    newer = running.sequence,
                    "an older intent arrived while a newer one runs; it will end superseded"
                );
                return;
            }
            if self.supersede {
                tracing::info!(release, "a newer intent supersedes the running one");
                running.cancel.cancel();
            }
        }
        let running = Running {
            worker: self.next_id,
            sequence,
            cancel: cancel.clone(),
        };
        self.running.insert(release.to_owned(), running);
    }

    fn dispatch(&mut self, agent: &Agent, delivery: Delivery, permit: OwnedSemaphorePermit) {
        self.next_id += 1;
        let release = delivery.release_subject().ok().map(|s| s.release);
        let sequence = delivery.stream_sequence();
        if let Some(r) = &release
            && self.running.get(r).is_some_and(|w| w.sequence == sequence)
        {
            // A redelivery of the intent a worker is still on (its acks were lost, say during a
            // NATS restart): that worker answers for it.
            tracing::info!(
                release = r,
                sequence,
                "redelivery of an intent in progress; left to its worker"
            );
            return;
        }
        let superseded = CancellationToken::new();
        if let Some(r) = &release {
            self.track(r, sequence, &superseded);
        }
        let turn = Arc::clone(
            self.turns
                .entry(release.clone().unwrap_or_default())
                .or_default(),
        );
        let span = tracing::info_span!(
            "intent",
            cluster = agent.config.cluster,
            release = release.as_deref().unwrap_or("?"),
            sequence,
            attempt = delivery.delivery_count(),
            traceparent = delivery.traceparent().unwrap_or_default(),
        );
        bus::trace::continue_trace(&span, delivery.traceparent());
        let job = Job {
            delivery,
            turn,
            superseded,
            permit,
            done: self.done_tx.clone(),
            id: self.next_id,
            release,
        };
        self.tracker
            .spawn(worker::run(Arc::clone(&agent.shared), job).instrument(span));
    }
}
