//! Release history in the cluster, so the agent keeps no state: one Secret per revision (like
//! Helm's release Secrets), gzip + base64 JSON, labelled `owner=coxswain,name=<release>`.
//! Reading one expands at most `MAX_HISTORY_RECORD_BYTES` and trusts only that type and those
//! labels.

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
use crate::limits::MAX_HISTORY_RECORD_BYTES;

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
    if json.len() as u64 > MAX_HISTORY_RECORD_BYTES {
        return Err(DeployError::Invalid(format!(
            "history record of revision {} is {} bytes, over the limit of {MAX_HISTORY_RECORD_BYTES} bytes",
            revision.number,
            json.len()
        )));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)
        .and_then(|()| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|e| DeployError::Invalid(format!("cannot compress a history record: {e}")))
}

/// Expands a record's gzip, refusing one that grows past `limit` bytes (a gzip bomb) without
/// ever holding more than `limit + 1` bytes.
fn gunzip(gz: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(limit.saturating_add(1))
        .read_to_end(&mut json)
        .map_err(|e| format!("not valid gzip: {e}"))?;
    if json.len() as u64 > limit {
        return Err(format!(
            "the record expands past the limit of {limit} bytes (history expansion limit)"
        ));
    }
    Ok(json)
}

fn decode(secret: &Value) -> Result<Revision, String> {
    let data = secret["data"]["release"]
        .as_str()
        .ok_or("no data.release")?;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| e.to_string())?;
    let json = gunzip(&gz, MAX_HISTORY_RECORD_BYTES)?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// Why a Secret listed as history is not one of `release`'s records: it must carry the record
/// type and the labels [`save`] writes (`owner=coxswain`, `name=<release>`). Any other Secret
/// (another tool's, an opaque one carrying the labels) is ignored: it cannot steer a rollback or
/// a prune. Whoever may write Secrets of this type in the namespace is trusted like the agent.
fn untrusted(secret: &Value, release: &str) -> Option<String> {
    let labels = &secret["metadata"]["labels"];
    if secret["type"] != RECORD_TYPE {
        Some(format!(
            "type is {}, not {RECORD_TYPE}",
            secret["type"].as_str().unwrap_or("(none)")
        ))
    } else if labels["owner"] != "coxswain" || labels["name"] != release {
        Some(format!("labels are not owner=coxswain,name={release}"))
    } else {
        None
    }
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
    let mut revisions: Vec<Revision> = list
        .items
        .iter()
        .filter_map(|secret| trusted_record(secret, ns, release))
        .collect();
    revisions.sort_by_key(|r| r.number);
    Ok(revisions)
}

/// The revision a listed Secret holds, when it is a readable record of this release in `ns`;
/// anything else is skipped with a warning.
fn trusted_record(secret: &DynamicObject, ns: &str, release: &str) -> Option<Revision> {
    let value = serde_json::to_value(secret).unwrap_or_default();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    if let Some(why) = untrusted(&value, release) {
        tracing::warn!(
            record = name,
            why,
            "secret is not a release history record; ignored"
        );
        return None;
    }
    match decode(&value) {
        Ok(r) if r.release == release && r.namespace == ns => Some(r),
        Ok(r) => {
            tracing::warn!(
                record = name,
                release = r.release,
                namespace = r.namespace,
                "history record of another release ignored"
            );
            None
        }
        Err(error) => {
            tracing::warn!(record = name, %error, "unreadable release history record skipped");
            None
        }
    }
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

    #[test]
    fn a_gzip_bomb_is_refused_at_the_limit_without_expanding_it() {
        // 64 MiB of zeros compresses to about 64 KiB.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1024 * 1024, "it fits a Secret");
        let secret = json!({"data": {"release":
            base64::engine::general_purpose::STANDARD.encode(&bomb)}});
        let err = decode(&secret).unwrap_err();
        assert!(
            err.contains(&format!("limit of {MAX_HISTORY_RECORD_BYTES} bytes")),
            "{err}"
        );
        // Under a small limit the same bytes are refused after reading limit + 1 bytes.
        assert!(gunzip(&bomb, 10).unwrap_err().contains("limit of 10 bytes"));
        // A real record still reads.
        let good = json!({"data": {"release": encode(&revision(1, RevisionStatus::Deployed, None)).unwrap()}});
        assert_eq!(decode(&good).unwrap().number, 1);
    }

    #[test]
    fn only_secrets_with_the_record_type_and_the_release_labels_are_trusted() {
        let labels = json!({"owner": "coxswain", "name": "web"});
        let record = json!({"type": RECORD_TYPE, "metadata": {"labels": labels}});
        assert_eq!(untrusted(&record, "web"), None);
        let opaque = json!({"type": "Opaque", "metadata": {"labels": labels}});
        assert!(
            untrusted(&opaque, "web")
                .unwrap()
                .contains("type is Opaque")
        );
        let untyped = json!({"metadata": {"labels": labels}});
        assert!(untrusted(&untyped, "web").is_some());
        let other = json!({"type": RECORD_TYPE, "metadata": {"labels": {"owner": "coxswain", "name": "api"}}});
        assert!(untrusted(&other, "web").unwrap().contains("name=web"));
        let unlabelled = json!({"type": RECORD_TYPE, "metadata": {}});
        assert!(untrusted(&unlabelled, "web").is_some());
    }
}
