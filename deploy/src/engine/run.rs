//! One release run: its state ([`Run`]) and the decide -> act loop that drives it from the
//! first apply to a report. Each action is a method on `Run` in the action's own file.

use jiff::Timestamp;
use proto::{Phase, ResourceHealth};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prune::PruneBase;
use super::{
    Action, Attempt, Engine, EngineConfig, Observation, Observer, Progress, Release, Report,
    Situation, decide,
};
use crate::DeployError;
use crate::cluster::Cluster;
use crate::history::{self, Revision, RevisionStatus};
use crate::render::Rendered;

/// The state of one release run, owned by the loop that drives it.
pub(super) struct Run<'a> {
    /// Where the run applies, reads and deletes.
    pub(super) cluster: &'a Cluster,
    /// How the engine runs.
    pub(super) config: &'a EngineConfig,
    /// What was asked.
    pub(super) release: &'a Release,
    /// Who hears of every phase reached.
    observe: Observer<'a>,
    /// Fires when a newer intent supersedes this one.
    pub(super) cancel: &'a CancellationToken,
    /// When the current attempt must be done: the forward attempt leaves time before `end`
    /// for a rollback.
    pub(super) deadline: Instant,
    /// The release's one deadline, rollback included.
    pub(super) end: Instant,
    /// The release history, oldest first, with every revision this run ended.
    pub(super) revisions: Vec<Revision>,
    /// The revision deployed when the run started: what a rollback re-applies.
    pub(super) last_deployed: Option<Revision>,
    /// The revision being applied.
    pub(super) current: Revision,
    /// Its manifests, tests apart.
    pub(super) rendered: Rendered,
    /// What a successful attempt prunes against.
    pub(super) prune_base: PruneBase,
    /// Where the run stands, for [`decide`].
    pub(super) situation: Situation,
    /// Why the run failed, once it did.
    pub(super) reason: Option<String>,
    /// Per-object health, as last seen.
    pub(super) resources: Vec<ResourceHealth>,
}

impl<'a> Run<'a> {
    /// A forward run on the observed history, not started yet.
    pub(super) fn new(
        engine: &'a Engine,
        release: &'a Release,
        revisions: Vec<Revision>,
        deadline: Instant,
        observe: Observer<'a>,
        cancel: &'a CancellationToken,
    ) -> Self {
        let last_deployed = history::last_deployed(&revisions).cloned();
        let number = revisions.last().map_or(1, |r| r.number + 1);
        let can_roll_back = release.rollback.enabled && last_deployed.is_some();
        Self {
            cluster: &engine.cluster,
            config: &engine.config,
            release,
            observe,
            cancel,
            deadline: release.forward_deadline(deadline, can_roll_back),
            end: deadline,
            current: pending(release, number, None, None),
            rendered: release.rendered.clone(),
            prune_base: last_deployed
                .as_ref()
                .map(PruneBase::of)
                .unwrap_or_default(),
            situation: Situation {
                attempt: Attempt::Forward,
                last: Observation::Started,
                can_roll_back,
                wait: release.wait,
            },
            reason: None,
            resources: Vec::new(),
            revisions,
            last_deployed,
        }
    }

    /// Starts a run on the observed history: a new pending revision, recorded.
    pub(super) async fn start(
        engine: &'a Engine,
        release: &'a Release,
        revisions: Vec<Revision>,
        deadline: Instant,
        observe: Observer<'a>,
        cancel: &'a CancellationToken,
    ) -> Result<Self, DeployError> {
        let run = Self::new(engine, release, revisions, deadline, observe, cancel);
        run.save_current(deadline).await?;
        Ok(run)
    }

