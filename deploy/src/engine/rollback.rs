//! Rolling back, which is not a second path: after a failed attempt the run records it failed
//! and re-applies the last deployed revision as a new revision through the same steps; asked
//! for (`release rollback`), an earlier revision becomes a [`Release`] like any other.

use proto::{HealthPolicy, Phase, RollbackPolicy};

use super::run::{Run, pending};
use super::{Attempt, Observation, Release, Situation};
use crate::DeployError;
use crate::history::{self, Revision, RevisionStatus};
use crate::render::Rendered;

/// A request to re-apply an earlier revision of a release (`release rollback`).
#[derive(Debug, Clone)]
pub struct Rollback {
    /// Release name.
    pub name: String,
    /// Namespace of the release.
    pub namespace: String,
    /// The revision to re-apply; `None`: the one deployed before the current one.
    pub to: Option<u32>,
    /// The intent that asked for it, for idempotency.
    pub intent_id: Option<String>,
    /// Deadline and extra checks.
    pub health: HealthPolicy,
}

impl Rollback {
    /// The release that re-applies `target`, waited for and never rolled back itself.
    pub(super) fn into_release(self, target: Revision) -> Release {
        Release {
            name: self.name,
            namespace: self.namespace,
            version: target.version,
            intent_id: self.intent_id,
            rendered: Rendered::from_objects(target.objects),
            health: self.health,
            rollback: RollbackPolicy::default(),
            rollback_of: Some(target.number),
            wait: true,
        }
    }
}

/// The revision a `release rollback` re-applies: `to`, or the latest that was deployed before
/// the current one.
pub(super) fn target(
    revisions: &[Revision],
    to: Option<u32>,
    release: &str,
) -> Result<Revision, DeployError> {
    let current = history::last_deployed(revisions).map(|r| r.number);
    let was_deployed =
        |r: &&Revision| matches!(r.outcome, Some(Phase::Succeeded | Phase::RolledBack));
    let target = match to {
        Some(n) => revisions.iter().find(|r| r.number == n),
        None => revisions
            .iter()
            .rev()
            .filter(was_deployed)
            .find(|r| current.is_none_or(|c| r.number < c)),
    };
    target.cloned().ok_or_else(|| DeployError::NoRevision {
        release: release.to_owned(),
        wanted: to.map_or_else(
            || "deployed before the current one".to_owned(),
            |n| n.to_string(),
        ),
    })
}

impl Run<'_> {
    /// Records the failed revision and starts the rollback attempt: a new revision re-applying
    /// the last deployed one, in the time the forward attempt left before the release's one
    /// deadline, that never rolls back again.
    pub(super) async fn roll_back(&mut self) -> Result<Observation, DeployError> {
        self.deadline = self.end;
        let Some(target) = self.last_deployed.clone() else {
            self.situation.can_roll_back = false;
            return Ok(self.situation.last);
        };
        // The rollback revision is recorded before the forward one is marked failed, so a
        // crash in between leaves a pending rollback, which the redelivery resumes; never a
        // failed forward revision that would read as the intent's end.
        let number = self.current.number + 1;
        let rollback = pending(self.release, number, Some(&target), self.reason.clone());
        history::save(self.cluster.client(), &rollback, self.deadline).await?;
        self.current.reason = self.reason.clone();
        self.conclude(RevisionStatus::Failed, Phase::Failed, self.deadline)
            .await?;
        self.say(Phase::Failed, self.reason.clone(), &self.resources, false);
        self.revisions.push(self.current.clone());
        // The failed revision's objects are what a successful rollback prunes.
        self.prune_base = super::prune::PruneBase::of(&self.current);
        self.current = rollback;
        self.rendered = Rendered::from_objects(target.objects);
        self.situation = Situation {
            attempt: Attempt::Rollback,
            last: Observation::Started,
            can_roll_back: false,
            wait: true,
        };
        Ok(Observation::Started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::revision;

    #[test]
    fn a_rollback_targets_the_last_good_revision_before_the_current_one() {
        use RevisionStatus::{Deployed, Failed, Superseded};
        let revisions = [
            revision(1, Superseded, Some(Phase::Succeeded)),
            revision(2, Failed, Some(Phase::Failed)),
            revision(3, Superseded, Some(Phase::RolledBack)),
            revision(4, Deployed, Some(Phase::Succeeded)),
        ];
        let number = |to| target(&revisions, to, "web").map(|r| r.number);
        assert_eq!(number(None).ok(), Some(3));
        assert_eq!(number(Some(1)).ok(), Some(1));
        let err = number(Some(9)).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("release web has no revision 9 to roll back to")
        );
        let first = [revision(1, Deployed, Some(Phase::Succeeded))];
        let err = target(&first, None, "web").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("release web has no revision deployed before the current one to roll back to")
        );
    }
}
