//! Driving one rollout: observe its clusters' outcome events, decide (`plan::decide`), act
//! (publish intents, advance, revert, finish), and write the record back with compare-and-set
//! so only the claiming coordinator moves it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use proto::{ContentType, DeployIntent, Outcome, Rollout, RolloutStatus, SCHEMA_VERSION};
use tokio_util::sync::CancellationToken;

use crate::plan::{self, Step};
use crate::store::{self, StoreError};

/// What every driver shares.
pub(crate) struct Context {
    pub(crate) js: jetstream::Context,
    pub(crate) rollouts: async_nats::jetstream::kv::Store,
    /// This coordinator instance.
    pub(crate) instance: String,
    /// How long a claim on a rollout lasts without renewal.
    pub(crate) claim: Duration,
    /// Rollouts this instance drives now.
    pub(crate) driving: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Latest event per intent id.
type Seen = HashMap<String, Outcome>;

fn intent(r: &Rollout, cluster: &str, id: String, revert: bool) -> DeployIntent {
    let req = &r.request;
    let (version, manifests) = match (&r.revert_to, revert) {
        (Some(target), true) => (target.version.clone(), target.manifests.clone()),
        _ => (req.version.clone(), req.manifests.clone()),
    };
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
        requested_by: req.requested_by.clone(),
        created_at: Timestamp::now(),
        rollout_id: Some(r.id.clone()),
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

/// Drives the rollout until it is final, another instance owns it, or `shutdown`.
pub(crate) async fn drive(ctx: Arc<Context>, id: String, shutdown: CancellationToken) {
    let result = run(&ctx, &id, &shutdown).await;
    if let Err(error) = result {
        tracing::warn!(rollout = id, %error, "rollout driver stopped; another pass resumes it");
    }
    if let Ok(mut driving) = ctx.driving.lock() {
        driving.remove(&id);
    }
}

async fn run(ctx: &Context, id: &str, shutdown: &CancellationToken) -> Result<(), String> {
    let Some((first, _)) = store::rollout(&ctx.rollouts, id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    // Every event of this release since the rollout began, as it arrives.
    let events = ctx
        .js
        .get_stream(proto::stream::EVENTS)
        .await
        .map_err(|e| e.to_string())?;
    let since = first
        .created_at
        .checked_sub(SignedDuration::from_secs(5))
        .unwrap_or(first.created_at);
    let start =
        async_nats::datetime::parse_rfc3339(&since.to_string()).map_err(|e| e.to_string())?;
    let feed = events
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("coxswain.event.*.{}", first.request.release),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = feed.messages().await.map_err(|e| e.to_string())?;
    let mut seen = Seen::new();

    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let Some((mut r, revision)) = store::rollout(&ctx.rollouts, id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        if r.status.is_final() {
            return Ok(());
        }
        let now = Timestamp::now();
        if r.owner != ctx.instance && r.owner_until.is_some_and(|until| until > now) {
            tracing::info!(
                rollout = id,
                owner = r.owner,
                "another coordinator drives this rollout"
            );
            return Ok(());
        }
        r.owner = ctx.instance.clone();
        r.owner_until = now
            .checked_add(
                SignedDuration::try_from(ctx.claim).unwrap_or(SignedDuration::from_secs(15)),
            )
            .ok();
        apply_events(&mut r, &seen);
        let step = plan::decide(&r);
        tracing::debug!(rollout = id, ?step, wave = r.current_wave, "rollout step");
        let mut wait = false;
        match &step {
            Step::Publish(clusters) => {
                for cluster in clusters {
                    let intent_id = plan::intent_id(&r.id, cluster);
                    let i = intent(&r, cluster, intent_id.clone(), false);
                    bus::publish_intent(&ctx.js, &i, ContentType::MsgPack, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(c) = r.clusters.get_mut(cluster) {
                        c.intent_id = Some(intent_id);
                    }
                    tracing::info!(
                        rollout = id,
                        cluster,
                        wave = r.current_wave,
                        "intent published"
                    );
                }
            }
            Step::Advance => r.current_wave += 1,
            Step::Succeed => {
                r.status = RolloutStatus::Succeeded;
                tracing::info!(rollout = id, "rollout succeeded");
            }
            Step::Revert(clusters) => {
                for cluster in clusters {
                    let intent_id = plan::revert_intent_id(&r.id, cluster);
                    let i = intent(&r, cluster, intent_id.clone(), true);
                    bus::publish_intent(&ctx.js, &i, ContentType::MsgPack, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(c) = r.clusters.get_mut(cluster) {
                        c.revert_intent_id = Some(intent_id);
                    }
                    tracing::warn!(
                        rollout = id,
                        cluster,
                        "reverting a cluster an earlier wave updated"
                    );
                }
            }
            Step::Finish(status, reason) => {
                r.status = *status;
                r.reason = Some(reason.clone());
                tracing::warn!(rollout = id, status = ?status, reason, "rollout halted");
            }
            Step::Wait => wait = true,
        }
        r.updated_at = Timestamp::now();
        match store::update(&ctx.rollouts, &r, revision).await {
            Ok(_) => {}
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.to_string()),
        }
        if wait {
            // Take in what arrived; wake at least every second to renew the claim.
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    next = tokio::time::timeout_at(until, messages.next()) => match next {
                        Ok(Some(Ok(m))) => {
                            let ct = m.headers.as_ref().and_then(|h| h.get(proto::header::CONTENT_TYPE)).map(|v| v.as_str().to_owned());
                            if let Ok(o) = proto::decode::<Outcome>(ct.as_deref(), &m.payload) {
                                let keep = seen.get(&o.intent_id).is_some_and(|old| old.terminal);
                                if !keep {
                                    let terminal = o.terminal;
                                    seen.insert(o.intent_id.clone(), o);
                                    if terminal {
                                        break;
                                    }
                                }
                            }
                        }
                        Ok(Some(Err(error))) => {
                            tracing::warn!(%error, "event feed error");
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        }
    }
}
