//! Driving one rollout: observe its clusters' outcome events, decide (`plan::decide`), act
//! (publish intents, advance, revert, finish), and write the record back with compare-and-set
//! so only the claiming coordinator moves it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, BusError, EventFeed, EventQuery, Rollouts, Since};
use jiff::{SignedDuration, Timestamp};
use proto::{
    ContentType, DeployIntent, Manifests, Outcome, Rollout, RolloutStatus, SCHEMA_VERSION,
};
use tokio_util::sync::CancellationToken;

use crate::plan::{self, Step};
use crate::verify::{self, Verdict};

/// What every driver shares.
pub(crate) struct Context {
    pub(crate) bus: Bus,
    pub(crate) rollouts: Rollouts,
    /// The manifest bundles.
    pub(crate) bundles: bus::Bundles,
    /// This coordinator instance.
    pub(crate) instance: String,
    /// How long a claim on a rollout lasts without renewal.
    pub(crate) claim: Duration,
    /// Rollouts this instance drives now.
    pub(crate) driving: Mutex<HashSet<String>>,
    /// Signs every intent, when set.
    pub(crate) signer: Option<Arc<proto::Signer>>,
    /// How long a published intent stays valid.
    pub(crate) intent_ttl: Duration,
    /// How long beyond the health timeout a cluster may stay silent.
    pub(crate) outcome_grace: Duration,
    /// Events ignored because their clusters did not agree (`coordinator_events_rejected_total`).
    pub(crate) events_rejected: std::sync::atomic::AtomicU64,
    /// API latency and wave durations.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Every rollout, kept current by a watch (the gate's history).
    pub(crate) index: crate::index::Index,
    /// The platform policy (freeze windows).
    pub(crate) policy: Arc<crate::policy::Policy>,
}

/// Why a driver stopped.
#[derive(Debug, thiserror::Error)]
enum DriveError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// An intent could not be signed.
    #[error("cannot sign the intent")]
    Sign(#[from] proto::SignatureError),
}

/// Latest event per intent id.
type Seen = HashMap<String, Outcome>;

fn intent(
    r: &Rollout,
    cluster: &str,
    id: String,
    revert: bool,
    ttl: Duration,
    manifests: &Manifests,
) -> DeployIntent {
    let req = &r.request;
    let version = match (&r.revert_to, revert) {
        (Some(target), true) => target.version.clone(),
        _ => req.version.clone(),
    };
    let manifests = manifests.clone();
    DeployIntent {
        schema_version: SCHEMA_VERSION,
        id,
        cluster: cluster.to_owned(),
        release: req.release.clone(),
        namespace: req.namespace.clone(),
        environment: req.environment.clone(),
        version,
        images: Default::default(),
        manifests,
        health: req.health.clone(),
        rollback: req.rollback.clone(),
        requested_by: match &req.break_glass {
            Some(why) => format!("{} (break glass: {why})", req.requested_by),
            None => req.requested_by.clone(),
        },
        created_at: Timestamp::now(),
        rollout_id: Some(r.id.clone()),
        expires_at: SignedDuration::try_from(ttl)
            .ok()
            .and_then(|ttl| Timestamp::now().checked_add(ttl).ok()),
    }
}

/// Folds what the clusters reported into the record; `true` when anything changed.
fn apply_events(r: &mut Rollout, seen: &Seen) -> bool {
    let mut changed = false;
    for c in r.clusters.values_mut() {
        if let Some(e) = c.intent_id.as_ref().and_then(|id| seen.get(id))
            && !c.terminal
            && (c.phase != Some(e.phase) || c.terminal != e.terminal)
        {
            c.phase = Some(e.phase);
            c.terminal = e.terminal;
            c.reason.clone_from(&e.reason);
            changed = true;
        }
        if let Some(e) = c.revert_intent_id.as_ref().and_then(|id| seen.get(id))
            && e.terminal
            && c.revert_phase != Some(e.phase)
        {
            c.revert_phase = Some(e.phase);
            changed = true;
        }
    }
    changed
}

/// Remembers an event; `true` when it is a final one (worth a new decision at once). A final
/// event is never replaced by a later, non-final one.
fn remember(seen: &mut Seen, event: Outcome) -> bool {
    if seen.get(&event.intent_id).is_some_and(|old| old.terminal) {
        return false;
    }
    let terminal = event.terminal;
    seen.insert(event.intent_id.clone(), event);
    terminal
}

