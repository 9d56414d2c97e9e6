//! Logs and traces: `tracing` to stderr (text or JSON), and spans exported over OTLP
//! (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `http://` or `https://` (rustls;
//! a private CA in `OTEL_EXPORTER_OTLP_CERTIFICATE`). Export is opt-in: with no collector
//! listening the exporter would only log errors.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and stops the span exporter when dropped.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: cannot flush traces: {error}");
        }
    }
}

/// Sets up logging on stderr, W3C trace-context propagation, and OTLP export when configured.
pub(crate) fn init(filter: &str, json: bool, service: &'static str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file or a collector gets plain text.
    // Colour only on a terminal, and never when NO_COLOR is set to anything (no-color.org).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };

    let (provider, export_error) = match exporting() {
        Ok(exporter) => (exporter.map(|e| provider(e, service)), None),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    // The log filter chooses log lines only: spans at info and above are exported whatever
    // it says, so `--log-level warn` does not cut a trace.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("coxswain"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    if let Some(error) = export_error {
        tracing::warn!(%error, "OTLP export is configured but cannot start; traces are not exported");
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else `None`.
fn exporting() -> anyhow::Result<Option<opentelemetry_otlp::SpanExporter>> {
    if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    let ca = env("OTEL_EXPORTER_OTLP_CERTIFICATE").map(std::path::PathBuf::from);
    Ok(Some(exporter(None, ca.as_deref())?))
}

/// OTLP/HTTP (protobuf) to `traces_url`, else to the endpoint the `OTEL_EXPORTER_OTLP_*`
/// variables name; an `https://` endpoint is verified with rustls against the system's roots,
/// or only against `ca` (`OTEL_EXPORTER_OTLP_CERTIFICATE`, a PEM file) when given.
fn exporter(
    traces_url: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let timeout = std::time::Duration::from_secs(10);
    let client = crate::tls::blocking_client(ca, timeout)?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_timeout(timeout);
    if let Some(url) = traces_url {
        builder = builder.with_endpoint(url);
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests;

/// A batching tracer provider for `exporter`, under the `service` name (`coxswain-agent`,
/// `coxswain-coordinator`, `coxswain-cli`).
fn provider(
    exporter: opentelemetry_otlp::SpanExporter,
    service: &'static str,
) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build()
}
