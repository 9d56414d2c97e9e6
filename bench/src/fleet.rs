//! A fleet: N simulated clusters and their agents, each agent a task of this process with its
//! own NATS connection and an in-process Kubernetes client. A fleet is up only when every
//! agent's consumer exists and every agent is registered, and it is checked again after a
//! measure: every consumer still there, no agent task ended.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use crate::intents::ENVIRONMENT;
use crate::server::{Server, rss_kib};

/// Agents started before waiting for their consumers (`BENCH_START_BATCH` overrides it).
const START_BATCH: usize = 500;

/// How long the fleet may go without one more consumer before the start counts as failed.
const STALL: Duration = Duration::from_secs(120);

/// How often the start polls the server.
const POLL: Duration = Duration::from_millis(200);

/// Running agents and their clusters.
pub struct Fleet {
    /// Cluster names, `c00000`, `c00001`, ...
    pub names: Vec<String>,
    /// This process's RSS before the simulated clusters were made, in KiB.
    pub rss_before_sim_kib: u64,
    /// This process's RSS after the clusters were made and before any agent, in KiB.
    pub rss_before_agents_kib: u64,
    sim: sim::Sim,
    clusters: Vec<Arc<sim::Cluster>>,
    shutdown: CancellationToken,
    /// Agents whose task ended before shutdown, and why.
    deaths: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    /// Starts `n` agents in batches and waits until all `n` have a consumer and a registry
    /// record; fails when any agent ends or the start stalls.
    pub async fn start(
        server: &Server,
        admin: &bus::Bus,
        registry: &bus::Registry,
        n: usize,
        trust: &agent::Trust,
    ) -> anyhow::Result<Self> {
        let names: Vec<String> = (0..n).map(|i| format!("c{i:05}")).collect();
        let rss_before_sim_kib = rss_kib(None)?;
        let sim = sim::Sim::new(sim::Timing::fast());
        let clusters = names.iter().map(|name| sim.add_cluster(name)).collect();
        let fleet = Self {
            names,
            rss_before_sim_kib,
            rss_before_agents_kib: rss_kib(None)?,
            sim,
            clusters,
            shutdown: CancellationToken::new(),
            deaths: Arc::default(),
        };
        let batch = std::env::var("BENCH_START_BATCH")
            .ok()
            .and_then(|b| b.parse().ok())
            .filter(|&b: &usize| b > 0)
            .unwrap_or(START_BATCH);
        eprintln!("starting {n} agents, {batch} at a time (BENCH_START_BATCH)");
        let started = Instant::now();
        for first in (0..n).step_by(batch) {
            let end = (first + batch).min(n);
            for i in first..end {
                fleet.spawn_agent(server, i, trust).await?;
            }
            fleet.wait_consumers(admin, end).await?;
        }
        fleet.wait_registered(registry).await?;
        eprintln!(
            "{n} of {n} agents up (consumer and registry record each) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(fleet)
    }

    /// The simulated cluster of one agent, with its own NATS connection, as a task.
    async fn spawn_agent(
        &self,
        server: &Server,
        i: usize,
        trust: &agent::Trust,
    ) -> anyhow::Result<()> {
        let name = self.names[i].clone();
        let cluster = Arc::clone(&self.clusters[i]);
        let mut config = agent::AgentConfig::new(&name);
        config.labels.insert("env".into(), ENVIRONMENT.into());
        config.trust = trust.clone();
        let bus = server.connect(&format!("coxswain-agent-{name}")).await?;
        let kube = kube::Client::new(sim::router(cluster), "default");
        let (shutdown, deaths) = (self.shutdown.clone(), Arc::clone(&self.deaths));
        tokio::spawn(async move {
            let ran = tokio::spawn(agent::run(config, bus, kube, shutdown.clone())).await;
            if shutdown.is_cancelled() {
                return;
            }
            let why = match ran {
                Ok(Ok(())) => "stopped without being asked".to_owned(),
                Ok(Err(e)) => format!("{:#}", anyhow::Error::new(e)),
                Err(e) => format!("panicked: {e}"),
            };
            deaths
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("agent {name}: {why}"));
        });
        Ok(())
    }

