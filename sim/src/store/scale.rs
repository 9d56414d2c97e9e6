//! The `scale` subresource of Deployments, StatefulSets and ReplicaSets: a `Scale`
//! (autoscaling/v1) made from the object, and writes that change its `spec.replicas` alone.

use serde_json::{Value, json};

use super::patch::edit;
use super::{PatchKind, Store, Target, WriteOptions, check_version};
use crate::api_error::ApiError;
use crate::selector::LabelSelector;

/// A write to a `Scale`: a replacement (PUT) or a patch.
#[derive(Debug, Clone, Copy)]
pub enum ScaleChange<'a> {
    /// The whole `Scale`.
    Replace(&'a Value),
    /// A merge, strategic merge or JSON patch of the `Scale`.
    Patch(PatchKind, &'a Value),
}

impl Store {
    /// The `Scale` of an object.
    pub fn get_scale(&self, at: &Target) -> Result<Value, ApiError> {
        let (_, live) = self.live(at.rt, at.ns, at.name)?;
        Ok(scale_of(&live))
    }

    /// Changes an object's `spec.replicas` through its `Scale`; returns the new `Scale`. A
    /// `resourceVersion` in the new `Scale` must be the object's.
    pub fn update_scale(
        &mut self,
        at: &Target,
        change: ScaleChange,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if at.status {
            return Err(ApiError::bad_request("a Scale has no status subresource"));
        }
        let (_, live) = self.live(at.rt, at.ns, at.name)?;
        let scale = match change {
            ScaleChange::Replace(body) => body.clone(),
            ScaleChange::Patch(PatchKind::Apply, _) => {
                return Err(ApiError::unsupported_media_type(
                    "application/apply-patch+yaml (on a scale subresource)",
                ));
            }
            ScaleChange::Patch(kind, body) => {
                let mut scale = scale_of(&live);
                edit(at, kind, &mut scale, body)?;
                scale
            }
        };
        if let Some(rv) = scale["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
        {
            check_version(at, &live, rv)?;
        }
        let replicas = match &scale["spec"]["replicas"] {
            Value::Null => 0,
            v => v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    at.name,
                    vec![(
                        "spec.replicas".into(),
                        format!("Invalid value: {v}: must be greater than or equal to 0"),
                    )],
                )
            })?,
        };
        let mut next = live.clone();
        next["spec"]["replicas"] = replicas.into();
        let stored = self.write(at, live, next, opts)?;
        Ok(scale_of(&stored))
    }
}

/// The `Scale` of a workload: its desired replicas, and the replicas and selector its status
/// reports.
fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": LabelSelector::from_object(&object["spec"]["selector"]).to_string(),
        },
    })
}