/// How long events keep being gathered after a final one before the record is written.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Bundles up to this size travel inside the intents (a message holds 1 MiB).
const INLINE_UP_TO: u64 = 256 * 1024;

/// Most intents sent and not yet confirmed by JetStream.
const IN_FLIGHT: usize = 1024;

/// Ends a running rollout with `status` (compare-and-set, retried on a conflict); a rollout
/// already final is left as it is.
pub(crate) async fn finish(
    ctx: &Context,
    id: &str,
    status: RolloutStatus,
    reason: &str,
) -> Result<(), BusError> {
    for _ in 0..10 {
        let Some((mut r, revision)) = ctx.rollouts.get(id).await? else {
            return Ok(());
        };
        if r.status.is_final() {
            return Ok(());
        }
        r.status = status;
        r.reason = Some(reason.to_owned());
        r.updated_at = Timestamp::now();
        if ctx.rollouts.update(&r, revision).await?.is_ok() {
            return Ok(());
        }
    }
    tracing::warn!(rollout = id, "rollout kept changing; not marked {status:?}");
    Ok(())
}

/// Tells observers (`promotion_withdrawn` on `coxswain.notice.<release>`) when `by` (a
/// rollback, or a failed rollout) withdrew the pass of `passed` through `by`'s environment;
/// nothing when it did not. A failure to publish is logged.
pub(crate) async fn announce_withdrawal(
    ctx: &Context,
    passed: &proto::RolloutRequest,
    by: &Rollout,
) {
    let release = passed.release.clone();
    let history = ctx
        .index
        .select(&ctx.rollouts, |h| {
            h.request.release == release && h.id != by.id
        })
        .await;
    let mut history = match history {
        Ok(history) => history,
        Err(error) => {
            tracing::warn!(%error, release, "cannot tell whether a promotion was withdrawn");
            return;
        }
    };
    // `by` as it stands now: the index may not have its last write yet.
    history.push(by.clone());
    let environment = by.request.environment.clone();
    let Some(reason) = plan::withdrawal(&history, passed, &environment) else {
        return;
    };
    let notice = proto::Notice {
        schema_version: proto::SCHEMA_VERSION,
        kind: proto::NoticeKind::PromotionWithdrawn,
        release,
        version: passed.version.clone(),
        content_digest: passed.content_digest.clone(),
        environment,
        rollout_id: by.id.clone(),
        reason,
        at: Timestamp::now(),
    };
    match ctx.bus.publish_notice(&notice).await {
        Ok(_) => {
            tracing::warn!(target: "audit", release = notice.release, version = notice.version,
            environment = notice.environment, rollout = notice.rollout_id, reason = notice.reason, "promotion withdrawn")
        }
        Err(error) => {
            tracing::warn!(%error, release = notice.release, "cannot publish the promotion_withdrawn notice")
        }
    }
}

/// Ends, as superseded, the running rollouts of the same release to the same environment
/// that came before `newer`: their drivers stop at their next pass and revert nothing, so no
/// cluster is rolled back under the newer rollout's feet.
pub(crate) async fn supersede_older(ctx: &Context, newer: &Rollout) {
    let same = |r: &Rollout| {
        !r.status.is_final()
            && r.id != newer.id
            && r.request.release == newer.request.release
            && r.request.environment == newer.request.environment
            && r.created_at <= newer.created_at
    };
    let older = match ctx.index.select(&ctx.rollouts, same).await {
        Ok(older) => older,
        Err(error) => {
            tracing::warn!(%error, "cannot look for the rollouts this one supersedes");
            return;
        }
    };
    for r in older {
        let reason = format!("superseded by rollout {}", newer.id);
        match finish(ctx, &r.id, RolloutStatus::Superseded, &reason).await {
            Ok(()) => tracing::info!(rollout = r.id, newer = newer.id, "rollout superseded"),
            Err(error) => {
                tracing::warn!(rollout = r.id, %error, "cannot mark the rollout superseded")
            }
        }
    }
}

