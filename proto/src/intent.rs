//! The deploy intent: one release, one cluster, everything the agent needs to apply it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{ProblemKind, Validate, ValidationErrors, check_dns_label};

/// Rendered manifests larger than this travel through the bundle object store, not inline.
pub const MAX_INLINE_MANIFEST_BYTES: usize = 512 * 1024;

/// Longest intent id: it becomes part of `Nats-Msg-Id` and of every event id.
const MAX_ID_LEN: usize = 128;
/// Longest free-text field (version, requested_by).
const MAX_TEXT_LEN: usize = 256;
/// Longest allowed health deadline: a day.
const MAX_HEALTH_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// A request to deploy one release to one cluster.
///
/// The coordinator publishes one per targeted cluster on `coxswain.intent.<cluster>.<release>`;
/// the cluster's agent applies it and reports `Outcome`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeployIntent {
    /// Version of this message's schema; this build writes and reads `1`.
    pub schema_version: u32,
    /// Unique id, also the idempotency key (a CI retry with the same id deploys once).
    /// 1-128 characters of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// Target cluster (DNS-1123 label).
    pub cluster: String,
    /// Release name (DNS-1123 label).
    pub release: String,
    /// Namespace the release lives in (DNS-1123 label).
    pub namespace: String,
    /// Environment this intent was rendered for; must equal the agent's `env` label.
    pub environment: String,
    /// Human version of the release (a git sha, a semver, a tag).
    pub version: String,
    /// Image references by name, for the audit trail (`web` -> `registry/web:1.2.3`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The rendered manifests, inline or by bundle digest.
    pub manifests: Manifests,
    /// How health is judged.
    #[serde(default)]
    pub health: HealthPolicy,
    /// What happens when health fails.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Who asked: a CI job URL, a user, a bot.
    pub requested_by: String,
    /// When the intent was created (RFC 3339).
    #[schemars(with = "String")]
    pub created_at: Timestamp,
    /// The coordinator rollout this intent belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    /// After this instant (RFC 3339) an agent refuses the intent; part of what the
    /// coordinator signs, so a captured intent cannot be replayed forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<Timestamp>,
}

/// Where the rendered manifests are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Manifests {
    /// The objects themselves, in apply order.
    Inline {
        /// `sha256:<hex>` of the rendered manifests.
        digest: String,
        /// Kubernetes objects as JSON (`apiVersion`, `kind`, `metadata.name` required).
        objects: Vec<serde_json::Value>,
    },
    /// A bundle in the `coxswain-bundles` object store, named by its digest.
    Bundle {
        /// `sha256:<hex>`; the agent verifies the fetched bytes against it.
        digest: String,
        /// Size of the bundle in bytes.
        size: u64,
    },
    /// Re-apply a revision from the cluster's own release history (`coxswain rollback`):
    /// `revision`, or the one deployed before the current one when absent.
    Revision {
        /// Revision number in the cluster's history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u32>,
    },
}

impl Manifests {
    /// The digest of the rendered manifests, wherever they are (none for a revision).
    pub fn digest(&self) -> Option<&str> {
        match self {
            Self::Inline { digest, .. } | Self::Bundle { digest, .. } => Some(digest),
            Self::Revision { .. } => None,
        }
    }
}

/// How the agent decides that a release is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthPolicy {
    /// One deadline for the whole release, in seconds (default 300).
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
    /// HTTP probes run after the rollout is healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_probes: Vec<HttpProbe>,
    /// Run the release's test Jobs (the `helm test` analogue) after the rollout (default true).
    #[serde(default = "default_true")]
    pub run_tests: bool,
    /// Wait for LoadBalancer Services and Ingresses to get an address (default true); turn it
    /// off for clusters without load balancers.
    #[serde(default = "default_true")]
    pub wait_for_addresses: bool,
    /// What the agent does when the live objects drift from the deployed revision in fields
    /// the release manages: `report` (a `drifted` event, the default), `correct` (re-apply,
    /// then a `corrected` event) or `ignore`.
    #[serde(default)]
    pub drift: DriftPolicy,
}