    /// Goes on with a rollback to `target` that a stopped agent left unfinished: a new
    /// rollback revision through the same steps, pruning against the failed forward attempt.
    pub(super) async fn resume_rollback(mut self, target: Revision) -> Result<Self, DeployError> {
        let forward = self
            .revisions
            .iter()
            .rev()
            .find(|r| r.intent_id == self.release.intent_id && r.rollback_of.is_none());
        self.prune_base = forward.map(PruneBase::of).unwrap_or_default();
        self.reason = forward.and_then(|r| r.reason.clone());
        self.current = pending(
            self.release,
            self.current.number,
            Some(&target),
            Some("rollback resumed: the agent stopped before it finished".into()),
        );
        self.rendered = Rendered::from_objects(target.objects.clone());
        self.last_deployed = Some(target);
        self.deadline = self.end;
        self.situation = Situation {
            attempt: Attempt::Rollback,
            last: Observation::Started,
            can_roll_back: false,
            wait: true,
        };
        self.save_current(self.deadline).await?;
        tracing::warn!(
            release = self.release.name,
            revision = self.current.number,
            "resuming an interrupted rollback"
        );
        Ok(self)
    }

    /// Decides and acts until the run ends.
    pub(super) async fn drive(mut self) -> Result<Report, DeployError> {
        loop {
            let action = decide(&self.situation);
            tracing::debug!(
                release = self.release.name,
                revision = self.current.number,
                situation = ?self.situation,
                ?action,
                "release engine step"
            );
            let step = match action {
                Action::Apply => self.apply().await,
                Action::WaitHealthy => Ok(self.wait_healthy().await),
                Action::Verify => Ok(self.verify().await),
                Action::Prune => Ok(self.prune().await),
                Action::Commit => self.commit().await,
                Action::RollBack => self.roll_back().await,
                Action::Supersede => return self.supersede().await,
                Action::Finish(phase) => return self.finish(phase).await,
            };
            self.situation.last = match step {
                Ok(observation) => observation,
                Err(DeployError::Cancelled) => Observation::Cancelled,
                // An error while rolling back ends the rollback: never a loop, never `failed`.
                Err(error)
                    if action == Action::RollBack
                        || self.situation.attempt == Attempt::Rollback =>
                {
                    self.reason = Some(error.to_string());
                    return self.finish(Phase::RollbackFailed).await;
                }
                // An error of the forward attempt is a failure like any other: decide rolls back.
                Err(error) => {
                    self.reason = Some(error.to_string());
                    Observation::Failed
                }
            };
        }
    }

    /// Records the current revision as it stands, by `deadline`.
    pub(super) async fn save_current(&self, deadline: Instant) -> Result<(), DeployError> {
        history::save(self.cluster.client(), &self.current, deadline).await
    }

    /// Tells the observer a phase was reached.
    pub(super) fn say(
        &self,
        phase: Phase,
        reason: Option<String>,
        resources: &[ResourceHealth],
        terminal: bool,
    ) {
        (self.observe)(&Progress {
            phase,
            revision: self.current.number,
            reason,
            resources: resources.to_vec(),
            terminal,
        });
    }

    /// The report of a run that ends now, in `phase`.
    pub(super) fn report(self, phase: Phase) -> Report {
        Report {
            phase,
            revision: Some(self.current.number),
            reason: self.reason,
            resources: self.resources,
            replayed: false,
        }
    }
}

/// A new pending revision `number` of the release, applying the release's own manifests or,
/// for a rollback, those of `rollback_to`.
pub(super) fn pending(
    release: &Release,
    number: u32,
    rollback_to: Option<&Revision>,
    reason: Option<String>,
) -> Revision {
    let (version, digest, objects, rollback_of) = match rollback_to {
        None => (
            release.version.clone(),
            release.rendered.digest.clone(),
            release.rendered.all(),
            release.rollback_of,
        ),
        Some(target) => (
            target.version.clone(),
            target.digest.clone(),
            target.objects.clone(),
            Some(target.number),
        ),
    };
    let now = Timestamp::now();
    Revision {
        release: release.name.clone(),
        namespace: release.namespace.clone(),
        number,
        status: RevisionStatus::Pending,
        intent_id: release.intent_id.clone(),
        outcome: None,
        version,
        digest,
        objects,
        inventory: Vec::new(),
        rollback_of,
        reason,
        created_at: now,
        updated_at: now,
    }
}
