//! Support for Coxswain's end-to-end scenarios: they run the real `coxswain` binary against a
//! real nats-server (`bus::testing::NatsServer`) and the simulator.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

pub use bus::testing::{NatsServer, eventually};

pub mod webdriver;

/// The `coxswain` binary of this workspace, built (or found up to date) once per test process.
///
/// `$COXSWAIN_BIN` overrides it, e.g. to test an installed release build.
pub fn coxswain_bin() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("COXSWAIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    // This test runs from target/<profile>/deps/; the binary lives in target/<profile>/.
    // The whole workspace is built, with all targets, so features unify exactly as for the
    // test run itself and the build is a no-op when the tests were just built.
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable is not in target/<profile>/deps")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(cargo);
    // Variables cargo and nextest set for a running test are not the ones of a normal build;
    // build scripts that watch them would rebuild for nothing.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let test_only = [
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "NEXTEST",
            "__CARGO",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
                    | "RUST_TEST_THREADS"
            );
        if test_only {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--profile",
            profile,
        ])
        .status()
        .context("cannot run cargo to build the coxswain binary")?;
    if !status.success() {
        bail!("building the coxswain binary failed ({status})");
    }
    let bin = profile_dir.join("coxswain");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// Runs `coxswain ARGS` to completion and returns its output.
pub fn coxswain(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(coxswain_bin()?)
        .args(args)
        .env("COXSWAIN_LOG", "warn")
        .output()
        .with_context(|| format!("cannot run coxswain {args:?}"))
}

/// `kubectl`: `$COXSWAIN_KUBECTL`, else the one `scripts/install-tools` put in `.tools/bin`.
pub fn kubectl_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("COXSWAIN_KUBECTL") {
        return Ok(PathBuf::from(path));
    }
    let tool = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl");
    if tool.exists() {
        return Ok(tool);
    }
    bail!("kubectl not found: run scripts/install-tools (or set COXSWAIN_KUBECTL)")
}

/// A child process of a test: its stderr goes to a log file, printed when the test panics; it
/// is killed when dropped.
#[derive(Debug)]
struct Managed {
    child: Option<std::process::Child>,
    log: PathBuf,
    what: &'static str,
}

