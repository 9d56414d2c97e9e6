//! A real `nats-server -js` for tests, behind an RAII guard: a random port, a temporary store,
//! killed and deleted on drop, its log printed when the test that owns it panics.
//! [`NatsCluster`] is three of them routed into one JetStream cluster.
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
    /// Further command-line arguments (a cluster node's name, cluster port and routes).
    args: Vec<String>,
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
        Self::start_with_args(config, Vec::new())
    }

    /// Starts a server with further command-line arguments, kept for restarts.
    fn start_with_args(config: Option<PathBuf>, args: Vec<String>) -> io::Result<Self> {
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
            args,
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
            .args(&self.args)
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

/// How long a cluster may take to elect its JetStream meta leader, and a restarted node to
/// catch up.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// Servers in a [`NatsCluster`]: the smallest cluster that keeps a quorum with one node down.
const CLUSTER_NODES: usize = 3;

/// Three nats-servers with JetStream routed into one cluster (`coxswain`, servers `n1`..`n3`),
/// owned by one test: random free ports, a temporary store each, all killed and deleted on
/// drop, each log printed when the test panics. A node can be killed (SIGKILL) and restarted
/// on the same ports with the same store, as an outage of one machine.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three servers and waits until each listens, JetStream has a meta leader
    /// every node agrees on, and every node is healthy (`/healthz`).
    pub fn start() -> io::Result<Self> {
        let cluster_ports = (0..CLUSTER_NODES)
            .map(|_| free_port())
            .collect::<io::Result<Vec<_>>>()?;
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        for (i, port) in cluster_ports.iter().enumerate() {
            let args = vec![
                "--server_name".to_owned(),
                node_name(i),
                "--cluster_name".to_owned(),
                "coxswain".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                routes.clone(),
            ];
            nodes.push(NatsServer::start_with_args(None, args)?);
        }
        let cluster = Self { nodes };
        cluster.wait_until_ready()?;
        Ok(cluster)
    }

    /// The client URLs of every node, comma separated: `nats://127.0.0.1:P1,...`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many nodes the cluster has, running or not.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based; its server name is `n<i+1>`).
    ///
    /// # Panics
    /// When `i` is not below [`NatsCluster::node_count`].
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Kills node `i` with SIGKILL, keeping its store.
    ///
    /// # Panics
    /// When `i` is not below [`NatsCluster::node_count`].
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on the same ports with the same store, and waits until the
    /// cluster is whole and healthy again.
    ///
    /// # Panics
    /// When `i` is not below [`NatsCluster::node_count`].
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.nodes[i].restart()?;
        self.wait_until_ready()
    }

    /// The node that is the JetStream meta leader now, as a running node sees it.
    pub fn meta_leader(&self) -> Option<usize> {
        self.running()
            .find_map(|(_, node)| jsz(node, "").ok())
            .and_then(|jsz| node_index(jsz.pointer("/meta_cluster/leader")?.as_str()?))
    }

    /// The node that leads stream `name` (`COXSWAIN_INTENTS`, `KV_coxswain-state`...) now.
    pub fn stream_leader(&self, name: &str) -> Option<usize> {
        self.running().find_map(|(_, node)| {
            let jsz = jsz(node, "?streams=true").ok()?;
            let leader = stream_details(&jsz)
                .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))?
                .pointer("/cluster/leader")?
                .as_str()?
                .to_owned();
            node_index(&leader)
        })
    }

    /// Node `i`'s `/jsz` with `query` (`?streams=true&config=true`, say), parsed.
    ///
    /// # Panics
    /// When `i` is not below [`NatsCluster::node_count`].
    pub fn jsz(&self, i: usize, query: &str) -> io::Result<serde_json::Value> {
        jsz(&self.nodes[i], query)
    }

    /// The nodes not killed, with their index.
    fn running(&self) -> impl Iterator<Item = (usize, &NatsServer)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.pid().is_some())
    }

    /// Waits until every running node is healthy (`/healthz`) and all name the same meta
    /// leader: after a kill, until the others elected a new one.
    pub fn wait_until_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let last = match self.readiness() {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats cluster not ready within {CLUSTER_DEADLINE:?}: {last}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Ok` when the running nodes are healthy and agree on a meta leader that runs; else
    /// why not.
    fn readiness(&self) -> Result<(), String> {
        let mut leaders = Vec::new();
        for (_, node) in self.running() {
            let (status, body) = http_get(node.monitor_port(), "/healthz")
                .map_err(|e| format!("{}: /healthz: {e}", node.url()))?;
            if status != 200 {
                return Err(format!("{}: /healthz {status}: {body}", node.url()));
            }
            let jsz = jsz(node, "").map_err(|e| format!("{}: /jsz: {e}", node.url()))?;
            let leader = jsz
                .pointer("/meta_cluster/leader")
                .and_then(|l| l.as_str())
                .unwrap_or_default()
                .to_owned();
            leaders.push(leader);
        }
        let alive = |name: &String| self.running().any(|(i, _)| node_name(i) == *name);
        match leaders.first() {
            Some(first) if alive(first) && leaders.iter().all(|l| l == first) => Ok(()),
            _ => Err(format!("meta leaders seen: {leaders:?}")),
        }
    }
}

/// `n1`, `n2`, `n3`.
fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// The index of server `n<i+1>`.
fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n')?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// Every stream of every account in a `/jsz?streams=true` answer.
fn stream_details(jsz: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    let accounts = jsz
        .get("account_details")
        .and_then(|a| a.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    accounts.iter().flat_map(|account| {
        account
            .get("stream_detail")
            .and_then(|s| s.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
    })
}

/// `GET /jsz<query>` on a server's monitoring port, parsed.
fn jsz(node: &NatsServer, query: &str) -> io::Result<serde_json::Value> {
    let (status, body) = http_get(node.monitor_port(), &format!("/jsz{query}"))?;
    if status != 200 {
        return Err(io::Error::other(format!("/jsz answered {status}: {body}")));
    }
    serde_json::from_str(&body).map_err(io::Error::other)
}

/// A plain `GET` on `127.0.0.1:<port>`: the status and the body. HTTP/1.0, so the body is
/// never chunked.
fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A port no one listens on now (the OS picks it; free until someone else takes it).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A CA and what it issued, as PEM files in a temporary directory: `ca.pem`, a server
/// certificate for 127.0.0.1 (`server.pem`, `server-key.pem`) and a client certificate
/// (`client.pem`, `client-key.pem`), generated with rcgen, so no TLS test depends on files or
/// on the openssl tool.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Generates the CA and both certificates and writes them out.
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca_key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(io::Error::other)?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        for (name, san) in [("server", "127.0.0.1"), ("client", "coxswain")] {
            let key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
            let mut params =
                rcgen::CertificateParams::new(vec![san.to_owned()]).map_err(io::Error::other)?;
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &ca).map_err(io::Error::other)?;
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem())?;
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )?;
        }
        Ok(Self { dir })
    }

    /// One of its files (`ca.pem`, `server.pem`, `client-key.pem`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A nats-server configuration demanding TLS with a client certificate from this CA
    /// (`verify: true`).
    pub fn nats_config(&self) -> io::Result<PathBuf> {
        let config = self.path("nats.conf");
        let quoted = |name: &str| format!("{:?}", self.path(name).display().to_string());
        std::fs::write(
            &config,
            format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 2\n}}\n",
                quoted("server.pem"),
                quoted("server-key.pem"),
                quoted("ca.pem"),
            ),
        )?;
        Ok(config)
    }
}

/// Polls `check` every 20 ms until it gives `Ok`, and returns that; panics after `within`
/// with `what` and the last `Err`, which says how far things got.
pub async fn eventually<T, E, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}; last seen: {last:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
