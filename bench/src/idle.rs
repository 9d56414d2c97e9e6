//! `idle`: N idle agents for a minute. What they cost the server (messages/s from `/varz`,
//! CPU from `/proc/<pid>/stat`) and this process (CPU, RSS), per agent; then the idle RSS of
//! one real `coxswain agent` process.

use std::time::{Duration, Instant};

use crate::fleet::{Fleet, Rig};
use crate::process::agent_process_rss;
use crate::report;
use crate::server::{Server, cpu_time, rss_kib};

/// How long the fleet idles after the start before the window opens.
const SETTLE: Duration = Duration::from_secs(5);

/// The measured window (`BENCH_IDLE_SECONDS` overrides it).
const WINDOW: Duration = Duration::from_secs(60);

/// How long the simulator alone is watched, to take its own idle CPU out of the agents'.
const SIM_WINDOW: Duration = Duration::from_secs(10);

/// Counters at one moment.
struct Reading {
    at: Instant,
    messages: u64,
    server_cpu: Duration,
    process_cpu: Duration,
}

impl Reading {
    async fn now(server: &Server) -> anyhow::Result<Self> {
        Ok(Self {
            messages: server.messages().await?,
            server_cpu: cpu_time(Some(server.pid()?))?,
            process_cpu: cpu_time(None)?,
            at: Instant::now(),
        })
    }
}

/// Runs the bench at size `n`.
pub async fn run(n: usize) -> anyhow::Result<()> {
    let sim_cpu = simulator_cpu(n).await?;
    let rig = Rig::start(n).await?;
    let Rig {
        server,
        admin,
        keys,
        fleet,
        ..
    } = &rig;
    tokio::time::sleep(SETTLE).await;
    let window = std::env::var("BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(WINDOW, Duration::from_secs);
    eprintln!("idle window {window:?} (BENCH_IDLE_SECONDS)");
    let start = Reading::now(server).await?;
    tokio::time::sleep(window).await;
    let end = Reading::now(server).await?;
    fleet.check(admin).await?;
    eprintln!("{n} of {n} agents and consumers still up after the window");
    let memory = (rss_kib(None)?, rss_kib(Some(server.pid()?))?);
    report_window(n, &start, &end, sim_cpu, fleet, memory);
    let process_kib = agent_process_rss(server, admin, keys).await?;
    report::value("idle", 1, "agent_process_rss_mib", mib(process_kib));
    fleet.stop().await;
    Ok(())
}

/// Prints the window's measures.
fn report_window(
    n: usize,
    start: &Reading,
    end: &Reading,
    sim_cpu: f64,
    fleet: &Fleet,
    (process_kib, server_kib): (u64, u64),
) {
    let secs = (end.at - start.at).as_secs_f64();
    let per_s = |d: Duration| d.as_secs_f64() / secs;
    let messages = (end.messages - start.messages) as f64 / secs;
    let server_cpu = per_s(end.server_cpu - start.server_cpu);
    let process_cpu = per_s(end.process_cpu - start.process_cpu);
    // The simulator runs in this process too; its own idle share is taken out.
    let agent_cpu = (process_cpu - sim_cpu).max(0.0);
    let agents_kib = process_kib.saturating_sub(fleet.rss_before_agents_kib);
    let sim_kib =
        fleet.rss_before_agents_kib - fleet.rss_before_sim_kib.min(fleet.rss_before_agents_kib);
    let n_f = n as f64;
    let lines = [
        ("server_msgs_per_s", format!("{messages:.1}")),
        (
            "server_msgs_per_s_per_agent",
            format!("{:.3}", messages / n_f),
        ),
        ("server_cpu_pct", format!("{:.2}", server_cpu * 100.0)),
        (
            "server_cpu_us_per_s_per_agent",
            format!("{:.2}", server_cpu * 1e6 / n_f),
        ),
        ("process_cpu_pct", format!("{:.2}", process_cpu * 100.0)),
        ("simulator_cpu_pct", format!("{:.2}", sim_cpu * 100.0)),
        (
            "agent_cpu_us_per_s_per_agent",
            format!("{:.2}", agent_cpu * 1e6 / n_f),
        ),
        (
            "agent_rss_kib_per_agent",
            format!("{:.1}", agents_kib as f64 / n_f),
        ),
        (
            "simulator_rss_kib_per_cluster",
            format!("{:.1}", sim_kib as f64 / n_f),
        ),
        ("server_rss_mib", mib(server_kib)),
    ];
    for (measure, value) in lines {
        report::value("idle", n, measure, value);
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// CPU share of one core the simulator's `n` idle clusters take alone in this process, to
/// be taken out of the agents' share (the agents run beside the simulator).
async fn simulator_cpu(n: usize) -> anyhow::Result<f64> {
    let sim = sim::Sim::new(sim::Timing::fast());
    for i in 0..n {
        sim.add_cluster(&format!("c{i:05}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, at) = (cpu_time(None)?, Instant::now());
    tokio::time::sleep(SIM_WINDOW).await;
    let share = (cpu_time(None)? - before).as_secs_f64() / at.elapsed().as_secs_f64();
    sim.shutdown().await;
    eprintln!(
        "simulator alone ({n} idle clusters): {:.2}% of a core over {SIM_WINDOW:?}",
        share * 100.0
    );
    Ok(share)
}
