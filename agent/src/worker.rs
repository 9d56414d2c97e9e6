//! One intent, end to end: check it, wait for its release's turn, deploy it, report every
//! phase, and ack only once the final event is stored.

use std::sync::Arc;
use std::time::Duration;

use bus::{Bundles, Bus, Delivery};
use deploy::{DeployError, Engine, Progress, Release, Rendered, Report};
use proto::{DeployIntent, Manifests, Phase};
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AgentConfig;
use crate::checks::{self, Rejection};
use crate::limits::{MAX_BUNDLE_BYTES, check_bundle_size, check_object_count};
use crate::reporter::{About, Reported, Reporter};

/// What every worker shares.
pub(crate) struct Shared {
    pub(crate) metrics: Arc<crate::Metrics>,
    pub(crate) config: AgentConfig,
    pub(crate) reporter: Reporter,
    pub(crate) kube: kube::Client,
    pub(crate) bundles: Bundles,
    pub(crate) bus: Bus,
}

/// Tells the dispatcher a worker is done: `(release, id)`.
pub(crate) type Done = mpsc::UnboundedSender<(String, u64)>;

/// What the dispatcher hands a worker: one delivery and its place among the release's work.
pub(crate) struct Job {
    pub(crate) delivery: Delivery,
    /// One operation per release at a time, in order.
    pub(crate) turn: Arc<Mutex<()>>,
    /// Cancelled when a newer intent for the release arrives.
    pub(crate) superseded: CancellationToken,
    /// The concurrency slot this job holds until it is acked.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Where to say the job is done, and as whom.
    pub(crate) done: Done,
    pub(crate) id: u64,
    pub(crate) release: Option<String>,
}

/// Why a release could not be prepared.
enum Unready {
    /// The intent is unacceptable (bad bundle, outside the allowlist): rejected.
    Refused(String),
    /// The cluster could not be asked (an outage): the intent failed.
    Failed(String),
    /// The bundle store could not be reached (a NATS outage, a leader election): the intent
    /// comes back later.
    Unavailable(String),
}

/// How an intent issued before the one that last ran on its release came to be here.
enum Older {
    /// Published before that one, delivered after it (a redelivery): superseded.
    Overtaken,
    /// Published after it: someone sent an old intent again. Refused.
    Replay(String),
}

/// How one intent ended, for the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The final event is stored: ack.
    Reported,
    /// Invalid for good: the rejection is stored, stop redelivery.
    Terminate,
    /// Try again later (the release is locked by a live operation elsewhere).
    Retry(Duration),
    /// The agent stops before the intent finished: hand it back at once.
    HandBack,
}

/// Handles one delivery, from check to ack.
pub(crate) async fn run(shared: Arc<Shared>, job: Job) {
    let Job {
        delivery,
        turn,
        superseded,
        permit,
        done,
        id,
        release,
    } = job;
    let received = Instant::now();
    let delivery = Arc::new(delivery);
    // Progress acks keep the message ours for as long as the work takes.
    let acking = CancellationToken::new();
    tokio::spawn(progress_acks(
        Arc::clone(&delivery),
        shared.config.ack_wait / 3,
        acking.clone(),
    ));

    shared.metrics.in_flight(1);
    let handling = Handling {
        shared: &shared,
        delivery: &delivery,
        reporter: reporter(&shared, &delivery),
        received,
    };
    let ending = tokio::select! {
        () = shared.reporter.hard_stop.cancelled() => Ending::HandBack,
        ending = handling.handle(&turn, &superseded) => ending,
    };
    shared.metrics.in_flight(-1);
    acking.cancel();
    acknowledge(&delivery, ending).await;
    drop(permit);
    if let Some(release) = release {
        let _ = done.send((release, id));
    }
}

async fn acknowledge(delivery: &Delivery, ending: Ending) {
    let acked = match ending {
        Ending::Reported => delivery.double_ack().await,
        Ending::Terminate => delivery.terminate().await,
        Ending::Retry(after) => delivery.nak_with_delay(after).await,
        Ending::HandBack => delivery.nak_with_delay(Duration::ZERO).await,
    };
    if let Err(error) = acked {
        // The message will be redelivered; the engine's history makes that harmless.
        tracing::warn!(%error, "cannot acknowledge the intent; it will be redelivered");
    }
}

async fn progress_acks(delivery: Arc<Delivery>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every.max(Duration::from_millis(200))) => {}
        }
        if let Err(error) = delivery.progress().await {
            tracing::warn!(%error, "progress ack failed");
        }
    }
}