/// What drift detection does for a release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Publish a `drifted` event.
    #[default]
    Report,
    /// Re-apply the deployed revision, and publish a `corrected` event.
    Correct,
    /// Do not check.
    Ignore,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            timeout_secs: default_health_timeout(),
            http_probes: Vec::new(),
            run_tests: true,
            wait_for_addresses: true,
            drift: DriftPolicy::Report,
        }
    }
}

/// An HTTP check that must answer 2xx `successes` times in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpProbe {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Consecutive 2xx answers required (default 3).
    #[serde(default = "default_successes")]
    pub successes: u32,
    /// Timeout of each request in milliseconds (default 2000).
    #[serde(default = "default_probe_timeout")]
    pub timeout_ms: u64,
}

/// Parses a probe URL: `http://` or `https://` with a host and no credentials. A control or
/// whitespace character anywhere (CR, LF, tab, NUL, ...) is refused before parsing, since a URL
/// parser would silently drop some of them: no request header can be injected through a probe.
/// Errors quote the URL escaped (`{:?}`), never raw.
pub fn probe_url(raw: &str) -> Result<url::Url, String> {
    if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{raw:?} contains the control or whitespace character {c:?}"
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} is not an http:// or https:// URL"));
    }
    if url.host().is_none() {
        return Err(format!("{raw:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{raw:?} carries credentials; probes send none, and intents must not hold them"
        ));
    }
    Ok(url)
}

/// What happens when a release fails its health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackPolicy {
    /// Re-apply the last deployed revision automatically (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Remove the objects of a first install that failed (default false: keep them to debug).
    #[serde(default)]
    pub uninstall_failed_install: bool,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            uninstall_failed_install: false,
        }
    }
}

fn default_health_timeout() -> u64 {
    300
}
fn default_true() -> bool {
    true
}
fn default_successes() -> u32 {
    3
}
fn default_probe_timeout() -> u64 {
    2000
}

impl Validate for DeployIntent {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        errors.check_schema_version(self.schema_version);
        check_id(&mut errors, "id", &self.id);
        errors.check_label("cluster", &self.cluster);
        errors.check_label("release", &self.release);
        errors.check_label("namespace", &self.namespace);
        errors.check_label("environment", &self.environment);
        check_text(&mut errors, "version", &self.version);
        check_text(&mut errors, "requested_by", &self.requested_by);
        for (name, image) in &self.images {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                errors.push(
                    format!("images.{name}"),
                    ProblemKind::Invalid(
                        "an image reference has no spaces and is not empty".into(),
                    ),
                );
            }
        }
        check_manifests(&mut errors, &self.manifests);
        check_health(&mut errors, &self.health);
        if let Some(rollout) = &self.rollout_id {
            check_id(&mut errors, "rollout_id", rollout);
        }
        errors.into_result()
    }
}

fn check_id(errors: &mut ValidationErrors, field: &str, id: &str) {
    if id.is_empty() {
        errors.push(field, ProblemKind::Missing);
    } else if id.len() > MAX_ID_LEN {
        errors.push(
            field,
            ProblemKind::TooLong {
                len: id.len(),
                max: MAX_ID_LEN,
            },
        );
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        errors.push(
            field,
            ProblemKind::Invalid("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed".into()),
        );
    }
}

fn check_text(errors: &mut ValidationErrors, field: &str, value: &str) {
    errors.check_required(field, value);
    let len = value.chars().count();
    if len > MAX_TEXT_LEN {
        errors.push(
            field,
            ProblemKind::TooLong {
                len,
                max: MAX_TEXT_LEN,
            },
        );
    }
}

fn check_digest(errors: &mut ValidationErrors, field: &str, digest: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        errors.push(
            field,
            ProblemKind::Invalid(format!(
                "{digest:?} is not a digest of the form sha256:<64 lowercase hex>"
            )),
        );
    }
}

