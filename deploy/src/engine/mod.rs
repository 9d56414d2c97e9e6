//! The release engine. Observe -> decide -> act: [`decide`] is a pure function from what was
//! last observed to the next [`Action`]; [`Engine::deploy`] acts on it through a `Run`, the
//! state of one release run, with one file per action. A rollback is not a second path: it is
//! "apply revision N-1" through the same apply and health steps.

mod apply;
mod commit;
mod decide;
mod drift;
mod observe;
mod prune;
mod rollback;
mod run;
mod verify;
mod wait;

use std::time::Duration;

use proto::{HealthPolicy, Phase, ResourceHealth, RollbackPolicy};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::history::{self, Revision};
use crate::render::Rendered;
use crate::{DeployError, lock};

pub use decide::{Action, Attempt, Observation, Situation, decide};
pub use prune::KEEP_ANNOTATION;
pub use rollback::Rollback;

pub use drift::{Drift, DriftedField};
use observe::Observed;
use run::Run;

/// What to deploy.
#[derive(Debug, Clone)]
pub struct Release {
    /// Release name (DNS-1123 label).
    pub name: String,
    /// Namespace of the release: its history, its lock, and its namespaced objects by default.
    pub namespace: String,
    /// Human version.
    pub version: String,
    /// The intent that asked for it, for idempotency.
    pub intent_id: Option<String>,
    /// The rendered manifests.
    pub rendered: Rendered,
    /// Deadline and extra checks.
    pub health: HealthPolicy,
    /// What happens on failure.
    pub rollback: RollbackPolicy,
    /// Set when this deploy re-applies an earlier revision on request (`release rollback`).
    pub rollback_of: Option<u32>,
    /// Wait for health (and run tests and probes) before recording the revision deployed.
    /// Without it the revision is recorded deployed once applied, and nothing rolls back.
    pub wait: bool,
}

impl Release {
    /// The one deadline of a release starting now, rollback included.
    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.health.timeout_secs)
    }

    /// When the forward attempt must be done, so a rollback keeps time before `end`: two
    /// thirds of the way there when a rollback may follow, all of it otherwise.
    fn forward_deadline(&self, end: Instant, may_roll_back: bool) -> Instant {
        if !may_roll_back {
            return end;
        }
        let left = end.saturating_duration_since(Instant::now());
        Instant::now() + left * 2 / 3
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Who holds the release lock while an operation runs (agent name, user@host).
    pub holder: String,
    /// Lease of the release lock; a crashed holder's lock frees after this.
    pub lease: Duration,
    /// How long to wait for another operation on the same release before giving up.
    pub lock_wait: Duration,
    /// History records kept per release.
    pub history: usize,
    /// How often health is polled.
    pub poll: Duration,
    /// Where HTTP probes may go besides the release's own Services, and whom `https://`
    /// probes trust (the agent's `--probe-allow` and `--probe-ca`).
    pub probes: crate::ProbePolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            holder: "coxswain".into(),
            lease: Duration::from_secs(15),
            lock_wait: Duration::from_secs(60),
            history: 10,
            poll: Duration::from_millis(250),
            probes: crate::ProbePolicy::default(),
        }
    }
}

/// A step the engine reached, as it happens (the agent turns these into outcome events).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Phase reached.
    pub phase: Phase,
    /// Revision it concerns.
    pub revision: u32,
    /// Why, for failures.
    pub reason: Option<String>,
    /// Per-object health, when known.
    pub resources: Vec<ResourceHealth>,
    /// True when nothing follows for this deploy.
    pub terminal: bool,
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Final phase: succeeded, failed, rolled_back, rollback_failed or superseded.
    pub phase: Phase,
    /// The revision it ended on.
    pub revision: Option<u32>,
    /// Why, for anything but success.
    pub reason: Option<String>,
    /// Per-object health at the end.
    pub resources: Vec<ResourceHealth>,
    /// True when the intent had already completed and nothing was applied now.
    pub replayed: bool,
}

/// Who watches a deploy: `observe` sees every phase as it is reached.
type Observer<'a> = &'a (dyn Fn(&Progress) + Send + Sync);

/// How long a record may still be saved, or a lock handed back, once the release deadline
/// has passed: short, so the final event follows the deadline within seconds (a lock not
/// handed back expires with its lease; a record not saved is marked abandoned later).
const GRACE: Duration = Duration::from_secs(3);

fn grace() -> Instant {
    Instant::now() + GRACE
}

/// Deploys releases to one cluster.
#[derive(Debug)]
pub struct Engine {
    cluster: Cluster,
    config: EngineConfig,
}

