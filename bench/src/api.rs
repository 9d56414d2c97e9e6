//! The coordinator, in this process: its HTTP API on a free loopback port, one environment
//! (`bench`) whose clusters are every cluster labelled `env=bench`, in one wave, with intents
//! signed by the bench's key.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::intents::{ENVIRONMENT, Keys};
use crate::server::Server;

/// The bearer token of the bench coordinator.
const TOKEN: &str = "bench";

/// A running in-process coordinator.
pub struct Coordinator {
    /// `127.0.0.1:<port>`.
    pub address: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), coordinator::CoordinatorError>>,
}

impl Coordinator {
    /// Starts it on its own NATS connection and waits until `/healthz` answers.
    pub async fn start(server: &Server, keys: &Keys) -> anyhow::Result<Self> {
        let listen: SocketAddr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let policy = coordinator::Policy::parse(&format!(
            "environments:\n  {ENVIRONMENT}:\n    selector: {{env: {ENVIRONMENT}}}\n    \
             releases: [\"*\"]\n    namespaces: [\"*\"]\n"
        ))
        .map_err(|problems| anyhow::anyhow!("bench policy: {problems:?}"))?;
        let config = coordinator::CoordinatorConfig {
            listen,
            tokens: Some(coordinator::Tokens::single("bench", TOKEN)),
            instance: "bench".into(),
            claim: Duration::from_secs(30),
            policy,
            signer: Some(keys.signer.clone()),
            // The binary's defaults (`--intent-ttl 24h`, `--outcome-grace 60s`).
            intent_ttl: Duration::from_secs(24 * 3600),
            outcome_grace: Duration::from_secs(60),
            limits: coordinator::ServerLimits {
                max_connections: 4096,
                header_timeout: Duration::from_secs(10),
            },
            tls: None,
        };
        let bus = server.connect("coxswain-coordinator-bench").await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(coordinator::run(config, bus, shutdown.clone()));
        let coordinator = Self {
            address: listen.to_string(),
            shutdown,
            task,
        };
        coordinator.wait_healthy().await?;
        Ok(coordinator)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.task.is_finished() {
                bail!("the coordinator stopped while starting");
            }
            let answer = crate::http::request(&self.address, "GET", "/healthz", None, None).await;
            if answer.is_ok_and(|a| a.status == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /v1/rollouts`; the rollout's id once it is accepted (200 or 201).
    pub async fn submit(&self, request: &proto::RolloutRequest) -> anyhow::Result<String> {
        let body = serde_json::to_string(request)?;
        let answer = crate::http::request(
            &self.address,
            "POST",
            "/v1/rollouts",
            Some(TOKEN),
            Some(&body),
        )
        .await?;
        if !(200..=202).contains(&answer.status) {
            bail!(
                "POST /v1/rollouts for {} answered {}: {}",
                request.release,
                answer.status,
                answer.body
            );
        }
        let rollout: serde_json::Value =
            serde_json::from_str(&answer.body).context("the rollout the API answered")?;
        rollout
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .context("the answer names no rollout id")
    }

    /// Fails when the coordinator stopped.
    pub fn check_running(&self) -> anyhow::Result<()> {
        if self.task.is_finished() {
            bail!("the coordinator stopped during the run");
        }
        Ok(())
    }

    /// Stops it and waits (5 s at most).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Waits until every rollout in `ids` is final, polling the `coxswain-rollouts` bucket every
/// `poll`; fails when one ends other than `succeeded` or `deadline` passes. Returns when the
/// last one was seen succeeded.
pub async fn wait_rollouts(
    rollouts: &bus::Rollouts,
    ids: &[String],
    poll: Duration,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    let mut pending: Vec<&String> = ids.iter().collect();
    loop {
        let mut still = Vec::new();
        for id in pending {
            let (rollout, _) = rollouts
                .get(id)
                .await?
                .with_context(|| format!("rollout {id} is not stored"))?;
            match rollout.status {
                proto::RolloutStatus::Succeeded => {}
                proto::RolloutStatus::Running => still.push(id),
                other => bail!(
                    "rollout {id} ({}) ended {other:?}: {}",
                    rollout.request.release,
                    rollout.reason.as_deref().unwrap_or("(no reason)")
                ),
            }
        }
        if still.is_empty() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} rollouts still running at the deadline",
                still.len(),
                ids.len()
            );
        }
        pending = still;
        tokio::time::sleep(poll).await;
    }
}
