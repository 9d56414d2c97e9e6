//! Observing a release before acting on it: its recorded history, whether this intent already
//! ended (then it is replayed, never applied twice), and revisions a crashed operation abandoned.

use jiff::Timestamp;
use proto::Phase;
use tokio::time::Instant;

use super::{Release, Report};
use crate::DeployError;
use crate::history::{self, Revision, RevisionStatus};

/// What the history says about a release.
pub(super) enum Observed {
    /// This intent already ended: its report, again.
    Replayed(Report),
    /// Every revision, oldest first, none of them pending any more.
    Revisions(Vec<Revision>),
    /// This intent's forward attempt failed and its rollback was interrupted (the agent was
    /// killed): the rollback to `target` goes on, as a rollback.
    ResumeRollback {
        /// Every revision, oldest first, none of them pending any more.
        revisions: Vec<Revision>,
        /// The revision the rollback re-applies.
        target: Revision,
    },
}

/// Reads the release history; an intent that already completed is reported again, not applied
/// again, and a pending revision left by a crashed operation is marked failed.
pub(super) async fn history(
    client: &kube::Client,
    release: &Release,
    deadline: Instant,
) -> Result<Observed, DeployError> {
    let mut revisions = history::list(client, &release.namespace, &release.name, deadline).await?;
    if let Some(report) = replay(release.intent_id.as_deref(), &revisions) {
        return Ok(Observed::Replayed(report));
    }
    let target = interrupted_rollback(release.intent_id.as_deref(), &revisions)
        .and_then(|number| revisions.iter().find(|r| r.number == number).cloned());
    fail_abandoned(client, &release.name, &mut revisions, deadline).await?;
    Ok(match target {
        Some(target) => Observed::ResumeRollback { revisions, target },
        None => Observed::Revisions(revisions),
    })
}

/// The report of an intent that already ended: its newest revision has an outcome. One whose
/// newest revision is still pending (the agent stopped mid-way) did not end.
fn replay(intent_id: Option<&str>, revisions: &[Revision]) -> Option<Report> {
    let id = intent_id?;
    let done = revisions
        .iter()
        .rev()
        .find(|r| r.intent_id.as_deref() == Some(id))
        .filter(|r| r.outcome.is_some())?;
    Some(Report {
        phase: done.outcome.unwrap_or(Phase::Succeeded),
        revision: Some(done.number),
        reason: done.reason.clone(),
        resources: Vec::new(),
        replayed: true,
    })
}

/// The revision an interrupted automatic rollback of this intent was re-applying: the
/// intent's newest revision is a pending rollback, after a forward attempt of the same intent.
/// (A `coxswain rollback` has no forward attempt: it is simply redone.)
fn interrupted_rollback(intent_id: Option<&str>, revisions: &[Revision]) -> Option<u32> {
    let id = intent_id?;
    let mine: Vec<&Revision> = revisions
        .iter()
        .filter(|r| r.intent_id.as_deref() == Some(id))
        .collect();
    let last = mine.last()?;
    // An automatic rollback follows a forward attempt of the same intent (recorded first, so
    // it may still be pending when the agent stopped); a `coxswain rollback` has none.
    let after_forward = mine.iter().any(|r| r.rollback_of.is_none());
    (last.status == RevisionStatus::Pending && after_forward)
        .then_some(last.rollback_of)
        .flatten()
}

/// A pending revision under a lock we now hold was abandoned by a crashed operation: it failed.
async fn fail_abandoned(
    client: &kube::Client,
    release: &str,
    revisions: &mut [Revision],
    deadline: Instant,
) -> Result<(), DeployError> {
    for r in revisions
        .iter_mut()
        .filter(|r| r.status == RevisionStatus::Pending)
    {
        r.status = RevisionStatus::Failed;
        r.reason = Some(
            "abandoned: the operation that held the release lock stopped before finishing".into(),
        );
        r.updated_at = Timestamp::now();
        history::save(client, r, deadline).await?;
        tracing::warn!(
            release,
            revision = r.number,
            "marked an abandoned revision failed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(number: u32, intent_id: &str, outcome: Option<Phase>) -> Revision {
        Revision {
            intent_id: Some(intent_id.into()),
            reason: Some(format!("reason {number}")),
            ..history::tests::revision(number, RevisionStatus::Failed, outcome)
        }
    }

    #[test]
    fn only_an_intent_that_ended_is_replayed_with_its_latest_outcome() {
        let revisions = [
            revision(1, "a", Some(Phase::Failed)),
            revision(2, "a", Some(Phase::RolledBack)),
            revision(3, "b", None),
        ];
        let report = replay(Some("a"), &revisions);
        assert_eq!(
            report,
            Some(Report {
                phase: Phase::RolledBack,
                revision: Some(2),
                reason: Some("reason 2".into()),
                resources: Vec::new(),
                replayed: true,
            })
        );
        assert_eq!(replay(Some("b"), &revisions), None, "still running");
        let mut interrupted = revisions.to_vec();
        interrupted[1].outcome = None;
        interrupted[1].status = RevisionStatus::Pending;
        assert_eq!(
            replay(Some("a"), &interrupted),
            None,
            "a rollback cut short did not end"
        );
        assert_eq!(replay(Some("c"), &revisions), None, "never seen");
        assert_eq!(replay(None, &revisions), None, "no intent, no replay");
    }

    #[test]
    fn an_interrupted_rollback_is_found_and_resumed_toward_its_target() {
        let mut forward = revision(2, "a", Some(Phase::Failed));
        forward.rollback_of = None;
        let mut rollback = revision(3, "a", None);
        rollback.status = RevisionStatus::Pending;
        rollback.rollback_of = Some(1);
        let deployed = revision(1, "z", Some(Phase::Succeeded));
        let revisions = [deployed.clone(), forward.clone(), rollback.clone()];
        assert_eq!(interrupted_rollback(Some("a"), &revisions), Some(1));
        // A forward attempt cut short is not a rollback.
        let mut cut = forward.clone();
        cut.outcome = None;
        cut.status = RevisionStatus::Pending;
        assert_eq!(
            interrupted_rollback(Some("a"), &[deployed.clone(), cut]),
            None
        );
        // A `coxswain rollback` (no failed forward attempt) is simply redone.
        assert_eq!(interrupted_rollback(Some("a"), &[deployed, rollback]), None);
    }
}
