//! OTLP export to an `https://` collector: a rustls server with a certificate generated here
//! (rcgen), trusted through its CA as `OTEL_EXPORTER_OTLP_CERTIFICATE` names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{exporter, provider};

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM: (ca, cert, key).
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

/// A one-thread HTTPS collector: sends each request line it served, answers 200.
fn collector(cert: &str, key: &str) -> (String, mpsc::Receiver<String>) {
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, requests) = mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
            let Some(line) = serve_one(&mut tls) else {
                continue;
            };
            let _ = seen.send(line);
        }
    });
    (format!("https://{addr}/v1/traces"), requests)
}

/// Reads one request (headers, then `Content-Length` bytes) and answers 200; its first line.
fn serve_one<S: Read + Write>(stream: &mut BufReader<S>) -> Option<String> {
    let mut first = String::new();
    stream.read_line(&mut first).ok()?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    let answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
    stream.get_mut().write_all(answer).ok()?;
    stream.get_mut().flush().ok()?;
    Some(first.trim().to_owned())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Exports one span to `url` trusting `ca`; whether the export said it succeeded.
fn export_one(url: &str, ca: &Path) -> bool {
    let provider = provider(exporter(Some(url), Some(ca)).unwrap(), "coxswain-cli");
    let mut span = provider.tracer("test").start("deploy");
    span.end();
    let flushed = provider.force_flush().is_ok();
    let _ = provider.shutdown();
    flushed
}

#[test]
fn spans_reach_an_https_collector_trusted_through_its_ca() {
    crate::tls::install_crypto();
    let (ca, cert, key) = certificates();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca);
    let (url, requests) = collector(&cert, &key);
    assert!(export_one(&url, &ca_file), "the export failed");
    let line = requests
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the collector received the spans");
    assert!(line.starts_with("POST /v1/traces "), "{line}");
}

#[test]
fn a_collector_signed_by_another_ca_gets_nothing() {
    crate::tls::install_crypto();
    let (_, cert, key) = certificates();
    let (other_ca, _, _) = certificates();
    let dir = tempfile::tempdir().unwrap();
    let other = write(dir.path(), "other.pem", &other_ca);
    let (url, requests) = collector(&cert, &key);
    assert!(
        !export_one(&url, &other),
        "an untrusted collector must fail the export"
    );
    assert!(requests.try_recv().is_err(), "nothing was served");
}
