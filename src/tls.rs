//! TLS of the binary's HTTP clients (the coordinator API, OTLP export): rustls with ring. No
//! OpenSSL and no aws-lc: reqwest is built without a crypto provider, and [`install_crypto`]
//! makes ring the process's.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// Makes ring the rustls crypto provider of the process; the first call wins, later ones do
/// nothing. Called before any HTTP client is built.
pub(crate) fn install_crypto() {
    // An error only says a provider is installed already: ring, by an earlier call.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA certificates of a PEM file; an error names the file.
fn certificates(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} is not a PEM CA bundle", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// The client `coxswain deploy` and `rollback` talk to the coordinator with: `https://` is
/// verified against the system's roots, or only against `ca` (a private CA) when given.
pub(crate) fn http_client(ca: Option<&Path>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    install_crypto();
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = ca {
        builder = builder.tls_certs_only(certificates(ca)?);
    }
    builder.build().context("cannot set up the HTTP client")
}

/// The blocking client of the OTLP exporter: `https://` collectors are verified against the
/// system's roots, or only against `ca` (`OTEL_EXPORTER_OTLP_CERTIFICATE`) when given. Built
/// outside any async runtime (it runs one of its own).
pub(crate) fn blocking_client(
    ca: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<reqwest::blocking::Client> {
    install_crypto();
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(ca) = ca {
        builder = builder.tls_certs_only(certificates(ca)?);
    }
    builder
        .build()
        .context("cannot set up the OTLP HTTP client")
}
