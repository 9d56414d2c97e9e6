//! TLS to NATS against a real nats-server whose `tls` block verifies clients
//! (`verify: true`): certificates generated here with rcgen, a CA and a client certificate
//! connect and publish; without the client certificate, or with an untrusted server
//! certificate, the first connect fails at once with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use bus::testing::{NatsServer, Pki};
use bus::{BusError, ConnectOptions, TopologyConfig};

fn options(server: &NatsServer, ca: &Path) -> ConnectOptions {
    ConnectOptions {
        url: server.url(),
        tls_ca: Some(ca.to_owned()),
        request_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_client_certificate_connects_to_a_server_that_verifies_clients() {
    let pki = Pki::new().unwrap();
    let server = NatsServer::start_with_config(&pki.nats_config().unwrap()).unwrap();
    let mut mtls = options(&server, &pki.path("ca.pem"));
    mtls.tls_cert = Some(pki.path("client.pem"));
    mtls.tls_key = Some(pki.path("client-key.pem"));
    let bus = bus::connect(&mtls).await.unwrap();
    // A JetStream round trip over the verified connection.
    bus.ensure_topology(&TopologyConfig::default())
        .await
        .unwrap();
    bus.open_topology().await.unwrap();
}

#[tokio::test]
async fn without_a_client_certificate_the_connect_fails_at_once() {
    let pki = Pki::new().unwrap();
    let server = NatsServer::start_with_config(&pki.nats_config().unwrap()).unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        bus::connect(&options(&server, &pki.path("ca.pem"))),
    )
    .await
    .expect("a refused client certificate is not retried forever")
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(error, BusError::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_fails_at_once() {
    let pki = Pki::new().unwrap();
    let other = Pki::new().unwrap();
    let server = NatsServer::start_with_config(&pki.nats_config().unwrap()).unwrap();
    let mut mtls = options(&server, &other.path("ca.pem"));
    mtls.tls_cert = Some(pki.path("client.pem"));
    mtls.tls_key = Some(pki.path("client-key.pem"));
    let error = tokio::time::timeout(Duration::from_secs(20), bus::connect(&mtls))
        .await
        .expect("an untrusted server certificate is not retried forever")
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, BusError::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn a_certificate_without_its_key_is_refused() {
    let pki = Pki::new().unwrap();
    let mut half = ConnectOptions {
        url: "nats://127.0.0.1:1".into(),
        tls_cert: Some(pki.path("client.pem")),
        ..Default::default()
    };
    let error = bus::connect(&half).await.map(|_| ()).unwrap_err();
    assert!(
        error.to_string().contains("go together") || format!("{error:?}").contains("go together"),
        "{error:?}"
    );
    half.tls_key = Some(pki.path("missing-key.pem"));
    let error = bus::connect(&half).await.map(|_| ()).unwrap_err();
    assert!(format!("{error:?}").contains("does not exist"), "{error:?}");
}
