//! `coxswain agent`: the per-cluster agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::args::{KubeArgs, NatsArgs, cancel_on_signal, hostname};

/// Arguments of `coxswain agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Name of the cluster this agent deploys to (DNS-1123 label).
    #[arg(long, env = "COXSWAIN_CLUSTER")]
    cluster: String,
    /// Labels of the cluster, `key=value`, repeatable (`--label env=prod --label region=eu`).
    /// `env` is required: intents for another environment are rejected.
    #[arg(long = "label", env = "COXSWAIN_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Releases deployed at the same time (one release is always strictly in order).
    #[arg(long, env = "COXSWAIN_MAX_CONCURRENT", default_value_t = 4)]
    max_concurrent: usize,
    /// Queue a newer intent behind a running one instead of cancelling the running one.
    #[arg(long, env = "COXSWAIN_NO_SUPERSEDE")]
    no_supersede: bool,
    /// How long in-flight work may continue after SIGTERM before it is handed back (`30s`,
    /// `2m`, or seconds).
    #[arg(long, alias = "grace-seconds", env = "COXSWAIN_GRACE", default_value = "30s", value_parser = crate::duration::parse)]
    grace: Duration,
    /// How long JetStream waits for an ack before redelivering (progress acks extend it).
    #[arg(long, alias = "ack-wait-seconds", env = "COXSWAIN_ACK_WAIT", default_value = "30s", value_parser = crate::duration::parse)]
    ack_wait: Duration,
    /// The per-release lock lease: a crashed agent's lock frees after this.
    #[arg(long, alias = "lock-lease-seconds", env = "COXSWAIN_LOCK_LEASE", default_value = "15s", value_parser = crate::duration::parse)]
    lock_lease: Duration,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`); off when absent.
    #[arg(long, env = "COXSWAIN_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// How often each deployed release is checked for drift from its deployed revision
    /// (`5m`, `1h`; `0` turns the checks off). Drift is reported as a `drifted` event, and
    /// corrected when the release's health policy says `drift: correct`.
    #[arg(long, env = "COXSWAIN_DRIFT_INTERVAL", default_value = "5m", value_parser = crate::duration::parse)]
    drift_interval: Duration,
    /// A field manager whose changes are not drift, besides the controllers and autoscalers
    /// left alone by default (kube-controller-manager, horizontal-pod-autoscaler,
    /// cluster-autoscaler, vpa-*, keda-*); a trailing `*` matches a prefix (repeatable).
    #[arg(
        long = "drift-ignore-manager",
        env = "COXSWAIN_DRIFT_IGNORE_MANAGERS",
        value_delimiter = ','
    )]
    drift_ignore_managers: Vec<String>,
    /// A public key (file with one nkey, e.g. the coordinator's `signing.pub`) whose
    /// signatures this agent accepts; repeat it during a key rotation. Unsigned, forged,
    /// expired, replayed and cross-cluster intents are rejected before the cluster is touched.
    #[arg(long = "trust-key", env = "COXSWAIN_TRUST_KEYS", value_delimiter = ',')]
    trust_keys: Vec<PathBuf>,
    /// Accept unsigned intents (a warning is logged). For local experiments only: anyone who
    /// can publish on NATS can then deploy anything to this cluster.
    #[arg(
        long,
        env = "COXSWAIN_INSECURE_ACCEPT_UNSIGNED",
        conflicts_with = "trust_keys"
    )]
    insecure_accept_unsigned: bool,
    /// A namespace releases may use besides their own (repeatable). Objects in any other
    /// namespace are refused, whoever signed the intent.
    #[arg(
        long = "allow-namespace",
        env = "COXSWAIN_ALLOW_NAMESPACES",
        value_delimiter = ','
    )]
    allow_namespaces: Vec<String>,
    /// A cluster-scoped kind releases may create (`ClusterRole`, `CustomResourceDefinition`;
    /// repeatable). None by default; a Namespace of an allowed name is always fine.
    #[arg(
        long = "allow-cluster-kind",
        env = "COXSWAIN_ALLOW_CLUSTER_KINDS",
        value_delimiter = ','
    )]
    allow_cluster_kinds: Vec<String>,
    /// A host HTTP probes may reach besides the release's own Services
    /// (`<service>.<namespace>.svc`), any port (repeatable, or comma separated). Probes to
    /// anything else are refused before any connection.
    #[arg(
        long = "probe-allow",
        env = "COXSWAIN_PROBE_ALLOW",
        value_delimiter = ','
    )]
    probe_allow: Vec<String>,
    /// A PEM file of CA certificates `https://` probes trust besides the system's roots.
    #[arg(long, env = "COXSWAIN_PROBE_CA")]
    probe_ca: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

