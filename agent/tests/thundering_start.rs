//! 2,000 agents started at the same instant (tasks of this process, each with its own NATS
//! connection and simulated cluster) against one real nats-server: every one creates its
//! consumer and registers, none fails. Consumer creation retries with jitter when JetStream
//! is swamped, and the intents stream allows more consumers than the server's default 1,000.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const AGENTS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_agents_started_at_once_all_register() {
    let server = bus::testing::NatsServer::start().unwrap();
    let options = bus::ConnectOptions {
        url: server.url(),
        ..Default::default()
    };
    let admin = bus::connect(&options).await.unwrap();
    let topology = admin
        .ensure_topology(&bus::TopologyConfig::default())
        .await
        .unwrap();
    let fleet = sim::Sim::new(sim::Timing::fast());

    // Every connection first, so that the starts really happen together.
    let mut starts = Vec::with_capacity(AGENTS);
    for i in 0..AGENTS {
        let name = format!("c{i:04}");
        let kube = kube::Client::new(sim::router(fleet.add_cluster(&name)), "default");
        let mut config = agent::AgentConfig::new(&name);
        config.labels.insert("env".into(), "scale".into());
        config.trust = agent::Trust::InsecureAcceptUnsigned;
        starts.push((config, bus::connect(&options).await.unwrap(), kube));
    }
    let shutdown = CancellationToken::new();
    let agents: Vec<_> = starts
        .into_iter()
        .map(|(config, bus, kube)| tokio::spawn(agent::run(config, bus, kube, shutdown.clone())))
        .collect();

    bus::testing::eventually(
        Duration::from_secs(240),
        "every agent registered with its consumer",
        || async {
            let stopped = agents.iter().filter(|a| a.is_finished()).count();
            assert_eq!(stopped, 0, "{stopped} agents stopped during the start");
            let registered = topology.registry.all().await.unwrap().len();
            let consumers = admin.intent_consumer_count().await.unwrap();
            if (registered, consumers) == (AGENTS, AGENTS) {
                Ok(())
            } else {
                Err(format!(
                    "registered {registered}, consumers {consumers} of {AGENTS}"
                ))
            }
        },
    )
    .await;

    shutdown.cancel();
    for agent in agents {
        agent.await.unwrap().unwrap();
    }
    fleet.shutdown().await;
}