    /// Fails when any agent task ended.
    fn check_alive(&self) -> anyhow::Result<()> {
        let deaths = self
            .deaths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(first) = deaths.first() {
            bail!(
                "{} of {} agents ended; the first: {first}",
                deaths.len(),
                self.names.len()
            );
        }
        Ok(())
    }

    /// The first `count` agents whose consumer the server does not have.
    async fn missing_consumers(
        &self,
        admin: &bus::Bus,
        count: usize,
    ) -> anyhow::Result<Vec<String>> {
        if admin.intent_consumer_count().await? < count {
            return Ok(self.names[..count].to_vec());
        }
        let names: HashSet<String> = admin.intent_consumer_names().await?.into_iter().collect();
        Ok(self.names[..count]
            .iter()
            .filter(|c| proto::consumer_name(c).is_ok_and(|n| !names.contains(&n)))
            .cloned()
            .collect())
    }

    /// Waits until the first `count` agents have their consumer.
    async fn wait_consumers(&self, admin: &bus::Bus, count: usize) -> anyhow::Result<()> {
        let mut best = usize::MAX;
        let mut progress = Instant::now();
        loop {
            self.check_alive()?;
            let missing = self.missing_consumers(admin, count).await?;
            if missing.is_empty() {
                return Ok(());
            }
            if missing.len() < best {
                (best, progress) = (missing.len(), Instant::now());
            }
            if progress.elapsed() > STALL {
                bail!(
                    "only {} of {count} agent consumers exist after {STALL:?} without progress; \
                     missing e.g. {:?}",
                    count - missing.len(),
                    &missing[..missing.len().min(5)]
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every agent has a registry record.
    async fn wait_registered(&self, registry: &bus::Registry) -> anyhow::Result<()> {
        let deadline = Instant::now() + STALL;
        loop {
            self.check_alive()?;
            let records: HashSet<String> =
                registry.all().await?.into_iter().map(|r| r.name).collect();
            let missing = self.names.iter().filter(|n| !records.contains(*n)).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{missing} of {} agents never registered", self.names.len());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After a measure: every agent still runs and every consumer still exists (N of N).
    pub async fn check(&self, admin: &bus::Bus) -> anyhow::Result<()> {
        self.check_alive()?;
        let missing = self.missing_consumers(admin, self.names.len()).await?;
        if !missing.is_empty() {
            bail!(
                "{} of {} agent consumers are gone; e.g. {:?}",
                missing.len(),
                self.names.len(),
                &missing[..missing.len().min(5)]
            );
        }
        Ok(())
    }

    /// Stops the agents (they drain) and the simulator.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        // Agents drain within their grace period; there is nothing in flight by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.sim.shutdown().await;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What every bench starts with: a server, an admin connection, the topology, a signing
/// key, and a fleet of `n` agents that are all up.
pub struct Rig {
    /// The nats-server.
    pub server: Server,
    /// The bench's own connection (readers, checks).
    pub admin: bus::Bus,
    /// The streams and buckets.
    pub topology: bus::Topology,
    /// The key intents are signed with and agents trust.
    pub keys: crate::intents::Keys,
    /// The agents.
    pub fleet: Fleet,
}

impl Rig {
    /// Starts the server, creates the topology (as the admin would), and starts `n` agents.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let server = Server::start()?;
        let admin = server.connect("coxswain-bench").await?;
        let topology = admin
            .ensure_topology(&bus::TopologyConfig::default())
            .await?;
        let keys = crate::intents::Keys::new()?;
        let fleet = Fleet::start(&server, &admin, &topology.registry, n, &keys.trust).await?;
        Ok(Self {
            server,
            admin,
            topology,
            keys,
            fleet,
        })
    }
}
