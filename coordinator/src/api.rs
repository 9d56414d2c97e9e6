//! The HTTP JSON API for CI and people, and the loop that resumes rollouts no live
//! coordinator drives (after a restart, or when another instance died).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jiff::Timestamp;
use proto::{
    ClusterProgress, RevertTarget, Rollout, RolloutRequest, RolloutStatus, SCHEMA_VERSION, Validate,
};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::driver::{self, Context};
use crate::{CoordinatorError, plan, store};

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// HTTP address.
    pub listen: SocketAddr,
    /// Bearer token every API call must carry; `None` turns authentication off.
    pub token: Option<String>,
    /// This instance's name (two coordinators share rollouts by claims).
    pub instance: String,
    /// How long a claim on a rollout lasts without renewal.
    pub claim: Duration,
}

#[derive(Clone)]
struct AppState {
    ctx: Arc<Context>,
    clusters: async_nats::jetstream::kv::Store,
    states: async_nats::jetstream::kv::Store,
    token: Option<Arc<str>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Serves the API and drives rollouts until `shutdown`.
pub async fn run(
    config: CoordinatorConfig,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let js = async_nats::jetstream::new(nats);
    let topology = bus::ensure_topology(&js, &bus::TopologyConfig::default()).await?;
    let ctx = Arc::new(Context {
        js,
        rollouts: topology.rollouts.clone(),
        instance: config.instance.clone(),
        claim: config.claim,
        driving: Mutex::new(HashSet::new()),
    });
    let tasks = TaskTracker::new();
    let state = AppState {
        ctx: Arc::clone(&ctx),
        clusters: topology.clusters.clone(),
        states: topology.state.clone(),
        token: config.token.map(Arc::from),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    };
    tasks.spawn(resume(state.clone()));
    let api = Router::new()
        .route("/v1/rollouts", get(list_rollouts).post(submit))
        .route("/v1/rollouts/{id}", get(get_rollout))
        .route("/v1/clusters", get(clusters))
        .route("/v1/releases", get(releases))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| CoordinatorError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| CoordinatorError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(%addr, instance = config.instance, "coordinator listening");
    let stop = shutdown.clone();
    let served = axum::serve(listener, api)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "http server failed");
    }
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(given.as_bytes(), token.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(request).await
}

fn rollout_id(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = digest
        .as_ref()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("r{hex}")
}

fn spawn_driver(state: &AppState, id: &str) {
    let fresh = state
        .ctx
        .driving
        .lock()
        .map(|mut d| d.insert(id.to_owned()))
        .unwrap_or(false);
    if fresh {
        let (ctx, id, stop) = (
            Arc::clone(&state.ctx),
            id.to_owned(),
            state.shutdown.clone(),
        );
        let span = tracing::info_span!("rollout", rollout = id);
        state
            .tasks
            .spawn(driver::drive(ctx, id, stop).instrument(span));
    }
}

async fn submit(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let request: RolloutRequest = match proto::decode(Some("application/json"), &body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid rollout request: {e}"),
            );
        }
    };
    if let Err(problems) = request.validate() {
        let list: Vec<String> = problems
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "invalid rollout request", "problems": list})),
        )
            .into_response();
    }
    let id = rollout_id(&request.idempotency_key);
    match store::rollout(&state.ctx.rollouts, &id).await {
        Ok(Some((existing, _))) => return (StatusCode::OK, Json(existing)).into_response(),
        Ok(None) => {}
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
    let registry = match store::clusters(&state.clusters).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let targets = plan::targets(&registry, &request.selector);
    if targets.is_empty() {
        let selector: Vec<String> = request
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "selector {} matches no registered cluster; nothing would be deployed",
                selector.join(",")
            ),
        );
    }
    let history = match store::rollouts(&state.ctx.rollouts).await {
        Ok(h) => h,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    for required in &request.requires {
        let passed = history.iter().any(|r| {
            r.request.release == request.release
                && r.request.environment == *required
                && r.request.version == request.version
                && r.status == RolloutStatus::Succeeded
        });
        if !passed {
            return error(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "promotion gate: version {} of {} has not succeeded in {required}; deploy it there first",
                    request.version, request.release
                ),
            );
        }
    }
    let revert_to = history
        .iter()
        .filter(|r| {
            r.request.release == request.release
                && r.request.environment == request.environment
                && r.status == RolloutStatus::Succeeded
        })
        .max_by_key(|r| r.created_at)
        .map(|r| RevertTarget {
            rollout_id: r.id.clone(),
            version: r.request.version.clone(),
            manifests: r.request.manifests.clone(),
        });
    let waves = plan::waves(&registry, &targets, &request.waves);
    let clusters = waves
        .iter()
        .enumerate()
        .flat_map(|(i, wave)| wave.iter().map(move |c| (c.clone(), i)))
        .map(|(c, wave)| {
            (
                c,
                ClusterProgress {
                    wave,
                    intent_id: None,
                    phase: None,
                    terminal: false,
                    reason: None,
                    revert_intent_id: None,
                    revert_phase: None,
                },
            )
        })
        .collect();
    let now = Timestamp::now();
    let rollout = Rollout {
        schema_version: SCHEMA_VERSION,
        id: id.clone(),
        request,
        waves,
        clusters,
        current_wave: 0,
        status: RolloutStatus::Running,
        reason: None,
        revert_to,
        owner: String::new(),
        owner_until: None,
        created_at: now,
        updated_at: now,
    };
    match store::create(&state.ctx.rollouts, &rollout).await {
        Ok(true) => {
            tracing::info!(rollout = id, release = rollout.request.release, environment = rollout.request.environment,
                version = rollout.request.version, waves = ?rollout.waves, "rollout accepted");
            spawn_driver(&state, &id);
            (StatusCode::CREATED, Json(rollout)).into_response()
        }
        // The same key raced in from another request: answer with what is stored.
        Ok(false) => match store::rollout(&state.ctx.rollouts, &id).await {
            Ok(Some((existing, _))) => (StatusCode::OK, Json(existing)).into_response(),
            _ => error(StatusCode::CONFLICT, "rollout created concurrently; retry"),
        },
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn get_rollout(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match store::rollout(&state.ctx.rollouts, &id).await {
        Ok(Some((r, _))) => Json(r).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no rollout {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct RolloutFilter {
    release: Option<String>,
    environment: Option<String>,
}

async fn list_rollouts(
    State(state): State<AppState>,
    Query(filter): Query<RolloutFilter>,
) -> Response {
    match store::rollouts(&state.ctx.rollouts).await {
        Ok(mut all) => {
            all.retain(|r| {
                filter
                    .release
                    .as_ref()
                    .is_none_or(|x| *x == r.request.release)
                    && filter
                        .environment
                        .as_ref()
                        .is_none_or(|x| *x == r.request.environment)
            });
            all.sort_by_key(|r| r.created_at);
            Json(all).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn clusters(State(state): State<AppState>) -> Response {
    match store::clusters(&state.clusters).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn releases(State(state): State<AppState>) -> Response {
    match store::states(&state.states).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Every couple of seconds, picks up running rollouts nobody drives: after a restart, or when
/// the instance that claimed one stopped renewing its claim.
async fn resume(state: AppState) {
    loop {
        match store::rollouts(&state.ctx.rollouts).await {
            Ok(all) => {
                let now = Timestamp::now();
                for r in all.iter().filter(|r| r.status == RolloutStatus::Running) {
                    let free = r.owner == state.ctx.instance
                        || r.owner_until.is_none_or(|until| until <= now);
                    if free {
                        spawn_driver(&state, &r.id);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list rollouts to resume"),
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
