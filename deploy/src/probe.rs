//! HTTP probes after a healthy rollout: `successes` 2xx answers in a row, each within its
//! timeout. Plain `http://` over a TCP connection; no client library needed for a GET.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

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

/// Runs one probe until it has `successes` 2xx in a row, or `deadline` passes.
pub async fn run(probe: &proto::HttpProbe, deadline: Instant) -> Result<(), String> {
    let timeout = Duration::from_millis(probe.timeout_ms);
    let mut streak = 0;
    let mut last = String::from("not tried");
    while streak < probe.successes {
        if Instant::now() >= deadline {
            return Err(format!("probe {} failed: {last}", probe.url));
        }
        match get(&probe.url, timeout).await {
            Ok(code) if (200..300).contains(&code) => streak += 1,
            Ok(code) => {
                streak = 0;
                last = format!("HTTP {code}");
            }
            Err(e) => {
                streak = 0;
                last = e;
            }
        }
        if streak < probe.successes {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
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
        run(&ok, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        let bad = proto::HttpProbe {
            url: server("503 Service Unavailable").await,
            successes: 1,
            timeout_ms: 500,
        };
        let err = run(&bad, Instant::now() + Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(err.ends_with("HTTP 503"), "{err}");
    }
}