impl AgentArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            cluster,
            labels,
            max_concurrent,
            no_supersede,
            grace,
            ack_wait,
            lock_lease,
            metrics_addr,
            drift_interval,
            drift_ignore_managers,
            trust_keys,
            insecure_accept_unsigned,
            allow_namespaces,
            allow_cluster_kinds,
            probe_allow,
            probe_ca,
            nats,
            kube,
        } = self;
        let mut parsed = BTreeMap::new();
        for label in &labels {
            let Some((k, v)) = label.split_once('=') else {
                bail!("--label {label:?} is not key=value");
            };
            parsed.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let mut config = agent::AgentConfig::new(&cluster);
        config.labels = parsed;
        config.max_concurrent = max_concurrent;
        config.supersede = !no_supersede;
        config.grace = grace;
        config.ack_wait = ack_wait;
        config.engine.lease = lock_lease;
        config.drift_interval = drift_interval;
        config.drift_ignore_managers.extend(drift_ignore_managers);
        config.metrics_addr = metrics_addr;
        config.trust = trust(&trust_keys, insecure_accept_unsigned)?;
        config.allow = deploy::Allowlist {
            namespaces: allow_namespaces.into_iter().collect(),
            cluster_kinds: allow_cluster_kinds.into_iter().collect(),
        };
        config.engine.holder = format!("agent-{cluster}/{}/{}", hostname(), std::process::id());
        config.engine.probes = probe_policy(&probe_allow, probe_ca.as_deref())?;

        let bus = nats.connect(format!("coxswain-agent-{cluster}")).await?;
        let kube = kube.client().await.context("cannot reach the cluster")?;
        agent::run(config, bus, kube, cancel_on_signal()).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Where probes may go (`--probe-allow`) and whom https probes trust (`--probe-ca`).
fn probe_policy(
    hosts: &[String],
    ca: Option<&std::path::Path>,
) -> anyhow::Result<deploy::ProbePolicy> {
    let mut policy = deploy::ProbePolicy::default();
    for host in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_err() && bare.contains(['/', ':', '[', ']', '@']) {
            bail!(
                "--probe-allow {host:?} is not a host name or IP address (no scheme, path or port)"
            );
        }
        policy.allow_host(host);
    }
    if let Some(path) = ca {
        policy.trust_ca_file(path)?;
    }
    Ok(policy)
}

/// The keys an agent trusts, read from their files; or insecure, said loudly.
fn trust(files: &[PathBuf], insecure: bool) -> anyhow::Result<agent::Trust> {
    if insecure {
        tracing::warn!(
            "accepting unsigned intents (--insecure-accept-unsigned): anyone who can publish on \
             NATS can deploy to this cluster"
        );
        return Ok(agent::Trust::InsecureAcceptUnsigned);
    }
    let mut keys = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read trust key {}", file.display()))?;
        keys.push(text.trim().to_owned());
    }
    let trusted = proto::TrustedKeys::new(keys.iter().map(String::as_str))
        .context("a --trust-key file does not hold a public nkey")?;
    Ok(agent::Trust::Signed(std::sync::Arc::new(trusted)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn probe_allow_takes_hosts_and_ip_addresses_only() {
        let hosts = ["status.example.com", "10.0.0.7", "::1", "[fd00::1]", " "];
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        assert!(probe_policy(&hosts, None).is_ok());
        for bad in [
            "http://status.example.com",
            "status.example.com:8080",
            "a/b",
            "[fd00::1]:80",
        ] {
            let error = probe_policy(&[bad.to_owned()], None).unwrap_err();
            assert!(
                error.to_string().contains("--probe-allow"),
                "{bad}: {error}"
            );
        }
        let missing = std::path::Path::new("/nonexistent/probe-ca.pem");
        assert!(probe_policy(&[], Some(missing)).is_err());
    }
}
