//! TLS end to end through the real binary, with certificates generated here (rcgen): NATS
//! with mutual TLS (`verify: true`; the coordinator and the agent connect with
//! `--nats-tls-ca`, `--nats-tls-cert`, `--nats-tls-key`), the coordinator serving its API over
//! HTTPS (`--tls-cert`, `--tls-key`), and `coxswain deploy` reaching it at `https://` through a
//! private CA (`--coordinator-ca`, `COXSWAIN_COORDINATOR_CA`); the agent exports its spans
//! to an `https://` OTLP collector trusted through `OTEL_EXPORTER_OTLP_CERTIFICATE`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use bus::testing::Pki;
use tests::{AgentProcess, CoordinatorProcess, NatsServer, SimProcess, eventually};

const TOKEN: &str = "test-token";

/// A file of the PKI, as a command-line argument.
fn arg(pki: &Pki, name: &str) -> String {
    pki.path(name).display().to_string()
}

/// The flags that connect a process to the TLS server with the client certificate.
fn nats_flags(pki: &Pki) -> Vec<String> {
    vec![
        "--nats-tls-ca".into(),
        arg(pki, "ca.pem"),
        "--nats-tls-cert".into(),
        arg(pki, "client.pem"),
        "--nats-tls-key".into(),
        arg(pki, "client-key.pem"),
    ]
}

/// A one-thread HTTPS collector (rustls) with the PKI's server certificate: sends the request
/// line of each request it served, answers 200. Its `https://host:port`.
fn collector(pki: &Pki) -> (String, std::sync::mpsc::Receiver<String>) {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("server-key.pem")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(std::sync::Arc::clone(&config)).unwrap();
            let tls = rustls::StreamOwned::new(conn, tcp);
            if let Ok(line) = serve_one(tls) {
                let _ = seen.send(line);
            }
        }
    });
    (format!("https://{addr}"), requests)
}

/// One request on a connection (its line, headers and body), answered 200; its first line.
fn serve_one(stream: impl std::io::Read + std::io::Write) -> std::io::Result<String> {
    use std::io::{BufRead, Read};
    let mut stream = std::io::BufReader::new(stream);
    let mut first = String::new();
    stream.read_line(&mut first)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    stream.read_exact(&mut vec![0u8; length])?;
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    stream.get_mut().write_all(answer)?;
    stream.get_mut().flush()?;
    Ok(first.trim().to_owned())
}

/// `coxswain deploy` of the example to beta at `coordinator`, with `extra` flags and
/// environment variables: (exit code, stdout, stderr).
fn deploy(
    config: &Path,
    coordinator: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> (i32, String, String) {
    let args = [
        &[
            "--env",
            "beta",
            "--release",
            "web",
            "--set",
            "image.tag=1.0.0",
        ],
        extra,
    ]
    .concat();
    tests::deploy_cli(config, coordinator, TOKEN, &args, vars).unwrap()
}

#[tokio::test]
async fn deploy_over_https_to_a_tls_coordinator_on_mutual_tls_nats() {
    let pki = Pki::new().unwrap();
    let nats = NatsServer::start_with_config(&pki.nats_config().unwrap()).unwrap();
    let sim = SimProcess::start(&["beta"]).unwrap();
    let nats_flags = nats_flags(&pki);
    let nats_flags: Vec<&str> = nats_flags.iter().map(String::as_str).collect();
    // The agent exports its spans to an https:// collector trusted through the CA.
    let (otlp, spans) = collector(&pki);
    let ca_file = arg(&pki, "ca.pem");
    let _agent = AgentProcess::start_with_env(
        "beta",
        "beta",
        &nats.url(),
        &sim.kubeconfig("beta"),
        &nats_flags,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), tests::FLEET_POLICY).unwrap();
    let (cert, key) = (arg(&pki, "server.pem"), arg(&pki, "server-key.pem"));
    let mut extra = vec!["--create-topology", "--insecure-unsigned-intents"];
    extra.extend(["--tls-cert", &cert, "--tls-key", &key]);
    extra.extend(&nats_flags);
    let coordinator =
        CoordinatorProcess::start_with(&nats.url(), TOKEN, &dir.path().join("policy.yaml"), &extra)
            .unwrap();
    let https = coordinator.url.replace("http://", "https://");
    let config = tests::example_app_config(dir.path()).unwrap();

    // The test's own NATS connection needs the client certificate too.
    let bus = bus::connect(&bus::ConnectOptions {
        url: nats.url(),
        tls_ca: Some(pki.path("ca.pem")),
        tls_cert: Some(pki.path("client.pem")),
        tls_key: Some(pki.path("client-key.pem")),
        ..Default::default()
    })
    .await
    .unwrap();
    let topology = eventually(Duration::from_secs(30), "the topology", || async {
        bus.open_topology().await
    })
    .await;
    eventually(Duration::from_secs(30), "the agent registered", || async {
        let registered = topology.registry.all().await.unwrap();
        if registered.is_empty() {
            Err("none yet")
        } else {
            Ok(())
        }
    })
    .await;

    // Without the private CA the coordinator's certificate is not trusted.
    let (code, _, stderr) = deploy(&config, &https, &[], &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // Plain HTTP to the TLS port gets no answer.
    let (code, _, stderr) = deploy(&config, &coordinator.url, &[], &[]);
    assert_ne!(code, 0, "{stderr}");

    // With it (the flag, then the environment variable), the rollout runs to success.
    let ca = arg(&pki, "ca.pem");
    let (code, stdout, stderr) = deploy(
        &config,
        &https,
        &["--coordinator-ca", &ca, "--wait", "--timeout", "90s"],
        &[],
    );
    assert_eq!(
        code,
        0,
        "stdout: {stdout}\nstderr: {stderr}\n{}",
        coordinator.log()
    );
    let (code, stdout, stderr) = deploy(&config, &https, &[], &[("COXSWAIN_COORDINATOR_CA", &ca)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("already submitted"),
        "the same request again: {stdout}"
    );

    // The intent's span reached the https:// collector.
    let line = spans
        .recv_timeout(Duration::from_secs(30))
        .expect("the agent exported spans over https");
    assert!(line.starts_with("POST /v1/traces "), "{line}");
}
