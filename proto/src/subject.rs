//! NATS names: subjects for intents and events, and the streams and buckets that hold them.

use crate::validate::{ProblemKind, check_dns_label};

const INTENT_PREFIX: &str = "coxswain.intent";
const EVENT_PREFIX: &str = "coxswain.event";
const NOTICE_PREFIX: &str = "coxswain.notice";

/// JetStream stream names.
pub mod stream {
    /// Per-cluster intents, `coxswain.intent.<cluster>.<release>`.
    pub const INTENTS: &str = "COXSWAIN_INTENTS";
    /// Outcome events, the audit trail, `coxswain.event.<cluster>.<release>`.
    pub const EVENTS: &str = "COXSWAIN_EVENTS";
    /// Every intent subject.
    pub const INTENT_SUBJECTS: &str = "coxswain.intent.*.*";
    /// Every event subject.
    pub const EVENT_SUBJECTS: &str = "coxswain.event.*.*";
    /// Every notice subject (what the coordinator tells observers), kept in the events
    /// stream: `coxswain.notice.<release>`.
    pub const NOTICE_SUBJECTS: &str = "coxswain.notice.*";
}

/// Key-value and object store bucket names.
pub mod bucket {
    /// Cluster registry, key `<cluster>`.
    pub const CLUSTERS: &str = "coxswain-clusters";
    /// Latest release state, key `<cluster>.<release>`.
    pub const STATE: &str = "coxswain-state";
    /// Rendered manifest bundles, named by digest.
    pub const BUNDLES: &str = "coxswain-bundles";
    /// Rollouts the coordinator drives, key = rollout id.
    pub const ROLLOUTS: &str = "coxswain-rollouts";
}

/// A subject could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// A cluster or release name is not a DNS-1123 label, so it is no safe subject token.
    #[error("{field} {problem:?}")]
    BadToken {
        /// `cluster` or `release`.
        field: &'static str,
        /// What is wrong with it.
        problem: ProblemKind,
    },
    /// The subject is not of the expected form.
    #[error("{subject:?} is not of the form {expected}")]
    Shape {
        /// The subject given.
        subject: String,
        /// The form expected.
        expected: &'static str,
    },
}

/// The cluster and release a subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSubject {
    /// Cluster name.
    pub cluster: String,
    /// Release name.
    pub release: String,
}

fn token(field: &'static str, value: &str) -> Result<(), SubjectError> {
    check_dns_label(value).map_err(|problem| SubjectError::BadToken { field, problem })
}

fn build(prefix: &str, cluster: &str, release: &str) -> Result<String, SubjectError> {
    token("cluster", cluster)?;
    token("release", release)?;
    Ok(format!("{prefix}.{cluster}.{release}"))
}

fn parse(
    prefix: &str,
    expected: &'static str,
    subject: &str,
) -> Result<ReleaseSubject, SubjectError> {
    let shape = || SubjectError::Shape {
        subject: subject.to_owned(),
        expected,
    };
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(shape)?;
    let (cluster, release) = rest.split_once('.').ok_or_else(shape)?;
    token("cluster", cluster)?;
    token("release", release)?;
    Ok(ReleaseSubject {
        cluster: cluster.to_owned(),
        release: release.to_owned(),
    })
}

/// `coxswain.intent.<cluster>.<release>`.
pub fn intent_subject(cluster: &str, release: &str) -> Result<String, SubjectError> {
    build(INTENT_PREFIX, cluster, release)
}

/// `coxswain.event.<cluster>.<release>`.
pub fn event_subject(cluster: &str, release: &str) -> Result<String, SubjectError> {
    build(EVENT_PREFIX, cluster, release)
}

/// `coxswain.notice.<release>`: the coordinator's notices about a release.
pub fn notice_subject(release: &str) -> Result<String, SubjectError> {
    token("release", release)?;
    Ok(format!("{NOTICE_PREFIX}.{release}"))
}

/// A filter over event subjects: `coxswain.event.<cluster|*>.<release|*>`; `None` matches any.
pub fn event_filter(cluster: Option<&str>, release: Option<&str>) -> Result<String, SubjectError> {
    if let Some(c) = cluster {
        token("cluster", c)?;
    }
    if let Some(r) = release {
        token("release", r)?;
    }
    Ok(format!(
        "{EVENT_PREFIX}.{}.{}",
        cluster.unwrap_or("*"),
        release.unwrap_or("*")
    ))
}

