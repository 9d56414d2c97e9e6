//! What an agent needs to know about itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deploy::{Allowlist, EngineConfig};
use proto::{ContentType, TrustedKeys};

use crate::AgentError;

/// An agent's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster it deploys to (DNS-1123 label).
    pub cluster: String,
    /// Its labels; `env` must match an intent's environment.
    pub labels: BTreeMap<String, String>,
    /// Releases deployed at the same time; one release is always in order.
    pub max_concurrent: usize,
    /// A newer intent for a release cancels a running one (else it queues).
    pub supersede: bool,
    /// JetStream ack wait; progress acks go out at a third of it.
    pub ack_wait: Duration,
    /// Registry heartbeat interval (each one jittered by up to a tenth either way).
    pub heartbeat: Duration,
    /// How long in-flight work may run on after SIGTERM before it is handed back.
    pub grace: Duration,
    /// Encoding of published events.
    pub content_type: ContentType,
    /// The release engine's settings (lock lease, history kept, poll).
    pub engine: EngineConfig,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Whose signatures make an intent acceptable.
    pub trust: Trust,
    /// Namespaces and cluster-scoped kinds intents may touch, whoever signed them.
    pub allow: Allowlist,
    /// How often deployed releases are checked for drift; zero turns the checks off.
    pub drift_interval: Duration,
    /// Field managers whose changes are not drift (controllers, autoscalers): exact names, or
    /// prefixes ending in `*`.
    pub drift_ignore_managers: Vec<String>,
}

/// The managers whose changes are not drift unless told otherwise: the controllers and
/// autoscalers that own fields by design (an HPA scaling replicas is
/// `kube-controller-manager`).
pub const DEFAULT_DRIFT_IGNORE: [&str; 5] = [
    "kube-controller-manager",
    "horizontal-pod-autoscaler",
    "cluster-autoscaler",
    "vpa-*",
    "keda-*",
];

/// Which intents an agent accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only intents signed by one of these keys (several during a key rotation).
    Signed(Arc<TrustedKeys>),
    /// Unsigned intents too: for local experiments only.
    InsecureAcceptUnsigned,
}

impl AgentConfig {
    /// Defaults for `cluster`.
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            labels: BTreeMap::new(),
            max_concurrent: 4,
            supersede: true,
            ack_wait: Duration::from_secs(30),
            heartbeat: Duration::from_secs(60),
            grace: Duration::from_secs(30),
            content_type: ContentType::MsgPack,
            engine: EngineConfig {
                holder: format!("agent-{cluster}"),
                ..EngineConfig::default()
            },
            metrics_addr: None,
            trust: Trust::Signed(Arc::new(TrustedKeys::default())),
            allow: Allowlist::default(),
            drift_interval: Duration::from_secs(300),
            drift_ignore_managers: DEFAULT_DRIFT_IGNORE.map(str::to_owned).to_vec(),
        }
    }

    /// The environment this agent serves: its `env` label.
    pub fn environment(&self) -> Option<&str> {
        self.labels.get("env").map(String::as_str)
    }

    pub(crate) fn check(&self) -> Result<(), AgentError> {
        proto::check_dns_label(&self.cluster)
            .map_err(|p| AgentError::Config(format!("cluster {:?}: {p:?}", self.cluster)))?;
        if self.environment().is_none() {
            return Err(AgentError::Config(
                "the agent needs an env label (--label env=prod): intents are checked against it"
                    .into(),
            ));
        }
        if matches!(&self.trust, Trust::Signed(keys) if keys.is_empty()) {
            return Err(AgentError::Config(
                "the agent accepts only signed intents: give --trust-key FILE (the coordinator's \
                 signing.pub), or --insecure-accept-unsigned for a local experiment"
                    .into(),
            ));
        }
        if self.max_concurrent == 0 {
            return Err(AgentError::Config(
                "max-concurrent must be at least 1".into(),
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(AgentError::Config("ack wait must be at least 1 s".into()));
        }
        Ok(())
    }
}
