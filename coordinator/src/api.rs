//! The HTTP JSON API for CI and people, and the loop that resumes rollouts no live
//! coordinator drives (after a restart, or when another instance died).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bus::{Bundles, Bus, BusError, Registry, ReleaseStates};
use jiff::Timestamp;
use proto::{RolloutStatus, Validate};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::CoordinatorError;
use crate::dashboard;
use crate::driver::{self, Context};
use crate::identity::Identity;
use crate::index::Index;
use crate::plan::{self, Refusal};
use crate::policy::{self, Policy};

/// The largest manifest bundle `POST /v1/bundles` accepts.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;

/// The largest body any other call accepts (a rollout request carries manifests inline only
/// up to 256 KiB; larger ones go through `/v1/bundles`).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// HTTP address.
    pub listen: SocketAddr,
    /// The identities that may call the API, by bearer token; `None` turns authentication
    /// off (only behind something that authenticates).
    pub tokens: Option<crate::Tokens>,
    /// This instance's name (two coordinators share rollouts by claims).
    pub instance: String,
    /// How long a claim on a rollout lasts without renewal.
    pub claim: Duration,
    /// The platform policy: environments, their clusters, waves, gates, what they accept.
    pub policy: Policy,
    /// The key every per-cluster intent is signed with; `None` publishes unsigned intents,
    /// which only agents run with `--insecure-accept-unsigned` accept.
    pub signer: Option<Arc<proto::Signer>>,
    /// How long a published intent stays valid (its signed `expires_at`).
    pub intent_ttl: Duration,
    /// How long beyond the release's health timeout a cluster may take to report a final
    /// outcome before it fails its wave.
    pub outcome_grace: Duration,
    /// Connection limit and header timeout of the HTTP server.
    pub limits: crate::ServerLimits,
    /// Serve the API over TLS (`--tls-cert`, `--tls-key`); plain HTTP when `None`.
    pub tls: Option<crate::ServerTls>,
}

#[derive(Clone)]
pub(crate) struct AppState {
    ctx: Arc<Context>,
    policy: Arc<Policy>,
    registry: Registry,
    states: ReleaseStates,
    bundles: Bundles,
    tokens: Option<Arc<crate::Tokens>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Every rollout, kept current by a watch.
    index: Index,
    /// The API is served over TLS (session cookies are `Secure`).
    tls: bool,
    /// The dashboard's sign-ins.
    sessions: dashboard::Sessions,
    /// Permits for the dashboard's live event streams.
    live_streams: Arc<tokio::sync::Semaphore>,
}

/// What the dashboard reads through the state.
impl AppState {
    pub(crate) fn tokens(&self) -> Option<&crate::Tokens> {
        self.tokens.as_deref()
    }

    pub(crate) fn serves_tls(&self) -> bool {
        self.tls
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.ctx.bus
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn states(&self) -> &ReleaseStates {
        &self.states
    }

    pub(crate) async fn all_rollouts(&self) -> Result<Vec<proto::Rollout>, BusError> {
        self.index.select(&self.ctx.rollouts, |_| true).await
    }

    pub(crate) fn rollout_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.index.subscribe()
    }

    pub(crate) fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub(crate) fn sessions(&self) -> &dashboard::Sessions {
        &self.sessions
    }

    pub(crate) fn live_streams(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::clone(&self.live_streams)
    }
}

/// The caller's identity name (`-` when authentication is off), for the dashboard.
#[derive(Debug, Clone)]
pub(crate) struct CallerName(pub(crate) String);

