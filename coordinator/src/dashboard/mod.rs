//! The web dashboard at `/`: the clusters x releases matrix, the rollouts with their waves, and
//! a live event stream, server-rendered, kept live by a small script (shipped in the binary)
//! fed by Server-Sent Events. Any identity may look (`read` is enough). The token is pasted
//! into a sign-in form once and then travels in an HttpOnly, SameSite=Strict cookie, never in
//! a URL; a cookie only ever authorizes reads.

mod render;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use bus::{EventFeed, EventQuery, Since};
use futures::StreamExt as _;
use jiff::Timestamp;

use super::api::AppState;

/// The cookie that carries the token (hex-encoded) after sign-in.
pub(crate) const COOKIE: &str = "coxswain_session";
/// How long a sign-in lasts.
const SESSION_SECONDS: u32 = 12 * 3600;
/// How far back the page's first event list reaches.
const RECENT_EVENTS: Duration = Duration::from_secs(3600);

/// What the page may load: its own script, style and event stream, nothing inline, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(body),
    )
        .into_response()
}

/// The sign-in page, 401.
pub(crate) fn sign_in(problem: Option<&str>) -> Response {
    html(StatusCode::UNAUTHORIZED, render::login(problem))
}

/// The token a request's session cookie carries, if any.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all(header::COOKIE);
    let value = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)?;
    let bytes = (0..value.len() / 2)
        .map(|i| u8::from_str_radix(value.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The `Set-Cookie` value of a session for `token` (`Secure` when served over TLS).
fn session_cookie(token: &str, secure: bool) -> String {
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={hex}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}")
}

/// The sign-in form's body.
#[derive(serde::Deserialize)]
pub(crate) struct SignIn {
    token: String,
}

/// `POST /login`: a known token sets the session cookie and goes to `/`; anything else is
/// the form again, 401. Audited like any call, without the token.
pub(crate) async fn login(
    State(state): State<AppState>,
    axum::Form(form): axum::Form<SignIn>,
) -> Response {
    let who = match state.tokens() {
        None => Some("-".to_owned()),
        Some(tokens) => tokens
            .authenticate(form.token.trim())
            .map(|i| i.name.clone()),
    };
    let Some(who) = who else {
        tracing::info!(target: "audit", identity = "-", action = "POST /login", result = 401, "api call");
        return sign_in(Some("That token is not known to this coordinator."));
    };
    tracing::info!(target: "audit", identity = who, action = "POST /login", result = 303, "api call");
    let cookie = session_cookie(form.token.trim(), state.serves_tls());
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: forgets the session cookie.
pub(crate) async fn logout() -> Response {
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, gone),
        ],
    )
        .into_response()
}

/// `GET /`: the whole page, rendered now.
pub(crate) async fn page(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<super::api::CallerName>,
) -> Response {
    let now = Timestamp::now();
    let (matrix, rollouts) = match (matrix(&state, now).await, rollouts(&state, now).await) {
        (Ok(m), Ok(r)) => (m, r),
        (Err(e), _) | (_, Err(e)) => return unavailable(&e),
    };
    let since = now
        .checked_sub(jiff::SignedDuration::try_from(RECENT_EVENTS).unwrap_or_default())
        .unwrap_or(now);
    let recent =
        match EventFeed::open(state.bus(), &EventQuery::default(), Since::Time(since)).await {
            Ok(feed) => feed
                .backlog(Duration::from_secs(2))
                .await
                .unwrap_or_default(),
            // No event stream yet: nothing was ever deployed.
            Err(_) => Vec::new(),
        };
    html(
        StatusCode::OK,
        render::page(&who.0, &matrix, &rollouts, &render::events(&recent)),
    )
}

fn unavailable(e: &bus::BusError) -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "<p>cannot read the fleet from NATS: {}</p>",
            render::esc(&e.to_string())
        ),
    )
}

async fn matrix(state: &AppState, now: Timestamp) -> Result<String, bus::BusError> {
    let (clusters, states) = tokio::try_join!(state.registry().all(), state.states().all())?;
    Ok(render::matrix(&clusters, &states, now))
}

async fn rollouts(state: &AppState, now: Timestamp) -> Result<String, bus::BusError> {
    let all = state.all_rollouts().await?;
    Ok(render::rollouts(&all, now))
}

/// `GET /ui/matrix`: the matrix alone, for the script to swap in.
pub(crate) async fn matrix_fragment(State(state): State<AppState>) -> Response {
    match matrix(&state, Timestamp::now()).await {
        Ok(m) => html(StatusCode::OK, m),
        Err(e) => unavailable(&e),
    }
}

/// `GET /ui/rollouts`: the rollouts alone, for the script to swap in.
pub(crate) async fn rollouts_fragment(State(state): State<AppState>) -> Response {
    match rollouts(&state, Timestamp::now()).await {
        Ok(r) => html(StatusCode::OK, r),
        Err(e) => unavailable(&e),
    }
}

/// What the live stream carries: an outcome event, or word that a rollout changed.
enum Live {
    Outcome(Box<proto::Outcome>),
    Rollout(String),
}

/// `GET /ui/events`: Server-Sent Events, `outcome` (the event's JSON, as on NATS) for every
/// event from now on, and `rollout` (its id) whenever a rollout record changes; it ends when
/// the coordinator stops.
pub(crate) async fn live(State(state): State<AppState>) -> Response {
    let feed = match EventFeed::open(state.bus(), &EventQuery::default(), Since::New).await {
        Ok(feed) => feed,
        Err(e) => return unavailable(&e),
    };
    let changes = state.rollout_changes();
    let stream = futures::stream::unfold((feed, changes), |(mut feed, mut changes)| async move {
        let next = tokio::select! {
            event = feed.next() => match event {
                Ok(Some(e)) => Live::Outcome(Box::new(e)),
                _ => return None,
            },
            changed = changes.recv() => match changed {
                Ok(id) => Live::Rollout(id),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Live::Rollout(String::new()),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((next, (feed, changes)))
    });
    let stream = stream
        .map(|live| match live {
            Live::Outcome(e) => Event::default().event("outcome").json_data(&*e),
            Live::Rollout(id) => Ok(Event::default().event("rollout").data(id)),
        })
        .take_until(state.shutdown().cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `GET /ui/app.js` and `/ui/app.css`: the script and style, shipped in the binary.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("app.js"))
}

pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("app.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_session_cookie_round_trips_any_token() {
        let token = "a;b c=\"d\"é";
        let cookie = session_cookie(token, true);
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.ends_with("; Secure")
        );
        let value = cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {value}")).unwrap(),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some(token));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("coxswain_session=zz"),
        );
        assert_eq!(cookie_token(&headers), None);
    }
}
