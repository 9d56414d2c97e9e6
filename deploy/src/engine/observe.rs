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
    fail_abandoned(client, &release.name, &mut revisions, deadline).await?;
    Ok(Observed::Revisions(revisions))
}

/// The report of an intent that already ended, if it did.
fn replay(intent_id: Option<&str>, revisions: &[Revision]) -> Option<Report> {
    let id = intent_id?;
    let done = revisions
        .iter()
        .rev()
        .find(|r| r.intent_id.as_deref() == Some(id) && r.outcome.is_some())?;
    Some(Report {
        phase: done.outcome.unwrap_or(Phase::Succeeded),
        revision: Some(done.number),
        reason: done.reason.clone(),
        resources: Vec::new(),
        replayed: true,
    })
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
        assert_eq!(replay(Some("c"), &revisions), None, "never seen");
        assert_eq!(replay(None, &revisions), None, "no intent, no replay");
    }
}
