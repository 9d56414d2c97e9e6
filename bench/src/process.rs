//! One real `coxswain agent` process, against a `coxswain sim` process, to read what an idle
//! agent costs in memory outside the bench's shared process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::intents::{ENVIRONMENT, Keys};
use crate::server::{Server, rss_kib};

/// The cluster of the real agent.
const CLUSTER: &str = "solo";

/// How long the agent idles, once its consumer exists, before its RSS is read.
const IDLE: Duration = Duration::from_secs(10);

/// How long each process may take to get ready.
const READY: Duration = Duration::from_secs(30);

/// Starts `coxswain sim` and `coxswain agent` (signed intents only, trusting the bench key),
/// waits until the agent's consumer exists, lets it idle, and returns its RSS in KiB.
pub async fn agent_process_rss(
    server: &Server,
    admin: &bus::Bus,
    keys: &Keys,
) -> anyhow::Result<u64> {
    let bin = coxswain_bin()?;
    let dir = tempfile::Builder::new()
        .prefix("coxswain-bench-agent-")
        .tempdir()?;
    let trust = dir.path().join("signing.pub");
    std::fs::write(&trust, &keys.public)?;
    let (sim_log, agent_log) = (dir.path().join("sim.log"), dir.path().join("agent.log"));
    let mut sim = spawn(
        Command::new(&bin)
            .args(["sim", "--clusters", CLUSTER, "--kubeconfig-dir"])
            .arg(dir.path()),
        &sim_log,
    )?;
    let kubeconfig = dir.path().join(format!("{CLUSTER}.yaml"));
    wait(&mut sim, "coxswain sim", &sim_log, || async {
        Ok(kubeconfig.exists())
    })
    .await?;
    let mut agent = spawn(
        Command::new(&bin)
            .args(["agent", "--cluster", CLUSTER, "--label"])
            .arg(format!("env={ENVIRONMENT}"))
            .args(["--nats", &server.nats.url(), "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--trust-key")
            .arg(&trust),
        &agent_log,
    )?;
    let consumer = proto::consumer_name(CLUSTER)?;
    wait(&mut agent, "coxswain agent", &agent_log, || async {
        Ok(admin.intent_consumer_names().await?.contains(&consumer))
    })
    .await?;
    tokio::time::sleep(IDLE).await;
    if let Some(status) = agent.try_wait()? {
        bail!(
            "coxswain agent exited with {status} while idle:\n{}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
    }
    let pid = agent.id().context("the agent has no pid")?;
    let kib = rss_kib(Some(pid))?;
    eprintln!(
        "one coxswain agent process ({}) idle {IDLE:?} after its consumer appeared: {kib} KiB RSS",
        bin.display()
    );
    for child in [&mut agent, &mut sim] {
        let _ = child.kill().await;
    }
    Ok(kib)
}

/// Spawns a process with stdout discarded, stderr in `log`, killed when dropped.
fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    Ok(command
        .env("COXSWAIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()?)
}

/// Polls `ready` every 50 ms; fails, with the process's log, when it exits or [`READY`]
/// passes.
async fn wait<F, Fut>(child: &mut Child, what: &str, log: &Path, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + READY;
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    while !ready().await? {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} while starting:\n{}", log());
        }
        if Instant::now() > deadline {
            bail!("{what} not ready within {READY:?}:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `coxswain` release binary: `$COXSWAIN_BIN`, else next to this one.
fn coxswain_bin() -> anyhow::Result<PathBuf> {
    let bin = match std::env::var_os("COXSWAIN_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("coxswain"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release --bin coxswain) or set COXSWAIN_BIN",
            bin.display()
        );
    }
    Ok(bin)
}
