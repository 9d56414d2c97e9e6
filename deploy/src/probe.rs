//! HTTP probes after a healthy rollout: `successes` 2xx answers in a row, each within its
//! timeout. A GET over a plain TCP connection (`http://`) or rustls (`https://`, ring, the
//! system's roots plus the agent's `--probe-ca`); no redirect is followed.
//!
//! A probe may reach only the release's own Services (`http://<service>.<namespace>.svc/...`,
//! also `.svc.cluster.local`, of a Service in the release's manifests) or a host the agent's
//! operator listed (`--probe-allow`): anything else is refused before any connection, so an
//! intent cannot aim the agent at the cloud metadata endpoint or an internal admin port. Only
//! the status code of an answer is kept: no byte of a response reaches an event or a reason.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::{Host, Position, Url};

use crate::poll::{Check, Stopped, wait_until};

/// Where probes may go and whom `https://` probes trust: the agent operator's choice, never
/// the intent's.
#[derive(Debug, Clone, Default)]
pub struct ProbePolicy {
    /// Hosts (names or IP addresses, lowercase, without port) probes may reach besides the
    /// release's own Services.
    allow_hosts: BTreeSet<String>,
    /// CA certificates `https://` probes trust besides the system's roots.
    extra_roots: Vec<CertificateDer<'static>>,
}

impl ProbePolicy {
    /// Lets probes reach `host` (`status.example.com`, `10.0.0.7`, `::1`), on any port.
    pub fn allow_host(&mut self, host: &str) {
        self.allow_hosts.insert(normal_host(host));
    }

    /// Trusts the CA certificates of a PEM file for `https://` probes; how many it held.
    pub fn trust_ca_file(&mut self, path: &Path) -> Result<usize, std::io::Error> {
        let invalid = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("probe CA file {}: {why}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in it".into()));
        }
        let count = certs.len();
        self.extra_roots.extend(certs);
        Ok(count)
    }

    fn allows(&self, host: &str) -> bool {
        self.allow_hosts.contains(host)
    }
}

/// A host as compared: lowercase, without IPv6 brackets or a trailing dot.
fn normal_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The `(service, namespace)` a cluster DNS name stands for, if it is one.
fn service_of(host: &str) -> Option<(&str, &str)> {
    let stem = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (service, namespace) = stem.split_once('.')?;
    (!service.is_empty() && !namespace.is_empty() && !namespace.contains('.'))
        .then_some((service, namespace))
}

/// The targets one release's probes may reach: its Services and the policy's hosts.
#[derive(Debug)]
pub(crate) struct Scope<'a> {
    services: BTreeSet<(String, String)>,
    policy: &'a ProbePolicy,
}

impl<'a> Scope<'a> {
    /// The scope of a release of `objects` whose namespace is `namespace`.
    pub(crate) fn new(objects: &[Value], namespace: &str, policy: &'a ProbePolicy) -> Self {
        let services = objects
            .iter()
            .filter(|o| o["apiVersion"] == "v1" && o["kind"] == "Service")
            .filter_map(|o| {
                let name = o["metadata"]["name"].as_str()?;
                let ns = o["metadata"]["namespace"].as_str().unwrap_or(namespace);
                Some((name.to_ascii_lowercase(), ns.to_ascii_lowercase()))
            })
            .collect();
        Self { services, policy }
    }

    /// The probe's URL once it is well formed and its host in scope; else why not.
    pub(crate) fn check(&self, raw: &str) -> Result<Url, String> {
        let url = proto::probe_url(raw)?;
        let host = match url.host() {
            Some(Host::Domain(name)) => normal_host(name),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("{raw:?} names no host")),
        };
        let own_service = service_of(&host)
            .is_some_and(|(s, ns)| self.services.contains(&(s.to_owned(), ns.to_owned())));
        if own_service || self.policy.allows(&host) {
            Ok(url)
        } else {
            Err(format!(
                "{host} is neither a Service of this release (<service>.<namespace>.svc) nor \
                 in the agent's --probe-allow list"
            ))
        }
    }

    /// Every probe whose target is refused, each with its reason; empty when all may run.
    pub(crate) fn refusals(&self, probes: &[proto::HttpProbe]) -> Vec<String> {
        probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                self.check(&p.url)
                    .err()
                    .map(|why| format!("probe {i}: {why}"))
            })
            .collect()
    }
}

/// Every probe of a release (of `objects` in `namespace`) that `policy` does not let it run,
/// each with its reason; empty when all may run. Pure: nothing is resolved or connected.
pub fn probe_refusals(
    probes: &[proto::HttpProbe],
    objects: &[Value],
    namespace: &str,
    policy: &ProbePolicy,
) -> Vec<String> {
    Scope::new(objects, namespace, policy).refusals(probes)
}

/// The system's root certificates, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The TLS client of `https://` probes: rustls with ring, the system's roots and the policy's.
fn tls_connector(policy: &ProbePolicy) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    roots.add_parsable_certificates(policy.extra_roots.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The request: the URL's path and query (already percent-encoded by the parser) and its host.
fn request_head(url: &Url) -> String {
    let path = &url[Position::BeforePath..Position::AfterQuery];
    let path = if path.is_empty() { "/" } else { path };
    let host = &url[Position::BeforeHost..Position::AfterPort];
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: coxswain-probe\r\n\r\n"
    )
}