/// Serves the API and drives rollouts until `shutdown`.
pub async fn run(
    config: CoordinatorConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let topology = bus.wait_for_topology(shutdown.cancelled()).await?;
    let index = Index::default();
    let ctx = Arc::new(Context {
        bus,
        rollouts: topology.rollouts.clone(),
        bundles: topology.bundles.clone(),
        instance: config.instance.clone(),
        claim: config.claim,
        driving: Mutex::new(HashSet::new()),
        signer: config.signer,
        intent_ttl: config.intent_ttl,
        outcome_grace: config.outcome_grace,
        events_rejected: std::sync::atomic::AtomicU64::new(0),
        metrics: crate::metrics::Metrics::default(),
        index: index.clone(),
        policy: Arc::new(config.policy.clone()),
    });
    let tasks = TaskTracker::new();
    let state = AppState {
        ctx,
        policy: Arc::new(config.policy),
        registry: topology.registry,
        states: topology.states,
        bundles: topology.bundles,
        tokens: config.tokens.map(Arc::new),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        index,
        tls: config.tls.is_some(),
        sessions: dashboard::Sessions::default(),
        live_streams: Arc::new(tokio::sync::Semaphore::new(dashboard::MAX_LIVE_STREAMS)),
    };
    tasks.spawn(crate::index::keep_current(
        state.index.clone(),
        topology.rollouts,
        shutdown.clone(),
    ));
    tasks.spawn(resume(state.clone()));
    let (listener, addr) = bind(config.listen).await?;
    tracing::info!(%addr, instance = config.instance, environments = ?state.policy.environments.keys().collect::<Vec<_>>(),
        "coordinator listening");
    httpd::serve(
        listener,
        router(state),
        config.limits,
        config.tls,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// The API's listener on `addr`, and the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), CoordinatorError> {
    let failed = |source| CoordinatorError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/rollouts", get(list_rollouts).post(submit))
        .route("/v1/rollouts/{id}", get(get_rollout))
        .route("/v1/rollbacks", post(rollback))
        .route(
            "/v1/bundles",
            post(put_bundle).layer(DefaultBodyLimit::max(MAX_BUNDLE_BYTES)),
        )
        .route("/v1/clusters", get(clusters))
        .route("/v1/releases", get(releases))
        .route("/", get(dashboard::page))
        .route("/ui/matrix", get(dashboard::matrix_fragment))
        .route("/ui/rollouts", get(dashboard::rollouts_fragment))
        .route("/ui/events", get(dashboard::live))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(state.clone(), traced))
        .layer(middleware::from_fn(refuse_oversized))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .route("/login", post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

/// A NATS failure as an answer: a bad key is the caller's mistake (400), anything else an
/// outage worth retrying (503).
fn bus_error(e: &BusError) -> Response {
    let code = match e {
        BusError::InvalidKey { .. } | BusError::Subject(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

/// Who is calling: the identity its bearer token names; `None` when authentication is off.
#[derive(Debug, Clone)]
struct Caller(Option<Identity>);

impl Caller {
    /// The refusal (403) of a caller that may not deploy to `environment`, if it may not.
    fn refuse_deploy_to(&self, environment: &str) -> Option<Response> {
        match &self.0 {
            Some(who) if !who.may_deploy(environment) => Some(error(
                StatusCode::FORBIDDEN,
                format!(
                    "identity {} may not deploy to {environment} (its roles: {})",
                    who.name,
                    who.roles_text()
                ),
            )),
            _ => None,
        }
    }

    /// The refusal (403) of a caller that may deploy nowhere, if it may not.
    fn refuse_deploy_anywhere(&self) -> Option<Response> {
        match &self.0 {
            Some(who) if !who.may_deploy_somewhere() => Some(error(
                StatusCode::FORBIDDEN,
                format!(
                    "identity {} may not upload bundles (its roles: {})",
                    who.name,
                    who.roles_text()
                ),
            )),
            _ => None,
        }
    }

    /// The refusal (403) of a request its caller may not make: a deploy to an environment it
    /// may not deploy to, or breaking glass without the role.
    fn refuse_request(&self, request: &proto::RolloutRequest) -> Option<Response> {
        self.refuse_deploy_to(&request.environment).or_else(|| {
            request
                .break_glass
                .as_ref()
                .and_then(|_| self.refuse_break_glass())
        })
    }

    /// The refusal (403) of a caller that asks to break glass without the role.
    fn refuse_break_glass(&self) -> Option<Response> {
        match &self.0 {
            Some(who) if !who.may_break_glass() => Some(error(
                StatusCode::FORBIDDEN,
                format!(
                    "identity {} may not break glass (its roles: {}); only a break-glass role starts a rollout inside a freeze window",
                    who.name,
                    who.roles_text()
                ),
            )),
            _ => None,
        }
    }

    /// The name `requested_by` records: the identity's, whatever the request said.
    fn requested_by(&self, claimed: String) -> String {
        self.0.as_ref().map_or(claimed, |who| who.name.clone())
    }
}

/// Who a request is: the identity of its bearer token, else (for a GET only, so a cookie can
/// never make a browser change anything) the read-only identity of its dashboard session.
fn identify(state: &AppState, tokens: &crate::Tokens, request: &Request) -> Option<Identity> {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(token) => tokens.authenticate(token).cloned(),
        None if request.method() == axum::http::Method::GET => {
            dashboard::cookie_session(request.headers()).and_then(|id| state.sessions.identity(&id))
        }
        None => None,
    }
}

/// Authenticates the bearer token (or a read's session cookie), then writes one audit line per
/// call: identity, action, result. The dashboard's page answers an unknown caller with its
/// sign-in form.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let action = format!("{} {}", request.method(), request.uri().path());
    let caller = match &state.tokens {
        None => Caller(None),
        Some(tokens) => match identify(&state, tokens, &request) {
            Some(who) => Caller(Some(who)),
            None => {
                tracing::info!(target: "audit", identity = "-", action, result = 401, "api call");
                if request.uri().path() == "/" {
                    return dashboard::sign_in(None);
                }
                return error(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
            }
        },
    };
    let identity = caller
        .0
        .as_ref()
        .map_or("-", |i| i.name.as_str())
        .to_owned();
    request.extensions_mut().insert(caller);
    request
        .extensions_mut()
        .insert(CallerName(identity.clone()));
    let response = next.run(request).await;
    tracing::info!(target: "audit", identity, action, result = response.status().as_u16(), "api call");
    response
}

/// Refuses (413) a request whose declared `Content-Length` is over its route's limit, naming
/// both, before anything reads it. A body without a length is cut at the same limit while it
/// is read.
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let limit = if request.uri().path() == "/v1/bundles" {
        MAX_BUNDLE_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(size) if size > limit as u64 => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body of {} {} is {size} bytes, over the limit of {limit} bytes",
                request.method(),
                request.uri().path()
            ),
        ),
        _ => next.run(request).await,
    }
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

/// `POST /v1/rollouts`: parse (400), validate (422), answer a known idempotency key with its
/// rollout, admit under the platform policy (422 / 403), plan against the registry and the
/// history (422 / 412), store and drive.
async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(trace): Extension<Trace>,
    body: axum::body::Bytes,
) -> Response {
    let mut request = match policy::decode_request(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Some(refused) = caller.refuse_request(&request) {
        return refused;
    }
    request.requested_by = caller.requested_by(std::mem::take(&mut request.requested_by));
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
    let id = plan::rollout_id(&request.idempotency_key);
    match state.ctx.rollouts.get(&id).await {
        Ok(Some((existing, _))) => return (StatusCode::OK, Json(existing)).into_response(),
        Ok(None) => {}
        Err(e) => return bus_error(&e),
    }
    if let Err(answer) = check_after(&state, &request, &id).await {
        return answer;
    }
    let applied = match state.policy.admit(&request) {
        Ok(applied) => applied,
        Err(refusal) => return refused(&refusal),
    };
    if let Err(answer) = inline_to_bundle(&state, &mut request).await {
        return answer;
    }
    // The gate and the revert target look only at this release's rollouts.
    let release = request.release.clone();
    let history = state
        .index
        .select(&state.ctx.rollouts, |r| r.request.release == release);
    let (registry, history) = match (state.registry.all().await, history.await) {
        (Ok(registry), Ok(history)) => (registry, history),
        (Err(e), _) | (_, Err(e)) => return bus_error(&e),
    };
    match plan::new_rollout(request, applied, &registry, &history, Timestamp::now()) {
        Ok(mut rollout) => {
            queue_if_frozen(&state, &mut rollout);
            create(&state, rollout, trace).await
        }
        Err(refusal) => refused(&refusal),
    }
}

/// `POST /v1/rollbacks`: one cluster's release back to an earlier revision, as a one-cluster
/// rollout whose intent the coordinator signs like any other.
async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(trace): Extension<Trace>,
    body: axum::body::Bytes,
) -> Response {
    let mut request: proto::RollbackRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid rollback request: {e}"),
            );
        }
    };
    if let Err(problems) = request.validate() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid rollback request: {problems}"),
        );
    }
    let cluster = match state.registry.get(&request.cluster).await {
        Ok(c) => c,
        Err(e) => return bus_error(&e),
    };
    // Rolling a cluster back is deploying to its environment.
    let environment = cluster
        .as_ref()
        .and_then(|c| c.labels.get("env"))
        .map_or("", String::as_str);
    if let Some(refused) = caller.refuse_deploy_to(environment) {
        return refused;
    }
    request.requested_by = caller.requested_by(std::mem::take(&mut request.requested_by));
    let release_state = match state.states.get(&request.cluster, &request.release).await {
        Ok(s) => s,
        Err(e) => return bus_error(&e),
    };
    let planned = plan::rollback_rollout(
        request,
        cluster.as_ref(),
        release_state.as_ref(),
        Timestamp::now(),
    );
    match planned {
        Ok(rollout) => {
            let answer = create(&state, rollout.clone(), trace).await;
            if answer.status() == StatusCode::CREATED {
                announce_rollback(&state, rollout);
            }
            answer
        }
        Err(refusal) => refused(&refusal),
    }
}

