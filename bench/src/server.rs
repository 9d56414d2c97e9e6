//! The nats-server under test, started with the limits a large fleet needs, and what the
//! bench reads about it and about this process: `/varz` message counters, CPU time and RSS
//! from `/proc`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bus::testing::NatsServer;

/// What the server's configuration file changes from the defaults, and why.
const SETTINGS: &[(&str, &str)] = &[(
    "max_connections: 100000",
    "one connection per in-process agent (default 65,536)",
)];

/// A running nats-server and its configuration file.
pub struct Server {
    /// The server.
    pub nats: NatsServer,
    _config: tempfile::NamedTempFile,
}

impl Server {
    /// Starts a server with [`SETTINGS`], printing them to stderr.
    pub fn start() -> anyhow::Result<Self> {
        let mut config = tempfile::Builder::new()
            .prefix("coxswain-bench-")
            .suffix(".conf")
            .tempfile()?;
        config.write_all(
            // Nothing about consumers: the streams set their own max_consumers (100,000).
            b"max_connections: 100000\n",
        )?;
        config.flush()?;
        for (setting, why) in SETTINGS {
            eprintln!("nats-server setting {setting} ({why})");
        }
        let nats = NatsServer::start_with_config(config.path()).context("starting nats-server")?;
        Ok(Self {
            nats,
            _config: config,
        })
    }

    /// A new connection to the server.
    pub async fn connect(&self, name: &str) -> anyhow::Result<bus::Bus> {
        let options = bus::ConnectOptions {
            url: self.nats.url(),
            name: Some(name.to_owned()),
            ..Default::default()
        };
        Ok(bus::connect(&options).await?)
    }

    /// The server's process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.nats.pid().context("nats-server is not running")
    }

    /// Fails when the server process is gone or a zombie (killed from outside, say): a wait
    /// for events would otherwise run into its deadline.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            anyhow::bail!(
                "nats-server (pid {pid}) is no longer running; its log:\n{}",
                self.nats.log()
            );
        }
        Ok(())
    }

    /// Messages the server took in and sent out so far (`/varz` `in_msgs` + `out_msgs`).
    pub async fn messages(&self) -> anyhow::Result<u64> {
        let address = format!("127.0.0.1:{}", self.nats.monitor_port());
        let answer = crate::http::request(&address, "GET", "/varz", None, None).await?;
        let varz: serde_json::Value = serde_json::from_str(&answer.body).context("/varz")?;
        let count = |key: &str| varz.get(key).and_then(serde_json::Value::as_u64);
        count("in_msgs")
            .zip(count("out_msgs"))
            .map(|(i, o)| i + o)
            .context("/varz has no in_msgs / out_msgs")
    }
}

/// CPU time (user + system) a process used so far; `pid` `None` is this process.
pub fn cpu_time(pid: Option<u32>) -> anyhow::Result<Duration> {
    let path = format!("/proc/{}/stat", proc_name(pid));
    let stat = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are fields 14 and 15 of the line, 12 and 13 after ") ".
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no command field"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: no field {i}"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks() as f64))
}

/// Resident memory of a process in KiB; `pid` `None` is this process.
pub fn rss_kib(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = format!("/proc/{}/status", proc_name(pid));
    std::fs::read_to_string(&path)
        .with_context(|| path.clone())?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path}: no VmRSS"))
}

fn proc_name(pid: Option<u32>) -> String {
    pid.map_or_else(|| "self".to_owned(), |p| p.to_string())
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}
