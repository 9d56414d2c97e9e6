//! One virtual cluster's objects, their resource versions and the event log watches read from.
//! Everything here is synchronous: the caller holds the cluster's lock for one operation and
//! never across an `.await`.
//!
//! Reads, the event log and what every write shares are here; each kind of write has its own
//! file: `create` (POST), `update` (PUT, and the field-ownership bookkeeping of every write
//! that is not an apply), `patch` (merge, strategic merge and JSON patch), `apply`
//! (server-side apply), `scale` (the `scale` subresource), `delete` (with garbage collection
//! and namespace termination) and `internal` (the controllers' writes).

mod apply;
mod create;
mod delete;
mod internal;
mod patch;
mod scale;
mod update;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission;
use crate::api_error::ApiError;
use crate::metadata::{self, meta};
use crate::nodes::{NODES, node_object};
use crate::resource::{self, BUILTIN, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};

pub use patch::PatchKind;
pub use scale::ScaleChange;

/// Events kept for watches that resume from a resourceVersion.
const LOG_CAPACITY: usize = 4096;

/// The namespaces every cluster starts with.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Gone.
    Deleted,
}

impl EventType {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch reports it.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// `(group, plural)` of the object.
    pub resource: (String, String),
    /// The object after the change (before, for deletes).
    pub object: Arc<Value>,
}

/// How a write is made.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager`.
    pub manager: String,
    /// `dryRun=All`: everything but the write.
    pub dry_run: bool,
    /// `force=true` on an apply.
    pub force: bool,
}

/// What an update or a patch addresses: one object, or its `status` subresource.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The object's type.
    pub rt: &'a ResourceType,
    /// Its namespace, for a namespaced type.
    pub ns: Option<&'a str>,
    /// Its name.
    pub name: &'a str,
    /// Through the `status` subresource: only `status` changes.
    pub status: bool,
}

impl Target<'_> {
    /// `status` for a write through the status subresource, else empty (as `managedFields`
    /// records it).
    fn subresource(&self) -> &'static str {
        if self.status { "status" } else { "" }
    }

    /// Is `status` left out of what the writer owns (the main resource of a type with a
    /// status subresource)?
    fn skips_status(&self) -> bool {
        self.rt.has_status && !self.status
    }

    fn key(&self) -> (String, String) {
        object_key(self.rt, self.ns, self.name)
    }
}

type Objects = BTreeMap<(String, String), Value>;

/// One virtual cluster's state.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    uid_seq: u64,
    objects: HashMap<(String, String), Objects>,
    log: VecDeque<Arc<Event>>,
    custom: Vec<ResourceType>,
}

impl Store {
    /// A cluster with the namespaces and nodes every cluster has.
    pub fn new() -> Self {
        let mut store = Self {
            rv: 0,
            uid_seq: 0,
            objects: HashMap::new(),
            log: VecDeque::new(),
            custom: Vec::new(),
        };
        let opts = WriteOptions {
            manager: "kube-apiserver".into(),
            ..Default::default()
        };
        for ns in SYSTEM_NAMESPACES {
            let rt = Self::builtin("", "namespaces");
            let _ = store.create(&rt, None, json!({"metadata": {"name": ns}}), &opts);
        }
        for node in NODES {
            let rt = Self::builtin("", "nodes");
            let _ = store.create(&rt, None, node_object(node), &opts);
        }
        store
    }

    fn builtin(group: &str, plural: &str) -> ResourceType {
        BUILTIN
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
            .unwrap_or_else(|| ResourceType {
                group: group.into(),
                version: "v1".into(),
                kind: plural.into(),
                plural: plural.into(),
                singular: plural.into(),
                namespaced: true,
                short_names: vec![],
                has_status: false,
                has_scale: false,
                categories: vec![],
            })
    }

    /// Every served resource type: built-in and from CRDs.
    pub fn types(&self) -> impl Iterator<Item = &ResourceType> {
        BUILTIN.iter().chain(self.custom.iter())
    }