impl Engine {
    /// An engine for the cluster behind `client`.
    pub fn new(client: kube::Client, config: EngineConfig) -> Self {
        Self {
            cluster: Cluster::new(client),
            config,
        }
    }

    /// The history of a release, oldest first.
    pub async fn history(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Vec<Revision>, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        history::list(self.cluster.client(), namespace, release, deadline).await
    }

    /// Re-applies an earlier revision (`request.to`, or the one deployed before the current
    /// one) through the normal deploy path.
    pub async fn rollback(
        &mut self,
        request: Rollback,
        observe: &(dyn Fn(&Progress) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<Report, DeployError> {
        let revisions = self.history(&request.namespace, &request.name).await?;
        let target = rollback::target(&revisions, request.to, &request.name)?;
        self.deploy(request.into_release(target), observe, cancel)
            .await
    }

    /// Every object of `rendered` (tests included) that `allow` does not let the release in
    /// `namespace` touch, each with its reason. Scopes come from the cluster's discovery, so
    /// a custom kind is judged by what the cluster says it is; nothing is written.
    pub async fn disallowed(
        &self,
        rendered: &Rendered,
        namespace: &str,
        allow: &crate::Allowlist,
        deadline: Instant,
    ) -> Result<Vec<String>, DeployError> {
        let mut refs = Vec::new();
        for object in rendered.objects.iter().chain(&rendered.tests) {
            match self.cluster.api_for(object, namespace, deadline).await {
                Ok((_, target)) => refs.push(target),
                // A custom kind whose CRD comes with the release: its scope is in the CRD.
                Err(DeployError::UnknownKind { .. }) => {
                    refs.push(crate::allow::reference_by_crd(
                        object,
                        &rendered.objects,
                        namespace,
                    )?);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(allow.violations(&refs, namespace))
    }

    /// A server-side dry run of every object, as a readable diff against the live objects.
    pub async fn diff(
        &mut self,
        rendered: &Rendered,
        namespace: &str,
        release: &str,
    ) -> Result<String, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        apply::diff(&self.cluster, rendered, namespace, release, deadline).await
    }

    /// Deploys a release: lock, record, apply, wait, verify, prune, commit; on failure roll back
    /// to the last deployed revision through the same steps. `observe` sees every phase.
    pub async fn deploy(
        &mut self,
        release: Release,
        observe: &(dyn Fn(&Progress) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<Report, DeployError> {
        let deadline = release.deadline();
        let ns = release.namespace.as_str();
        // A probe aimed outside its scope is refused before anything touches the cluster.
        let refused = crate::probe_refusals(
            &release.health.http_probes,
            &release.rendered.objects,
            ns,
            &self.config.probes,
        );
        if !refused.is_empty() {
            return Err(DeployError::ProbeRefused(refused.join("; ")));
        }
        apply::ensure_namespace(&self.cluster, ns, deadline).await?;
        let lock = lock::acquire(
            self.cluster.client(),
            ns,
            &release.name,
            &self.config.holder,
            self.config.lease,
            self.config.lock_wait,
            cancel,
        )
        .await?;
        let result = self
            .deploy_locked(&release, deadline, observe, cancel)
            .await;
        // Hand the lock back even when the deploy failed; a release failure must not leave it.
        let unlock = lock.release(grace()).await;
        let report = result?;
        unlock?;
        Ok(report)
    }

    /// Observes the release's history, then runs it unless this intent already ended.
    async fn deploy_locked(
        &self,
        release: &Release,
        deadline: Instant,
        observe: Observer<'_>,
        cancel: &CancellationToken,
    ) -> Result<Report, DeployError> {
        let run = match observe::history(self.cluster.client(), release, deadline).await? {
            Observed::Replayed(report) => return Ok(report),
            Observed::Revisions(revisions) => {
                Run::start(self, release, revisions, deadline, observe, cancel).await?
            }
            Observed::ResumeRollback { revisions, target } => {
                let run = Run::new(self, release, revisions, deadline, observe, cancel);
                run.resume_rollback(target).await?
            }
        };
        run.drive().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: &T) {}

    #[test]
    fn the_entry_points_can_run_on_any_thread() {
        // Compiled, never called: the agent spawns deploys and rollbacks as tasks.
        let _deploy = |engine: &mut Engine, release: Release, cancel: &CancellationToken| {
            send(&engine.deploy(release, &|_: &Progress| {}, cancel));
        };
        let _rollback = |engine: &mut Engine, request: Rollback, cancel: &CancellationToken| {
            send(&engine.rollback(request, &|_: &Progress| {}, cancel));
        };
    }
}
