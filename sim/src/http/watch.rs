//! Watches: the initial list (or a resume from a resourceVersion), then every matching change
//! from the store's event log, streamed line by line until the timeout. The lock is taken for
//! each read of the log, never across the wait for the next change.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ApiRequest, Collection};
use crate::api_error::ApiError;
use crate::cluster::Cluster;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Event;

/// A watch with no `timeoutSeconds` ends after this long; clients re-watch.
const DEFAULT_WATCH: Duration = Duration::from_secs(30 * 60);

/// What a watch sends to one client.
struct WatchState {
    cluster: Arc<Cluster>,
    resource: (String, String),
    api_version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    cursor: u64,
    pending: VecDeque<Bytes>,
    deadline: Instant,
    done: bool,
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What a watch request asks for.
struct Params {
    /// `timeoutSeconds`.
    timeout: Duration,
    /// `resourceVersion` to resume after; `None` for now.
    from: Option<u64>,
    /// Start with an `ADDED` event per existing object.
    send_initial: bool,
    /// `sendInitialEvents=true`: a bookmark marks the end of the initial events.
    bookmark: bool,
}

impl Params {
    fn parse(req: &ApiRequest) -> Result<Self, ApiError> {
        let timeout = req
            .param("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map_or(DEFAULT_WATCH, Duration::from_secs);
        let from: Option<u64> =
            match req.param("resourceVersion") {
                None | Some("" | "0") => None,
                Some(rv) => Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        let send_initial = req
            .param("sendInitialEvents")
            .map_or(from.is_none(), |v| v == "true");
        Ok(Self {
            timeout,
            from,
            send_initial,
            bookmark: req.param("sendInitialEvents") == Some("true"),
        })
    }
}

/// A watch on a collection: a stream of JSON lines, one event each.
pub(super) fn watch(
    at: &Collection,
    labels: LabelSelector,
    fields: FieldSelector,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let (rt, ns) = (at.rt, at.ns);
    let params = Params::parse(req)?;
    let mut pending = VecDeque::new();
    let (cursor, expired) = at.cluster.read(|s| {
        let now = s.resource_version();
        if params.send_initial {
            for item in s.list(rt, ns, &labels, &fields) {
                pending.push_back(watch_line("ADDED", &item));
            }
        }
        let expired = params.from.and_then(|rv| s.events_since(rv).err());
        let cursor = params.from.filter(|_| !params.send_initial).unwrap_or(now);
        (cursor, expired)
    });
    if params.bookmark {
        let bookmark = json!({
            "kind": rt.kind, "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": cursor.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
        });
        pending.push_back(watch_line("BOOKMARK", &bookmark));
    }
    let mut done = req.drop_watches;
    if let Some(e) = expired {
        pending.clear();
        pending.push_back(watch_line("ERROR", &e.to_status()));
        done = true;
    }
    let state = WatchState {
        cluster: Arc::clone(at.cluster),
        resource: (rt.group.clone(), rt.plural.clone()),
        api_version: rt.api_version(),
        namespace: ns.map(str::to_owned),
        labels,
        fields,
        cursor,
        pending,
        deadline: Instant::now() + params.timeout,
        done,
    };
    let stream = futures::stream::unfold(state, next_line);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

impl WatchState {
    /// Queues the events this watch selects, and moves its cursor past all of them.
    fn queue(&mut self, events: Vec<Arc<Event>>) {
        for e in events {
            self.cursor = e.rv;
            let o = &e.object;
            let matches = e.resource == self.resource
                && self
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| o["metadata"]["namespace"] == ns)
                && self.labels.matches(&o["metadata"]["labels"])
                && self.fields.matches(o);
            if matches {
                let mut object = (**o).clone();
                object["apiVersion"] = self.api_version.clone().into();
                self.pending.push_back(watch_line(e.kind.as_str(), &object));
            }
        }
    }
}

async fn next_line(mut st: WatchState) -> Option<(Result<Bytes, std::io::Error>, WatchState)> {
    loop {
        if let Some(line) = st.pending.pop_front() {
            return Some((Ok(line), st));
        }
        if st.done || Instant::now() >= st.deadline {
            return None;
        }
        let cluster = Arc::clone(&st.cluster);
        let notified = cluster.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match cluster.read(|s| s.events_since(st.cursor)) {
            Err(e) => {
                st.pending.push_back(watch_line("ERROR", &e.to_status()));
                st.done = true;
            }
            Ok(events) => st.queue(events),
        }
        if st.pending.is_empty() {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(st.deadline) => {}
            }
        }
    }
}
