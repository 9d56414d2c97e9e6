//! Patching an object (PATCH): server-side apply, merge, strategic merge or JSON patch, each
//! a read-modify-write in one call, so under one hold of the cluster's lock.

use serde_json::Value;

use super::{Store, Target, WriteOptions, check_name, check_version, scoped_write};
use crate::api_error::ApiError;

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

/// The object after a patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Patched {
    /// As stored (or as it would be, on a dry run).
    pub object: Value,
    /// The patch was an apply that created the object.
    pub created: bool,
}

impl Store {
    /// Patches an object: server-side apply, merge or JSON patch. An apply of an object that
    /// does not exist creates it.
    pub fn patch(
        &mut self,
        at: &Target,
        kind: PatchKind,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Patched, ApiError> {
        if kind == PatchKind::Apply {
            return self.apply_or_create(at, body, opts);
        }
        let (_, live) = self.live(at.rt, at.ns, at.name)?;
        let mut next = live.clone();
        edit(at, kind, &mut next, body)?;
        if let Some(rv) = next["metadata"]["resourceVersion"].as_str() {
            check_version(at, &live, rv)?;
        }
        Self::normalize(at.rt, at.ns, &mut next)?;
        let next = scoped_write(at, &live, next);
        let object = self.write(at, live, next, opts)?;
        Ok(Patched {
            object,
            created: false,
        })
    }

    /// Server-side apply: of an object that exists, or, except through `/status`, a create.
    fn apply_or_create(
        &mut self,
        at: &Target,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Patched, ApiError> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires a fieldManager",
            ));
        }
        let mut config = body.clone();
        Self::normalize(at.rt, at.ns, &mut config)?;
        check_name(&config, at.name)?;
        match self.live(at.rt, at.ns, at.name) {
            Err(e) if e.code == 404 && !at.status => {
                self.create_as(at.rt, at.ns, &mut config, opts, "Apply")?;
                Ok(Patched {
                    object: config,
                    created: true,
                })
            }
            Err(e) => Err(e),
            Ok((_, live)) => Ok(Patched {
                object: self.apply(at, live, &config, opts)?,
                created: false,
            }),
        }
    }
}

/// Applies a merge, strategic merge or JSON patch to `next` (an apply is not an edit of what
/// is there: nothing happens).
pub(super) fn edit(
    at: &Target,
    kind: PatchKind,
    next: &mut Value,
    body: &Value,
) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge => json_patch::merge(next, body),
        PatchKind::Strategic => crate::strategic::apply(next, body),
        PatchKind::Json => json_patch_ops(at, next, body)?,
        PatchKind::Apply => {}
    }
    Ok(())
}

/// Applies a JSON patch (RFC 6902) to `next`: 400 when it is not one, 422 when it fails.
fn json_patch_ops(at: &Target, next: &mut Value, body: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(next, &ops).map_err(|e| {
        ApiError::invalid(
            &at.rt.kind,
            at.name,
            vec![("".into(), format!("json patch failed: {e}"))],
        )
    })
}
