//! The coordinator's Prometheus metrics, in the text exposition format: rollouts by status,
//! wave durations, API latency, events rejected.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the API latency histogram, in seconds.
const API_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Upper bounds of the wave duration histogram, in seconds.
const WAVE_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// A cumulative histogram over fixed bounds.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], seconds: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        for (bound, n) in bounds.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`a="b",c="d"`).
    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        for (bound, n) in bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// What the coordinator counts itself; rollouts by status come from the index when rendered.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// By method, route and status code.
    api: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    /// By environment and how the wave ended.
    waves: Mutex<BTreeMap<(String, &'static str), Histogram>>,
}

/// Escapes a label value (`\`, `"` and line breaks).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// One API call answered.
    pub(crate) fn api_call(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.api
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default()
            .observe(&API_BUCKETS, took.as_secs_f64());
    }

    /// A wave of a rollout to `environment` ended (`succeeded` or `failed`) after `took`,
    /// from its first intent sent.
    pub(crate) fn wave_ended(&self, environment: &str, outcome: &'static str, took: Duration) {
        self.waves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((environment.to_owned(), outcome))
            .or_default()
            .observe(&WAVE_BUCKETS, took.as_secs_f64());
    }

    /// The text exposition, with rollouts counted by status and the rejected events.
    pub(crate) fn render(&self, rollouts: &BTreeMap<String, u64>, events_rejected: u64) -> String {
        let mut out = String::new();
        out += "# HELP coordinator_rollouts Rollouts this coordinator knows of, by status.\n";
        out += "# TYPE coordinator_rollouts gauge\n";
        for (status, n) in rollouts {
            let _ = writeln!(
                out,
                "coordinator_rollouts{{status=\"{}\"}} {n}",
                label(status)
            );
        }
        out += "# HELP coordinator_wave_duration_seconds From a wave's first intent sent to its end.\n";
        out += "# TYPE coordinator_wave_duration_seconds histogram\n";
        for ((environment, outcome), h) in self
            .waves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let labels = format!(
                "environment=\"{}\",outcome=\"{outcome}\"",
                label(environment)
            );
            h.render(
                &mut out,
                "coordinator_wave_duration_seconds",
                &labels,
                &WAVE_BUCKETS,
            );
        }
        out += "# HELP coordinator_api_request_duration_seconds API calls, by method, route and status code.\n";
        out += "# TYPE coordinator_api_request_duration_seconds histogram\n";
        for ((method, route, status), h) in self
            .api
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let labels = format!(
                "method=\"{}\",route=\"{}\",code=\"{status}\"",
                label(method),
                label(route)
            );
            h.render(
                &mut out,
                "coordinator_api_request_duration_seconds",
                &labels,
                &API_BUCKETS,
            );
        }
        out += "# HELP coordinator_events_rejected_total Events ignored because their subject, body, \
                intent id and rollout target named different clusters.\n";
        out += "# TYPE coordinator_events_rejected_total counter\n";
        let _ = writeln!(out, "coordinator_events_rejected_total {events_rejected}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rollouts_waves_api_calls_and_rejections() {
        let m = Metrics::default();
        m.api_call("POST", "/v1/rollouts", 201, Duration::from_millis(30));
        m.api_call("POST", "/v1/rollouts", 201, Duration::from_millis(300));
        m.wave_ended("prod", "succeeded", Duration::from_secs(8));
        let rollouts = BTreeMap::from([("running".to_owned(), 2), ("succeeded".to_owned(), 5)]);
        let text = m.render(&rollouts, 3);
        for line in [
            "coordinator_rollouts{status=\"running\"} 2",
            "coordinator_rollouts{status=\"succeeded\"} 5",
            "coordinator_api_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/rollouts\",code=\"201\",le=\"0.05\"} 1",
            "coordinator_api_request_duration_seconds_count{method=\"POST\",route=\"/v1/rollouts\",code=\"201\"} 2",
            "coordinator_wave_duration_seconds_bucket{environment=\"prod\",outcome=\"succeeded\",le=\"10\"} 1",
            "coordinator_wave_duration_seconds_bucket{environment=\"prod\",outcome=\"succeeded\",le=\"5\"} 0",
            "coordinator_events_rejected_total 3",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
