//! The web dashboard at `/`: the clusters x releases matrix, the rollouts with their waves, and
//! a live event stream, server-rendered, kept live by a small script (shipped in the binary)
//! fed by Server-Sent Events. Any identity may look (`read` is enough). The token is pasted
//! into a sign-in form once (never in a URL); the browser then holds only a random session id
//! in an HttpOnly, SameSite=Strict cookie, which maps to the identity with the `read` role
//! (`session`), and is accepted for GETs only.

mod render;
mod session;

pub(crate) use session::Sessions;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use bus::{EventFeed, EventQuery, Since};
use futures::StreamExt as _;
use jiff::Timestamp;

use super::api::AppState;

/// The cookie that carries the session id after sign-in.
pub(crate) const COOKIE: &str = "coxswain_session";
/// How far back the page's first event list reaches, and how long it may take to read.
const RECENT_EVENTS: Duration = Duration::from_secs(600);
const RECENT_PATIENCE: Duration = Duration::from_secs(2);
/// Live event streams open at once (each holds a JetStream consumer).
pub(crate) const MAX_LIVE_STREAMS: usize = 64;

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

/// The session id a request's cookie carries, if it is well formed (64 hex digits).
pub(crate) fn cookie_session(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all(header::COOKIE);
    cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| {
            v.len() == 64
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .map(str::to_owned)
}

/// The `Set-Cookie` value of session `id`: `Secure` when the coordinator serves TLS or sits
/// behind a proxy that does (`X-Forwarded-Proto: https`).
fn session_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let seconds = session::LIFETIME.as_secs();
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={seconds}{secure}")
}

/// Whether a browser says the request came from another site (`Sec-Fetch-Site`), or its
/// `Origin` names another host than the one it was sent to: a cross-site form post.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        host,
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        _ => false,
    }
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
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignIn>,
) -> Response {
    if cross_site(&headers) {
        tracing::info!(target: "audit", identity = "-", action = "POST /login", result = 403, "api call");
        return html(
            StatusCode::FORBIDDEN,
            "<p>sign in from the dashboard's own page</p>".into(),
        );
    }
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
    let Some(id) = state.sessions().open(&who) else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<p>too many sessions; try again later</p>".into(),
        );
    };
    tracing::info!(target: "audit", identity = who, action = "POST /login", result = 303, "api call");
    let forwarded_tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = session_cookie(&id, state.serves_tls() || forwarded_tls);
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: ends the session and forgets its cookie.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            "<p>sign out from the dashboard's own page</p>".into(),
        );
    }
    if let Some(id) = cookie_session(&headers) {
        state.sessions().close(&id);
    }
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
    let recent = recent_events(&state, since).await;
    html(
        StatusCode::OK,
        render::page(&who.0, &matrix, &rollouts, &render::events(&recent)),
    )
}

/// The events since `since`, each with the cluster its subject names (the only cluster name an
/// agent cannot choose), within [`RECENT_PATIENCE`]; empty when there is no event stream yet.
async fn recent_events(state: &AppState, since: Timestamp) -> Vec<proto::Outcome> {
    let read = async {
        let mut feed =
            EventFeed::open(state.bus(), &EventQuery::default(), Since::Time(since)).await?;
        let mut events = Vec::new();
        while let Ok(Ok(Some(event))) =
            tokio::time::timeout(Duration::from_millis(200), feed.next_with_subject()).await
        {
            events.extend(as_published(event));
        }
        Ok::<_, bus::BusError>(events)
    };
    match tokio::time::timeout(RECENT_PATIENCE, read).await {
        Ok(Ok(events)) => events,
        _ => Vec::new(),
    }
}

/// An event as shown: only when the cluster and release in its body are the ones its subject
/// names.
fn as_published(
    (subject, event): (proto::ReleaseSubject, proto::Outcome),
) -> Option<proto::Outcome> {
    (subject.cluster == event.cluster && subject.release == event.release).then_some(event)
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
    let Ok(permit) = state.live_streams().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_LIVE_STREAMS} live streams are open"),
        )
            .into_response();
    };
    let feed = match EventFeed::open(state.bus(), &EventQuery::default(), Since::New).await {
        Ok(feed) => feed,
        Err(e) => return unavailable(&e),
    };
    let changes = state.rollout_changes();
    let stream = futures::stream::unfold((feed, changes), |(mut feed, mut changes)| async move {
        let next = tokio::select! {
            event = feed.next_with_subject() => match event {
                Ok(Some(published)) => match as_published(published) {
                    Some(e) => Live::Outcome(Box::new(e)),
                    None => Live::Rollout(String::new()),
                },
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
        .take_until(state.shutdown().cancelled_owned())
        // The permit is released when the stream is dropped.
        .inspect(move |_| {
            let _ = &permit;
        });
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
    fn the_session_cookie_round_trips_and_only_a_well_formed_id_is_read() {
        let id = "0123456789abcdef".repeat(4);
        let cookie = session_cookie(&id, true);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
        let value = cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        let both = format!("other=1; {value}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&both).unwrap());
        assert_eq!(cookie_session(&headers).as_deref(), Some(id.as_str()));
        for bad in [
            "coxswain_session=zz",
            "coxswain_session=+1",
            "coxswain_session=0123",
        ] {
            headers.insert(header::COOKIE, HeaderValue::from_static(bad));
            assert_eq!(cookie_session(&headers), None, "{bad}");
        }
    }

    #[test]
    fn a_form_posted_from_another_site_is_cross_site() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        let evil = [
            ("origin", "https://evil.example"),
            ("host", "coxswain:8080"),
        ];
        assert!(cross_site(&headers(&evil)));
        let same = [
            ("origin", "http://coxswain:8080"),
            ("host", "coxswain:8080"),
        ];
        assert!(!cross_site(&headers(&same)));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
    }
}
