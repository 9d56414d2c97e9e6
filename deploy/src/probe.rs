//! HTTP probes after a healthy rollout: `successes` 2xx answers in a row, each within its
//! timeout. Plain `http://` over a TCP connection; no client library needed for a GET.

use std::convert::Infallible;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::poll::{Check, Stopped, wait_until};

/// One GET; `Ok(status)` or why it failed.
async fn get(url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// probes are supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: coxswain-probe\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// How long a probe pauses between two GETs.
const PACE: Duration = Duration::from_millis(200);

/// Why a probe did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
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
pub async fn run(
    probe: &proto::HttpProbe,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), ProbeError> {
    let timeout = Duration::from_millis(probe.timeout_ms);
    // Looks run one after the other; the lock only lets each look's future update the streak.
    let streak = Mutex::new(Streak::new(probe.successes));
    let locked = || streak.lock().unwrap_or_else(PoisonError::into_inner);
    let look = || async {
        if locked().done() {
            return Ok(Check::Done(()));
        }
        let answer = get(&probe.url, timeout).await;
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
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn server(status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        format!("http://{addr}/healthz")
    }

    #[tokio::test]
    async fn probes_need_consecutive_successes() {
        let ok = proto::HttpProbe {
            url: server("200 OK").await,
            successes: 2,
            timeout_ms: 500,
        };
        let cancel = CancellationToken::new();
        run(&ok, Instant::now() + Duration::from_secs(5), &cancel)
            .await
            .unwrap();
        let bad = proto::HttpProbe {
            url: server("503 Service Unavailable").await,
            successes: 1,
            timeout_ms: 500,
        };
        let err = run(&bad, Instant::now() + Duration::from_millis(500), &cancel)
            .await
            .unwrap_err();
        assert!(err.to_string().ends_with("HTTP 503"), "{err}");
    }

    #[tokio::test]
    async fn a_cancelled_probe_stops_promptly() {
        let bad = proto::HttpProbe {
            url: server("503 Service Unavailable").await,
            successes: 1,
            timeout_ms: 500,
        };
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let err = run(&bad, Instant::now() + Duration::from_secs(60), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_streak_needs_consecutive_2xx() {
        let mut streak = Streak::new(2);
        assert_eq!(streak.record(Ok(200)), Check::Pending("not tried".into()));
        assert_eq!(
            streak.record(Err("connection refused".into())),
            Check::Pending("connection refused".into())
        );
        assert_eq!(
            streak.record(Ok(204)),
            Check::Pending("connection refused".into())
        );
        assert_eq!(streak.record(Ok(500)), Check::Pending("HTTP 500".into()));
        assert_eq!(streak.count, 0);
        assert_eq!(streak.record(Ok(200)), Check::Pending("HTTP 500".into()));
        assert_eq!(streak.record(Ok(299)), Check::Done(()));
        assert!(Streak::new(0).done(), "no success needed: nothing to try");
    }
}