impl Managed {
    /// Spawns `command` with stdout discarded and stderr in `log`.
    fn spawn(mut command: Command, log: PathBuf, what: &'static str) -> anyhow::Result<Self> {
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        Ok(Self {
            child: Some(child),
            log,
            what,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails when the process already exited (while starting, say).
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited with {status}:\n{}", self.what, self.log());
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (30 s at most) for the exit status.
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let what = self.what;
        let Some(mut child) = self.child.take() else {
            bail!("{what} already stopped");
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("{what} did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.what, self.log());
        }
        self.kill();
    }
}

/// Polls `ready` every 20 ms until it holds, the process exits, or 30 s pass.
fn wait_ready(process: &mut Managed, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        process.check_running()?;
        if std::time::Instant::now() > deadline {
            bail!("{} not ready within 30 s:\n{}", process.what, process.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// `coxswain sim` as a real process, killed when dropped.
#[derive(Debug)]
pub struct SimProcess {
    process: Managed,
    dir: tempfile::TempDir,
}

impl SimProcess {
    /// Starts `coxswain sim --clusters <clusters>` and waits until every kubeconfig is written.
    pub fn start(clusters: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(coxswain_bin()?);
        command
            .args(["sim", "--clusters", &clusters.join(","), "--kubeconfig-dir"])
            .arg(dir.path())
            .env("COXSWAIN_LOG", "warn");
        let process = Managed::spawn(command, dir.path().join("sim.log"), "coxswain sim")?;
        let mut sim = Self { process, dir };
        let kubeconfigs: Vec<PathBuf> = clusters.iter().map(|c| sim.kubeconfig(c)).collect();
        wait_ready(&mut sim.process, || kubeconfigs.iter().all(|k| k.exists()))?;
        Ok(sim)
    }

    /// The kubeconfig of one cluster.
    pub fn kubeconfig(&self, cluster: &str) -> PathBuf {
        self.dir.path().join(format!("{cluster}.yaml"))
    }

    /// `host:port` of one cluster's API, read from its kubeconfig.
    pub fn address(&self, cluster: &str) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.kubeconfig(cluster))?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: http://"))
            .map(str::to_owned)
            .context("no server in the kubeconfig")
    }

    /// Switches API faults of one cluster (`PUT /sim/faults`), e.g. `{"latency_ms": 200}`.
    pub fn set_faults(&self, cluster: &str, faults: &serde_json::Value) -> anyhow::Result<()> {
        use std::io::{Read, Write};
        let address = self.address(cluster)?;
        let body = faults.to_string();
        let mut stream = std::net::TcpStream::connect(&address)?;
        write!(
            stream,
            "PUT /sim/faults HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        if !answer.starts_with("HTTP/1.1 200") {
            bail!("setting faults failed: {answer}");
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.stop()
    }
}

/// `coxswain agent` as a real process: stopped with SIGTERM, or killed with SIGKILL.
#[derive(Debug)]
pub struct AgentProcess {
    process: Managed,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts the agent of `cluster` (`env` label `env`) against NATS at `nats_url` and the
    /// cluster behind `kubeconfig`, with short ack wait, lock lease and grace for tests.
    pub fn start(
        cluster: &str,
        env: &str,
        nats_url: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_env(cluster, env, nats_url, kubeconfig, extra, &[])
    }

    /// Like [`AgentProcess::start`], with extra environment variables.
    pub fn start_with_env(
        cluster: &str,
        env: &str,
        nats_url: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(coxswain_bin()?);
        command
            .args([
                "agent",
                "--cluster",
                cluster,
                "--label",
                &format!("env={env}"),
            ])
            .args(["--nats", nats_url, "--ack-wait", "2s"])
            .args(["--lock-lease", "2s", "--grace", "10s"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .envs(vars.iter().copied())
            .env("COXSWAIN_LOG", "info,kube=warn,async_nats=warn");
        // Scenarios about other things publish unsigned intents; the trust tests pass keys.
        if !extra.contains(&"--trust-key") {
            command.arg("--insecure-accept-unsigned");
        }
        let process = Managed::spawn(command, dir.path().join("agent.log"), "coxswain agent")?;
        Ok(Self { process, _dir: dir })
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.stop()
    }
}

/// A free loopback address, `127.0.0.1:<port>`.
pub fn free_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// `coxswain coordinator` as a real process, killed when dropped.
#[derive(Debug)]
pub struct CoordinatorProcess {
    process: Managed,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl CoordinatorProcess {
    /// Starts a coordinator with bearer token `token` and the platform policy file `policy`,
    /// and waits until it answers. It creates the topology itself and publishes unsigned
    /// intents: scenarios about other things run NATS without roles.
    pub fn start(nats_url: &str, token: &str, policy: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_with(
            nats_url,
            token,
            policy,
            &["--create-topology", "--insecure-unsigned-intents"],
        )
    }

    /// Like [`CoordinatorProcess::start`], with `extra` arguments instead of the insecure
    /// defaults (the trust tests pass `--nats-nkey` and `--signing-key`). An empty `token`
    /// passes no `--token` (for `--tokens-file`).
    pub fn start_with(
        nats_url: &str,
        token: &str,
        policy: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_env(nats_url, token, policy, extra, &[])
    }

    /// Like [`CoordinatorProcess::start_with`], with extra environment variables.
    pub fn start_with_env(
        nats_url: &str,
        token: &str,
        policy: &std::path::Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let address = free_address()?;
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(coxswain_bin()?);
        command.args(["coordinator", "--listen", &address]);
        if !token.is_empty() {
            command.args(["--token", token]);
        }
        command
            .args(["--nats", nats_url, "--claim", "2s"])
            .arg("--policy")
            .arg(policy)
            .args(extra)
            .env("COXSWAIN_LOG", "info,async_nats=warn")
            .envs(vars.iter().copied());
        let mut process = Managed::spawn(
            command,
            dir.path().join("coordinator.log"),
            "coxswain coordinator",
        )?;
        wait_ready(&mut process, || {
            std::net::TcpStream::connect(&address).is_ok()
        })?;
        Ok(Self {
            process,
            url: format!("http://{address}"),
            _dir: dir,
        })
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Every outcome event of a cluster so far, in stream order, each once.
pub async fn cluster_events(bus: &bus::Bus, cluster: &str) -> anyhow::Result<Vec<proto::Outcome>> {
    Ok(bus::events::stored_events(bus, &bus::EventQuery::cluster(cluster)).await?)
}

/// A plain HTTP/1.1 `POST` of a JSON body to `url` + `path` with a bearer token: the status
/// and the body of the answer. For requests no well-behaved client would send.
pub fn http_post(url: &str, path: &str, token: &str, body: &serde_json::Value) -> (u16, String) {
    http_request("POST", url, path, token, &body.to_string())
}

/// A plain HTTP/1.1 `GET` with a bearer token: the status and the body of the answer.
pub fn http_get(url: &str, path: &str, token: &str) -> (u16, String) {
    http_request("GET", url, path, token, "")
}

fn http_request(method: &str, url: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(address)?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })()
    .unwrap_or_default();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The platform policy of the scenario fleet (beta, prod-east, prod-west): the example's,
/// plus `staging`, which selects no cluster.
pub const FLEET_POLICY: &str = "environments:
  beta:
    selector: {env: beta}
    releases: [\"*\"]
    namespaces: [\"*\"]
  prod:
    selector: {env: prod}
    waves:
      - {region: east}
      - {region: west}
    requires: beta
    releases: [web]
    namespaces: [shop]
  staging:
    selector: {env: staging}
    releases: [web]
    namespaces: [shop]
";

impl AgentProcess {
    /// The exit status when the agent has exited (crashed, say); `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }
}

impl CoordinatorProcess {
    /// The exit status when the coordinator has exited; `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }
}

/// Requests a collector received: `(path, body)`.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP collector (`http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`):
/// records `(path, body)` of every POST and answers 200.
pub fn otlp_collector() -> anyhow::Result<(String, Received)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(mut seen) = record.lock() {
                seen.push((path, body));
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: application/x-protobuf\r\n\r\n");
        }
    });
    Ok((format!("http://{address}"), seen))
}

/// Whether any request `collector` received carries the 16 bytes of the hex `trace_id` (an
/// OTLP/protobuf export of a span of that trace).
pub fn exported_trace(collector: &Received, trace_id: &str) -> bool {
    let wanted: Vec<u8> = (0..trace_id.len() / 2)
        .filter_map(|i| u8::from_str_radix(trace_id.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    collector
        .lock()
        .map(|seen| {
            seen.iter()
                .any(|(_, body)| body.windows(wanted.len()).any(|w| w == wanted.as_slice()))
        })
        .unwrap_or(false)
}

/// Writes `coxswain.yaml` into `dir` for the example shop (`examples/web`): release `web` in
/// namespace `shop`, with beta's values; its path.
pub fn example_app_config(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/web");
    let path = dir.join("coxswain.yaml");
    std::fs::write(
        &path,
        format!(
            "releases:\n  web:\n    manifests: {}\n    namespace: shop\n    health: {{timeout_secs: 60}}\n\
             environments:\n  beta:\n    values: {}\n",
            example.join("manifests").display(),
            example.join("environments/beta.yaml").display(),
        ),
    )?;
    Ok(path)
}

/// `coxswain deploy --config <config> --coordinator <coordinator> --token <token> <args>`,
/// logging at warn, with the environment variables `vars`: exit code, stdout, stderr.
pub fn deploy_cli(
    config: &std::path::Path,
    coordinator: &str,
    token: &str,
    args: &[&str],
    vars: &[(&str, &str)],
) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(coxswain_bin()?)
        .arg("deploy")
        .arg("--config")
        .arg(config)
        .args(["--coordinator", coordinator, "--token", token])
        .args(args)
        .env("COXSWAIN_LOG", "warn")
        .envs(vars.iter().copied())
        .output()
        .context("cannot run coxswain deploy")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
