//! Probe tests: real local HTTP and HTTPS servers (certificates generated here with rcgen),
//! the scope check, and cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A policy that lets probes reach the local test servers.
fn local() -> ProbePolicy {
    let mut policy = ProbePolicy::default();
    policy.allow_host("127.0.0.1");
    policy
}

fn probe(url: String, successes: u32, timeout_ms: u64) -> proto::HttpProbe {
    proto::HttpProbe {
        url,
        successes,
        timeout_ms,
    }
}

/// A server answering every request with `answer`; its URL and how many connections it took.
async fn server(answer: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (format!("http://{addr}/healthz"), accepted)
}

fn deadline(millis: u64) -> Instant {
    Instant::now() + Duration::from_millis(millis)
}

#[tokio::test]
async fn probes_need_consecutive_successes() {
    let policy = local();
    let scope = Scope::new(&[], "shop", &policy);
    let cancel = CancellationToken::new();
    let (ok, _) = server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    run(&probe(ok, 2, 500), &scope, deadline(5000), &cancel)
        .await
        .unwrap();
    let (bad, _) = server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    let err = run(&probe(bad, 1, 500), &scope, deadline(500), &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("HTTP 503"), "{err}");
}

#[tokio::test]
async fn response_bytes_never_reach_the_reason_only_the_status_does() {
    let policy = local();
    let scope = Scope::new(&[], "shop", &policy);
    let cancel = CancellationToken::new();
    let (failing, _) = server("HTTP/1.1 500 SECRET-REASON\r\n\r\nSECRET-BODY").await;
    let err = run(&probe(failing, 1, 500), &scope, deadline(300), &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("HTTP 500"), "{err}");
    let (garbage, _) = server("SECRET-GARBAGE\r\nnot http at all").await;
    let err = run(&probe(garbage, 1, 500), &scope, deadline(300), &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not HTTP"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
}

#[tokio::test]
async fn a_crlf_url_is_refused_before_any_connection() {
    let policy = local();
    let scope = Scope::new(&[], "shop", &policy);
    let (url, accepted) = server("HTTP/1.1 200 OK\r\n\r\n").await;
    let injected = format!("{url}\r\nX-Injected: yes");
    let err = run(
        &probe(injected, 1, 500),
        &scope,
        deadline(2000),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProbeError::Refused(_)), "{err}");
    assert!(err.to_string().contains("control"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was connected");
}

#[tokio::test]
async fn a_host_not_on_the_list_is_refused_before_any_connection() {
    let (url, accepted) = server("HTTP/1.1 200 OK\r\n\r\n").await;
    let nobody = ProbePolicy::default();
    let scope = Scope::new(&[], "shop", &nobody);
    let err = run(
        &probe(url.clone(), 1, 500),
        &scope,
        deadline(2000),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProbeError::Refused(_)), "{err}");
    assert!(err.to_string().contains("--probe-allow"), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was connected");
    // The same URL once the operator listed the host.
    let policy = local();
    let scope = Scope::new(&[], "shop", &policy);
    run(
        &probe(url, 1, 500),
        &scope,
        deadline(5000),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn only_the_release_services_and_listed_hosts_are_in_scope() {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "api", "namespace": "backend"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"}}),
    ];
    let mut policy = ProbePolicy::default();
    policy.allow_host("Status.Example.com");
    policy.allow_host("[::1]");
    let scope = Scope::new(&objects, "shop", &policy);
    let cases = [
        ("http://web.shop.svc/healthz", true),
        ("http://web.shop.svc:8080/healthz", true),
        ("https://web.shop.svc.cluster.local/healthz", true),
        ("http://WEB.shop.svc./healthz", true),
        ("http://api.backend.svc/ready", true),
        ("https://status.example.com/ok", true),
        ("http://[::1]:9000/", true),
        ("http://api.shop.svc/", false),
        ("http://db.shop.svc/", false),
        ("http://web.kube-system.svc/", false),
        ("http://kubernetes.default.svc/", false),
        ("http://web.shop.svc.evil.com/", false),
        ("http://169.254.169.254/latest/meta-data/", false),
        ("http://127.0.0.1:10250/pods", false),
        ("http://status.example.com.evil.com/", false),
    ];
    for (url, allowed) in cases {
        assert_eq!(
            scope.check(url).is_ok(),
            allowed,
            "{url}: {:?}",
            scope.check(url)
        );
    }
    let probes = [
        probe("http://web.shop.svc/".into(), 1, 1),
        probe("http://metadata.google.internal/".into(), 1, 1),
        probe("http://web.shop.svc/\r\n".into(), 1, 1),
    ];
    let refused = probe_refusals(&probes, &objects, "shop", &policy);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].starts_with("probe 1: metadata.google.internal"),
        "{refused:?}"
    );
    assert!(refused[1].starts_with("probe 2:"), "{refused:?}");
}

#[test]
fn the_request_carries_only_the_parsed_path_and_host() {
    let url = proto::probe_url("http://web.shop.svc:8080/a%20b/c?x=1#frag").unwrap();
    assert_eq!(
        request_head(&url),
        "GET /a%20b/c?x=1 HTTP/1.1\r\nHost: web.shop.svc:8080\r\nConnection: close\r\n\
         User-Agent: coxswain-probe\r\n\r\n"
    );
    let bare = proto::probe_url("https://status.example.com").unwrap();
    assert!(request_head(&bare).starts_with("GET / HTTP/1.1\r\nHost: status.example.com\r\n"));
    assert_eq!(parse_status(b"HTTP/1.1 204 No Content"), Some(204));
    assert_eq!(parse_status(b"HTTP/1.0 301"), Some(301));
    assert_eq!(parse_status(b"HTTP/1.1 20"), None);
    assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
}

/// A CA and a server certificate for 127.0.0.1, both PEM: (ca, cert, key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// An HTTPS server (rustls) answering 200 with the certificate given; its URL.
async fn https_server(cert: &str, key: &str) -> String {
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}/healthz")
}