/// The reporter for one delivery: events in the encoding of the intent (MessagePack when the
/// intent's own encoding is unknown).
fn reporter(shared: &Shared, delivery: &Delivery) -> Reporter {
    let content_type =
        proto::ContentType::from_header(delivery.header(proto::header::CONTENT_TYPE))
            .unwrap_or_default();
    shared.reporter.replying_in(content_type)
}

/// One delivery being handled.
struct Handling<'a> {
    shared: &'a Shared,
    delivery: &'a Delivery,
    reporter: Reporter,
    received: Instant,
}

impl Handling<'_> {
    fn attempt(&self) -> u32 {
        u32::try_from(self.delivery.delivery_count()).unwrap_or(u32::MAX)
    }

    fn about(&self, intent: &DeployIntent) -> About {
        About {
            cluster: self.shared.config.cluster.clone(),
            intent_id: intent.id.clone(),
            release: intent.release.clone(),
            namespace: intent.namespace.clone(),
            version: Some(intent.version.clone()),
            requested_by: Some(intent.requested_by.clone()),
            rollout_id: intent.rollout_id.clone(),
            attempt: self.attempt(),
            received: self.received,
            issued_at: Some(intent.created_at),
            sequence: self.delivery.stream_sequence(),
            drift: intent.health.drift,
        }
    }

    /// Reports an event, then ends with `then`; hands the intent back when the event could
    /// not be stored (the agent is stopping).
    async fn report_then(&self, event: &proto::Outcome, about: &About, then: Ending) -> Ending {
        match self
            .reporter
            .report(event, about, self.delivery.traceparent())
            .await
        {
            Reported::Stored => then,
            Reported::Stopping => Ending::HandBack,
            Reported::Unstorable => Ending::Terminate,
        }
    }

    async fn handle(&self, turn: &Mutex<()>, superseded: &CancellationToken) -> Ending {
        let subject = self.delivery.release_subject();
        let signature = self.delivery.signature();
        let arrival = checks::Arrival {
            subject: &subject,
            subject_text: self.delivery.subject(),
            signature: signature.as_ref(),
            now: jiff::Timestamp::now(),
        };
        let admitted = checks::admit(self.delivery.decode(), &arrival, &self.shared.config);
        let intent = match admitted {
            Ok(intent) => intent,
            Err(rejection) => return self.reject(rejection).await,
        };
        let about = self.about(&intent);
        match self
            .report_then(
                &about.outcome(Phase::Received, false),
                &about,
                Ending::Reported,
            )
            .await
        {
            Ending::Reported => {}
            stop => return stop,
        }
        // One operation per release at a time, in order; a newer intent may cancel us meanwhile.
        let (_turn, waited) = match turn.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => tokio::select! {
                turn = turn.lock() => (turn, true),
                () = superseded.cancelled() => return self.superseded(&about).await,
            },
        };
        // Nothing was queued behind this intent when it came (its metadata says so) and it
        // did not wait: no newer intent can exist, and asking the server would be a wasted
        // round trip. A newer one arriving later cancels this run through `superseded`.
        if (waited || self.delivery.pending() > 0) && self.newer_intent_exists().await {
            return self.superseded(&about).await;
        }
        match self.replay_of_older(&intent).await {
            Some(Older::Overtaken) => return self.superseded(&about).await,
            Some(Older::Replay(reason)) => {
                // Under its sequence: the intent's id already has its final event.
                return self.reject(Rejection::unauthenticated(reason)).await;
            }
            None => {}
        }
        let result = self.deploy(&intent, &about, superseded).await;
        match result {
            Ok(ending) => ending,
            Err(rejection) => self.reject(rejection).await,
        }
    }

    async fn reject(&self, rejection: Rejection) -> Ending {
        let Rejection { reason, intent } = rejection;
        tracing::warn!(%reason, subject = self.delivery.subject(), "intent rejected");
        let Ok(subject) = self.delivery.release_subject() else {
            // No release to report on: a message that should never have matched our filter.
            return Ending::Terminate;
        };
        // An intent whose id could not be one (too long, wildcards) is named by its sequence:
        // the event about it must always be storable.
        let about = match intent {
            Some(i)
                if i.release == subject.release
                    && proto::is_valid_key(&i.id)
                    && i.id.len() <= 128 =>
            {
                self.about(&i)
            }
            _ => About {
                cluster: self.shared.config.cluster.clone(),
                intent_id: format!("seq-{}", self.delivery.stream_sequence()),
                release: subject.release,
                namespace: String::new(),
                version: None,
                requested_by: None,
                rollout_id: None,
                attempt: self.attempt(),
                received: self.received,
                issued_at: None,
                sequence: self.delivery.stream_sequence(),
                drift: proto::DriftPolicy::default(),
            },
        };
        let about = About {
            issued_at: None,
            ..about
        };
        let event = about.ended(Phase::Rejected, reason);
        self.report_then(&event, &about, Ending::Terminate).await
    }

    async fn superseded(&self, about: &About) -> Ending {
        let event = about.ended(Phase::Superseded, "a newer intent for this release arrived");
        self.report_then(&event, about, Ending::Reported).await
    }

    /// Whether an intent issued after this one already ran on this release: then this one
    /// was either overtaken (published before that one: superseded) or is a replay
    /// (published after it). An unreadable state does not block the intent (supersession by
    /// sequence still holds).
    async fn replay_of_older(&self, intent: &DeployIntent) -> Option<Older> {
        let states = &self.shared.reporter.states;
        let state = match states
            .get_at(&self.shared.config.cluster, &intent.release)
            .await
        {
            Ok(Some((state, revision))) => {
                self.reporter.state_read_at(revision);
                state
            }
            Ok(None) => {
                self.reporter.state_read_at(0);
                return None;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the release state to check for a replay");
                return None;
            }
        };
        let newer = state
            .intent_issued_at
            .filter(|at| *at > intent.created_at && state.intent_id != intent.id)?;
        if state
            .intent_sequence
            .is_some_and(|s| s > self.delivery.stream_sequence())
        {
            return Some(Older::Overtaken);
        }
        Some(Older::Replay(format!(
            "replay refused: intent {} (issued {newer}) already ran on release {}; this intent was issued earlier, at {}",
            state.intent_id, intent.release, intent.created_at
        )))
    }

    async fn newer_intent_exists(&self) -> bool {
        let subject = self.delivery.subject();
        match self.shared.bus.latest_intent_sequence(subject).await {
            Ok(Some(latest)) => latest > self.delivery.stream_sequence(),
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(%error, "cannot check for a newer intent; deploying this one");
                false
            }
        }
    }

    /// Drives the release engine, its phases stored in order by a publisher task, and ends
    /// the intent by how the engine ended. A rejection when the manifests cannot be had.
    async fn deploy(
        &self,
        intent: &DeployIntent,
        about: &About,
        superseded: &CancellationToken,
    ) -> Result<Ending, Rejection> {
        // What to deploy: manifests, or a revision from the cluster's history (`coxswain rollback`).
        let release = match &intent.manifests {
            Manifests::Revision { revision } => Err(*revision),
            _ => match self.release(intent).await {
                Ok(release) => Ok(release),
                Err(Unready::Refused(reason)) => {
                    return Err(Rejection::of(intent.clone(), reason));
                }
                Err(Unready::Failed(reason)) => {
                    let event = about.ended(Phase::Failed, reason);
                    return Ok(self.report_then(&event, about, Ending::Reported).await);
                }
                Err(Unready::Unavailable(reason)) => {
                    tracing::warn!(%reason, "the bundle cannot be fetched now; the intent comes back later");
                    return Ok(Ending::Retry(Duration::from_secs(2)));
                }
            },
        };
        let (tx, rx) = mpsc::unbounded_channel::<Progress>();
        let publisher = tokio::spawn(publish_progress(
            self.reporter.clone(),
            about.clone(),
            self.delivery.traceparent().map(str::to_owned),
            rx,
        ));
        let observe = move |p: &Progress| {
            let _ = tx.send(p.clone());
        };
        let mut engine = Engine::new(self.shared.kube.clone(), self.shared.config.engine.clone());
        let result = match release {
            Ok(release) => engine.deploy(release, &observe, superseded).await,
            Err(revision) => {
                let target = deploy::Rollback {
                    name: intent.release.clone(),
                    namespace: intent.namespace.clone(),
                    to: revision,
                    intent_id: Some(intent.id.clone()),
                    health: intent.health.clone(),
                };
                engine.rollback(target, &observe, superseded).await
            }
        };
        drop(observe);
        let final_stored = publisher.await.unwrap_or(false);
        Ok(self.conclude(result, final_stored, about).await)
    }

    /// The ending of an engine run.
    async fn conclude(
        &self,
        result: Result<Report, DeployError>,
        final_stored: bool,
        about: &About,
    ) -> Ending {
        match result {
            Ok(report) if report.replayed => {
                // Already done before (a redelivery after a crash): say so again, same event id.
                let mut event = about.outcome(report.phase, true);
                event.revision = report.revision;
                event.reason = report.reason;
                self.report_then(&event, about, Ending::Reported).await
            }
            Ok(_) if final_stored => Ending::Reported,
            Ok(_) => Ending::HandBack,
            Err(DeployError::Locked { holder, until, .. }) => {
                tracing::info!(%holder, %until, "release locked by another operation; retrying later");
                Ending::Retry(Duration::from_secs(5))
            }
            Err(DeployError::Cancelled) => self.superseded(about).await,
            Err(error) => {
                let event = about.ended(Phase::Failed, error.to_string());
                self.report_then(&event, about, Ending::Reported).await
            }
        }
    }

    /// The release an intent with manifests deploys, once every object is inside the
    /// agent's allowlist.
    async fn release(&self, intent: &DeployIntent) -> Result<Release, Unready> {
        let rendered = manifests(&self.shared.bundles, intent).await?;
        let engine = Engine::new(self.shared.kube.clone(), self.shared.config.engine.clone());
        let refused = match engine
            .disallowed(
                &rendered,
                &intent.namespace,
                &self.shared.config.allow,
                Instant::now() + Duration::from_secs(intent.health.timeout_secs),
            )
            .await
        {
            Ok(refused) => refused,
            // A kind no one serves is the intent's problem; anything else is the cluster's.
            Err(e @ DeployError::UnknownKind { .. }) => {
                return Err(Unready::Refused(e.to_string()));
            }
            Err(e) => {
                return Err(Unready::Failed(format!(
                    "cannot check the manifests against the allowlist: {e}"
                )));
            }
        };
        if !refused.is_empty() {
            return Err(Unready::Refused(format!(
                "outside this agent's allowlist: {}",
                refused.join("; ")
            )));
        }
        // Probes may reach only the release's own Services or the agent's --probe-allow hosts.
        let probes = deploy::probe_refusals(
            &intent.health.http_probes,
            &rendered.objects,
            &intent.namespace,
            &self.shared.config.engine.probes,
        );
        if !probes.is_empty() {
            return Err(Unready::Refused(probes.join("; ")));
        }
        Ok(Release {
            name: intent.release.clone(),
            namespace: intent.namespace.clone(),
            version: intent.version.clone(),
            intent_id: Some(intent.id.clone()),
            rendered,
            health: intent.health.clone(),
            rollback: intent.rollback.clone(),
            rollback_of: None,
            wait: true,
        })
    }
}

