//! The pure decision: from where a release run stands ([`Situation`]) to the next [`Action`].
//! Synchronous, total, and table-tested, including "a failing rollback never loops".

use proto::Phase;

/// Forward deploy or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Applying the requested manifests.
    Forward,
    /// Re-applying the last deployed revision after a failure.
    Rollback,
}

/// What was observed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Nothing done yet.
    Started,
    /// Every object applied.
    Applied,
    /// Every object healthy.
    Healthy,
    /// Tests and probes passed.
    Verified,
    /// Objects that left the release were removed.
    Pruned,
    /// The revision is recorded deployed.
    Committed,
    /// Apply, health, tests or probes failed, or the deadline passed.
    Failed,
    /// A newer intent cancelled this one.
    Cancelled,
}

/// Where the engine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// Forward or rollback.
    pub attempt: Attempt,
    /// Last observation.
    pub last: Observation,
    /// A deployed revision exists and the policy allows rolling back to it.
    pub can_roll_back: bool,
    /// Health is waited for (else: applied means done).
    pub wait: bool,
}

/// The next thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply every object.
    Apply,
    /// Wait until every object is healthy, or fail fast, or the deadline passes.
    WaitHealthy,
    /// Run test Jobs and HTTP probes.
    Verify,
    /// Delete objects that left the release.
    Prune,
    /// Record the revision deployed.
    Commit,
    /// Record the revision failed and re-apply the last deployed one.
    RollBack,
    /// Record the revision superseded and stop.
    Supersede,
    /// Stop with this phase.
    Finish(Phase),
}

/// The engine's decision: pure, synchronous, total.
pub fn decide(s: &Situation) -> Action {
    use Observation as O;
    match (s.attempt, s.last) {
        (_, O::Cancelled) => Action::Supersede,
        (_, O::Started) => Action::Apply,
        (_, O::Applied) if s.wait => Action::WaitHealthy,
        (_, O::Applied) => Action::Prune,
        (Attempt::Forward, O::Healthy) => Action::Verify,
        (Attempt::Rollback, O::Healthy) | (_, O::Verified) => Action::Prune,
        (_, O::Pruned) => Action::Commit,
        (Attempt::Forward, O::Committed) => Action::Finish(Phase::Succeeded),
        (Attempt::Rollback, O::Committed) => Action::Finish(Phase::RolledBack),
        (Attempt::Forward, O::Failed) if s.can_roll_back => Action::RollBack,
        (Attempt::Forward, O::Failed) => Action::Finish(Phase::Failed),
        (Attempt::Rollback, O::Failed) => Action::Finish(Phase::RollbackFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Attempt::{Forward, Rollback};
    use Observation as O;

    #[test]
    fn decisions() {
        let cases = [
            (Forward, O::Started, false, A::Apply),
            (Forward, O::Applied, false, A::WaitHealthy),
            (Forward, O::Healthy, false, A::Verify),
            (Forward, O::Verified, false, A::Prune),
            (Forward, O::Pruned, false, A::Commit),
            (Forward, O::Committed, false, A::Finish(Phase::Succeeded)),
            (Forward, O::Failed, true, A::RollBack),
            (Forward, O::Failed, false, A::Finish(Phase::Failed)),
            (Forward, O::Cancelled, true, A::Supersede),
            (Rollback, O::Started, false, A::Apply),
            (Rollback, O::Applied, false, A::WaitHealthy),
            (Rollback, O::Healthy, false, A::Prune),
            (Rollback, O::Committed, false, A::Finish(Phase::RolledBack)),
            (Rollback, O::Failed, false, A::Finish(Phase::RollbackFailed)),
            // A failing rollback never rolls back again: no loop.
            (Rollback, O::Failed, true, A::Finish(Phase::RollbackFailed)),
            (Rollback, O::Cancelled, false, A::Supersede),
        ];
        for (attempt, last, can_roll_back, expected) in cases {
            let s = Situation {
                attempt,
                last,
                can_roll_back,
                wait: true,
            };
            assert_eq!(decide(&s), expected, "{s:?}");
        }
        // Without waiting, applied is done.
        let s = Situation {
            attempt: Forward,
            last: O::Applied,
            can_roll_back: true,
            wait: false,
        };
        assert_eq!(decide(&s), A::Prune);
    }
}
