//! One virtual cluster's objects, their resource versions and the event log watches read from.
//! Everything here is synchronous: the caller holds the cluster's lock for one operation and
//! never across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::fields::{self, FieldSet, ManagedEntry};
use crate::kinds;
use crate::resource::{self, BUILTIN, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// Events kept for watches that resume from a resourceVersion.
const LOG_CAPACITY: usize = 4096;

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

/// Which kind of patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
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
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = store.builtin("", "namespaces");
            let _ = store.create(&rt, None, json!({"metadata": {"name": ns}}), &opts);
        }
        for node in crate::controller::NODES {
            let rt = store.builtin("", "nodes");
            let _ = store.create(
                &rt,
                None,
                json!({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
                       "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}),
                &opts,
            );
        }
        store
    }

    fn builtin(&self, group: &str, plural: &str) -> ResourceType {
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

    /// Objects of a type in a namespace, without copies; for controllers.
    pub fn scan(&self, rt: &ResourceType) -> impl Iterator<Item = &Value> {
        self.bucket(rt).into_iter().flat_map(|b| b.values())
    }

    fn check_namespace(&self, rt: &ResourceType, ns: Option<&str>) -> Result<(), ApiError> {
        match (rt.namespaced, ns) {
            (true, None) => Err(ApiError::bad_request(format!(
                "{} is namespaced: the request needs a namespace",
                rt.plural
            ))),
            (true, Some(ns)) => {
                let exists = self
                    .objects
                    .get(&(String::new(), "namespaces".to_owned()))
                    .is_some_and(|b| b.contains_key(&(String::new(), ns.to_owned())));
                let terminating = self
                    .objects
                    .get(&(String::new(), "namespaces".to_owned()))
                    .and_then(|b| b.get(&(String::new(), ns.to_owned())))
                    .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null());
                if !exists {
                    Err(ApiError::not_found("", "namespaces", ns))
                } else if terminating {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
            (false, _) => Ok(()),
        }
    }

    /// Sets apiVersion, kind and namespace from the request, refusing a body that says
    /// otherwise.
    fn normalize(rt: &ResourceType, ns: Option<&str>, object: &mut Value) -> Result<(), ApiError> {
        let causes = kinds::well_formed(object);
        if !causes.is_empty() {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
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

    /// Creates an object (POST, or an apply of something new).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_as(rt, ns, &mut object, opts, "Update")?;
        Ok(object)
    }

    fn create_as(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        object: &mut Value,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<(), ApiError> {
        Self::normalize(rt, ns, object)?;
        self.check_namespace(rt, ns)?;
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            match object["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", suffix(self.uid_seq + 1));
                    object["metadata"]["name"] = name.into();
                }
                _ => {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        "",
                        vec![(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        let causes = kinds::validate(rt, object);
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &name, causes));
        }
        let key = (
            ns.filter(|_| rt.namespaced).unwrap_or_default().to_owned(),
            name.clone(),
        );
        if self.bucket(rt).is_some_and(|b| b.contains_key(&key)) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.has_status
            && rt.kind != "Node"
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        // The writer owns what it sent, not what the server defaults.
        let fields = FieldSet::leaves_of(object, rt.has_status);
        let seq = self.uid_seq + 1;
        kinds::default_new(rt, object, || {
            format!("10.96.{}.{}", (seq / 250) % 250, seq % 250 + 1)
        });
        let meta = &mut object["metadata"];
        meta["uid"] = uid(seq).into();
        meta["creationTimestamp"] = now().into();
        meta["generation"] = 1.into();
        if let Some(m) = meta.as_object_mut() {
            m.remove("managedFields");
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
        }
        if !opts.manager.is_empty() {
            let entry = ManagedEntry {
                manager: opts.manager.clone(),
                operation: operation.into(),
                subresource: String::new(),
                api_version: rt.api_version(),
                time: now(),
                fields,
            };
            ManagedEntry::write_all(object, &[entry]);
        }
        if opts.dry_run {
            object["metadata"]["resourceVersion"] = self.rv.to_string().into();
            return Ok(());
        }
        self.uid_seq = seq;
        self.commit(rt, key, object, EventType::Added);
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(object);
        }
        Ok(())
    }

    /// Stores an object with a new resourceVersion and records the event.
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
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.custom
            .retain(|t| format!("{}.{}", t.plural, t.group) != name);
        for t in resource::from_crd(crd) {
            if !BUILTIN
                .iter()
                .any(|b| b.group == t.group && b.plural == t.plural)
            {
                self.custom.push(t);
            }
        }
    }

    fn live(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<((String, String), Value), ApiError> {
        let key = (
            ns.filter(|_| rt.namespaced).unwrap_or_default().to_owned(),
            name.to_owned(),
        );
        let object = self
            .bucket(rt)
            .and_then(|b| b.get(&key))
            .map(|o| with_version(o, rt))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        Ok((key, object))
    }

    /// Replaces an object (PUT), or its status (PUT on `/status`).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut object: Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::normalize(rt, ns, &mut object)?;
        let (_, live) = self.live(rt, ns, name)?;
        match object["metadata"]["resourceVersion"].as_str() {
            None | Some("") => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    name,
                    vec![(
                        "metadata.resourceVersion".into(),
                        "Invalid value: 0: must be specified for an update".into(),
                    )],
                ));
            }
            Some(rv)
                if rv
                    != live["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default() =>
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            Some(_) => {}
        }
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let next = scoped_write(rt, &live, object, status_only);
        self.write(rt, ns, name, live, next, status_only, opts, "Update")
    }

    /// Patches an object: server-side apply, merge or JSON patch. An apply of an object that
    /// does not exist creates it.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the request's parameters"
    )]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if kind == PatchKind::Apply {
            if opts.manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH with application/apply-patch+yaml requires a fieldManager",
                ));
            }
            let mut config = body.clone();
            Self::normalize(rt, ns, &mut config)?;
            if config["metadata"]["name"].as_str() != Some(name) {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            return match self.live(rt, ns, name) {
                Err(e) if e.code == 404 && !status_only => {
                    self.create_as(rt, ns, &mut config, opts, "Apply")?;
                    Ok(config)
                }
                Err(e) => Err(e),
                Ok((_, live)) => self.apply(rt, ns, name, live, &config, status_only, opts),
            };
        }
        let (_, live) = self.live(rt, ns, name)?;
        let mut next = live.clone();
        match kind {
            PatchKind::Merge => json_patch::merge(&mut next, body),
            PatchKind::Strategic => crate::strategic::apply(&mut next, body),
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(body.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut next, &ops).map_err(|e| {
                    ApiError::invalid(
                        &rt.kind,
                        name,
                        vec![("".into(), format!("json patch failed: {e}"))],
                    )
                })?;
            }
            PatchKind::Apply => {}
        }
        if let Some(rv) = next["metadata"]["resourceVersion"].as_str()
            && rv
                != live["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        Self::normalize(rt, ns, &mut next)?;
        let next = scoped_write(rt, &live, next, status_only);
        self.write(rt, ns, name, live, next, status_only, opts, "Update")
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the request's parameters"
    )]
    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        live: Value,
        config: &Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let subresource = if status_only { "status" } else { "" };
        let scoped = |v: &Value| -> Value {
            if status_only {
                json!({"status": v["status"].clone()})
            } else {
                v.clone()
            }
        };
        let applied = FieldSet::leaves_of(&scoped(config), rt.has_status && !status_only);
        let mut entries = ManagedEntry::read_all(&live);
        let mine = |e: &ManagedEntry| e.is(&opts.manager, "Apply", subresource);

        // Conflicts: another manager owns a field this apply sets to a different value.
        let mut conflicts = Vec::new();
        for path in applied.iter() {
            for e in entries
                .iter()
                .filter(|e| !mine(e) && e.fields.overlaps(path))
            {
                if fields::get(&live, path) != fields::get(config, path) {
                    conflicts.push((e.manager.clone(), path.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": {}", fields::dotted(p)))
                .collect();
            let causes = conflicts
                .iter()
                .map(|(m, p)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": fields::dotted(p)})
                })
                .collect();
            return Err(ApiError::apply_conflict(
                format!(
                    "Apply failed with {} conflict(s): {}",
                    lines.len(),
                    lines.join("; ")
                ),
                causes,
            ));
        }
        if opts.force {
            for (_, path) in &conflicts {
                for e in entries.iter_mut().filter(|e| !mine(e)) {
                    e.fields.remove_overlapping(path);
                }
            }
        }

        // Fields this manager applied before and no longer does, owned by nobody else, go.
        let previous = entries
            .iter()
            .find(|e| mine(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut next = live.clone();
        for path in previous.minus(&applied).iter() {
            let shared = entries.iter().any(|e| !mine(e) && e.fields.overlaps(path));
            if !shared {
                fields::remove(&mut next, path);
            }
        }
        let mut patch = scoped(config);
        if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
            for identity in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
            ] {
                meta.remove(identity);
            }
        }
        if rt.has_status
            && !status_only
            && let Some(map) = patch.as_object_mut()
        {
            map.remove("status");
        }
        fields::merge(&mut next, &patch);

        entries.retain(|e| !mine(e));
        entries.push(ManagedEntry {
            manager: opts.manager.clone(),
            operation: "Apply".into(),
            subresource: subresource.into(),
            api_version: rt.api_version(),
            time: now(),
            fields: applied,
        });
        ManagedEntry::write_all(&mut next, &entries);
        self.store_write(rt, ns, name, &live, next, opts)
    }

    /// A non-apply write: ownership of the changed fields moves to the writer.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the request's parameters"
    )]
    fn write(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        live: Value,
        mut next: Value,
        status_only: bool,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Value, ApiError> {
        let (changed, removed) = FieldSet::changed(&live, &next, rt.has_status && !status_only);
        let mut entries = ManagedEntry::read_all(&live);
        for e in &mut entries {
            for p in changed.iter().chain(removed.iter()) {
                e.fields.remove_overlapping(p);
            }
        }
        if !opts.manager.is_empty() && !changed.is_empty() {
            let subresource = if status_only { "status" } else { "" };
            match entries
                .iter_mut()
                .find(|e| e.is(&opts.manager, operation, subresource))
            {
                Some(e) => e.fields.extend(&changed),
                None => entries.push(ManagedEntry {
                    manager: opts.manager.clone(),
                    operation: operation.into(),
                    subresource: subresource.into(),
                    api_version: rt.api_version(),
                    time: now(),
                    fields: changed,
                }),
            }
        }
        ManagedEntry::write_all(&mut next, &entries);
        self.store_write(rt, ns, name, &live, next, opts)
    }

    /// Keeps identity fields, bumps the generation on spec changes, validates and stores.
    fn store_write(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        live: &Value,
        mut next: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        for identity in ["uid", "creationTimestamp", "name", "namespace"] {
            match live["metadata"].get(identity) {
                Some(v) => next["metadata"][identity] = v.clone(),
                None => {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove(identity);
                    }
                }
            }
        }
        let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
        let bump = kinds::spec_changed(live, &next);
        next["metadata"]["generation"] = (generation + i64::from(bump)).into();
        let causes = kinds::validate(rt, &next);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, name, causes));
        }
        next["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        if next == *live || opts.dry_run {
            return Ok(next);
        }
        let key = (
            ns.filter(|_| rt.namespaced).unwrap_or_default().to_owned(),
            name.to_owned(),
        );
        self.commit(rt, key, &mut next, EventType::Modified);
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&next);
        }
        Ok(next)
    }

    /// Writes a controller's view of an object's status; no-op when unchanged.
    pub fn set_status(&mut self, rt: &ResourceType, ns: &str, name: &str, status: Value) {
        let key = (ns.to_owned(), name.to_owned());
        let Some(live) = self.bucket(rt).and_then(|b| b.get(&key)) else {
            return;
        };
        if live["status"] == status {
            return;
        }
        let mut next = live.clone();
        next["status"] = status;
        self.commit(rt, key, &mut next, EventType::Modified);
    }

    /// A controller's write of a whole object (create or replace), no field tracking.
    pub fn put_internal(&mut self, rt: &ResourceType, mut object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (ns, name);
        let existing = self.bucket(rt).and_then(|b| b.get(&key)).cloned();
        match existing {
            Some(live) => {
                object["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
                object["metadata"]["uid"] = live["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] =
                    live["metadata"]["creationTimestamp"].clone();
                let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
                let bump = kinds::spec_changed(&live, &object);
                object["metadata"]["generation"] = (generation + i64::from(bump)).into();
                if strip_version(&object) != live {
                    self.commit(rt, key, &mut object, EventType::Modified);
                }
            }
            None => {
                self.uid_seq += 1;
                object["metadata"]["uid"] = uid(self.uid_seq).into();
                object["metadata"]["creationTimestamp"] = now().into();
                object["metadata"]["generation"] = 1.into();
                object["kind"] = rt.kind.clone().into();
                object["apiVersion"] = rt.api_version().into();
                self.commit(rt, key, &mut object, EventType::Added);
            }
        }
    }

    /// Deletes an object and, unless orphaned, everything it owns.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        orphan: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let (key, live) = self.live(rt, ns, name)?;
        if dry_run {
            return Ok(live);
        }
        if rt.kind == "Namespace" {
            // Like the real namespace controller: Terminating first, contents removed and the
            // namespace itself finalized by the controllers shortly after.
            if live["metadata"]["deletionTimestamp"].is_null() {
                let mut next = strip_version(&live);
                next["metadata"]["deletionTimestamp"] = now().into();
                next["status"]["phase"] = "Terminating".into();
                self.commit(rt, key, &mut next, EventType::Modified);
                return Ok(with_version(&next, rt));
            }
            return Ok(live);
        }
        self.remove(rt, &key, orphan);
        Ok(live)
    }

    /// Removes the terminating namespaces with these uids and everything in them.
    pub fn finalize_namespaces(&mut self, uids: &[String]) {
        let rt = self.builtin("", "namespaces");
        let terminating: Vec<(String, String)> = self
            .bucket(&rt)
            .map(|b| {
                b.iter()
                    .filter(|(_, o)| !o["metadata"]["deletionTimestamp"].is_null())
                    .filter(|(_, o)| uids.iter().any(|u| o["metadata"]["uid"] == u.as_str()))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for key in terminating {
            self.remove(&rt, &key, false);
        }
    }

    fn remove(&mut self, rt: &ResourceType, key: &(String, String), orphan: bool) {
        let Some(object) = self
            .objects
            .get_mut(&Self::key(rt))
            .and_then(|b| b.remove(key))
        else {
            return;
        };
        self.rv += 1;
        let mut gone = with_version(&object, rt);
        gone["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.push_event(rt, EventType::Deleted, Arc::new(gone));
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match rt.kind.as_str() {
            "Namespace" => {
                let ns = key.1.clone();
                for (t, k) in self
                    .all_keys()
                    .into_iter()
                    .filter(|(t, k)| t.namespaced && k.0 == ns)
                {
                    self.remove(&t, &k, false);
                }
            }
            "CustomResourceDefinition" => {
                let types: Vec<ResourceType> = resource::from_crd(&object);
                for t in &types {
                    let keys: Vec<_> = self
                        .bucket(t)
                        .map(|b| b.keys().cloned().collect())
                        .unwrap_or_default();
                    for k in keys {
                        self.remove(t, &k, false);
                    }
                }
                let name = key.1.clone();
                self.custom
                    .retain(|t| format!("{}.{}", t.plural, t.group) != name);
            }
            _ => {}
        }
        if !orphan && !uid.is_empty() {
            for (t, k) in self.owned_by(&uid) {
                self.remove(&t, &k, false);
            }
        }
    }

    fn all_keys(&self) -> Vec<(ResourceType, (String, String))> {
        let mut keys = Vec::new();
        for t in self.types() {
            if let Some(b) = self.bucket(t) {
                if keys
                    .iter()
                    .any(|(k, _): &(ResourceType, _)| k.group == t.group && k.plural == t.plural)
                {
                    continue;
                }
                keys.extend(b.keys().map(|k| (t.clone(), k.clone())));
            }
        }
        keys
    }

    fn owned_by(&self, uid: &str) -> Vec<(ResourceType, (String, String))> {
        self.all_keys()
            .into_iter()
            .filter(|(t, k)| {
                self.bucket(t).and_then(|b| b.get(k)).is_some_and(|o| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
            })
            .collect()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// What a write may change: only `status` through the status subresource, everything but
/// `status` through the main resource of a type that has the subresource.
fn scoped_write(rt: &ResourceType, live: &Value, mut next: Value, status_only: bool) -> Value {
    if status_only {
        let mut only = live.clone();
        only["status"] = next["status"].clone();
        only
    } else {
        if rt.has_status {
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

fn uid(seq: u64) -> String {
    let h = resource::fnv_hex(&seq.to_le_bytes());
    format!(
        "{}-{}-4{}-8{}-{}{:04x}",
        &h[..8],
        &h[8..12],
        &h[12..15],
        &h[1..4],
        &h[4..12],
        seq & 0xffff
    )
}

/// Five lowercase alphanumerics, like the API server's generated name suffixes.
pub fn suffix(seq: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n =
        u64::from_str_radix(&resource::fnv_hex(&seq.to_le_bytes())[..12], 16).unwrap_or(seq);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Now, RFC 3339 with second precision, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