fn check_manifests(errors: &mut ValidationErrors, manifests: &Manifests) {
    if let Some(digest) = manifests.digest() {
        check_digest(errors, "manifests.digest", digest);
    }
    let Manifests::Inline { objects, .. } = manifests else {
        return;
    };
    if objects.is_empty() {
        errors.push("manifests.objects", ProblemKind::Missing);
    }
    let size = serde_json::to_vec(objects).map_or(usize::MAX, |v| v.len());
    if size > MAX_INLINE_MANIFEST_BYTES {
        errors.push(
            "manifests.objects",
            ProblemKind::TooLarge {
                size,
                limit: MAX_INLINE_MANIFEST_BYTES,
            },
        );
    }
    for (i, object) in objects.iter().enumerate() {
        let at = |f: &str| format!("manifests.objects[{i}].{f}");
        let Some(map) = object.as_object() else {
            errors.push(
                format!("manifests.objects[{i}]"),
                ProblemKind::Invalid("a Kubernetes object is a JSON object".into()),
            );
            continue;
        };
        for key in ["apiVersion", "kind"] {
            if map
                .get(key)
                .and_then(|v| v.as_str())
                .is_none_or(str::is_empty)
            {
                errors.push(at(key), ProblemKind::Missing);
            }
        }
        match object.pointer("/metadata/name").and_then(|v| v.as_str()) {
            None | Some("") => errors.push(at("metadata.name"), ProblemKind::Missing),
            Some(_) => {}
        }
        if let Some(ns) = object
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
            && let Err(kind) = check_dns_label(ns)
        {
            errors.push(at("metadata.namespace"), kind);
        }
    }
}

