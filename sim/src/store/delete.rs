//! Deleting: an object and, unless orphaned, everything it owns; a namespace through
//! Terminating, with its contents; a CRD with its objects and types.

use std::sync::Arc;

use serde_json::Value;

use super::{EventType, Store, strip_version, with_version};
use crate::api_error::ApiError;
use crate::metadata::{self, meta};
use crate::resource::{self, ResourceType};

/// An object's type and its key in the type's bucket.
type Located = (ResourceType, (String, String));

impl Store {
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
            if !metadata::is_terminating(&live) {
                let mut next = strip_version(&live);
                next["metadata"]["deletionTimestamp"] = metadata::now().into();
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
        let rt = Self::builtin("", "namespaces");
        let terminating: Vec<(String, String)> = self
            .bucket(&rt)
            .map(|b| {
                b.iter()
                    .filter(|(_, o)| metadata::is_terminating(o))
                    .filter(|(_, o)| uids.iter().any(|u| o["metadata"]["uid"] == u.as_str()))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for key in terminating {
            self.remove(&rt, &key, false);
        }
    }

    /// Removes an object, records the event, and removes what goes with it.
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
        match rt.kind.as_str() {
            "Namespace" => self.remove_contents(&key.1),
            "CustomResourceDefinition" => self.remove_custom_resources(&key.1, &object),
            _ => {}
        }
        let uid = meta(&object, "uid").to_owned();
        if !orphan && !uid.is_empty() {
            for (t, k) in self.owned_by(&uid) {
                self.remove(&t, &k, false);
            }
        }
    }

    /// Everything in a namespace.
    fn remove_contents(&mut self, ns: &str) {
        for (t, k) in self
            .all_keys()
            .into_iter()
            .filter(|(t, k)| t.namespaced && k.0 == ns)
        {
            self.remove(&t, &k, false);
        }
    }

    /// The objects of the types a CRD declared, and the types.
    fn remove_custom_resources(&mut self, name: &str, crd: &Value) {
        for t in &resource::from_crd(crd) {
            let keys: Vec<_> = self
                .bucket(t)
                .map(|b| b.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                self.remove(t, &k, false);
            }
        }
        self.forget_crd(name);
    }

    fn all_keys(&self) -> Vec<Located> {
        let mut keys = Vec::new();
        for t in self.types() {
            if let Some(b) = self.bucket(t) {
                if keys
                    .iter()
                    .any(|(k, _): &Located| k.group == t.group && k.plural == t.plural)
                {
                    continue;
                }
                keys.extend(b.keys().map(|k| (t.clone(), k.clone())));
            }
        }
        keys
    }

    fn owned_by(&self, uid: &str) -> Vec<Located> {
        self.all_keys()
            .into_iter()
            .filter(|(t, k)| {
                self.bucket(t)
                    .and_then(|b| b.get(k))
                    .is_some_and(|o| metadata::is_owned_by(o, uid))
            })
            .collect()
    }
}
