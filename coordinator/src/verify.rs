//! Verified outcomes: the coordinator uses an event for a rollout only when the subject's
//! cluster, the event's `cluster`, the cluster its intent id names and the rollout's target all
//! agree. NATS permissions pin the subject to the publishing agent's own cluster, so an agent
//! can neither speak for another cluster nor move another cluster's part of a rollout.

use proto::{Outcome, Rollout};

/// What an event means for one rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// About this rollout, and consistent: use it.
    Use,
    /// About another rollout (or none): not ours to judge.
    NotOurs,
    /// Consistent, but for an intent the record does not list yet (the record is written
    /// just after the publish): keep it for the next pass.
    NotYet,
    /// Claims to be about this rollout but does not add up: ignore, log and count it.
    Reject(String),
}

/// Judges `event`, published on a subject of cluster `subject_cluster`, for rollout `r`.
pub fn check(r: &Rollout, subject_cluster: &str, event: &Outcome) -> Verdict {
    let Some(rest) = event
        .intent_id
        .strip_prefix(r.id.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return Verdict::NotOurs;
    };
    let (named, revert) = match rest.strip_suffix(".revert") {
        Some(cluster) => (cluster, true),
        None => (rest, false),
    };
    let reject = |why: &str| {
        Verdict::Reject(format!(
            "event {} on cluster {subject_cluster}'s subject for intent {} {why}",
            event.event_id, event.intent_id
        ))
    };
    if event.cluster != subject_cluster {
        return reject(&format!("names cluster {}", event.cluster));
    }
    if named != subject_cluster {
        return reject(&format!("belongs to cluster {named}"));
    }
    let Some(target) = r.clusters.get(named) else {
        return reject("targets a cluster outside the rollout");
    };
    let sent = if revert {
        &target.revert_intent_id
    } else {
        &target.intent_id
    };
    if sent.as_deref() != Some(event.intent_id.as_str()) {
        return Verdict::NotYet;
    }
    Verdict::Use
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::plan;

    fn rollout() -> Rollout {
        let mut r: Rollout = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": "r1",
            "request": {"schema_version": 1, "idempotency_key": "k", "release": "web",
                "namespace": "web", "environment": "prod", "version": "2",
                "manifests": {"source": "bundle", "digest": "d", "size": 1},
                "requested_by": "ci"},
            "waves": [["a"], ["b"]], "clusters": {}, "current_wave": 0,
            "status": "running", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        r.clusters = plan::fresh_progress(&r.waves);
        let a = r.clusters.get_mut("a").unwrap();
        a.intent_id = Some(plan::intent_id("r1", "a"));
        a.revert_intent_id = Some(plan::revert_intent_id("r1", "a"));
        r
    }

    fn event(cluster: &str, intent: &str) -> Outcome {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "event_id": format!("{cluster}.{intent}.succeeded"),
            "intent_id": intent, "cluster": cluster, "release": "web",
            "phase": "succeeded", "terminal": true, "attempt": 1,
            "at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn only_events_whose_clusters_all_agree_are_used() {
        let r = rollout();
        let cases = [
            ("a", event("a", "r1.a"), Some(true)),
            ("a", event("a", "r1.a.revert"), Some(true)),
            ("a", event("a", "r2.a"), None),
            ("a", event("a", "unrelated"), None),
            // An agent of b speaks for a: on its own subject, naming a.
            ("b", event("a", "r1.a"), Some(false)),
            // b's agent names itself but answers a's intent.
            ("b", event("b", "r1.a"), Some(false)),
            // b's intent is not in the record yet: kept for later, neither used nor rejected.
            ("b", event("b", "r1.b"), None),
            // A cluster outside the rollout.
            ("c", event("c", "r1.c"), Some(false)),
        ];
        for (subject, e, expected) in cases {
            let verdict = check(&r, subject, &e);
            let got = match &verdict {
                Verdict::Use => Some(true),
                Verdict::Reject(_) => Some(false),
                Verdict::NotOurs | Verdict::NotYet => None,
            };
            assert_eq!(got, expected, "{subject} {}: {verdict:?}", e.intent_id);
        }
    }
}
