//! The HTTP face of a virtual cluster: the Kubernetes API paths, faults and `/sim/` admin
//! here; the verbs on resources in `verbs`, tables for `kubectl get` in `table`, watches in
//! `watch`.

mod table;
mod verbs;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::cluster::{Cluster, Faults};
use crate::discovery;
use crate::resource::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Store, WriteOptions};

/// Largest request body accepted (the real API server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

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

    /// `dryRun=All` in the query.
    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }

    /// `labelSelector` and `fieldSelector`.
    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        Ok((
            LabelSelector::parse(self.param("labelSelector").unwrap_or_default())?,
            FieldSelector::parse(self.param("fieldSelector").unwrap_or_default())?,
        ))
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
            dry_run: self.dry_run(),
            force: self.flag("force"),
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request has no body"));
        }
        // Protobuf bodies are not served here: 415, as a server answers a type it does not
        // take, so clients that can fall back to JSON do (client-go does).
        let content_type = self.header(header::CONTENT_TYPE);
        if content_type.contains("protobuf") {
            return Err(ApiError::unsupported_media_type(content_type));
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
struct Route {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    /// The `scale` subresource.
    scale: bool,
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
        ["version"] => ok(discovery::version_doc()),
        ["healthz" | "livez" | "readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            read_only(&req)?;
            ok(discovery::core_versions_doc())
        }
        ["apis"] => {
            read_only(&req)?;
            ok(cluster.read(|s| discovery::group_list_doc(s.types())))
        }
        ["apis", group] => cluster
            .read(|s| discovery::group_detail_doc(s.types(), group))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["api", version] => cluster
            .read(|s| discovery::resource_list_doc(s.types(), "", version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["apis", group, version] => cluster
            .read(|s| discovery::resource_list_doc(s.types(), group, version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["openapi", "v3"] => ok(cluster.read(|s| discovery::openapi_root_doc(s.types()))),
        ["openapi", "v3", "api", version] => cluster
            .read(|s| discovery::openapi_group_doc(s.types(), "", version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["openapi", "v3", "apis", group, version] => cluster
            .read(|s| discovery::openapi_group_doc(s.types(), group, version))
            .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ["api", version, rest @ ..] => {
            let route = cluster
                .read(|s| resolve(s, "", version, rest))
                .ok_or_else(|| ApiError::no_route(path))?;
            verbs::resource_request(cluster, route, req)
        }
        ["apis", group, version, rest @ ..] => {
            let route = cluster
                .read(|s| resolve(s, group, version, rest))
                .ok_or_else(|| ApiError::no_route(path))?;
            verbs::resource_request(cluster, route, req)
        }
        _ => Err(ApiError::no_route(path)),
    }
}

/// The objects of one type in one namespace (or all, or a cluster-scoped type's).
struct Collection<'a> {
    cluster: &'a Arc<Cluster>,
    rt: &'a ResourceType,
    ns: Option<&'a str>,
}

fn resolve(store: &Store, group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let route = |rt: ResourceType, namespace: Option<&str>, tail: &[&str]| -> Option<Route> {
        let (name, status, scale) = match tail {
            [] => (None, false, false),
            [name] => (Some((*name).to_owned()), false, false),
            [name, "status"] => (Some((*name).to_owned()), true, false),
            [name, "scale"] if rt.has_scale => (Some((*name).to_owned()), false, true),
            _ => return None,
        };
        Some(Route {
            rt,
            namespace: namespace.map(str::to_owned),
            name,
            status,
            scale,
        })
    };
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(rt) = store.find(group, version, plural)
        && rt.namespaced
    {
        return route(rt, Some(ns), tail);
    }
    let [plural, tail @ ..] = rest else {
        return None;
    };
    let rt = store.find(group, version, plural)?;
    if rt.namespaced && !tail.is_empty() {
        return None;
    }
    route(rt, None, tail)
}
