//! The HTTP face of a virtual cluster: the Kubernetes API paths, verbs, content types, tables
//! and watches, plus `/sim/faults` to switch faults at run time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cluster::{Cluster, Faults};
use crate::resource::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{PatchKind, WriteOptions};

/// Largest request body accepted (the real API server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// A watch with no `timeoutSeconds` ends after this long; clients re-watch.
const DEFAULT_WATCH: Duration = Duration::from_secs(30 * 60);

/// The API of one cluster, served at the root of its base URL.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new().fallback(handle).with_state(cluster)
}

type Query = HashMap<String, String>;

async fn handle(State(cluster): State<Arc<Cluster>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query: Query = axum::extract::Query::<Query>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    if let Some(admin) = path.strip_prefix("/sim/") {
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .unwrap_or_default();
        return admin_api(&cluster, &parts.method, admin, &body);
    }
    let faults = cluster.faults();
    if faults.unavailable {
        return error(&ApiError::unavailable());
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.error_rate > 0.0 && cluster.draw() < faults.error_rate {
        return error(&ApiError::internal("injected fault"));
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error(&ApiError {
                code: 413,
                reason: "RequestEntityTooLarge",
                message: format!("request body larger than {MAX_BODY} bytes"),
                details: None,
            });
        }
    };
    let request = ApiRequest {
        method: parts.method,
        headers: parts.headers,
        query,
        body,
        drop_watches: faults.drop_watches,
    };
    match serve(&cluster, &path, request) {
        Ok(response) => response,
        Err(e) => error(&e),
    }
}

struct ApiRequest {
    method: Method,
    headers: HeaderMap,
    query: Query,
    body: Bytes,
    drop_watches: bool,
}

impl ApiRequest {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn wants_table(&self) -> bool {
        self.header(header::ACCEPT).contains("as=Table")
    }

