//! A real `nats-server -js` for tests, behind an RAII guard: a random port, a temporary store,
//! killed and deleted on drop, its log printed when the test that owns it panics.
//!
//! The server binary is `$COXSWAIN_NATS_SERVER`, else `.tools/bin/nats-server` in the repository
//! (`scripts/install-tools` puts it there), else `nats-server` on `PATH`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to open its ports.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running nats-server with JetStream, owned by one test.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
}

impl NatsServer {
    /// Starts a server on a random free port and waits until it listens.
    pub fn start() -> io::Result<Self> {
        Self::start_inner(None)
    }

    /// Like [`NatsServer::start`], with a configuration file (`-c`), such as the
    /// `authorization` block `coxswain auth init` writes; the command line still chooses the
    /// port, store and log.
    pub fn start_with_config(config: &Path) -> io::Result<Self> {
        Self::start_inner(Some(config.to_owned()))
    }

    fn start_inner(config: Option<PathBuf>) -> io::Result<Self> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("coxswain-nats-")
            .tempdir()?;
        let mut server = Self {
            binary,
            dir,
            config,
            child: None,
            port: 0,
            monitor_port: 0,
        };
        server.spawn(None, None)?;
        Ok(server)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Makes the running server read its configuration file again, as an operator would:
    /// `nats-server --signal reload=<pid>`. Returns once the log says it reloaded.
    pub fn reload(&self) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("nats-server is not running"))?;
        let reloads = || self.log().matches("Reloaded server configuration").count();
        let before = reloads();
        let status = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "nats-server --signal reload={pid} exited with {status}"
            )));
        }
        let deadline = Instant::now() + START_DEADLINE;
        while reloads() == before {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats-server did not reload; log:\n{}", self.log()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/jsz`, `/varz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and keeps its store, for tests of a server outage.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same store.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn(Some(self.port), Some(self.monitor_port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn spawn(&mut self, port: Option<u16>, monitor: Option<u16>) -> io::Result<()> {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let monitor_arg = monitor.map_or("-1".to_owned(), |p| p.to_string());
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port_arg,
                "-m",
                &monitor_arg,
            ])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(self.log_path())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start {}: {e}", self.binary.display()),
                )
            })?;
        self.child = Some(child);
        let (port, monitor_port) = self.wait_for_ports(&ports_dir)?;
        self.port = port;
        self.monitor_port = monitor_port;
        Ok(())
    }

    /// Polls for the ports file the server writes once it listens.
    fn wait_for_ports(&mut self, ports_dir: &Path) -> io::Result<(u16, u16)> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "nats-server exited with {status} while starting; log:\n{}",
                    self.log()
                )));
            }
            if let Some(ports) = read_ports(ports_dir) {
                return Ok(ports);
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nats-server did not listen within {START_DEADLINE:?}; log:\n{}",
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- nats-server log ({}) ----\n{}", self.url(), self.log());
        }
        self.kill();
    }
}

/// Reads `{"nats": ["nats://127.0.0.1:P"], "monitoring": ["http://127.0.0.1:M"]}`.
fn read_ports(dir: &Path) -> Option<(u16, u16)> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port_of = |key: &str| -> Option<u16> {
        let url = json.get(key)?.get(0)?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some((port_of("nats")?, port_of("monitoring")?))
}

fn find_binary() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("COXSWAIN_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let repo_tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats-server");
    if repo_tool.exists() {
        return Ok(repo_tool);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "nats-server 2.10+ not found: run scripts/install-tools (or set COXSWAIN_NATS_SERVER)",
        )
    })
}
