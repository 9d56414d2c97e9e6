//! Unit tests of the store: every verb on hand-built objects, without HTTP or controllers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

use super::{LOG_CAPACITY, PatchKind, Store, Target, WriteOptions};
use crate::api_error::ApiError;
use crate::nodes::NODES;
use crate::resource::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};

fn rt(store: &Store, plural: &str) -> ResourceType {
    store
        .types()
        .find(|t| t.plural == plural)
        .cloned()
        .expect("a served type")
}

fn by(manager: &str) -> WriteOptions {
    WriteOptions {
        manager: manager.into(),
        ..Default::default()
    }
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"metadata": {"name": name}, "data": data})
}

fn rv(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Creates an object as manager `me`.
fn create(store: &mut Store, rt: &ResourceType, ns: Option<&str>, object: Value) -> Value {
    store.create(rt, ns, object, &by("me")).unwrap()
}

/// Creates a config map in `default` as manager `me`.
fn create_config_map(store: &mut Store, name: &str, data: Value) -> Value {
    let cm = rt(store, "configmaps");
    create(store, &cm, Some("default"), config_map(name, data))
}

fn at<'a>(rt: &'a ResourceType, name: &'a str) -> Target<'a> {
    Target {
        rt,
        ns: Some("default"),
        name,
        status: false,
    }
}

fn all(store: &Store, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
    store.list(rt, ns, &LabelSelector::default(), &FieldSelector::default())
}

fn assert_error(result: Result<impl std::fmt::Debug, ApiError>, code: u16, reason: &str) {
    let e = result.expect_err("an error");
    assert_eq!((e.code, e.reason), (code, reason), "{}", e.message);
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_owned(),
                e["fieldsV1"].to_string(),
            )
        })
        .collect()
}

#[test]
fn a_new_store_has_the_system_namespaces_and_ready_nodes() {
    let store = Store::new();
    let namespaces: Vec<String> = all(&store, &rt(&store, "namespaces"), None)
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        namespaces,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let nodes = all(&store, &rt(&store, "nodes"), None);
    assert_eq!(nodes.len(), NODES.len());
    for node in &nodes {
        assert_eq!(node["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(node["apiVersion"], "v1");
    }
    assert_eq!(store.object_count(), 6);
    assert_eq!(store.resource_version(), 6);
}

#[test]
fn create_stamps_identity_and_get_returns_the_object() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let created = create_config_map(&mut store, "web", json!({"a": "1"}));
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(meta["creationTimestamp"].is_string());
    assert_eq!(rv(&created), store.resource_version().to_string());
    assert_eq!(created["kind"], "ConfigMap");
    assert_eq!(managers(&created)[0].0, "me");
    assert_eq!(meta["managedFields"][0]["operation"], "Update");
    let got = store.get(&cm, Some("default"), "web").unwrap();
    assert_eq!(got, created);
    assert_error(store.get(&cm, Some("default"), "nope"), 404, "NotFound");
}

#[test]
fn create_refuses_duplicates_missing_namespaces_and_bad_names() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let opts = by("me");
    let web = || config_map("web", json!({}));
    create(&mut store, &cm, Some("default"), web());
    assert_error(
        store.create(&cm, Some("default"), web(), &opts),
        409,
        "AlreadyExists",
    );
    assert_error(
        store.create(&cm, Some("nowhere"), web(), &opts),
        404,
        "NotFound",
    );
    assert_error(store.create(&cm, None, web(), &opts), 400, "BadRequest");
    let bad_name = config_map("Not_A_Name", json!({}));
    assert_error(
        store.create(&cm, Some("default"), bad_name, &opts),
        422,
        "Invalid",
    );
    let nameless = json!({"metadata": {}});
    assert_error(
        store.create(&cm, Some("default"), nameless, &opts),
        422,
        "Invalid",
    );
    let wrong_kind = json!({"kind": "Secret", "metadata": {"name": "x"}});
    assert_error(
        store.create(&cm, Some("default"), wrong_kind, &opts),
        400,
        "BadRequest",
    );
    let generated = json!({"metadata": {"generateName": "job-"}});
    let named = store
        .create(&cm, Some("default"), generated, &opts)
        .unwrap();
    let name = named["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
}

#[test]
fn a_dry_run_stores_nothing() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let (before, count) = (store.resource_version(), store.object_count());
    let opts = WriteOptions {
        dry_run: true,
        ..by("me")
    };
    let created = store
        .create(&cm, Some("default"), config_map("web", json!({})), &opts)
        .unwrap();
    assert_eq!(rv(&created), before.to_string());
    assert_eq!(
        (store.resource_version(), store.object_count()),
        (before, count)
    );
    assert_error(store.get(&cm, Some("default"), "web"), 404, "NotFound");
}