    fn write_options(&self) -> WriteOptions {
        let manager = self.param("fieldManager").map_or_else(
            || {
                let agent = self.header(header::USER_AGENT);
                agent.split('/').next().unwrap_or_default().to_owned()
            },
            str::to_owned,
        );
        WriteOptions {
            manager,
            dry_run: self.param("dryRun") == Some("All"),
            force: self.flag("force"),
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request has no body"));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(e: &ApiError) -> Response {
    json_response(e.status_code(), &e.to_status())
}

fn admin_api(cluster: &Cluster, method: &Method, path: &str, body: &[u8]) -> Response {
    match (method.as_str(), path) {
        ("GET", "faults") => json_response(StatusCode::OK, &json!(cluster.faults())),
        ("PUT" | "POST", "faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(faults) => {
                cluster.set_faults(faults.clone());
                json_response(StatusCode::OK, &json!(faults))
            }
            Err(e) => error(&ApiError::bad_request(format!("invalid faults: {e}"))),
        },
        ("GET", "stats") => {
            let (objects, rv) = cluster.read(|s| (s.object_count(), s.resource_version()));
            json_response(
                StatusCode::OK,
                &json!({"cluster": cluster.name(), "objects": objects, "resourceVersion": rv}),
            )
        }
        _ => error(&ApiError::no_route(&format!("/sim/{path}"))),
    }
}

/// Where a resource path points.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn serve(cluster: &Arc<Cluster>, path: &str, req: ApiRequest) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let read_only = |req: &ApiRequest| {
        if req.method == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(req.method.as_str()))
        }
    };
    match segments.as_slice() {
        ["version"] => ok(resource::version_doc()),
        ["healthz" | "livez" | "readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            read_only(&req)?;
            ok(resource::core_versions_doc())
        }
        ["apis"] => {
            read_only(&req)?;
            ok(cluster.read(|s| resource::group_list_doc(s.types())))
        }
        ["apis", group] => cluster
            .read(|s| resource::group_detail_doc(s.types(), group))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["api", version] => cluster
            .read(|s| resource::resource_list_doc(s.types(), "", version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["apis", group, version] => cluster
            .read(|s| resource::resource_list_doc(s.types(), group, version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["openapi", "v3"] => ok(cluster.read(|s| resource::openapi_root_doc(s.types()))),
        ["openapi", "v3", "api", version] => cluster
            .read(|s| resource::openapi_group_doc(s.types(), "", version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["openapi", "v3", "apis", group, version] => cluster
            .read(|s| resource::openapi_group_doc(s.types(), group, version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["api", version, rest @ ..] => {
            let target = cluster
                .read(|s| resolve(s, "", version, rest))
                .ok_or_else(|| ApiError::no_route(path))?;
            resource_request(cluster, target, req)
        }
        ["apis", group, version, rest @ ..] => {
            let target = cluster
                .read(|s| resolve(s, group, version, rest))
                .ok_or_else(|| ApiError::no_route(path))?;
            resource_request(cluster, target, req)
        }
        _ => Err(ApiError::no_route(path)),
    }
}

fn resolve(
    store: &crate::store::Store,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Option<Target> {
    let target = |rt: ResourceType, namespace: Option<&str>, tail: &[&str]| -> Option<Target> {
        let (name, status) = match tail {
            [] => (None, false),
            [name] => (Some((*name).to_owned()), false),
            [name, "status"] => (Some((*name).to_owned()), true),
            _ => return None,
        };
        Some(Target {
            rt,
            namespace: namespace.map(str::to_owned),
            name,
            status,
        })
    };
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(rt) = store.find(group, version, plural)
        && rt.namespaced
    {
        return target(rt, Some(ns), tail);
    }
    let [plural, tail @ ..] = rest else {
        return None;
    };
    let rt = store.find(group, version, plural)?;
    if rt.namespaced && !tail.is_empty() {
        return None;
    }
    target(rt, None, tail)
}

fn resource_request(
    cluster: &Arc<Cluster>,
    target: Target,
    req: ApiRequest,
) -> Result<Response, ApiError> {
    let Target {
        rt,
        namespace,
        name,
        status,
    } = target;
    let ns = namespace.as_deref();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match (&req.method, name) {
        (&Method::GET, None) => {
            let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())?;
            let fields = FieldSelector::parse(req.param("fieldSelector").unwrap_or_default())?;
            if req.flag("watch") {
                return watch(cluster, &rt, ns, labels, fields, &req);
            }
            let (items, rv) =
                cluster.read(|s| (s.list(&rt, ns, &labels, &fields), s.resource_version()));
            let (items, cont) = page(items, &req)?;
            if req.wants_table() {
                return ok(table(&rt, &items, rv));
            }
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if let Some(cont) = cont {
                metadata["continue"] = cont.into();
            }
            ok(json!({
                "kind": rt.list_kind(),
                "apiVersion": rt.api_version(),
                "metadata": metadata,
                "items": items,
            }))
        }
        (&Method::GET, Some(name)) => {
            let object = cluster.read(|s| s.get(&rt, ns, &name))?;
            if req.wants_table() {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                return ok(table(&rt, &[object], rv));
            }
            ok(object)
        }
        (&Method::POST, None) if !status => {
            let body = req.json_body()?;
            let opts = req.write_options();
            let created = cluster.write(|s| s.create(&rt, ns, body, &opts))?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::PUT, Some(name)) => {
            let body = req.json_body()?;
            let opts = req.write_options();
            ok(cluster.write(|s| s.update(&rt, ns, &name, body, status, &opts))?)
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = req.header(header::CONTENT_TYPE);
            let kind = match content_type.split(';').next().unwrap_or_default().trim() {
                "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let body = req.json_body()?;
            let opts = req.write_options();
            let existed = cluster.read(|s| s.get(&rt, ns, &name).is_ok());
            let result = cluster.write(|s| s.patch(&rt, ns, &name, kind, &body, status, &opts))?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(code, &result))
        }
        (&Method::DELETE, Some(name)) if !status => {
            let options: Value = if req.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&req.body).unwrap_or(Value::Null)
            };
            let orphan = options["propagationPolicy"] == "Orphan"
                || options["orphanDependents"] == true
                || req.param("propagationPolicy") == Some("Orphan");
            let dry_run = req.param("dryRun") == Some("All")
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            ok(cluster.write(|s| s.delete(&rt, ns, &name, orphan, dry_run))?)
        }
        (&Method::DELETE, None) => {
            let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())?;
            let fields = FieldSelector::parse(req.param("fieldSelector").unwrap_or_default())?;
            let dry_run = req.param("dryRun") == Some("All");
            let deleted = cluster.write(|s| {
                let items = s.list(&rt, ns, &labels, &fields);
                for item in &items {
                    let item_ns = item["metadata"]["namespace"].as_str();
                    let item_name = item["metadata"]["name"].as_str().unwrap_or_default();
                    let _ = s.delete(&rt, item_ns, item_name, false, dry_run);
                }
                items
            });
            ok(
                json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted}),
            )
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// `limit` / `continue`: the continue token is the offset of the next item.
fn page(items: Vec<Value>, req: &ApiRequest) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let start: usize = match req.param("continue") {
        None | Some("") => 0,
        Some(token) => token
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid continue token {token:?}")))?,
    };
    let limit: usize = req
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let next = start.saturating_add(page.len());
    Ok((page, (next < total).then(|| next.to_string())))
}

/// A `meta.k8s.io/v1` Table, for `kubectl get`.
fn table(rt: &ResourceType, items: &[Value], rv: u64) -> Value {
    let column = |name: &str, kind: &str| json!({"name": name, "type": kind, "format": if name == "Name" {"name"} else {""}, "description": "", "priority": 0});
    let mut columns = vec![column("Name", "string")];
    let extra: Vec<&str> = match rt.kind.as_str() {
        "Namespace" => vec!["Status"],
        "Deployment" => vec!["Ready", "Up-to-date", "Available"],
        "Pod" => vec!["Ready", "Status", "Restarts"],
        "StatefulSet" => vec!["Ready"],
        "Job" => vec!["Status", "Completions"],
        "Service" => vec!["Type", "Cluster-IP"],
        _ => vec![],
    };
    columns.extend(extra.iter().map(|c| column(c, "string")));
    columns.push(column("Age", "string"));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let s = &o["status"];
            let n = |v: &Value| v.as_i64().unwrap_or(0);
            let mut cells = vec![o["metadata"]["name"].clone()];
            match rt.kind.as_str() {
                "Namespace" => cells.push(s["phase"].clone()),
                "Deployment" => {
                    let want = n(&o["spec"]["replicas"]);
                    cells.push(format!("{}/{want}", n(&s["readyReplicas"])).into());
                    cells.push(n(&s["updatedReplicas"]).into());
                    cells.push(n(&s["availableReplicas"]).into());
                }
                "Pod" => {
                    let statuses = s["containerStatuses"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                    cells.push(format!("{ready}/{}", statuses.len()).into());
                    let waiting = statuses
                        .iter()
                        .find_map(|c| c["state"]["waiting"]["reason"].as_str());
                    cells.push(waiting.map_or_else(|| s["phase"].clone(), Value::from));
                    cells.push(
                        statuses
                            .iter()
                            .map(|c| n(&c["restartCount"]))
                            .sum::<i64>()
                            .into(),
                    );
                }
                "StatefulSet" => cells.push(
                    format!("{}/{}", n(&s["readyReplicas"]), n(&o["spec"]["replicas"])).into(),
                ),
                "Job" => {
                    let done = s["conditions"].as_array().into_iter().flatten().find(|c| {
                        c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed")
                    });
                    cells.push(done.map_or_else(|| "Running".into(), |c| c["type"].clone()));
                    cells.push(
                        format!(
                            "{}/{}",
                            n(&s["succeeded"]),
                            n(&o["spec"]["completions"]).max(1)
                        )
                        .into(),
                    );
                }
                "Service" => {
                    cells.push(o["spec"]["type"].clone());
                    cells.push(o["spec"]["clusterIP"].clone());
                }
                _ => {}
            }
            cells.push(age(o["metadata"]["creationTimestamp"].as_str()).into());
            json!({"cells": cells, "object": o})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now()
        .as_second()
        .saturating_sub(created.as_second())
        .max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

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

fn watch(
    cluster: &Arc<Cluster>,
    rt: &ResourceType,
    ns: Option<&str>,
    labels: LabelSelector,
    fields: FieldSelector,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(DEFAULT_WATCH, Duration::from_secs);
    let from: Option<u64> = match req.param("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let send_initial = req
        .param("sendInitialEvents")
        .map_or(from.is_none(), |v| v == "true");
    let mut pending = VecDeque::new();
    let (cursor, expired) = cluster.read(|s| {
        let now = s.resource_version();
        if send_initial {
            for item in s.list(rt, ns, &labels, &fields) {
                pending.push_back(watch_line("ADDED", &item));
            }
        }
        let expired = from.and_then(|rv| s.events_since(rv).err());
        (from.filter(|_| !send_initial).unwrap_or(now), expired)
    });
    if req.param("sendInitialEvents") == Some("true") {
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
        cluster: Arc::clone(cluster),
        resource: (rt.group.clone(), rt.plural.clone()),
        api_version: rt.api_version(),
        namespace: ns.map(str::to_owned),
        labels,
        fields,
        cursor,
        pending,
        deadline: Instant::now() + timeout,
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
            Ok(events) => {
                for e in events {
                    st.cursor = e.rv;
                    let o = &e.object;
                    let matches = e.resource == st.resource
                        && st
                            .namespace
                            .as_deref()
                            .is_none_or(|ns| o["metadata"]["namespace"] == ns)
                        && st.labels.matches(&o["metadata"]["labels"])
                        && st.fields.matches(o);
                    if matches {
                        let mut object = (**o).clone();
                        object["apiVersion"] = st.api_version.clone().into();
                        st.pending.push_back(watch_line(e.kind.as_str(), &object));
                    }
                }
            }
        }
        if st.pending.is_empty() {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(st.deadline) => {}
            }
        }
    }
}