/// Drives the rollout until it is final, another instance owns it, or `shutdown`.
pub(crate) async fn drive(ctx: Arc<Context>, id: String, shutdown: CancellationToken) {
    let result = Driver::start(&ctx, &id).await;
    match result {
        Ok(Some(mut driver)) => {
            if let Err(error) = driver.run(&shutdown).await {
                tracing::warn!(rollout = id, %error, "rollout driver stopped; another pass resumes it");
            }
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(rollout = id, %error, "rollout driver stopped; another pass resumes it");
        }
    }
    if let Ok(mut driving) = ctx.driving.lock() {
        driving.remove(&id);
    }
}

/// One rollout being driven by this instance: what it acts with, and what it has heard.
struct Driver<'a> {
    actor: Actor<'a>,
    feed: EventFeed,
    /// Events read from the feed, with their subject's cluster, not yet judged.
    heard: Vec<(String, Outcome)>,
    seen: Seen,
}

/// The acting half of a driver (claims, publishes, record changes); it holds no feed, so it
/// can be shared across awaits.
struct Actor<'a> {
    ctx: &'a Context,
    id: &'a str,
}

/// What one pass over the record ended with.
enum Pass {
    /// Nothing to do until events arrive.
    Wait,
    /// Decide again at once.
    Again,
    /// Final, or someone else's: stop driving.
    Stop,
}

impl<'a> Driver<'a> {
    /// Opens the feed of every event of the rollout's release since it began; `None` when
    /// there is no such rollout.
    async fn start(ctx: &'a Context, id: &'a str) -> Result<Option<Self>, BusError> {
        let Some((first, _)) = ctx.rollouts.get(id).await? else {
            return Ok(None);
        };
        let since = first
            .created_at
            .checked_sub(SignedDuration::from_secs(5))
            .unwrap_or(first.created_at);
        bus::trace::continue_trace(&tracing::Span::current(), first.traceparent.as_deref());
        let query = EventQuery::release(&first.request.release);
        let feed = EventFeed::open(&ctx.bus, &query, Since::Time(since)).await?;
        Ok(Some(Self {
            actor: Actor { ctx, id },
            feed,
            heard: Vec::new(),
            seen: Seen::new(),
        }))
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), DriveError> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match self.pass().await? {
                Pass::Stop => return Ok(()),
                Pass::Again => {}
                Pass::Wait => {
                    if !self.take_events(shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads the record, claims it, decides, acts, and writes it back.
    async fn pass(&mut self) -> Result<Pass, DriveError> {
        let Some((mut r, revision)) = self.actor.ctx.rollouts.get(self.actor.id).await? else {
            return Ok(Pass::Stop);
        };
        if r.status.is_final() || !self.actor.claim(&mut r) {
            return Ok(Pass::Stop);
        }
        self.judge_heard(&r);
        apply_events(&mut r, &self.seen);
        plan::expire_silent(&mut r, Timestamp::now(), self.actor.ctx.outcome_grace);
        let actor = &self.actor;
        let step = match actor.leave_queue(&mut r).await? {
            Some(step) => step,
            None => {
                let step = actor.still_eligible(plan::decide(&r), &r).await?;
                let step = actor.held_by_freeze(step, &mut r);
                actor.after_dependencies(step, &mut r).await?
            }
        };
        tracing::debug!(
            rollout = actor.id,
            ?step,
            wave = r.current_wave,
            "rollout step"
        );
        let wait = step == Step::Wait;
        actor.act(step, &mut r).await?;
        r.updated_at = Timestamp::now();
        match actor.ctx.rollouts.update(&r, revision).await? {
            Ok(_) if wait => Ok(Pass::Wait),
            Ok(_) => {
                let failed = matches!(r.status, RolloutStatus::Failed | RolloutStatus::Reverted);
                if failed && !plan::is_rollback(&r) {
                    announce_withdrawal(actor.ctx, &r.request, &r).await;
                }
                Ok(Pass::Again)
            }
            Err(bus::Conflict) => Ok(Pass::Again),
        }
    }

    /// Keeps the events heard that are verified for this rollout (`verify::check`), counts
    /// and logs the ones that do not add up, and holds back those for intents not yet
    /// recorded.
    fn judge_heard(&mut self, r: &Rollout) {
        let mut later = Vec::new();
        for (subject_cluster, event) in std::mem::take(&mut self.heard) {
            // Drift events report on a deployed revision, not on an intent's way.
            if event.phase.is_drift() {
                continue;
            }
            match verify::check(r, &subject_cluster, &event) {
                Verdict::Use => {
                    remember(&mut self.seen, event);
                }
                Verdict::NotYet => later.push((subject_cluster, event)),
                Verdict::NotOurs => {}
                Verdict::Reject(reason) => {
                    self.actor
                        .ctx
                        .events_rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(rollout = self.actor.id, %reason, "event ignored: its clusters do not agree");
                }
            }
        }
        self.heard = later;
    }

    /// Takes in events until a final one arrives, then whatever else arrives within
    /// [`BATCH_WINDOW`] (a wave of thousands of clusters ends in a burst, judged and written
    /// in a few passes, not one per event); or for at most a second (to renew the claim).
    /// `false` on shutdown.
    async fn take_events(&mut self, shutdown: &CancellationToken) -> bool {
        let mut until = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                next = tokio::time::timeout_at(until, self.feed.next_with_subject()) => match next {
                    Ok(Ok(Some((subject, event)))) => {
                        if event.terminal {
                            until = until.min(tokio::time::Instant::now() + BATCH_WINDOW);
                        }
                        self.heard.push((subject.cluster, event));
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "event feed error");
                        return true;
                    }
                    Ok(Ok(None)) | Err(_) => return true,
                },
            }
        }
    }
}