#[test]
fn update_needs_the_current_resource_version() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let created = create_config_map(&mut store, "web", json!({"a": "1"}));
    let mut next = created.clone();
    next["data"]["a"] = "2".into();
    let updated = store
        .update(&at(&cm, "web"), next.clone(), &by("me"))
        .unwrap();
    assert_eq!(updated["data"]["a"], "2");
    assert_ne!(rv(&updated), rv(&created));
    // `next` still carries the resourceVersion the update replaced.
    assert_error(
        store.update(&at(&cm, "web"), next.clone(), &by("me")),
        409,
        "Conflict",
    );
    let mut unversioned = updated.clone();
    unversioned["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    assert_error(
        store.update(&at(&cm, "web"), unversioned, &by("me")),
        422,
        "Invalid",
    );
    assert_error(
        store.update(&at(&cm, "other"), updated.clone(), &by("me")),
        404,
        "NotFound",
    );
    let mut renamed = updated;
    renamed["metadata"]["name"] = "other".into();
    assert_error(
        store.update(&at(&cm, "web"), renamed, &by("me")),
        400,
        "BadRequest",
    );
}

#[test]
fn the_status_subresource_and_the_main_resource_change_their_own_parts() {
    let mut store = Store::new();
    let svc = rt(&store, "services");
    let created = create(
        &mut store,
        &svc,
        Some("default"),
        json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
    );
    assert!(
        created["status"].is_null(),
        "a create through the main resource sets no status"
    );
    assert_eq!(created["spec"]["type"], "ClusterIP", "defaulted");
    let mut next = created.clone();
    next["spec"]["ports"][0]["port"] = 8080.into();
    next["status"] = json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}});
    let updated = store.update(&at(&svc, "web"), next, &by("me")).unwrap();
    assert_eq!(updated["spec"]["ports"][0]["port"], 8080);
    assert!(updated["status"].is_null());
    assert_eq!(updated["metadata"]["generation"], 2);
    let mut next = updated.clone();
    next["spec"]["ports"][0]["port"] = 9090.into();
    next["status"] = json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}});
    let status_at = Target {
        status: true,
        ..at(&svc, "web")
    };
    let updated = store.update(&status_at, next, &by("lb")).unwrap();
    assert_eq!(updated["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        updated["status"]["loadBalancer"]["ingress"][0]["ip"],
        "5.6.7.8"
    );
    assert_eq!(updated["metadata"]["generation"], 2, "status is not spec");
    let lb = &updated["metadata"]["managedFields"][1];
    assert_eq!(lb["manager"], "lb");
    assert_eq!(lb["subresource"], "status");
}

#[test]
fn an_apply_creates_then_owns_its_fields_and_conflicts_with_other_managers() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let config = |x: &str| json!({"metadata": {"name": "web"}, "data": {"x": x}});
    let apply = |store: &mut Store, manager: &str, body: Value, force: bool| {
        let opts = WriteOptions {
            force,
            ..by(manager)
        };
        store.patch(&at(&cm, "web"), PatchKind::Apply, &body, &opts)
    };
    let first = apply(&mut store, "a", config("1"), false).unwrap();
    assert!(first.created);
    assert_eq!(
        first.object["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    let again = apply(&mut store, "a", config("1"), false).unwrap();
    assert!(!again.created);
    assert_eq!(
        again.object["metadata"]["uid"],
        first.object["metadata"]["uid"]
    );
    // Another manager may apply the same value (and co-own it), not a different one.
    apply(&mut store, "b", config("1"), false).unwrap();
    assert_error(apply(&mut store, "c", config("2"), false), 409, "Conflict");
    let forced = apply(&mut store, "c", config("2"), true).unwrap().object;
    assert_eq!(forced["data"]["x"], "2");
    let owners: Vec<String> = managers(&forced).into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        owners,
        ["c"],
        "a forced apply takes the field from everyone"
    );
}

