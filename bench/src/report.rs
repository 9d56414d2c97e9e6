//! The only lines on stdout: one per measure, for scripts to read.

use std::time::Duration;

/// Prints `<bench> N=<n> <measure> p50=<ms> p99=<ms>` for the samples.
pub fn percentiles(bench: &str, n: usize, measure: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    println!(
        "{bench} N={n} {measure} p50={} p99={}",
        ms(percentile(&sorted, 0.50)),
        ms(percentile(&sorted, 0.99))
    );
}

/// Prints `<bench> N=<n> <measure>=<value>`.
pub fn value(bench: &str, n: usize, measure: &str, value: impl std::fmt::Display) {
    println!("{bench} N={n} {measure}={value}");
}

/// Prints a duration as `<bench> N=<n> <measure>=<ms>`.
pub fn millis(bench: &str, n: usize, measure: &str, d: Duration) {
    value(bench, n, measure, ms(d));
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted samples (zero when there are none).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 0.99), Duration::from_millis(1));
    }
}
