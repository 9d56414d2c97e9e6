//! Recording how a revision ends: deployed (the commit: the one deployed before superseded,
//! the history trimmed), superseded by a newer intent, or failed.

use jiff::Timestamp;
use proto::Phase;
use tokio::time::Instant;

use super::run::Run;
use super::{Attempt, Observation, Report, grace, prune};
use crate::DeployError;
use crate::history::{self, RevisionStatus};

impl Run<'_> {
    /// Records the revision deployed, the one deployed before it superseded, and trims the
    /// history (a failed trim is only logged).
    pub(super) async fn commit(&mut self) -> Result<Observation, DeployError> {
        let client = self.cluster.client().clone();
        for r in self
            .revisions
            .iter_mut()
            .filter(|r| r.status == RevisionStatus::Deployed)
        {
            r.status = RevisionStatus::Superseded;
            r.updated_at = Timestamp::now();
            history::save(&client, r, self.deadline).await?;
        }
        let outcome = match self.situation.attempt {
            Attempt::Forward => Phase::Succeeded,
            Attempt::Rollback => Phase::RolledBack,
        };
        self.conclude(RevisionStatus::Deployed, outcome, self.deadline)
            .await?;
        self.revisions.push(self.current.clone());
        if let Err(error) =
            history::trim(&client, &self.revisions, self.config.history, self.deadline).await
        {
            tracing::warn!(%error, release = self.release.name, "cannot trim release history");
        }
        Ok(Observation::Committed)
    }

    /// Records the revision superseded by a newer intent and ends the run.
    pub(super) async fn supersede(mut self) -> Result<Report, DeployError> {
        self.reason = Some("superseded by a newer intent".into());
        self.current.reason = self.reason.clone();
        self.conclude(RevisionStatus::Superseded, Phase::Superseded, grace())
            .await?;
        self.say(Phase::Superseded, self.reason.clone(), &[], true);
        Ok(self.report(Phase::Superseded))
    }

    /// Ends the run in `phase`; a failure is recorded, and a failed first install is removed
    /// when the policy says so.
    pub(super) async fn finish(mut self, phase: Phase) -> Result<Report, DeployError> {
        let save_by = grace();
        if matches!(phase, Phase::Failed | Phase::RollbackFailed) {
            self.current.reason = self.reason.clone();
            // The ending is reported even when it cannot be recorded (an API outage): the
            // revision stays pending and the next operation marks it abandoned.
            if let Err(error) = self.conclude(RevisionStatus::Failed, phase, save_by).await {
                tracing::warn!(%error, release = self.release.name, "cannot record how the release ended");
            }
            let first_install = self.last_deployed.is_none();
            if phase == Phase::Failed
                && first_install
                && self.release.rollback.uninstall_failed_install
            {
                let by = self.deadline.max(save_by);
                prune::uninstall(self.cluster, self.release, &self.current.inventory, by).await;
            }
        }
        self.say(phase, self.reason.clone(), &self.resources, true);
        Ok(self.report(phase))
    }

    /// Ends the current revision with `status` and `outcome`, and records it by `deadline`.
    pub(super) async fn conclude(
        &mut self,
        status: RevisionStatus,
        outcome: Phase,
        deadline: Instant,
    ) -> Result<(), DeployError> {
        self.current.status = status;
        self.current.outcome = Some(outcome);
        self.current.updated_at = Timestamp::now();
        self.save_current(deadline).await
    }
}
