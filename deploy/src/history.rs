//! Release history in the cluster, so the agent keeps no state: one Secret per revision (like
//! Helm's release Secrets), gzip + base64 JSON, labelled `owner=coxswain,name=<release>`.

use std::io::{Read, Write};

use base64::Engine as _;
use jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use proto::Phase;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::DeployError;
use crate::cluster::{FIELD_MANAGER, ObjectRef, retrying};

/// Secret type of history records.
pub const RECORD_TYPE: &str = "coxswain.dev/release.v1";

/// Where a revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionStatus {
    /// Being applied or waited on; a pending revision without a live lock was abandoned.
    Pending,
    /// Healthy and current.
    Deployed,
    /// Did not become healthy (or was abandoned).
    Failed,
    /// Replaced by a newer deployed revision, or cancelled by a newer intent.
    Superseded,
}

impl RevisionStatus {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deployed => "deployed",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }
}

/// One revision of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// Release name.
    pub release: String,
    /// Release namespace (where the record lives).
    pub namespace: String,
    /// Revision number, from 1.
    pub number: u32,
    /// Where it stands.
    pub status: RevisionStatus,
    /// The intent that made it, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<String>,
    /// How that intent ended, once it did (`succeeded`, `failed`, `rolled_back`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Phase>,
    /// Human version.
    pub version: String,
    /// Digest of the rendered manifests.
    pub digest: String,
    /// The manifests (tests included).
    pub objects: Vec<Value>,
    /// What was applied.
    #[serde(default)]
    pub inventory: Vec<ObjectRef>,
    /// For a rollback: the revision it re-applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u32>,
    /// Why it failed or was superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

fn secrets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Secret".into(),
        plural: "secrets".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// The Secret name of a revision.
pub fn record_name(release: &str, number: u32) -> String {
    format!("coxswain.release.v1.{release}.v{number}")
}

fn encode(revision: &Revision) -> Result<String, DeployError> {
    let json = serde_json::to_vec(revision).map_err(|e| DeployError::Invalid(e.to_string()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)
        .and_then(|()| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|e| DeployError::Invalid(format!("cannot compress a history record: {e}")))
}

fn decode(secret: &Value) -> Result<Revision, String> {
    let data = secret["data"]["release"]
        .as_str()
        .ok_or("no data.release")?;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| e.to_string())?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut json)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// Every revision of a release, oldest first. Unreadable records are skipped with a warning.
pub async fn list(
    client: &kube::Client,
    ns: &str,
    release: &str,
    deadline: Instant,
) -> Result<Vec<Revision>, DeployError> {
    let api = secrets(client, ns);
    let params = ListParams::default().labels(&format!("owner=coxswain,name={release}"));
    let list = match retrying(deadline, "list release history", || api.list(&params)).await {
        Ok(list) => list,
        Err(DeployError::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut revisions = Vec::new();
    for secret in list.items {
        let value = serde_json::to_value(&secret).unwrap_or_default();
        match decode(&value) {
            Ok(r) if r.release == release => revisions.push(r),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(record = ?secret.metadata.name, %error, "unreadable release history record skipped")
            }
        }
    }
    revisions.sort_by_key(|r| r.number);
    Ok(revisions)
}

/// Writes a revision's record.
pub async fn save(
    client: &kube::Client,
    revision: &Revision,
    deadline: Instant,
) -> Result<(), DeployError> {
    let api = secrets(client, &revision.namespace);
    let name = record_name(&revision.release, revision.number);
    let body = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {
            "owner": "coxswain", "name": revision.release,
            "status": revision.status.as_str(), "version": revision.number.to_string(),
        }},
        "type": RECORD_TYPE,
        "data": {"release": encode(revision)?},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    retrying(deadline, "save release history", || {
        api.patch(&name, &params, &patch)
    })
    .await?;
    Ok(())
}

/// The latest deployed revision of a history (oldest first): the one live in the cluster.
pub(crate) fn last_deployed(revisions: &[Revision]) -> Option<&Revision> {
    revisions
        .iter()
        .rev()
        .find(|r| r.status == RevisionStatus::Deployed)
}

/// Deletes the oldest records beyond `keep`, never the latest deployed one.
pub async fn trim(
    client: &kube::Client,
    revisions: &[Revision],
    keep: usize,
    deadline: Instant,
) -> Result<(), DeployError> {
    let last_deployed = last_deployed(revisions).map(|r| r.number);
    let excess = revisions.len().saturating_sub(keep.max(1));
    for r in revisions
        .iter()
        .take(excess)
        .filter(|r| Some(r.number) != last_deployed)
    {
        let api = secrets(client, &r.namespace);
        let name = record_name(&r.release, r.number);
        let params = DeleteParams::default();
        match retrying(deadline, "trim release history", || {
            api.delete(&name, &params)
        })
        .await
        {
            Ok(_)
            | Err(DeployError::Api {
                source: kube::Error::Api(_),
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A revision of release `web` in `shop` with nothing applied, for tests.
    pub(crate) fn revision(
        number: u32,
        status: RevisionStatus,
        outcome: Option<Phase>,
    ) -> Revision {
        Revision {
            release: "web".into(),
            namespace: "shop".into(),
            number,
            status,
            intent_id: None,
            outcome,
            version: number.to_string(),
            digest: String::new(),
            objects: Vec::new(),
            inventory: Vec::new(),
            rollback_of: None,
            reason: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn records_round_trip_through_gzip_and_base64() {
        let r = Revision {
            release: "web".into(),
            namespace: "shop".into(),
            number: 3,
            status: RevisionStatus::Deployed,
            intent_id: Some("i-1".into()),
            outcome: Some(Phase::RolledBack),
            version: "1.0".into(),
            digest: "sha256:x".into(),
            objects: vec![json!({"kind": "ConfigMap"})],
            inventory: vec![],
            rollback_of: Some(1),
            reason: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        let secret = json!({"data": {"release": encode(&r).unwrap()}});
        assert_eq!(decode(&secret).unwrap(), r);
        assert!(decode(&json!({"data": {"release": "!!"}})).is_err());
    }
}