#[test]
fn an_apply_removes_the_fields_its_manager_stops_applying_unless_shared() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let apply = |store: &mut Store, manager: &str, data: Value| {
        let body = config_map("web", data);
        store
            .patch(&at(&cm, "web"), PatchKind::Apply, &body, &by(manager))
            .unwrap()
            .object
    };
    apply(&mut store, "a", json!({"x": "1", "y": "1", "z": "1"}));
    apply(&mut store, "b", json!({"z": "1"}));
    let after = apply(&mut store, "a", json!({"x": "1"}));
    assert_eq!(after["data"], json!({"x": "1", "z": "1"}));
}

#[test]
fn an_apply_needs_a_field_manager_and_the_name_on_the_url() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let body = config_map("web", json!({}));
    assert_error(
        store.patch(&at(&cm, "web"), PatchKind::Apply, &body, &by("")),
        400,
        "BadRequest",
    );
    assert_error(
        store.patch(&at(&cm, "other"), PatchKind::Apply, &body, &by("me")),
        400,
        "BadRequest",
    );
    let status_at = Target {
        status: true,
        ..at(&cm, "web")
    };
    assert_error(
        store.patch(&status_at, PatchKind::Apply, &body, &by("me")),
        404,
        "NotFound",
    );
}

#[test]
fn merge_strategic_and_json_patches() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let web = at(&cm, "web");
    let patch = |store: &mut Store, kind, body: Value| store.patch(&web, kind, &body, &by("me"));
    assert_error(
        patch(&mut store, PatchKind::Merge, json!({})),
        404,
        "NotFound",
    );
    create_config_map(&mut store, "web", json!({"a": "1"}));
    let merged = patch(&mut store, PatchKind::Merge, json!({"data": {"b": "2"}})).unwrap();
    assert!(!merged.created);
    assert_eq!(merged.object["data"], json!({"a": "1", "b": "2"}));
    let strategic = patch(
        &mut store,
        PatchKind::Strategic,
        json!({"data": {"a": null}}),
    )
    .unwrap();
    assert_eq!(strategic.object["data"], json!({"b": "2"}));
    let ops = json!([{"op": "add", "path": "/data/c", "value": "3"}]);
    let patched = patch(&mut store, PatchKind::Json, ops).unwrap();
    assert_eq!(patched.object["data"], json!({"b": "2", "c": "3"}));
    assert_error(
        patch(&mut store, PatchKind::Json, json!({"op": "add"})),
        400,
        "BadRequest",
    );
    let failing = json!([{"op": "remove", "path": "/data/missing"}]);
    assert_error(patch(&mut store, PatchKind::Json, failing), 422, "Invalid");
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"d": "4"}});
    assert_error(patch(&mut store, PatchKind::Merge, stale), 409, "Conflict");
}

#[test]
fn delete_removes_what_the_object_owns_unless_orphaned() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let parent = create_config_map(&mut store, "parent", json!({}));
    let child = |name: &str| {
        json!({"metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "parent",
            "uid": parent["metadata"]["uid"]}]}})
    };
    create(&mut store, &cm, Some("default"), child("child"));
    let before = store.object_count();
    store
        .delete(&cm, Some("default"), "parent", false, true)
        .unwrap();
    assert_eq!(store.object_count(), before, "a dry run deletes nothing");
    store
        .delete(&cm, Some("default"), "parent", false, false)
        .unwrap();
    assert_error(store.get(&cm, Some("default"), "child"), 404, "NotFound");
    assert_error(
        store.delete(&cm, Some("default"), "parent", false, false),
        404,
        "NotFound",
    );

    let parent = create_config_map(&mut store, "parent", json!({}));
    let orphan = json!({"metadata": {"name": "orphan", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "parent",
        "uid": parent["metadata"]["uid"]}]}});
    create(&mut store, &cm, Some("default"), orphan);
    store
        .delete(&cm, Some("default"), "parent", true, false)
        .unwrap();
    assert!(store.get(&cm, Some("default"), "orphan").is_ok());
}

