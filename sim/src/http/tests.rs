//! Unit tests of the HTTP face: requests served synchronously by `serve`, without a socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::thread;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ApiRequest, serve};
use crate::cluster::Cluster;
use crate::timing::Timing;

const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";

fn request(method: Method, content_type: &str, manager: &str, body: &Value) -> ApiRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    ApiRequest {
        method,
        headers,
        query: [("fieldManager".to_owned(), manager.to_owned())].into(),
        body: Bytes::from(body.to_string()),
        drop_watches: false,
    }
}

fn patch(cluster: &Arc<Cluster>, content_type: &str, name: &str, body: &Value) -> StatusCode {
    let req = request(Method::PATCH, content_type, "test", body);
    match serve(cluster, &format!("{CONFIG_MAPS}/{name}"), req) {
        Ok(response) => response.status(),
        Err(e) => e.status_code(),
    }
}

fn config_map(cluster: &Cluster, name: &str) -> Value {
    cluster.read(|s| {
        let rt = s.find("", "v1", "configmaps").unwrap();
        s.get(&rt, Some("default"), name).unwrap()
    })
}

#[test]
fn an_apply_answers_created_when_it_creates_and_ok_after() {
    let cluster = Arc::new(Cluster::new("test", Timing::fast()));
    let apply = "application/apply-patch+yaml";
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"},
        "data": {"a": "1"}});
    assert_eq!(patch(&cluster, apply, "web", &body), StatusCode::CREATED);
    assert_eq!(patch(&cluster, apply, "web", &body), StatusCode::OK);
    let merge = "application/merge-patch+json";
    assert_eq!(
        patch(&cluster, merge, "missing", &json!({})),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&cluster, "text/plain", "web", &json!({})),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[test]
fn concurrent_patches_lose_no_update() {
    let cluster = Arc::new(Cluster::new("test", Timing::fast()));
    let create = request(
        Method::POST,
        "application/json",
        "test",
        &json!({"metadata": {"name": "shared"}, "data": {}}),
    );
    let created = serve(&cluster, CONFIG_MAPS, create).unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (writers, patches) = (8, 25);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let cluster = Arc::clone(&cluster);
            thread::spawn(move || {
                for p in 0..patches {
                    // Merge and JSON patches alike: each adds its own key to what it read.
                    let (content_type, body) = if p % 2 == 0 {
                        (
                            "application/merge-patch+json",
                            json!({"data": {format!("w{w}-p{p}"): "x"}}),
                        )
                    } else {
                        (
                            "application/json-patch+json",
                            json!([{"op": "add", "path": format!("/data/w{w}-p{p}"), "value": "x"}]),
                        )
                    };
                    assert_eq!(
                        patch(&cluster, content_type, "shared", &body),
                        StatusCode::OK
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let data = config_map(&cluster, "shared")["data"].clone();
    assert_eq!(data.as_object().unwrap().len(), writers * patches);
}
