//! How fast simulated time runs: how long a pod takes to become ready, how long a simulated
//! second lasts, and how long a deleted namespace stays Terminating.

use std::time::Duration;

/// How fast simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From pod creation to Ready.
    pub pod_ready: Duration,
    /// How long one simulated second lasts (progress deadlines are in seconds).
    pub second: Duration,
    /// How long a deleted namespace stays Terminating before it and its contents are gone.
    pub namespace_grace: Duration,
}

impl Timing {
    /// Milliseconds: for tests.
    pub fn fast() -> Self {
        Self {
            pod_ready: Duration::from_millis(50),
            second: Duration::from_millis(20),
            namespace_grace: Duration::from_secs(1),
        }
    }

    /// Seconds: for the demo, where a person watches.
    pub fn demo() -> Self {
        Self {
            pod_ready: Duration::from_millis(1500),
            second: Duration::from_secs(1),
            namespace_grace: Duration::from_secs(2),
        }
    }

    /// `n` simulated seconds.
    pub(crate) fn seconds(&self, n: u64) -> Duration {
        self.second
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }
}