#[test]
fn a_deleted_namespace_terminates_and_its_finalization_removes_its_contents() {
    let mut store = Store::new();
    let (ns, cm) = (rt(&store, "namespaces"), rt(&store, "configmaps"));
    let opts = by("me");
    let team = create(&mut store, &ns, None, json!({"metadata": {"name": "team"}}));
    create(&mut store, &cm, Some("team"), config_map("web", json!({})));
    let terminating = store.delete(&ns, None, "team", false, false).unwrap();
    assert_eq!(terminating["status"]["phase"], "Terminating");
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    assert!(store.get(&cm, Some("team"), "web").is_ok());
    assert_error(
        store.create(&cm, Some("team"), config_map("new", json!({})), &opts),
        403,
        "Forbidden",
    );
    store.finalize_namespaces(&[team["metadata"]["uid"].as_str().unwrap().to_owned()]);
    assert_error(store.get(&ns, None, "team"), 404, "NotFound");
    assert_error(store.get(&cm, Some("team"), "web"), 404, "NotFound");
}
#[test]
fn list_filters_by_namespace_and_selectors() {
    let mut store = Store::new();
    let (ns, cm) = (rt(&store, "namespaces"), rt(&store, "configmaps"));
    create(&mut store, &ns, None, json!({"metadata": {"name": "team"}}));
    for (namespace, name, app) in [
        ("default", "a", "web"),
        ("default", "b", "db"),
        ("team", "c", "web"),
    ] {
        let object = json!({"metadata": {"name": name, "labels": {"app": app}}});
        create(&mut store, &cm, Some(namespace), object);
    }
    let names = |ns: Option<&str>, labels: &str, fields: &str| -> Vec<String> {
        let labels = LabelSelector::parse(labels).unwrap();
        let fields = FieldSelector::parse(fields).unwrap();
        store
            .list(&cm, ns, &labels, &fields)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(None, "", ""), ["a", "b", "c"]);
    assert_eq!(names(Some("default"), "", ""), ["a", "b"]);
    assert_eq!(names(None, "app=web", ""), ["a", "c"]);
    assert_eq!(names(None, "app=web", "metadata.namespace=team"), ["c"]);
    assert_eq!(names(Some("team"), "app=db", ""), Vec::<String>::new());
}

#[test]
fn the_event_log_serves_resumes_until_it_no_longer_reaches_back() {
    let mut store = Store::new();
    let cm = rt(&store, "configmaps");
    let start = store.resource_version();
    let created = create_config_map(&mut store, "web", json!({}));
    store
        .patch(
            &at(&cm, "web"),
            PatchKind::Merge,
            &json!({"data": {"a": "1"}}),
            &by("me"),
        )
        .unwrap();
    store
        .delete(&cm, Some("default"), "web", false, false)
        .unwrap();
    let events = store.events_since(start).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(events[0].rv.to_string(), rv(&created));
    assert_eq!(events[0].resource, (String::new(), "configmaps".to_owned()));
    assert_eq!(
        events[2].object["metadata"]["resourceVersion"],
        events[2].rv.to_string()
    );
    assert!(
        store
            .events_since(store.resource_version())
            .unwrap()
            .is_empty()
    );

    for i in 0..LOG_CAPACITY {
        let object = config_map(&format!("cm-{i}"), json!({}));
        create(&mut store, &cm, Some("default"), object);
    }
    assert_error(store.events_since(start), 410, "Expired");
    let recent = store.resource_version() - 10;
    assert_eq!(store.events_since(recent).unwrap().len(), 10);
}

#[test]
fn a_crd_serves_its_type_until_deleted_with_its_objects() {
    let mut store = Store::new();
    let crds = rt(&store, "customresourcedefinitions");
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "served": true, "storage": true}]}});
    let created = create(&mut store, &crds, None, crd);
    assert_eq!(created["status"]["storedVersions"], json!(["v1"]));
    let widgets = store.find("example.com", "v1", "widgets").expect("served");
    create(
        &mut store,
        &widgets,
        Some("default"),
        json!({"metadata": {"name": "w"}}),
    );
    store
        .delete(&crds, None, "widgets.example.com", false, false)
        .unwrap();
    assert!(store.find("example.com", "v1", "widgets").is_none());
    assert!(store.scan(&widgets).next().is_none());
}

#[test]
fn controller_writes_store_nothing_when_nothing_changed() {
    let mut store = Store::new();
    let svc = rt(&store, "services");
    let object = json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP"}});
    store.put_internal(&svc, object.clone());
    let first = store.get(&svc, Some("default"), "web").unwrap();
    assert_eq!(first["metadata"]["generation"], 1);
    let rv_before = store.resource_version();
    store.put_internal(&svc, object.clone());
    assert_eq!(store.resource_version(), rv_before);
    let mut changed = object;
    changed["spec"]["type"] = "NodePort".into();
    store.put_internal(&svc, changed);
    let second = store.get(&svc, Some("default"), "web").unwrap();
    assert_eq!(second["metadata"]["generation"], 2);
    assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);

    let status = json!({"loadBalancer": {}});
    store.set_status(&svc, "default", "web", status.clone());
    let rv_before = store.resource_version();
    store.set_status(&svc, "default", "web", status);
    store.set_status(&svc, "default", "missing", json!({}));
    assert_eq!(store.resource_version(), rv_before);
}