fn check_health(errors: &mut ValidationErrors, health: &HealthPolicy) {
    if health.timeout_secs == 0 || health.timeout_secs > MAX_HEALTH_TIMEOUT_SECS {
        errors.push(
            "health.timeout_secs",
            ProblemKind::Invalid(format!(
                "{} is outside 1..={MAX_HEALTH_TIMEOUT_SECS}",
                health.timeout_secs
            )),
        );
    }
    for (i, probe) in health.http_probes.iter().enumerate() {
        if let Err(why) = probe_url(&probe.url) {
            errors.push(
                format!("health.http_probes[{i}].url"),
                ProblemKind::Invalid(why),
            );
        }
        if probe.successes == 0 {
            errors.push(
                format!("health.http_probes[{i}].successes"),
                ProblemKind::Invalid("at least 1".into()),
            );
        }
        if probe.timeout_ms == 0 {
            errors.push(
                format!("health.http_probes[{i}].timeout_ms"),
                ProblemKind::Invalid("at least 1".into()),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> DeployIntent {
        DeployIntent {
            schema_version: crate::SCHEMA_VERSION,
            id: "ci-1234.web.beta".into(),
            cluster: "beta".into(),
            release: "web".into(),
            namespace: "web".into(),
            environment: "beta".into(),
            version: "1.2.3".into(),
            images: BTreeMap::from([("web".into(), "registry.local/web:1.2.3".into())]),
            manifests: Manifests::Inline {
                digest: format!("sha256:{}", "a".repeat(64)),
                objects: vec![json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "web", "namespace": "web"},
                    "data": {"k": "v"}
                })],
            },
            health: HealthPolicy::default(),
            rollback: RollbackPolicy::default(),
            requested_by: "ci".into(),
            created_at: "2026-11-26T10:00:00Z".parse().unwrap(),
            rollout_id: None,
            expires_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::tests_support::sample;
    use super::*;
    use serde_json::json;

    fn problems(intent: &DeployIntent) -> Vec<String> {
        intent
            .validate()
            .unwrap_err()
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn sample_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn probe_urls_are_parsed_and_control_characters_refused() {
        let fine = [
            "http://web.shop.svc/healthz",
            "http://web.shop.svc:8080/healthz?deep=1",
            "https://status.example.com",
            "http://127.0.0.1:9000/",
            "http://[::1]:9000/",
        ];
        for url in fine {
            assert!(probe_url(url).is_ok(), "{url}");
        }
        let refused = [
            ("http://web.shop.svc/healthz\r\nX-Injected: 1", "control"),
            ("http://web.shop.svc/\nGET /admin", "control"),
            ("http://web.shop.svc/a\tb", "control"),
            ("http://web.shop.svc/\u{0}", "control"),
            ("http://web.shop.svc/\u{85}", "control"),
            ("http://web.shop.svc/a b", "whitespace"),
            ("ftp://web.shop.svc/", "not an http"),
            ("file:///etc/passwd", "not an http"),
            ("http://", "not a URL"),
            ("http://user:secret@web.shop.svc/", "credentials"),
            ("web.shop.svc/healthz", "not a URL"),
        ];
        for (url, why) in refused {
            let error = probe_url(url).unwrap_err();
            assert!(error.contains(why), "{url:?}: {error}");
            assert!(!error.contains('\r') && !error.contains('\n'), "{error}");
        }
        let mut intent = sample();
        intent.health.http_probes = vec![HttpProbe {
            url: "http://web.web.svc/\r\nHost: evil".into(),
            successes: 1,
            timeout_ms: 100,
        }];
        let problems = problems(&intent);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("health.http_probes[0].url"),
            "{problems:?}"
        );
        assert!(problems[0].contains("control"), "{problems:?}");
    }

    #[test]
    fn names_that_are_not_dns_labels_are_all_reported() {
        let mut i = sample();
        i.cluster = "Prod_East".into();
        i.release = "web.v2".into();
        i.namespace = "-web".into();
        i.environment = String::new();
        assert_eq!(
            problems(&i),
            [
                "cluster: \"Prod_East\" is not a DNS-1123 label (only lowercase letters, digits and '-' are allowed)",
                "release: \"web.v2\" is not a DNS-1123 label (only lowercase letters, digits and '-' are allowed)",
                "namespace: \"-web\" is not a DNS-1123 label (must start and end with a letter or digit)",
                "environment: required",
            ]
        );
    }

    #[test]
    fn missing_required_fields_are_all_reported() {
        let mut i = sample();
        i.id = String::new();
        i.version = " ".into();
        i.requested_by = String::new();
        assert_eq!(
            problems(&i),
            [
                "id: required",
                "version: required",
                "requested_by: required"
            ]
        );
    }

    #[test]
    fn wrong_schema_version_is_reported() {
        let mut i = sample();
        i.schema_version = 7;
        assert_eq!(
            problems(&i),
            ["schema_version: schema version 7 is not supported (this build reads 1)"]
        );
    }

    #[test]
    fn oversized_inline_manifests_are_rejected() {
        let mut i = sample();
        let big = "x".repeat(MAX_INLINE_MANIFEST_BYTES);
        i.manifests = Manifests::Inline {
            digest: format!("sha256:{}", "b".repeat(64)),
            objects: vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "big"}, "data": {"blob": big}})],
        };
        let p = problems(&i);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("manifests.objects: ")
                && p[0].ends_with("bytes, at most 524288 allowed"),
            "{p:?}"
        );
    }

    #[test]
    fn invalid_manifests_and_ids_are_all_reported() {
        let mut i = sample();
        i.id = "a b".into();
        i.manifests = Manifests::Inline {
            digest: "md5:abc".into(),
            objects: vec![
                json!("just a string"),
                json!({"kind": "Deployment", "metadata": {"namespace": "Bad"}}),
            ],
        };
        i.health.timeout_secs = 0;
        assert_eq!(
            problems(&i),
            [
                "id: only A-Z, a-z, 0-9, '.', '_' and '-' are allowed",
                "manifests.digest: \"md5:abc\" is not a digest of the form sha256:<64 lowercase hex>",
                "manifests.objects[0]: a Kubernetes object is a JSON object",
                "manifests.objects[1].apiVersion: required",
                "manifests.objects[1].metadata.name: required",
                "manifests.objects[1].metadata.namespace: \"Bad\" is not a DNS-1123 label (only lowercase letters, digits and '-' are allowed)",
                "health.timeout_secs: 0 is outside 1..=86400",
            ]
        );
    }

    #[test]
    fn too_long_fields_are_reported() {
        let mut i = sample();
        i.id = "x".repeat(129);
        i.version = "v".repeat(300);
        assert_eq!(
            problems(&i),
            [
                "id: 129 characters, at most 128 allowed",
                "version: 300 characters, at most 256 allowed"
            ]
        );
    }
}
