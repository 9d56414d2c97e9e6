//! The controllers' writes: whole objects and statuses, without admission or field tracking,
//! and nothing stored when nothing changed (so an idle cluster stays idle).

use serde_json::Value;

use super::{EventType, Store, bump_generation, strip_version};
use crate::metadata::{self, meta};
use crate::resource::ResourceType;

impl Store {
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
        let key = (
            meta(&object, "namespace").to_owned(),
            meta(&object, "name").to_owned(),
        );
        let existing = self.bucket(rt).and_then(|b| b.get(&key)).cloned();
        match existing {
            Some(live) => {
                for identity in ["resourceVersion", "uid", "creationTimestamp"] {
                    object["metadata"][identity] = live["metadata"][identity].clone();
                }
                bump_generation(&live, &mut object);
                if strip_version(&object) != live {
                    self.commit(rt, key, &mut object, EventType::Modified);
                }
            }
            None => {
                self.uid_seq += 1;
                object["metadata"]["uid"] = metadata::uid(self.uid_seq).into();
                object["metadata"]["creationTimestamp"] = metadata::now().into();
                object["metadata"]["generation"] = 1.into();
                object["kind"] = rt.kind.clone().into();
                object["apiVersion"] = rt.api_version().into();
                self.commit(rt, key, &mut object, EventType::Added);
            }
        }
    }
}
