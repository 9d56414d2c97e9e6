//! Every rollout in memory, kept current by one watch on `coxswain-rollouts`: a submission's
//! gate and revert target, the list endpoint and the resume loop read it instead of listing
//! the bucket (which grows with every rollout, and a rollout to 10,000 clusters is megabytes).
//! Until the watch has delivered the bucket as it was, readers fall back to listing it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bus::{BusError, RolloutChange, Rollouts};
use proto::Rollout;
use tokio_util::sync::CancellationToken;

/// The rollouts this coordinator knows of, and word of each change (for the dashboard).
#[derive(Clone)]
pub(crate) struct Index {
    known: Arc<RwLock<Known>>,
    changes: tokio::sync::broadcast::Sender<String>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            known: Arc::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

#[derive(Default)]
struct Known {
    /// The watch has delivered the whole bucket: `rollouts` is complete.
    ready: bool,
    rollouts: HashMap<String, Arc<Rollout>>,
}

impl Index {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rollouts `keep` selects; read from the bucket while the index is not ready.
    pub(crate) async fn select(
        &self,
        rollouts: &Rollouts,
        keep: impl Fn(&Rollout) -> bool,
    ) -> Result<Vec<Rollout>, BusError> {
        {
            let known = self.read();
            if known.ready {
                return Ok(known
                    .rollouts
                    .values()
                    .filter(|r| keep(r))
                    .map(|r| Rollout::clone(r))
                    .collect());
            }
        }
        let mut all = rollouts.all().await?;
        all.retain(|r| keep(r));
        Ok(all)
    }

    /// The ids of running rollouts, when the index is ready.
    pub(crate) fn running(&self) -> Option<Vec<(String, String, Option<jiff::Timestamp>)>> {
        let known = self.read();
        known.ready.then(|| {
            known
                .rollouts
                .values()
                .filter(|r| !r.status.is_final())
                .map(|r| (r.id.clone(), r.owner.clone(), r.owner_until))
                .collect()
        })
    }

    /// How many rollouts it knows of, by status.
    pub(crate) fn count_by_status(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for r in self.read().rollouts.values() {
            *counts.entry(r.status.as_str().to_owned()).or_default() += 1;
        }
        counts
    }

    /// Records what this coordinator just wrote, before the watch brings it back.
    pub(crate) fn put(&self, rollout: Rollout) {
        let id = rollout.id.clone();
        self.write().rollouts.insert(id.clone(), Arc::new(rollout));
        let _ = self.changes.send(id);
    }

    /// The id of each rollout that changes from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn apply(&self, change: RolloutChange) {
        let mut known = self.write();
        match change {
            RolloutChange::Put(r) => {
                let id = r.id.clone();
                known.rollouts.insert(id.clone(), Arc::from(r));
                let _ = self.changes.send(id);
            }
            RolloutChange::Removed(id) => {
                known.rollouts.remove(&id);
            }
            RolloutChange::CaughtUp => {}
        }
    }

    fn replace(&self, rollouts: HashMap<String, Arc<Rollout>>) {
        let mut known = self.write();
        known.rollouts = rollouts;
        known.ready = true;
    }

    fn unready(&self) {
        self.write().ready = false;
    }
}

/// Keeps `index` current until `shutdown`: a watch from the bucket's snapshot on, started
/// again (with a fresh snapshot) whenever it ends.
pub(crate) async fn keep_current(index: Index, rollouts: Rollouts, shutdown: CancellationToken) {
    loop {
        match follow(&index, &rollouts, &shutdown).await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::warn!("the rollouts watch ended; starting it again"),
            Err(error) => tracing::warn!(%error, "the rollouts watch failed; starting it again"),
        }
        index.unready();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One watch: the snapshot goes in whole once complete, then each change as it comes.
async fn follow(
    index: &Index,
    rollouts: &Rollouts,
    shutdown: &CancellationToken,
) -> Result<(), BusError> {
    let mut watch = rollouts.watch().await?;
    let mut snapshot = Some(HashMap::new());
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            change = watch.next() => change?,
        };
        let Some(change) = change else {
            return Ok(());
        };
        match (&mut snapshot, change) {
            (Some(_), RolloutChange::CaughtUp) => {
                index.replace(snapshot.take().unwrap_or_default());
                tracing::debug!("rollouts index ready");
            }
            (Some(s), RolloutChange::Put(r)) => {
                s.insert(r.id.clone(), Arc::from(r));
            }
            (Some(s), RolloutChange::Removed(id)) => {
                s.remove(&id);
            }
            (None, change) => index.apply(change),
        }
    }
}