/// Stores the engine's phase events in order; `true` when the final one was stored.
async fn publish_progress(
    reporter: Reporter,
    about: About,
    traceparent: Option<String>,
    mut progress: mpsc::UnboundedReceiver<Progress>,
) -> bool {
    let mut final_stored = false;
    while let Some(p) = progress.recv().await {
        let mut event = about.outcome(p.phase, p.terminal);
        event.revision = Some(p.revision);
        event.reason = p.reason;
        event.resources = p.resources;
        let stored = reporter
            .report(&event, &about, traceparent.as_deref())
            .await;
        final_stored |= stored == Reported::Stored && p.terminal;
    }
    final_stored
}

/// The intent's manifests: inline, or a bundle fetched from the object store and verified
/// against its digest; a bundle declared over [`MAX_BUNDLE_BYTES`] is refused before the
/// download, and at most [`deploy::limits::MAX_OBJECTS_PER_RELEASE`] objects are accepted.
async fn manifests(bundles: &Bundles, intent: &DeployIntent) -> Result<Rendered, Unready> {
    let objects = match &intent.manifests {
        Manifests::Inline { objects, .. } => objects.clone(),
        Manifests::Revision { .. } => {
            return Err(Unready::Refused(
                "a revision is not a set of manifests".into(),
            ));
        }
        Manifests::Bundle { digest, size } => {
            check_bundle_size(digest, *size).map_err(Unready::Refused)?;
            let bytes = match bundles.get(digest, MAX_BUNDLE_BYTES).await {
                Ok(bytes) => bytes,
                Err(e @ bus::BusError::Bundle { .. }) => {
                    return Err(Unready::Unavailable(format!(
                        "bundle {digest} cannot be fetched: {e}"
                    )));
                }
                Err(e) => {
                    return Err(Unready::Refused(format!(
                        "bundle {digest} cannot be fetched: {e}"
                    )));
                }
            };
            let actual = deploy::render::sha256(&bytes);
            if &actual != digest {
                return Err(Unready::Refused(format!(
                    "bundle digest mismatch: expected {digest}, got {actual}"
                )));
            }
            serde_json::from_slice::<Vec<serde_json::Value>>(&bytes).map_err(|e| {
                Unready::Refused(format!(
                    "bundle {digest} is not a JSON list of objects: {e}"
                ))
            })?
        }
    };
    check_object_count(objects.len()).map_err(Unready::Refused)?;
    Ok(Rendered::from_objects(objects))
}
