//! Replacing an object (PUT), and what every write to an existing object goes through:
//! ownership of the changed fields moves to the writer, identity stays, the generation follows
//! the spec.

use serde_json::Value;

use super::{
    EventType, Store, Target, WriteOptions, bump_generation, check_name, check_version,
    scoped_write,
};
use crate::admission;
use crate::api_error::ApiError;
use crate::managed_fields::{FieldSet, ManagedEntry};
use crate::metadata;

impl Store {
    /// Replaces an object (PUT), or its status (PUT on `/status`).
    pub fn update(
        &mut self,
        at: &Target,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::normalize(at.rt, at.ns, &mut object)?;
        let (_, live) = self.live(at.rt, at.ns, at.name)?;
        match object["metadata"]["resourceVersion"].as_str() {
            None | Some("") => {
                return Err(ApiError::invalid(
                    &at.rt.kind,
                    at.name,
                    vec![(
                        "metadata.resourceVersion".into(),
                        "Invalid value: 0: must be specified for an update".into(),
                    )],
                ));
            }
            Some(rv) => check_version(at, &live, rv)?,
        }
        check_name(&object, at.name)?;
        let next = scoped_write(at, &live, object);
        self.write(at, live, next, opts)
    }

    /// A write that is not an apply: ownership of the changed fields moves to the writer.
    pub(super) fn write(
        &mut self,
        at: &Target,
        live: Value,
        mut next: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        const OPERATION: &str = "Update";
        let (changed, removed) = FieldSet::changed(&live, &next, at.skips_status());
        let mut entries = ManagedEntry::read_all(&live);
        for e in &mut entries {
            for p in changed.iter().chain(removed.iter()) {
                e.fields.remove_overlapping(p);
            }
        }
        if !opts.manager.is_empty() && !changed.is_empty() {
            match entries
                .iter_mut()
                .find(|e| e.is(&opts.manager, OPERATION, at.subresource()))
            {
                Some(e) => e.fields.extend(&changed),
                None => entries.push(ManagedEntry {
                    manager: opts.manager.clone(),
                    operation: OPERATION.into(),
                    subresource: at.subresource().into(),
                    api_version: at.rt.api_version(),
                    time: metadata::now(),
                    fields: changed,
                }),
            }
        }
        ManagedEntry::write_all(&mut next, &entries);
        self.store_write(at, &live, next, opts)
    }

    /// Keeps identity fields, bumps the generation on spec changes, validates and stores.
    pub(super) fn store_write(
        &mut self,
        at: &Target,
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
        bump_generation(live, &mut next);
        let causes = admission::validate(at.rt, &next);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&at.rt.kind, at.name, causes));
        }
        next["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        if next == *live || opts.dry_run {
            return Ok(next);
        }
        self.commit(at.rt, at.key(), &mut next, EventType::Modified);
        Ok(next)
    }
}