#[tokio::test]
async fn https_probes_work_with_the_agent_ca_and_fail_without_it() {
    let (ca, cert, key) = certificates();
    let url = https_server(&cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let cancel = CancellationToken::new();

    let untrusting = local();
    let scope = Scope::new(&[], "shop", &untrusting);
    let err = run(&probe(url.clone(), 1, 1000), &scope, deadline(400), &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");

    let mut trusting = local();
    assert_eq!(trusting.trust_ca_file(&ca_file).unwrap(), 1);
    let scope = Scope::new(&[], "shop", &trusting);
    run(&probe(url, 2, 1000), &scope, deadline(5000), &cancel)
        .await
        .unwrap();
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let err = ProbePolicy::default().trust_ca_file(&empty).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let missing = dir.path().join("missing.pem");
    assert!(ProbePolicy::default().trust_ca_file(&missing).is_err());
}

#[tokio::test]
async fn a_cancelled_probe_stops_promptly() {
    let policy = local();
    let scope = Scope::new(&[], "shop", &policy);
    let (bad, accepted) =
        server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    // Cancelled between two GETs, once the probe has been answered twice.
    tokio::spawn(async move {
        while accepted.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        trigger.cancel();
    });
    let started = Instant::now();
    let err = run(&probe(bad, 1, 500), &scope, deadline(60_000), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Cancelled), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_cancel_drops_a_get_in_flight() {
    // A server that takes the request and never answers: the GET's own timeout is a minute.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&asked);
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
            signal.notify_one();
        }
    });
    let policy = local();
    let scope = Scope::new(&[], "shop", &policy);
    let cancel = CancellationToken::new();
    let hanging = probe(format!("http://{addr}/"), 1, 60_000);
    let started = Instant::now();
    let (result, ()) = tokio::join!(run(&hanging, &scope, deadline(120_000), &cancel), async {
        asked.notified().await;
        cancel.cancel();
    });
    assert!(matches!(result, Err(ProbeError::Cancelled)), "{result:?}");
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
