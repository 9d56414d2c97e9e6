//! Creating an object (POST, or an apply of something new): admission, a name, identity, the
//! writer's managed fields.

use serde_json::Value;

use super::{EventType, Store, WriteOptions, object_key};
use crate::admission;
use crate::api_error::ApiError;
use crate::managed_fields::{FieldSet, ManagedEntry};
use crate::metadata::{self, meta};
use crate::resource::ResourceType;

impl Store {
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

    /// Creates `object` in place, recording the writer's fields under `operation`.
    pub(super) fn create_as(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        object: &mut Value,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<(), ApiError> {
        Self::normalize(rt, ns, object)?;
        self.check_namespace(rt, ns)?;
        self.name_if_unnamed(rt, object)?;
        let causes = admission::validate(rt, object);
        let name = meta(object, "name").to_owned();
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &name, causes));
        }
        let key = object_key(rt, ns, &name);
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
        admission::default_new(rt, object, || {
            format!("10.96.{}.{}", (seq / 250) % 250, seq % 250 + 1)
        });
        stamp_identity(object, seq);
        if !opts.manager.is_empty() {
            let entry = ManagedEntry {
                manager: opts.manager.clone(),
                operation: operation.into(),
                subresource: String::new(),
                api_version: rt.api_version(),
                time: metadata::now(),
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
        Ok(())
    }

    /// Names an object without a name from its `generateName`; 422 when it has neither.
    fn name_if_unnamed(&self, rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
        if !meta(object, "name").is_empty() {
            return Ok(());
        }
        match object["metadata"]["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                let name = format!("{prefix}{}", metadata::suffix(self.uid_seq + 1));
                object["metadata"]["name"] = name.into();
                Ok(())
            }
            _ => Err(ApiError::invalid(
                &rt.kind,
                "",
                vec![(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            )),
        }
    }
}

/// The identity the server gives a new object; what the body said of it goes.
fn stamp_identity(object: &mut Value, seq: u64) {
    let meta = &mut object["metadata"];
    meta["uid"] = metadata::uid(seq).into();
    meta["creationTimestamp"] = metadata::now().into();
    meta["generation"] = 1.into();
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
    }
}