/// The rollouts a request waits for (`after`) must exist already, and cannot be itself: so
/// no rollout can wait on itself or on a cycle (422 otherwise).
async fn check_after(
    state: &AppState,
    request: &proto::RolloutRequest,
    id: &str,
) -> Result<(), Response> {
    for dep in &request.after {
        let problem = if dep == id {
            format!("after names this rollout itself ({id})")
        } else {
            match state.ctx.rollouts.get(dep).await {
                Ok(Some(_)) => continue,
                Ok(None) => format!("after names rollout {dep}, which does not exist"),
                Err(e) => return Err(bus_error(&e)),
            }
        };
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, problem));
    }
    Ok(())
}

/// A rollout submitted inside a freeze window of its environment is queued until the window
/// ends; one that breaks glass starts anyway, and the audit log says who and why.
fn queue_if_frozen(state: &AppState, rollout: &mut proto::Rollout) {
    let env = &rollout.request.environment;
    let Some(policy) = state.policy.environments.get(env) else {
        return;
    };
    let Some((until, reason)) = policy.freeze().frozen_at(rollout.created_at) else {
        return;
    };
    match &rollout.request.break_glass {
        Some(why) => {
            tracing::warn!(target: "audit", identity = rollout.request.requested_by, rollout = rollout.id,
            environment = env, window = reason, break_glass = why, "break glass: rollout starts inside a freeze window")
        }
        None => {
            rollout.status = RolloutStatus::Queued;
            rollout.queued_until = Some(until);
            rollout.reason = Some(format!("queued until {until}: {reason}"));
        }
    }
}

