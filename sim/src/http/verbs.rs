//! The verbs on a resource path: list (or watch), get, create, replace, patch, delete one or
//! a collection; get, replace and patch of a `scale` subresource. Each takes the cluster's
//! lock once, through one closure, for its whole read-modify-write.

use std::sync::Arc;

use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::table::table;
use super::watch::watch;
use super::{ApiRequest, Collection, Route, json_response};
use crate::api_error::ApiError;
use crate::cluster::Cluster;
use crate::store::{PatchKind, ScaleChange, Target};

pub(super) fn resource_request(
    cluster: &Arc<Cluster>,
    route: Route,
    req: ApiRequest,
) -> Result<Response, ApiError> {
    let Route {
        rt,
        namespace,
        name,
        status,
        scale,
    } = route;
    let collection = Collection {
        cluster,
        rt: &rt,
        ns: namespace.as_deref(),
    };
    let target = |name| Target {
        rt: &rt,
        ns: collection.ns,
        name,
        status,
    };
    if scale && let Some(name) = name.as_deref() {
        return scale_request(cluster, &target(name), &req);
    }
    match (&req.method, name.as_deref()) {
        (&Method::GET, None) => collection.list(&req),
        (&Method::GET, Some(name)) => collection.get(name, &req),
        (&Method::POST, None) if !status => collection.create(&req),
        (&Method::PUT, Some(name)) => replace(cluster, &target(name), &req),
        (&Method::PATCH, Some(name)) => patch(cluster, &target(name), &req),
        (&Method::DELETE, Some(name)) if !status => collection.delete(name, &req),
        (&Method::DELETE, None) => collection.delete_collection(&req),
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

fn ok(v: &Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, v))
}

impl Collection<'_> {
    /// GET on the collection: a list (one page of it), a table, or a watch.
    fn list(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        let (rt, ns) = (self.rt, self.ns);
        let (labels, fields) = req.selectors()?;
        if req.flag("watch") {
            return watch(self, labels, fields, req);
        }
        let (items, rv) = self
            .cluster
            .read(|s| (s.list(rt, ns, &labels, &fields), s.resource_version()));
        let (items, cont) = page(items, req)?;
        if req.wants_table() {
            return ok(&table(rt, &items, rv));
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(cont) = cont {
            metadata["continue"] = cont.into();
        }
        ok(&json!({
            "kind": rt.list_kind(),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// GET on one object (or its status): the object, or a one-row table.
    fn get(&self, name: &str, req: &ApiRequest) -> Result<Response, ApiError> {
        let object = self.cluster.read(|s| s.get(self.rt, self.ns, name))?;
        if req.wants_table() {
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return ok(&table(self.rt, &[object], rv));
        }
        ok(&object)
    }

    /// POST on the collection.
    fn create(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        let body = req.json_body()?;
        let opts = req.write_options();
        let created = self
            .cluster
            .write(|s| s.create(self.rt, self.ns, body, &opts))?;
        Ok(json_response(StatusCode::CREATED, &created))
    }

    /// DELETE on one object; the propagation policy and dry run from the query or the body.
    fn delete(&self, name: &str, req: &ApiRequest) -> Result<Response, ApiError> {
        let options: Value = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body).unwrap_or(Value::Null)
        };
        let orphan = options["propagationPolicy"] == "Orphan"
            || options["orphanDependents"] == true
            || req.param("propagationPolicy") == Some("Orphan");
        let dry_run = req.dry_run()
            || options["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"));
        ok(&self
            .cluster
            .write(|s| s.delete(self.rt, self.ns, name, orphan, dry_run))?)
    }

    /// DELETE on the collection: every object the selectors match.
    fn delete_collection(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        let (rt, ns) = (self.rt, self.ns);
        let (labels, fields) = req.selectors()?;
        let dry_run = req.dry_run();
        let deleted = self.cluster.write(|s| {
            let items = s.list(rt, ns, &labels, &fields);
            for item in &items {
                let item_ns = item["metadata"]["namespace"].as_str();
                let item_name = item["metadata"]["name"].as_str().unwrap_or_default();
                let _ = s.delete(rt, item_ns, item_name, false, dry_run);
            }
            items
        });
        ok(
            &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted}),
        )
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

/// PUT on an object or its status.
fn replace(cluster: &Arc<Cluster>, at: &Target, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = req.json_body()?;
    let opts = req.write_options();
    ok(&cluster.write(|s| s.update(at, body, &opts))?)
}

/// PATCH on an object or its status: `201 Created` when an apply created it. The read, the
/// patch and the write happen under one hold of the lock, so concurrent patches cannot lose
/// each other's changes.
fn patch(cluster: &Arc<Cluster>, at: &Target, req: &ApiRequest) -> Result<Response, ApiError> {
    let kind = patch_kind(req)?;
    let body = req.json_body()?;
    let opts = req.write_options();
    let patched = cluster.write(|s| s.patch(at, kind, &body, &opts))?;
    let code = if patched.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(code, &patched.object))
}

/// The kind of patch the `Content-Type` names.
fn patch_kind(req: &ApiRequest) -> Result<PatchKind, ApiError> {
    let content_type = req.header(header::CONTENT_TYPE);
    Ok(
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/json-patch+json" => PatchKind::Json,
            other => return Err(ApiError::unsupported_media_type(other)),
        },
    )
}

/// GET, PUT or PATCH on the `scale` subresource of an object: a `Scale` of autoscaling/v1.
fn scale_request(
    cluster: &Arc<Cluster>,
    at: &Target,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let opts = req.write_options();
    let scale = match req.method {
        Method::GET => cluster.read(|s| s.get_scale(at))?,
        Method::PUT => {
            let body = req.json_body()?;
            cluster.write(|s| s.update_scale(at, ScaleChange::Replace(&body), &opts))?
        }
        Method::PATCH => {
            let kind = patch_kind(req)?;
            let body = req.json_body()?;
            cluster.write(|s| s.update_scale(at, ScaleChange::Patch(kind, &body), &opts))?
        }
        ref method => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    ok(&scale)
}
