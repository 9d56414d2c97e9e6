//! The checks an intent passes before the agent touches the cluster, as pure functions: each
//! returns the reason for a rejection, so each can be tested alone.

use proto::{DecodeError, DeployIntent, ReleaseSubject, SubjectError, Validate};

use crate::AgentConfig;

/// Why an intent is refused: the reason, and the intent when it could be read at all.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub(crate) reason: String,
    pub(crate) intent: Option<Box<DeployIntent>>,
}

impl Rejection {
    fn of(intent: DeployIntent, reason: String) -> Self {
        Self {
            reason,
            intent: Some(Box::new(intent)),
        }
    }
}

/// The message must decode as an intent.
pub(crate) fn decoded(
    decoded: Result<DeployIntent, DecodeError>,
) -> Result<DeployIntent, Rejection> {
    decoded.map_err(|error| Rejection {
        reason: format!("undecodable intent: {error}"),
        intent: None,
    })
}

/// Every field must be valid.
pub(crate) fn valid(intent: &DeployIntent) -> Result<(), String> {
    intent
        .validate()
        .map_err(|problems| format!("invalid intent: {problems}"))
}

/// The intent, the subject it arrived on and this agent must all name the same cluster, and
/// the subject the intent's release.
pub(crate) fn addressed_here(
    intent: &DeployIntent,
    subject: &Result<ReleaseSubject, SubjectError>,
    subject_text: &str,
    cluster: &str,
) -> Result<(), String> {
    let subject_ok = subject
        .as_ref()
        .is_ok_and(|s| s.cluster == intent.cluster && s.release == intent.release);
    if intent.cluster == cluster && subject_ok {
        Ok(())
    } else {
        Err(format!(
            "intent for cluster {} release {} arrived on {subject_text}; this agent serves cluster {cluster}",
            intent.cluster, intent.release,
        ))
    }
}

/// The intent's environment must be this cluster's.
pub(crate) fn same_environment(intent: &DeployIntent, config: &AgentConfig) -> Result<(), String> {
    if Some(intent.environment.as_str()) == config.environment() {
        Ok(())
    } else {
        Err(format!(
            "intent for environment {} refused: cluster {} is environment {}",
            intent.environment,
            config.cluster,
            config.environment().unwrap_or("?")
        ))
    }
}

/// Every check in order; the intent when all pass.
pub(crate) fn admit(
    raw: Result<DeployIntent, DecodeError>,
    subject: &Result<ReleaseSubject, SubjectError>,
    subject_text: &str,
    config: &AgentConfig,
) -> Result<DeployIntent, Rejection> {
    let intent = decoded(raw)?;
    let verdict = valid(&intent)
        .and_then(|()| addressed_here(&intent, subject, subject_text, &config.cluster))
        .and_then(|()| same_environment(&intent, config));
    match verdict {
        Ok(()) => Ok(intent),
        Err(reason) => Err(Rejection::of(intent, reason)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proto::{Manifests, SCHEMA_VERSION};

    use super::*;

    fn config() -> AgentConfig {
        let mut config = AgentConfig::new("beta");
        config.labels.insert("env".into(), "beta".into());
        config
    }

    fn intent(cluster: &str, environment: &str) -> DeployIntent {
        DeployIntent {
            schema_version: SCHEMA_VERSION,
            id: "i1".into(),
            cluster: cluster.into(),
            release: "web".into(),
            namespace: "shop".into(),
            environment: environment.into(),
            version: "1.0".into(),
            images: Default::default(),
            manifests: Manifests::Inline {
                digest: format!("sha256:{}", "0".repeat(64)),
                objects: vec![serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}
                })],
            },
            health: Default::default(),
            rollback: Default::default(),
            requested_by: "test".into(),
            created_at: jiff::Timestamp::now(),
            rollout_id: None,
        }
    }

    fn subject(text: &str) -> Result<ReleaseSubject, SubjectError> {
        proto::parse_intent_subject(text)
    }

    fn admit_on(intent: DeployIntent, on: &str) -> Result<DeployIntent, Rejection> {
        admit(Ok(intent), &subject(on), on, &config())
    }

    #[test]
    fn a_good_intent_is_admitted() {
        let i = admit_on(intent("beta", "beta"), "coxswain.intent.beta.web").unwrap();
        assert_eq!(i.id, "i1");
    }

    #[test]
    fn each_check_names_its_reason() {
        let cases = [
            (
                intent("beta", "prod"),
                "coxswain.intent.beta.web",
                "intent for environment prod refused: cluster beta is environment beta",
            ),
            (
                intent("prod", "beta"),
                "coxswain.intent.beta.web",
                "intent for cluster prod release web arrived on coxswain.intent.beta.web; this agent serves cluster beta",
            ),
            (
                intent("beta", "beta"),
                "coxswain.intent.beta.api",
                "intent for cluster beta release web arrived on coxswain.intent.beta.api; this agent serves cluster beta",
            ),
        ];
        for (i, on, reason) in cases {
            let rejection = admit_on(i, on).unwrap_err();
            assert_eq!(rejection.reason, reason);
            assert!(rejection.intent.is_some());
        }
    }

    #[test]
    fn an_invalid_intent_is_refused_before_the_other_checks() {
        let mut i = intent("prod", "prod");
        i.release = "Not A Label".into();
        let rejection = admit_on(i, "coxswain.intent.beta.web").unwrap_err();
        assert!(
            rejection.reason.starts_with("invalid intent: "),
            "{}",
            rejection.reason
        );
    }

    #[test]
    fn undecodable_bytes_are_refused_without_an_intent() {
        let raw = proto::decode::<DeployIntent>(Some("application/json"), b"{not json");
        let rejection =
            admit(raw, &subject("coxswain.intent.beta.web"), "s", &config()).unwrap_err();
        assert!(rejection.reason.starts_with("undecodable intent: "));
        assert!(rejection.intent.is_none());
    }
}
