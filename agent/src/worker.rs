//! One intent, end to end: check it, wait for its release's turn, deploy it, report every
//! phase, and ack only once the final event is stored.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use bus::Delivery;
use deploy::{DeployError, Engine, Progress, Release, Rendered};
use proto::{DeployIntent, Manifests, Phase, Validate};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AgentConfig;
use crate::reporter::{Event, Reporter};

/// What every worker shares.
pub(crate) struct Shared {
    pub(crate) metrics: Arc<crate::Metrics>,
    pub(crate) config: AgentConfig,
    pub(crate) reporter: Reporter,
    pub(crate) kube: kube::Client,
    pub(crate) bundles: ObjectStore,
    pub(crate) js: async_nats::jetstream::Context,
}

/// Tells the dispatcher a worker is done: `(release, id)`.
pub(crate) type Done = mpsc::UnboundedSender<(String, u64)>;

/// How one intent ended, for the ack.
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

/// Handles one delivery.
#[allow(clippy::too_many_arguments, reason = "the dispatcher's hand-over")]
pub(crate) async fn run(
    shared: Arc<Shared>,
    delivery: Delivery,
    release_lock: Arc<Mutex<()>>,
    superseded: CancellationToken,
    permit: OwnedSemaphorePermit,
    done: Done,
    id: u64,
    release_name: Option<String>,
) {
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
    let ending = tokio::select! {
        () = shared.reporter.hard_stop.cancelled() => Ending::HandBack,
        ending = handle(&shared, &delivery, &release_lock, &superseded, received) => ending,
    };
    shared.metrics.in_flight(-1);
    acking.cancel();
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
    drop(permit);
    if let Some(release) = release_name {
        let _ = done.send((release, id));
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

fn event(
    intent: &DeployIntent,
    attempt: u32,
    phase: Phase,
    terminal: bool,
    received: Instant,
) -> Event {
    Event {
        intent_id: intent.id.clone(),
        release: intent.release.clone(),
        namespace: intent.namespace.clone(),
        version: intent.version.clone(),
        requested_by: Some(intent.requested_by.clone()),
        rollout_id: intent.rollout_id.clone(),
        phase,
        terminal,
        revision: None,
        attempt,
        reason: None,
        resources: Vec::new(),
        elapsed: received.elapsed(),
    }
}

async fn reject(
    shared: &Shared,
    delivery: &Delivery,
    intent: Option<&DeployIntent>,
    reason: String,
    received: Instant,
) -> Ending {
    tracing::warn!(%reason, subject = delivery.subject(), "intent rejected");
    let attempt = u32::try_from(delivery.delivery_count()).unwrap_or(u32::MAX);
    let Ok(subject) = delivery.release_subject() else {
        // No release to report on: a message that should never have matched our filter.
        return Ending::Terminate;
    };
    let mut e = match intent {
        Some(i) if i.release == subject.release => {
            event(i, attempt, Phase::Rejected, true, received)
        }
        _ => Event {
            intent_id: format!("seq-{}", delivery.stream_sequence()),
            release: subject.release.clone(),
            namespace: String::new(),
            version: String::new(),
            requested_by: None,
            rollout_id: None,
            phase: Phase::Rejected,
            terminal: true,
            revision: None,
            attempt,
            reason: None,
            resources: Vec::new(),
            elapsed: received.elapsed(),
        },
    };
    e.reason = Some(reason);
    if reporter(shared, delivery)
        .report(&e, delivery.traceparent())
        .await
    {
        Ending::Terminate
    } else {
        Ending::HandBack
    }
}

async fn handle(
    shared: &Shared,
    delivery: &Delivery,
    release_lock: &Mutex<()>,
    superseded: &CancellationToken,
    received: Instant,
) -> Ending {
    let config = &shared.config;
    let attempt = u32::try_from(delivery.delivery_count()).unwrap_or(u32::MAX);
    let intent: DeployIntent = match delivery.decode() {
        Ok(intent) => intent,
        Err(error) => {
            return reject(
                shared,
                delivery,
                None,
                format!("undecodable intent: {error}"),
                received,
            )
            .await;
        }
    };
    let traceparent = delivery.traceparent();
    if let Err(problems) = intent.validate() {
        return reject(
            shared,
            delivery,
            Some(&intent),
            format!("invalid intent: {problems}"),
            received,
        )
        .await;
    }
    let subject_ok = delivery
        .release_subject()
        .is_ok_and(|s| s.cluster == intent.cluster && s.release == intent.release);
    if intent.cluster != config.cluster || !subject_ok {
        return reject(
            shared,
            delivery,
            Some(&intent),
            format!(
                "intent for cluster {} release {} arrived on {}; this agent serves cluster {}",
                intent.cluster,
                intent.release,
                delivery.subject(),
                config.cluster
            ),
            received,
        )
        .await;
    }
    if Some(intent.environment.as_str()) != config.environment() {
        return reject(
            shared,
            delivery,
            Some(&intent),
            format!(
                "intent for environment {} refused: cluster {} is environment {}",
                intent.environment,
                config.cluster,
                config.environment().unwrap_or("?")
            ),
            received,
        )
        .await;
    }
    if !reporter(shared, delivery)
        .report(
            &event(&intent, attempt, Phase::Received, false, received),
            traceparent,
        )
        .await
    {
        return Ending::HandBack;
    }

    // One operation per release at a time, in order; a newer intent may cancel us meanwhile.
    let _turn = tokio::select! {
        turn = release_lock.lock() => turn,
        () = superseded.cancelled() => return report_superseded(shared, delivery, &intent, attempt, received, traceparent).await,
    };
    if newer_intent_exists(shared, delivery).await {
        return report_superseded(shared, delivery, &intent, attempt, received, traceparent).await;
    }

    // What to deploy: manifests, or a revision from the cluster's history (`coxswain rollback`).
    let release = match &intent.manifests {
        Manifests::Revision { revision } => Err(*revision),
        _ => match manifests(shared, &intent).await {
            Ok(rendered) => Ok(Release {
                name: intent.release.clone(),
                namespace: intent.namespace.clone(),
                version: intent.version.clone(),
                intent_id: Some(intent.id.clone()),
                rendered,
                health: intent.health.clone(),
                rollback: intent.rollback.clone(),
                rollback_of: None,
                wait: true,
            }),
            Err(reason) => return reject(shared, delivery, Some(&intent), reason, received).await,
        },
    };

    // The engine reports phases synchronously; a publisher task stores them in order.
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let events_out = reporter(shared, delivery);
    let (intent_for_events, tp) = (intent.clone(), traceparent.map(str::to_owned));
    let publisher = tokio::spawn(async move {
        let mut final_stored = false;
        while let Some(p) = rx.recv().await {
            let mut e = event(&intent_for_events, attempt, p.phase, p.terminal, received);
            e.revision = Some(p.revision);
            e.reason = p.reason;
            e.resources = p.resources;
            let stored = events_out.report(&e, tp.as_deref()).await;
            final_stored |= stored && p.terminal;
        }
        final_stored
    });
    let observe = move |p: &Progress| {
        let _ = tx.send(p.clone());
    };
    let mut engine = Engine::new(shared.kube.clone(), config.engine.clone());
    let result = match release {
        Ok(release) => engine.deploy(release, &observe, superseded).await,
        Err(revision) => {
            engine
                .rollback(
                    &intent.namespace,
                    &intent.release,
                    revision,
                    Some(intent.id.clone()),
                    intent.health.clone(),
                    &observe,
                    superseded,
                )
                .await
        }
    };
    drop(observe);
    let final_stored = publisher.await.unwrap_or(false);

    match result {
        Ok(report) if report.replayed => {
            // Already done before (a redelivery after a crash): say so again, same event id.
            let mut e = event(&intent, attempt, report.phase, true, received);
            e.revision = report.revision;
            e.reason = report.reason;
            if reporter(shared, delivery).report(&e, traceparent).await {
                Ending::Reported
            } else {
                Ending::HandBack
            }
        }
        Ok(_) if final_stored => Ending::Reported,
        Ok(_) => Ending::HandBack,
        Err(DeployError::Locked { holder, until, .. }) => {
            tracing::info!(%holder, %until, "release locked by another operation; retrying later");
            Ending::Retry(Duration::from_secs(5))
        }
        Err(DeployError::Cancelled) => {
            report_superseded(shared, delivery, &intent, attempt, received, traceparent).await
        }
        Err(error) => {
            let mut e = event(&intent, attempt, Phase::Failed, true, received);
            e.reason = Some(error.to_string());
            if reporter(shared, delivery).report(&e, traceparent).await {
                Ending::Reported
            } else {
                Ending::HandBack
            }
        }
    }
}

async fn report_superseded(
    shared: &Shared,
    delivery: &Delivery,
    intent: &DeployIntent,
    attempt: u32,
    received: Instant,
    traceparent: Option<&str>,
) -> Ending {
    let mut e = event(intent, attempt, Phase::Superseded, true, received);
    e.reason = Some("a newer intent for this release arrived".into());
    if reporter(shared, delivery).report(&e, traceparent).await {
        Ending::Reported
    } else {
        Ending::HandBack
    }
}

async fn newer_intent_exists(shared: &Shared, delivery: &Delivery) -> bool {
    match bus::latest_intent_sequence(&shared.js, delivery.subject()).await {
        Ok(Some(latest)) => latest > delivery.stream_sequence(),
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, "cannot check for a newer intent; deploying this one");
            false
        }
    }
}