impl Actor<'_> {
    /// Takes or renews this instance's claim; `false` when another live instance holds it.
    fn claim(&self, r: &mut Rollout) -> bool {
        let now = Timestamp::now();
        if r.owner != self.ctx.instance && r.owner_until.is_some_and(|until| until > now) {
            tracing::info!(
                rollout = self.id,
                owner = r.owner,
                "another coordinator drives this rollout"
            );
            return false;
        }
        r.owner = self.ctx.instance.clone();
        let claim =
            SignedDuration::try_from(self.ctx.claim).unwrap_or(SignedDuration::from_secs(15));
        r.owner_until = now.checked_add(claim).ok();
        true
    }

    async fn act(&self, step: Step, r: &mut Rollout) -> Result<(), DriveError> {
        match step {
            Step::Publish(clusters) => self.publish(r, &clusters, false).await?,
            Step::Revert(clusters) => self.publish(r, &clusters, true).await?,
            Step::Advance => {
                self.wave_ended(r, "succeeded");
                r.current_wave += 1;
            }
            Step::Succeed => {
                self.wave_ended(r, "succeeded");
                r.status = RolloutStatus::Succeeded;
                tracing::info!(rollout = self.id, "rollout succeeded");
            }
            Step::Finish(status, reason) => {
                self.wave_ended(r, "failed");
                tracing::warn!(rollout = self.id, status = ?status, reason, "rollout halted");
                r.status = status;
                r.reason = Some(reason);
            }
            Step::Wait => {}
        }
        Ok(())
    }

    /// The promotion gate for `r` against the rollouts of its release as they stand now.
    async fn gate_now(&self, r: &Rollout) -> Result<Result<(), plan::Refusal>, DriveError> {
        let release = r.request.release.clone();
        let history = self
            .ctx
            .index
            .select(&self.ctx.rollouts, |h| h.request.release == release)
            .await?;
        Ok(plan::gate(&history, &r.request, &r.policy.requires))
    }

    /// `step`, unless it starts the next wave of a rollout whose promotion was withdrawn since
    /// it began (the version failed or was rolled back in a required environment): then the
    /// rollout halts before that wave, with the reason.
    async fn still_eligible(&self, step: Step, r: &Rollout) -> Result<Step, DriveError> {
        if step != Step::Advance || r.policy.requires.is_empty() {
            return Ok(step);
        }
        let release = r.request.release.clone();
        Ok(match self.gate_now(r).await? {
            Ok(()) => step,
            Err(refusal) => {
                tracing::warn!(target: "audit", rollout = self.id, release, reason = %refusal, "promotion withdrawn: rollout halted before its next wave");
                Step::Finish(
                    RolloutStatus::Failed,
                    format!("halted before wave {}: {refusal}", r.current_wave + 2),
                )
            }
        })
    }

    /// For a queued rollout, what to do: wait while its environment is frozen (the end may have
    /// moved) or an older queued rollout of the environment waits; then, the gate passing at
    /// that moment, start (`None`: decide as for any running rollout), or fail with the reason.
    async fn leave_queue(&self, r: &mut Rollout) -> Result<Option<Step>, DriveError> {
        if r.status != RolloutStatus::Queued {
            return Ok(None);
        }
        let env = r.request.environment.clone();
        let freeze = self
            .ctx
            .policy
            .environments
            .get(&env)
            .map(|e| e.freeze())
            .unwrap_or_default();
        if let Some((until, reason)) = freeze.frozen_at(Timestamp::now()) {
            r.queued_until = Some(until);
            r.reason = Some(format!("queued until {until}: {reason}"));
            return Ok(Some(Step::Wait));
        }
        let (id, created) = (r.id.clone(), r.created_at);
        let ahead = self
            .ctx
            .index
            .select(&self.ctx.rollouts, |o| {
                o.status == RolloutStatus::Queued
                    && o.request.environment == env
                    && o.id != id
                    && (o.created_at, &o.id) < (created, &id)
            })
            .await?;
        if let Some(first) = ahead.iter().min_by_key(|o| o.created_at) {
            r.reason = Some(format!("queued behind rollout {}", first.id));
            return Ok(Some(Step::Wait));
        }
        if let Err(refusal) = self.gate_now(r).await? {
            return Ok(Some(Step::Finish(
                RolloutStatus::Failed,
                format!("the freeze window ended, but {refusal}"),
            )));
        }
        tracing::info!(
            rollout = self.id,
            environment = env,
            "freeze window over: rollout starts"
        );
        r.status = RolloutStatus::Running;
        r.reason = None;
        r.queued_until = None;
        Ok(None)
    }

    /// `step`, unless it starts the next wave while the environment is frozen (and the rollout
    /// did not break glass): the running wave has finished, the next waits for the window's
    /// end, and the record says so.
    fn held_by_freeze(&self, step: Step, r: &mut Rollout) -> Step {
        const HELD: &str = "held before wave";
        // A wave starts on an advance, or on the first publish of a wave nothing was sent to.
        let wave_unstarted = || {
            r.clusters
                .values()
                .filter(|c| c.wave == r.current_wave)
                .all(|c| c.intent_id.is_none())
        };
        let starts_a_wave = match &step {
            Step::Advance => Some(r.current_wave + 2),
            Step::Publish(_) if wave_unstarted() => Some(r.current_wave + 1),
            _ => None,
        };
        let frozen = match starts_a_wave {
            Some(_) if r.request.break_glass.is_none() => self
                .ctx
                .policy
                .environments
                .get(&r.request.environment)
                .and_then(|e| e.freeze().frozen_at(Timestamp::now())),
            _ => None,
        };
        match (frozen, starts_a_wave) {
            (Some((until, reason)), Some(wave)) => {
                r.reason = Some(format!("{HELD} {wave} until {until}: {reason}"));
                Step::Wait
            }
            _ => {
                if r.reason.as_deref().is_some_and(|why| why.starts_with(HELD)) {
                    r.reason = None;
                }
                step
            }
        }
    }

    /// `step`, with the clusters a publish would reach narrowed to those where every rollout
    /// this one depends on (`after`) succeeded: a cluster where one failed is marked blocked
    /// (it never starts; the rest go on), one where one is still running waits.
    async fn after_dependencies(&self, step: Step, r: &mut Rollout) -> Result<Step, DriveError> {
        let Step::Publish(clusters) = step else {
            return Ok(step);
        };
        if r.request.after.is_empty() {
            return Ok(Step::Publish(clusters));
        }
        let ids = r.request.after.clone();
        let mut deps = self
            .ctx
            .index
            .select(&self.ctx.rollouts, |d| ids.contains(&d.id))
            .await?;
        // One the index has not heard of yet (written by another coordinator a moment ago)
        // is read from the bucket.
        for id in &ids {
            if !deps.iter().any(|d| d.id == *id)
                && let Some((dep, _)) = self.ctx.rollouts.get(id).await?
            {
                deps.push(dep);
            }
        }
        let mut ready = Vec::new();
        for cluster in clusters {
            match plan::dependencies_on(r, &deps, &cluster) {
                Ok(true) => ready.push(cluster),
                Ok(false) => {}
                Err(why) => {
                    tracing::warn!(
                        rollout = self.id,
                        cluster,
                        reason = why,
                        "not started on this cluster"
                    );
                    if let Some(c) = r.clusters.get_mut(&cluster) {
                        c.blocked = Some(why);
                    }
                }
            }
        }
        Ok(if ready.is_empty() {
            Step::Wait
        } else {
            Step::Publish(ready)
        })
    }

    /// Counts the current wave's duration, from its first intent sent, in the metrics.
    fn wave_ended(&self, r: &Rollout, outcome: &'static str) {
        let first_sent = r
            .clusters
            .values()
            .filter(|c| c.wave == r.current_wave)
            .filter_map(|c| c.sent_at)
            .min();
        if let Some(sent) = first_sent {
            let took = Timestamp::now().duration_since(sent).unsigned_abs();
            self.ctx
                .metrics
                .wave_ended(&r.request.environment, outcome, took);
        }
    }

    /// Publishes a deploy (or revert) intent to each cluster and records its id. The intents
    /// are pipelined: up to [`IN_FLIGHT`] are sent, then their acks awaited, so a wave of
    /// thousands costs a few round trips, not one per cluster. An intent counts as sent only
    /// once JetStream confirmed it; a failure leaves the rest for the next pass (their
    /// message ids make a repeat harmless).
    async fn publish(
        &self,
        r: &mut Rollout,
        clusters: &[String],
        revert: bool,
    ) -> Result<(), DriveError> {
        let manifests = match (&r.revert_to, revert) {
            (Some(target), true) => &target.manifests,
            _ => &r.request.manifests,
        };
        let manifests = self.for_intents(manifests).await?;
        for batch in clusters.chunks(IN_FLIGHT) {
            let mut sent = Vec::with_capacity(batch.len());
            for cluster in batch {
                let intent_id = if revert {
                    plan::revert_intent_id(&r.id, cluster)
                } else {
                    plan::intent_id(&r.id, cluster)
                };
                let i = intent(
                    r,
                    cluster,
                    intent_id.clone(),
                    revert,
                    self.ctx.intent_ttl,
                    &manifests,
                );
                let signature = match &self.ctx.signer {
                    Some(signer) => Some(signer.sign(&i)?),
                    None => None,
                };
                // Each intent continues the rollout's trace in a span of its own.
                let span =
                    tracing::info_span!("publish intent", cluster = cluster.as_str(), revert);
                let traceparent = bus::trace::traceparent_of(&span, r.traceparent.as_deref());
                let pending = self
                    .ctx
                    .bus
                    .send_signed_intent(&i, signature.as_ref(), ContentType::MsgPack, traceparent)
                    .await?;
                sent.push((cluster, intent_id, pending));
            }
            for (cluster, intent_id, pending) in sent {
                pending.stored().await?;
                self.record_sent(r, cluster, intent_id, revert);
            }
        }
        Ok(())
    }

    /// The manifests the intents carry: a bundle up to [`INLINE_UP_TO`] bytes is fetched once
    /// and sent inline (with the digest of its objects), so thousands of agents do not each
    /// fetch it from the object store; a larger one stays a reference the agents fetch.
    async fn for_intents(&self, manifests: &Manifests) -> Result<Manifests, DriveError> {
        let Manifests::Bundle { digest, size } = manifests else {
            return Ok(manifests.clone());
        };
        if *size > INLINE_UP_TO {
            return Ok(manifests.clone());
        }
        let bytes = self.ctx.bundles.get(digest, INLINE_UP_TO).await?;
        let objects: Vec<serde_json::Value> = match serde_json::from_slice(&bytes) {
            Ok(objects) if proto::sha256_digest(&bytes) == *digest => objects,
            // Not what the digest promised: the agents check it themselves and refuse it.
            _ => return Ok(manifests.clone()),
        };
        Ok(Manifests::Inline {
            digest: proto::manifests_digest(&objects),
            objects,
        })
    }

    /// Records the intent a cluster was sent.
    fn record_sent(&self, r: &mut Rollout, cluster: &str, intent_id: String, revert: bool) {
        if let Some(c) = r.clusters.get_mut(cluster) {
            c.sent_at = Some(Timestamp::now());
            if revert {
                c.revert_intent_id = Some(intent_id);
            } else {
                c.intent_id = Some(intent_id);
            }
        }
        if revert {
            tracing::warn!(
                rollout = self.id,
                cluster,
                "reverting a cluster an earlier wave updated"
            );
        } else {
            tracing::info!(
                rollout = self.id,
                cluster,
                wave = r.current_wave,
                "intent published"
            );
        }
    }
}
