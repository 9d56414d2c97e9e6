//! `scale`: Coxswain's scale benchmarks on one host. A real nats-server (with the limits a
//! large fleet needs), the simulator's clusters, and agents as tasks of this process, each
//! with its own NATS connection and an in-process Kubernetes client.
//!
//! ```text
//! scale latency    [N...]  one intent at a time into an idle fleet: publish -> received / succeeded
//! scale fanout     [N...]  one rollout through the coordinator's API to N clusters in one wave
//! scale idle       [N]     what N idle agents cost the server and this process, over 60 s
//! scale throughput [N]     rollouts/s and intents/s through one coordinator, N clusters
//! ```
//!
//! Every measure is one line on stdout, `<bench> N=<n> <measure> p50=<ms> p99=<ms>` or
//! `<bench> N=<n> <measure>=<value>`; progress goes to stderr. A run proves N of N (every
//! agent's consumer exists, every agent still runs, every expected event arrived) and exits
//! non-zero with a loud message otherwise: a partial run never reports success.
//!
//! Run with `scripts/bench`; results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod events;
mod fanout;
mod fleet;
mod http;
mod idle;
mod intents;
mod latency;
mod process;
mod report;
mod server;
mod throughput;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

const USAGE: &str = "usage: scale latency|fanout|idle|throughput [N...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bench, sizes) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COXSWAIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&bench, &sizes) => result,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}: no result")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\n########## BENCH FAILED: {bench} ##########\n{e:#}\n");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGINT or SIGTERM, so an interrupted run still stops its nats-server and says
/// it failed.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // No SIGTERM handler: Ctrl-C still ends the run cleanly.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The bench's name and its sizes, the defaults when none are given.
fn parse(args: &[String]) -> anyhow::Result<(String, Vec<usize>)> {
    let Some((bench, rest)) = args.split_first() else {
        bail!("no bench named");
    };
    let sizes = rest
        .iter()
        .map(|a| {
            a.parse::<usize>()
                .with_context(|| format!("{a:?} is no size"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let defaults: &[usize] = match bench.as_str() {
        "latency" => &[100, 1000, 10_000],
        "fanout" => &[1000, 10_000],
        "idle" => &[10_000],
        "throughput" => &[100],
        other => bail!("unknown bench {other:?}"),
    };
    if sizes.contains(&0) {
        bail!("a fleet needs at least one cluster");
    }
    let sizes = if sizes.is_empty() {
        defaults.to_vec()
    } else {
        sizes
    };
    Ok((bench.clone(), sizes))
}

/// Runs one bench for every size, each on a fresh server and fleet.
async fn run(bench: &str, sizes: &[usize]) -> anyhow::Result<()> {
    for &n in sizes {
        eprintln!("== {bench} N={n}");
        match bench {
            "latency" => latency::run(n).await,
            "fanout" => fanout::run(n).await,
            "idle" => idle::run(n).await,
            _ => throughput::run(n).await,
        }
        .with_context(|| format!("{bench} N={n}"))?;
    }
    Ok(())
}