/// The intent's manifests: inline, or a bundle fetched from the object store and verified
/// against its digest.
async fn manifests(shared: &Shared, intent: &DeployIntent) -> Result<Rendered, String> {
    let objects = match &intent.manifests {
        Manifests::Inline { objects, .. } => objects.clone(),
        Manifests::Revision { .. } => return Err("a revision is not a set of manifests".into()),
        Manifests::Bundle { digest, .. } => {
            let mut object = shared
                .bundles
                .get(digest)
                .await
                .map_err(|e| format!("bundle {digest} cannot be fetched: {e}"))?;
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("bundle {digest} cannot be read: {e}"))?;
            let actual = deploy::render::sha256(&bytes);
            if &actual != digest {
                return Err(format!(
                    "bundle digest mismatch: expected {digest}, got {actual}"
                ));
            }
            serde_json::from_slice::<Vec<serde_json::Value>>(&bytes)
                .map_err(|e| format!("bundle {digest} is not a JSON list of objects: {e}"))?
        }
    };
    Ok(Rendered::from_objects(objects))
}

/// The reporter for one delivery: events in the encoding of the intent (MessagePack when the
/// intent's own encoding is unknown).
fn reporter(shared: &Shared, delivery: &Delivery) -> Reporter {
    let content_type =
        proto::ContentType::from_header(delivery.header(proto::header::CONTENT_TYPE))
            .unwrap_or_default();
    shared.reporter.replying_in(content_type)
}
