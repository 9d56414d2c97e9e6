//! One virtual cluster: its store behind a lock that is never held across an `.await`, the
//! signals that wake its watches and its controllers, and its injected faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, Memory};
use crate::store::Store;
use crate::timing::Timing;

/// API faults switched on at run time, for reliability tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added to every API request, in milliseconds.
    pub latency_ms: u64,
    /// Share of API requests (0.0-1.0) answered `500 InternalError`.
    pub error_rate: f64,
    /// Watches end at once, as when a load balancer drops long connections.
    pub drop_watches: bool,
    /// Every API request is answered `503 ServiceUnavailable`.
    pub unavailable: bool,
}

/// One virtual cluster.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    store: Mutex<Store>,
    /// Woken on every change; watches wait on it.
    pub(crate) changed: Notify,
    wake_controllers: Notify,
    faults: Mutex<Faults>,
    timing: Timing,
    rng: AtomicU64,
}

impl Cluster {
    /// A new cluster with the namespaces and nodes every cluster has.
    pub fn new(name: &str, timing: Timing) -> Self {
        let seed = crate::hash::fnv_hex(name.as_bytes());
        Self {
            name: name.to_owned(),
            store: Mutex::new(Store::new()),
            changed: Notify::new(),
            wake_controllers: Notify::new(),
            faults: Mutex::new(Faults::default()),
            timing,
            rng: AtomicU64::new(u64::from_str_radix(&seed[..15], 16).unwrap_or(1) | 1),
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the store; wakes watches and controllers when it changed anything.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (result, changed) = self.locked(f);
        if changed {
            self.changed.notify_waiters();
            self.wake_controllers.notify_one();
        }
        result
    }

    /// Runs `f` on the locked store and says whether it changed anything. The lock is taken
    /// and released here, around a plain closure, so it cannot be held across an `.await`.
    fn locked<R>(&self, f: impl FnOnce(&mut Store) -> R) -> (R, bool) {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let before = store.resource_version();
        let result = f(&mut store);
        let changed = store.resource_version() != before;
        (result, changed)
    }

    /// Runs `f` on the store, read-only.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&store)
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// A uniform draw in [0, 1) for fault injection (xorshift; no global RNG needed).
    pub(crate) fn draw(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs the controllers until `cancel`: a pass after every change and whenever something
    /// falls due.
    pub async fn run_controllers(&self, cancel: CancellationToken) {
        let mut memory = Memory::default();
        loop {
            let woken = self.wake_controllers.notified();
            let (next, changed) =
                self.locked(|store| controller::settle(store, &mut memory, &self.timing));
            if changed {
                self.changed.notify_waiters();
            }
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                () = cancel.cancelled() => return,
                () = woken => {}
                () = sleep => {}
            }
        }
    }
}