/// The status code of an answer's first bytes (`HTTP/1.1 204 ...`), if they are HTTP.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/")?;
    let space = rest.iter().position(|b| *b == b' ')?;
    let code = rest.get(space + 1..space + 4)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Sends `request` and reads just enough of the answer for its status code.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<u16, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    // "HTTP/1.1 200" is 12 bytes; a little more allows for odd versions.
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < head.len() {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        read += n;
        if let Some(code) = parse_status(&head[..read]) {
            return Ok(code);
        }
    }
    // The bytes themselves are not quoted: they are the server's, not ours to publish.
    Err(format!("the answer is not HTTP ({read} bytes)"))
}

/// One GET of a checked URL; `Ok(status)` or why it failed.
async fn get(
    url: &Url,
    tls: Option<&tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Result<u16, String> {
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let request = request_head(url);
    let attempt = async {
        let tcp = match url.host() {
            Some(Host::Domain(name)) => tokio::net::TcpStream::connect((name, port)).await,
            Some(Host::Ipv4(ip)) => tokio::net::TcpStream::connect((ip, port)).await,
            Some(Host::Ipv6(ip)) => tokio::net::TcpStream::connect((ip, port)).await,
            None => return Err("the URL has no host".to_owned()),
        }
        .map_err(|e| e.to_string())?;
        match tls {
            None => exchange(tcp, &request).await,
            Some(connector) => {
                let name = server_name(url)?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                exchange(stream, &request).await
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// The name the server's certificate must carry.
fn server_name(url: &Url) -> Result<ServerName<'static>, String> {
    match url.host() {
        Some(Host::Domain(name)) => ServerName::try_from(name.to_owned())
            .map_err(|e| format!("{name} cannot be checked against a certificate: {e}")),
        Some(Host::Ipv4(ip)) => Ok(ServerName::from(std::net::IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) => Ok(ServerName::from(std::net::IpAddr::V6(ip))),
        None => Err("the URL has no host".into()),
    }
}

/// How long a probe pauses between two GETs.
const PACE: Duration = Duration::from_millis(200);

/// Why a probe did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is malformed or its target outside the probe scope; nothing was connected.
    #[error("probe refused: {0}")]
    Refused(String),
    /// The deadline passed before enough 2xx answers in a row.
    #[error("probe {url} failed: {last}")]
    Failed {
        /// The probed URL.
        url: String,
        /// The last failure: an HTTP status or why the GET failed.
        last: String,
    },
    /// The release was cancelled (superseded) while probing.
    #[error("probe cancelled")]
    Cancelled,
}

/// 2xx answers in a row so far, and the last failure.
#[derive(Debug)]
struct Streak {
    needed: u32,
    count: u32,
    last: String,
}

impl Streak {
    fn new(needed: u32) -> Self {
        Self {
            needed,
            count: 0,
            last: String::from("not tried"),
        }
    }

    fn done(&self) -> bool {
        self.count >= self.needed
    }

    /// Counts one answer: a 2xx adds to the streak, anything else starts it again. Done once
    /// the streak is long enough, else the last failure.
    fn record(&mut self, answer: Result<u16, String>) -> Check<(), String> {
        match answer {
            Ok(code) if (200..300).contains(&code) => self.count += 1,
            Ok(code) => {
                self.count = 0;
                self.last = format!("HTTP {code}");
            }
            Err(e) => {
                self.count = 0;
                self.last = e;
            }
        }
        if self.done() {
            Check::Done(())
        } else {
            Check::Pending(self.last.clone())
        }
    }
}

/// Runs one probe until it has `successes` 2xx in a row, `deadline` passes, or `cancel` fires.
/// A URL outside `scope` is refused before any connection; a GET in flight is dropped at once
/// when `cancel` fires, and never outlives the deadline.
pub(crate) async fn run(
    probe: &proto::HttpProbe,
    scope: &Scope<'_>,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), ProbeError> {
    let url = scope.check(&probe.url).map_err(ProbeError::Refused)?;
    let tls = match url.scheme() {
        "https" => Some(tls_connector(scope.policy).map_err(ProbeError::Refused)?),
        _ => None,
    };
    let timeout = Duration::from_millis(probe.timeout_ms);
    // Looks run one after the other; the lock only lets each look's future update the streak.
    let streak = Mutex::new(Streak::new(probe.successes));
    let locked = || streak.lock().unwrap_or_else(PoisonError::into_inner);
    let look = || async {
        if locked().done() {
            return Ok(Check::Done(()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The last look after the deadline: keep the last real answer as the reason.
            return Ok(Check::Pending(locked().last.clone()));
        }
        let answer = tokio::select! {
            answer = get(&url, tls.as_ref(), timeout.min(left)) => answer,
            () = cancel.cancelled() => Err("cancelled".to_owned()),
        };
        Ok::<_, Infallible>(locked().record(answer))
    };
    wait_until(look, PACE, deadline, cancel)
        .await
        .map_err(|stopped| match stopped {
            Stopped::TimedOut(last) => ProbeError::Failed {
                url: probe.url.clone(),
                last,
            },
            Stopped::Cancelled => ProbeError::Cancelled,
            Stopped::Failed(never) => match never {},
        })
}

#[cfg(test)]
mod tests;
