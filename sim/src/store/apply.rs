//! Server-side apply of an object that exists: conflicts with other field managers (unless
//! forced), removal of the fields this manager stops applying, and the merge.

use serde_json::{Value, json};

use super::{Store, Target, WriteOptions};
use crate::api_error::ApiError;
use crate::managed_fields::{self, FieldPath, FieldSet, ManagedEntry};
use crate::metadata;

/// The operation an apply records in `managedFields`.
const APPLY: &str = "Apply";

/// Metadata the server keeps whatever an apply says.
const IDENTITY: [&str; 5] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
];

impl Store {
    /// Applies `config` to the `live` object on behalf of `opts.manager`.
    pub(super) fn apply(
        &mut self,
        at: &Target,
        live: Value,
        config: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let scoped = if at.status {
            json!({"status": config["status"].clone()})
        } else {
            config.clone()
        };
        let applied = FieldSet::leaves_of(&scoped, at.skips_status());
        let mut owners = Owners {
            entries: ManagedEntry::read_all(&live),
            manager: &opts.manager,
            subresource: at.subresource(),
        };
        let conflicts = owners.conflicts(&applied, &live, config);
        if !conflicts.is_empty() && !opts.force {
            return Err(conflict_error(&conflicts));
        }
        if opts.force {
            owners.give_up(&conflicts);
        }
        let mut next = live.clone();
        owners.remove_unapplied(&applied, &mut next);
        managed_fields::merge(&mut next, &applied_patch(at, scoped));
        let entries = owners.with_applied(applied, at.rt.api_version());
        ManagedEntry::write_all(&mut next, &entries);
        self.store_write(at, &live, next, opts)
    }
}

/// The live object's field managers, as one applier sees them.
struct Owners<'a> {
    entries: Vec<ManagedEntry>,
    manager: &'a str,
    subresource: &'static str,
}

impl Owners<'_> {
    fn is_mine(&self, e: &ManagedEntry) -> bool {
        e.is(self.manager, APPLY, self.subresource)
    }

    /// Other managers owning a field this apply sets to a different value.
    fn conflicts(
        &self,
        applied: &FieldSet,
        live: &Value,
        config: &Value,
    ) -> Vec<(String, FieldPath)> {
        let mut conflicts = Vec::new();
        for path in applied.iter() {
            for e in self
                .entries
                .iter()
                .filter(|e| !self.is_mine(e) && e.fields.overlaps(path))
            {
                if managed_fields::get(live, path) != managed_fields::get(config, path) {
                    conflicts.push((e.manager.clone(), path.clone()));
                }
            }
        }
        conflicts
    }

    /// A forced apply: the other managers lose the fields they conflicted on.
    fn give_up(&mut self, conflicts: &[(String, FieldPath)]) {
        let (manager, subresource) = (self.manager, self.subresource);
        for (_, path) in conflicts {
            for e in self
                .entries
                .iter_mut()
                .filter(|e| !e.is(manager, APPLY, subresource))
            {
                e.fields.remove_overlapping(path);
            }
        }
    }

    /// Fields this manager applied before and no longer does, owned by nobody else, go.
    fn remove_unapplied(&self, applied: &FieldSet, next: &mut Value) {
        let previous = self
            .entries
            .iter()
            .find(|e| self.is_mine(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        for path in previous.minus(applied).iter() {
            let shared = self
                .entries
                .iter()
                .any(|e| !self.is_mine(e) && e.fields.overlaps(path));
            if !shared {
                managed_fields::remove(next, path);
            }
        }
    }

    /// The entries after the apply: this manager's replaced by what it applied now.
    fn with_applied(self, applied: FieldSet, api_version: String) -> Vec<ManagedEntry> {
        let mut entries: Vec<ManagedEntry> = self
            .entries
            .iter()
            .filter(|e| !self.is_mine(e))
            .cloned()
            .collect();
        entries.push(ManagedEntry {
            manager: self.manager.to_owned(),
            operation: APPLY.into(),
            subresource: self.subresource.into(),
            api_version,
            time: metadata::now(),
            fields: applied,
        });
        entries
    }
}

/// What an apply merges into the live object: never identity, and `status` only through the
/// status subresource of a type that has one.
fn applied_patch(at: &Target, mut patch: Value) -> Value {
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        for identity in IDENTITY {
            meta.remove(identity);
        }
    }
    if at.skips_status()
        && let Some(map) = patch.as_object_mut()
    {
        map.remove("status");
    }
    patch
}

/// 409 listing every conflicting manager and field.
fn conflict_error(conflicts: &[(String, FieldPath)]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| format!("conflict with \"{m}\": {}", managed_fields::dotted(p)))
        .collect();
    let causes = conflicts
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": managed_fields::dotted(p)})
        })
        .collect();
    ApiError::apply_conflict(
        format!(
            "Apply failed with {} conflict(s): {}",
            lines.len(),
            lines.join("; ")
        ),
        causes,
    )
}