/// The durable name of one cluster's intent consumer: `agent-<cluster>`.
pub fn consumer_name(cluster: &str) -> Result<String, SubjectError> {
    token("cluster", cluster)?;
    Ok(format!("agent-{cluster}"))
}

/// The key of a release's state in `coxswain-state`: `<cluster>.<release>`.
pub fn state_key(cluster: &str, release: &str) -> Result<String, SubjectError> {
    token("cluster", cluster)?;
    token("release", release)?;
    Ok(format!("{cluster}.{release}"))
}

/// The key of a cluster's record in `coxswain-clusters`: its name.
pub fn cluster_key(cluster: &str) -> Result<String, SubjectError> {
    token("cluster", cluster)?;
    Ok(cluster.to_owned())
}

/// Is `key` usable as a key-value key? Letters, digits, `-`, `_`, `=`, `/` and inner dots;
/// never a wildcard, so a caller-supplied id cannot address more than one entry.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 256
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'/' | b'.'))
}

/// The filter of one cluster's intent consumer: `coxswain.intent.<cluster>.>`.
pub fn intent_filter(cluster: &str) -> Result<String, SubjectError> {
    token("cluster", cluster)?;
    Ok(format!("{INTENT_PREFIX}.{cluster}.>"))
}

/// Reads the cluster and release out of an intent subject.
pub fn parse_intent_subject(subject: &str) -> Result<ReleaseSubject, SubjectError> {
    parse(
        INTENT_PREFIX,
        "coxswain.intent.<cluster>.<release>",
        subject,
    )
}

/// Reads the cluster and release out of an event subject.
pub fn parse_event_subject(subject: &str) -> Result<ReleaseSubject, SubjectError> {
    parse(EVENT_PREFIX, "coxswain.event.<cluster>.<release>", subject)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn build_and_parse() {
        assert_eq!(
            intent_subject("beta", "web").unwrap(),
            "coxswain.intent.beta.web"
        );
        assert_eq!(
            event_subject("prod-east", "api").unwrap(),
            "coxswain.event.prod-east.api"
        );
        assert_eq!(intent_filter("beta").unwrap(), "coxswain.intent.beta.>");
        assert_eq!(
            parse_intent_subject("coxswain.intent.beta.web").unwrap(),
            ReleaseSubject {
                cluster: "beta".into(),
                release: "web".into()
            }
        );
        assert_eq!(
            parse_event_subject("coxswain.event.prod-east.api")
                .unwrap()
                .cluster,
            "prod-east"
        );
    }

    #[test]
    fn filters_and_keys() {
        assert_eq!(event_filter(None, None).unwrap(), "coxswain.event.*.*");
        assert_eq!(
            event_filter(None, Some("web")).unwrap(),
            "coxswain.event.*.web"
        );
        assert_eq!(
            event_filter(Some("beta"), None).unwrap(),
            "coxswain.event.beta.*"
        );
        assert!(event_filter(Some(">"), None).is_err());
        assert_eq!(consumer_name("beta").unwrap(), "agent-beta");
        assert_eq!(state_key("beta", "web").unwrap(), "beta.web");
        assert!(state_key("beta", "w.b").is_err());
        assert_eq!(cluster_key("beta").unwrap(), "beta");
        for good in ["r0a1b2", "a.b", "x-y_z"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in ["", "*", ">", "a.*", ".a", "a.", "a..b", "a b", "a\nb"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn wildcards_and_dots_never_reach_a_subject() {
        for bad in ["*", ">", "a.b", "", "Web"] {
            assert!(matches!(
                intent_subject("beta", bad),
                Err(SubjectError::BadToken {
                    field: "release",
                    ..
                })
            ));
            assert!(matches!(
                intent_filter(bad),
                Err(SubjectError::BadToken {
                    field: "cluster",
                    ..
                })
            ));
        }
    }

    #[test]
    fn malformed_subjects_are_refused() {
        for bad in [
            "coxswain.intent.beta",
            "coxswain.intent.beta.web.extra",
            "coxswain.event.beta.web",
            "coxswain.intentx.beta.web",
        ] {
            assert!(parse_intent_subject(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_intent_subject("coxswain.intent.beta")
                .unwrap_err()
                .to_string(),
            "\"coxswain.intent.beta\" is not of the form coxswain.intent.<cluster>.<release>"
        );
    }
}