    /// The type served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The type of a kind, for controllers (`apps`, `ReplicaSet`).
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<ResourceType> {
        self.types()
            .find(|t| t.group == group && t.kind == kind)
            .cloned()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Number of stored objects (for benchmarks and tests).
    pub fn object_count(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    /// Events after `rv`; `Err` when the log no longer reaches back that far.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        if let Some(oldest) = self.log.front()
            && rv + 1 < oldest.rv
        {
            return Err(ApiError::expired(rv));
        }
        Ok(self.log.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn key(rt: &ResourceType) -> (String, String) {
        (rt.group.clone(), rt.plural.clone())
    }

    fn bucket(&self, rt: &ResourceType) -> Option<&Objects> {
        self.objects.get(&Self::key(rt))
    }

    /// One object.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.bucket(rt)
            .and_then(|b| b.get(&(ns.unwrap_or_default().to_owned(), name.to_owned())))
            .map(|o| with_version(o, rt))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Objects of a type, in a namespace or all, that match the selectors, ordered by
    /// namespace and name.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.bucket(rt)
            .into_iter()
            .flat_map(|b| b.iter())
            .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
            .filter(|(_, o)| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
            .map(|(_, o)| with_version(o, rt))
            .collect()
    }

    /// Every object of a type, in every namespace, without copies; for controllers.
    pub fn scan(&self, rt: &ResourceType) -> impl Iterator<Item = &Value> {
        self.bucket(rt).into_iter().flat_map(|b| b.values())
    }

    /// The stored object (with its apiVersion) and its key; 404 when there is none.
    fn live(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<((String, String), Value), ApiError> {
        let key = object_key(rt, ns, name);
        let object = self
            .bucket(rt)
            .and_then(|b| b.get(&key))
            .map(|o| with_version(o, rt))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        Ok((key, object))
    }

    /// New content of a namespaced type needs a namespace that exists and is not terminating.
    fn check_namespace(&self, rt: &ResourceType, ns: Option<&str>) -> Result<(), ApiError> {
        match (rt.namespaced, ns) {
            (true, None) => Err(ApiError::bad_request(format!(
                "{} is namespaced: the request needs a namespace",
                rt.plural
            ))),
            (true, Some(ns)) => {
                let namespace = self
                    .objects
                    .get(&(String::new(), "namespaces".to_owned()))
                    .and_then(|b| b.get(&(String::new(), ns.to_owned())));
                match namespace {
                    None => Err(ApiError::not_found("", "namespaces", ns)),
                    Some(n) if metadata::is_terminating(n) => Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ))),
                    Some(_) => Ok(()),
                }
            }
            (false, _) => Ok(()),
        }
    }

    /// Sets apiVersion, kind and namespace from the request, refusing a body that says
    /// otherwise; folds a Secret's `stringData` into its `data`.
    fn normalize(rt: &ResourceType, ns: Option<&str>, object: &mut Value) -> Result<(), ApiError> {
        let mut causes = admission::well_formed(object);
        if causes.is_empty() {
            causes = admission::fold_string_data(rt, object);
        }
        if !causes.is_empty() {
            let name = meta(object, "name").to_owned();
            return Err(ApiError::invalid(&rt.kind, &name, causes));
        }
        if let Some(kind) = object["kind"].as_str()
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({})",
                rt.plural
            )));
        }
        if let Some(av) = object["apiVersion"].as_str()
            && av != rt.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of the object ({av}) does not match the request ({})",
                rt.api_version()
            )));
        }
        object["kind"] = rt.kind.clone().into();
        object["apiVersion"] = rt.api_version().into();
        let meta = &mut object["metadata"];
        match (rt.namespaced, ns, meta["namespace"].as_str()) {
            (true, Some(ns), Some(body_ns)) if body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (true, Some(ns), _) => meta["namespace"] = ns.into(),
            (false, _, _) => {
                if let Some(m) = meta.as_object_mut() {
                    m.remove("namespace");
                }
            }
            (true, None, _) => {}
        }
        Ok(())
    }

    /// Stores an object with a new resourceVersion and records the event; a stored CRD
    /// registers the types it declares.
    fn commit(
        &mut self,
        rt: &ResourceType,
        key: (String, String),
        object: &mut Value,
        kind: EventType,
    ) {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = self.rv.to_string().into();
        let stored = strip_version(object);
        self.push_event(rt, kind, Arc::new(with_version(&stored, rt)));
        self.objects
            .entry(Self::key(rt))
            .or_default()
            .insert(key, stored);
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(object);
        }
    }

    fn push_event(&mut self, rt: &ResourceType, kind: EventType, object: Arc<Value>) {
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(Arc::new(Event {
            rv: self.rv,
            kind,
            resource: Self::key(rt),
            object,
        }));
    }

    fn register_crd(&mut self, crd: &Value) {
        let name = meta(crd, "name").to_owned();
        self.forget_crd(&name);
        for t in resource::from_crd(crd) {
            if !BUILTIN
                .iter()
                .any(|b| b.group == t.group && b.plural == t.plural)
            {
                self.custom.push(t);
            }
        }
    }

    /// Stops serving the types of the CRD named `<plural>.<group>`.
    fn forget_crd(&mut self, name: &str) {
        self.custom
            .retain(|t| format!("{}.{}", t.plural, t.group) != name);
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Where an object is kept in its type's bucket: `(namespace, name)`, the namespace empty for
/// a cluster-scoped type.
fn object_key(rt: &ResourceType, ns: Option<&str>, name: &str) -> (String, String) {
    (
        ns.filter(|_| rt.namespaced).unwrap_or_default().to_owned(),
        name.to_owned(),
    )
}

/// 409 unless `rv` is the live object's resourceVersion (optimistic concurrency).
fn check_version(at: &Target, live: &Value, rv: &str) -> Result<(), ApiError> {
    if rv == meta(live, "resourceVersion") {
        return Ok(());
    }
    Err(ApiError::conflict(
        &at.rt.group,
        &at.rt.plural,
        at.name,
        "the object has been modified; please apply your changes to the latest version and try again",
    ))
}

/// 400 unless the body names the object the URL names.
fn check_name(object: &Value, name: &str) -> Result<(), ApiError> {
    if object["metadata"]["name"].as_str() == Some(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the name of the object does not match the name on the URL",
    ))
}

/// Bumps `metadata.generation` of `next` past `live`'s when anything but metadata and status
/// changed.
fn bump_generation(live: &Value, next: &mut Value) {
    let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
    let bump = admission::spec_changed(live, next);
    next["metadata"]["generation"] = (generation + i64::from(bump)).into();
}

/// What a write may change: only `status` through the status subresource, everything but
/// `status` through the main resource of a type that has the subresource.
fn scoped_write(at: &Target, live: &Value, mut next: Value) -> Value {
    if at.status {
        let mut only = live.clone();
        only["status"] = next["status"].clone();
        only
    } else {
        if at.rt.has_status {
            next["status"] = live["status"].clone();
        }
        next
    }
}

/// Objects are stored without apiVersion so one copy serves every version of a type.
fn strip_version(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
    }
    o
}

fn with_version(object: &Value, rt: &ResourceType) -> Value {
    let mut o = object.clone();
    o["apiVersion"] = rt.api_version().into();
    o["kind"] = rt.kind.clone().into();
    o
}
