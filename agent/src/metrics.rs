//! Prometheus metrics of an agent, in the text exposition format: intents by outcome, rollout
//! duration, intents in flight, intents pending in the consumer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Upper bounds of the rollout duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The agent's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: Mutex<BTreeMap<String, u64>>,
    in_flight: AtomicI64,
    pending: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_ms: AtomicU64,
}

impl Metrics {
    /// An intent ended with `outcome` after `took`.
    pub fn finished(&self, outcome: &str, took: Duration) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(outcome.to_owned())
            .or_default() += 1;
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ms.fetch_add(
            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// One more (or one fewer, with -1) intent in progress.
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Intents waiting in the consumer.
    pub fn pending(&self, n: u64) {
        self.pending.store(n, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self, cluster: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP coxswain_intents_total Intents finished, by outcome."
        );
        let _ = writeln!(out, "# TYPE coxswain_intents_total counter");
        for (outcome, n) in self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "coxswain_intents_total{{cluster=\"{cluster}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP coxswain_rollout_duration_seconds From receiving an intent to its final outcome."
        );
        let _ = writeln!(out, "# TYPE coxswain_rollout_duration_seconds histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "coxswain_rollout_duration_seconds_bucket{{cluster=\"{cluster}\",le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "coxswain_rollout_duration_seconds_bucket{{cluster=\"{cluster}\",le=\"+Inf\"}} {count}"
        );
        let sum = self.duration_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "coxswain_rollout_duration_seconds_sum{{cluster=\"{cluster}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "coxswain_rollout_duration_seconds_count{{cluster=\"{cluster}\"}} {count}"
        );
        let _ = writeln!(
            out,
            "# HELP coxswain_intents_in_flight Intents being worked on."
        );
        let _ = writeln!(out, "# TYPE coxswain_intents_in_flight gauge");
        let _ = writeln!(
            out,
            "coxswain_intents_in_flight{{cluster=\"{cluster}\"}} {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP coxswain_consumer_pending Intents waiting in the cluster's consumer."
        );
        let _ = writeln!(out, "# TYPE coxswain_consumer_pending gauge");
        let _ = writeln!(
            out,
            "coxswain_consumer_pending{{cluster=\"{cluster}\"}} {}",
            self.pending.load(Ordering::Relaxed)
        );
        out
    }
}

/// Why the agent is not ready to take intents, if it is not: checked by `GET /readyz`.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves `GET /metrics`, `/healthz` (the process answers) and `/readyz` (it can take
/// intents: connected to NATS, not draining) on `addr` until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    cluster: String,
    ready: Readiness,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics on /metrics, probes on /healthz and /readyz");
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render(&cluster);
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let answer = match ready() {
                    Ok(()) => (axum::http::StatusCode::OK, "ok".to_owned()),
                    Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, why),
                };
                async move { answer }
            }),
        );
    // A scraper needs a connection or two: few connections, and a slow or idle one is closed.
    let limits = httpd::ServerLimits {
        max_connections: 16,
        header_timeout: std::time::Duration::from_secs(10),
    };
    httpd::serve(listener, router, limits, None, cancel).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.finished("succeeded", Duration::from_millis(800));
        m.finished("rolled_back", Duration::from_secs(40));
        m.in_flight(2);
        m.pending(3);
        let text = m.render("beta");
        assert!(text.contains("coxswain_intents_total{cluster=\"beta\",outcome=\"succeeded\"} 1"));
        assert!(
            text.contains("coxswain_rollout_duration_seconds_bucket{cluster=\"beta\",le=\"1\"} 1")
        );
        assert!(
            text.contains("coxswain_rollout_duration_seconds_bucket{cluster=\"beta\",le=\"60\"} 2")
        );
        assert!(text.contains("coxswain_rollout_duration_seconds_count{cluster=\"beta\"} 2"));
        assert!(text.contains("coxswain_intents_in_flight{cluster=\"beta\"} 2"));
        assert!(text.contains("coxswain_consumer_pending{cluster=\"beta\"} 3"));
    }
}