/// A rollback takes its environment off the version it last succeeded with: tells observers
/// when that withdraws the version's promotion.
fn announce_rollback(state: &AppState, rollback: proto::Rollout) {
    let state = state.clone();
    state.tasks.clone().spawn(async move {
        let (release, env) = (&rollback.request.release, &rollback.request.environment);
        let history = state
            .index
            .select(&state.ctx.rollouts, |h| h.request.release == *release)
            .await
            .unwrap_or_default();
        if let Some(current) = plan::current_pass(&history, release, env) {
            driver::announce_withdrawal(&state.ctx, &current.request, &rollback).await;
        }
    });
}

/// Prometheus metrics of this coordinator.
async fn metrics(State(state): State<AppState>) -> Response {
    let rejected = state
        .ctx
        .events_rejected
        .load(std::sync::atomic::Ordering::Relaxed);
    let text = state
        .ctx
        .metrics
        .render(&state.index.count_by_status(), rejected);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /readyz`: 200 while connected to NATS, 503 with the reason otherwise.
async fn ready(State(state): State<AppState>) -> Response {
    if state.ctx.bus.is_connected() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS").into_response()
    }
}

/// The trace context an API call continues and hands on (its span's, else the caller's).
#[derive(Debug, Clone, Default)]
struct Trace(Option<String>);

/// Runs each API call in a span that continues the caller's `traceparent`, and records its
/// latency by method, route and status.
async fn traced(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let incoming = request
        .headers()
        .get(bus::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let span = tracing::info_span!("api call", method, route);
    bus::trace::continue_trace(&span, incoming.as_deref());
    let trace = Trace(bus::trace::traceparent_of(&span, incoming.as_deref()));
    request.extensions_mut().insert(trace);
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16();
    state
        .ctx
        .metrics
        .api_call(&method, &route, status, started.elapsed());
    response
}

/// A refusal as an answer: an unknown environment or no target is 422, what the environment
/// does not allow 403, the promotion gate 412.
fn refused(refusal: &Refusal) -> Response {
    let code = match refusal {
        Refusal::UnknownEnvironment(_) | Refusal::NoTargets(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::NotAllowed(_) => StatusCode::FORBIDDEN,
        Refusal::Gate(_) => StatusCode::PRECONDITION_FAILED,
    };
    error(code, refusal.to_string())
}

/// Stores a new rollout (continuing the call's trace) and starts its driver; a rollout of the
/// same key that raced in first is answered instead.
async fn create(state: &AppState, mut rollout: proto::Rollout, trace: Trace) -> Response {
    rollout.traceparent = trace.0;
    let id = rollout.id.clone();
    match state.ctx.rollouts.create(&rollout).await {
        Ok(true) => {
            state.index.put(rollout.clone());
            // A queued rollout supersedes the older ones when it leaves the queue.
            if rollout.status != RolloutStatus::Queued {
                driver::supersede_older(&state.ctx, &rollout).await;
            }
            tracing::info!(rollout = id, release = rollout.request.release, environment = rollout.request.environment,
                version = rollout.request.version, content = rollout.request.content_digest,
                wave_sizes = ?rollout.waves.iter().map(Vec::len).collect::<Vec<_>>(),
                excluded = rollout.excluded.len(), "rollout accepted");
            spawn_driver(state, &id);
            let code = if rollout.status == RolloutStatus::Queued {
                StatusCode::ACCEPTED
            } else {
                StatusCode::CREATED
            };
            (code, Json(rollout)).into_response()
        }
        Ok(false) => match state.ctx.rollouts.get(&id).await {
            Ok(Some((existing, _))) => (StatusCode::OK, Json(existing)).into_response(),
            _ => error(StatusCode::CONFLICT, "rollout created concurrently; retry"),
        },
        Err(e) => bus_error(&e),
    }
}

/// Moves inline manifests into the bundle store and leaves the request (and so the rollout
/// record, its listing and every answer) with the bundle's digest and size: a record never
/// holds manifests, Secret data included. The bytes are the ones the digest was computed
/// over, so the agent's check of the fetched bundle is the same check.
async fn inline_to_bundle(
    state: &AppState,
    request: &mut proto::RolloutRequest,
) -> Result<(), Response> {
    let proto::Manifests::Inline { objects, digest } = &request.manifests else {
        return Ok(());
    };
    let bytes = serde_json::to_vec(objects)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("manifests: {e}")))?;
    let actual = proto::sha256_digest(&bytes);
    if actual != *digest {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the inline manifests do not match their digest: {digest} declared, {actual} computed"
            ),
        ));
    }
    state
        .bundles
        .put(&actual, &bytes)
        .await
        .map_err(|e| bus_error(&e))?;
    request.manifests = proto::Manifests::Bundle {
        digest: actual,
        size: bytes.len() as u64,
    };
    Ok(())
}

/// Stores a manifest bundle (a JSON list of objects) under its sha256 digest and answers the
/// digest, so CI never needs NATS.
async fn put_bundle(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = caller.refuse_deploy_anywhere() {
        return refused;
    }
    if let Err(e) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a bundle is a JSON list of objects: {e}"),
        );
    }
    let digest = proto::sha256_digest(&body);
    match state.bundles.put(&digest, &body).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({"digest": digest, "size": body.len()})),
        )
            .into_response(),
        Err(e) => bus_error(&e),
    }
}

async fn get_rollout(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.ctx.rollouts.get(&id).await {
        Ok(Some((r, _))) => Json(r).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no rollout {id}")),
        Err(e) => bus_error(&e),
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
    let wanted = |r: &proto::Rollout| {
        filter
            .release
            .as_ref()
            .is_none_or(|x| *x == r.request.release)
            && filter
                .environment
                .as_ref()
                .is_none_or(|x| *x == r.request.environment)
    };
    match state.index.select(&state.ctx.rollouts, wanted).await {
        Ok(mut all) => {
            all.sort_by_key(|r| r.created_at);
            Json(all).into_response()
        }
        Err(e) => bus_error(&e),
    }
}

async fn clusters(State(state): State<AppState>) -> Response {
    match state.registry.all().await {
        Ok(c) => Json(c).into_response(),
        Err(e) => bus_error(&e),
    }
}

async fn releases(State(state): State<AppState>) -> Response {
    match state.states.all().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => bus_error(&e),
    }
}

/// Every couple of seconds, picks up running rollouts nobody drives: after a restart, or when
/// the instance that claimed one stopped renewing its claim. Read from the index (the bucket
/// itself only while the index is not ready).
async fn resume(state: AppState) {
    loop {
        let running = match state.index.running() {
            Some(running) => Ok(running),
            None => state.ctx.rollouts.all().await.map(|all| {
                all.into_iter()
                    .filter(|r| r.status == RolloutStatus::Running)
                    .map(|r| (r.id, r.owner, r.owner_until))
                    .collect()
            }),
        };
        match running {
            Ok(running) => {
                let now = Timestamp::now();
                for (id, owner, until) in running {
                    let free = owner == state.ctx.instance || until.is_none_or(|u| u <= now);
                    if free {
                        spawn_driver(&state, &id);
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