#[test]
fn a_secrets_string_data_is_folded_into_its_data_on_every_write() {
    let mut store = Store::new();
    let secrets = rt(&store, "secrets");
    let created = create(
        &mut store,
        &secrets,
        Some("default"),
        json!({"metadata": {"name": "db"}, "data": {"user": "YWRtaW4=", "password": "b2xk"},
            "stringData": {"password": "s3cret"}}),
    );
    // stringData wins over data for the same key, and is never stored.
    assert_eq!(
        created["data"],
        json!({"user": "YWRtaW4=", "password": "czNjcmV0"})
    );
    assert!(created.get("stringData").is_none(), "{created}");

    let patch = json!({"stringData": {"host": "db.local"}});
    let patched = store
        .patch(&at(&secrets, "db"), PatchKind::Merge, &patch, &by("me"))
        .unwrap();
    assert_eq!(patched.object["data"]["host"], "ZGIubG9jYWw=");
    assert!(patched.object.get("stringData").is_none());

    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"},
        "stringData": {"token": "t"}});
    let applied = store
        .patch(&at(&secrets, "api"), PatchKind::Apply, &body, &by("me"))
        .unwrap();
    assert_eq!(applied.object["data"], json!({"token": "dA=="}));
    assert!(applied.object.get("stringData").is_none());

    let mut replacement = store.get(&secrets, Some("default"), "api").unwrap();
    replacement["stringData"] = json!({"token": "u"});
    let updated = store
        .update(&at(&secrets, "api"), replacement, &by("me"))
        .unwrap();
    assert_eq!(updated["data"], json!({"token": "dQ=="}));

    let bad = json!({"metadata": {"name": "bad"}, "stringData": {"n": 1}});
    assert_error(
        store.create(&secrets, Some("default"), bad, &by("me")),
        422,
        "Invalid",
    );
    // Only Secrets know stringData.
    let cm = rt(&store, "configmaps");
    let other = create(
        &mut store,
        &cm,
        Some("default"),
        json!({"metadata": {"name": "c"}, "stringData": {"a": "b"}}),
    );
    assert_eq!(other["stringData"], json!({"a": "b"}));
}

#[test]
fn the_scale_subresource_reads_and_writes_replicas_alone() {
    use super::ScaleChange;

    let mut store = Store::new();
    let deploys = rt(&store, "deployments");
    let live = create(
        &mut store,
        &deploys,
        Some("default"),
        json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}}),
    );
    let scale = store.get_scale(&at(&deploys, "web")).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(
        scale["metadata"]["resourceVersion"],
        live["metadata"]["resourceVersion"]
    );

    let patch = json!({"spec": {"replicas": 3}});
    let change = ScaleChange::Patch(PatchKind::Strategic, &patch);
    let scaled = store
        .update_scale(&at(&deploys, "web"), change, &by("me"))
        .unwrap();
    assert_eq!(scaled["spec"]["replicas"], 3);
    let after = store.get(&deploys, Some("default"), "web").unwrap();
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(after["metadata"]["generation"], 2);

    // A replacement with a stale resourceVersion conflicts; a negative count is invalid.
    let stale = json!({"metadata": {"name": "web", "resourceVersion": rv(&live)},
        "spec": {"replicas": 1}});
    assert_error(
        store.update_scale(
            &at(&deploys, "web"),
            ScaleChange::Replace(&stale),
            &by("me"),
        ),
        409,
        "Conflict",
    );
    let negative = json!({"metadata": {"name": "web"}, "spec": {"replicas": -1}});
    assert_error(
        store.update_scale(
            &at(&deploys, "web"),
            ScaleChange::Replace(&negative),
            &by("me"),
        ),
        422,
        "Invalid",
    );
    let fresh = json!({"metadata": {"name": "web", "resourceVersion": rv(&after)},
        "spec": {"replicas": 1}});
    let replaced = store
        .update_scale(
            &at(&deploys, "web"),
            ScaleChange::Replace(&fresh),
            &by("me"),
        )
        .unwrap();
    assert_eq!(replaced["spec"]["replicas"], 1);
}
