//! The Job controller: pods until `completions` succeeded (Complete) or more than
//! `backoffLimit` failed (Failed, BackoffLimitExceeded).

use serde_json::{Value, json};

use super::{Pass, Workload, condition, conditions_of, count, each, fnv_seed, int, owned, phase};
use crate::metadata::{self, meta, suffix};
use crate::store::Store;

/// How a Job ended, with the reason and message of its two conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `SuccessCriteriaMet`, then `Complete`.
    Complete,
    /// `FailureTarget`, then `Failed`.
    Failed,
}

impl Outcome {
    fn decide(job: &Value, succeeded: i64, failed: i64) -> Option<Self> {
        if succeeded >= int(&job["spec"]["completions"], 1) {
            Some(Self::Complete)
        } else if failed > int(&job["spec"]["backoffLimit"], 6) {
            Some(Self::Failed)
        } else {
            None
        }
    }

    /// Its conditions, timestamps kept from `old` while they stay the same.
    fn conditions(self, old: &[Value]) -> Vec<Value> {
        let (kinds, reason, message) = match self {
            Self::Complete => (
                ["SuccessCriteriaMet", "Complete"],
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            Self::Failed => (
                ["FailureTarget", "Failed"],
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        };
        kinds
            .iter()
            .map(|kind| condition(old, kind, "True", reason, message))
            .collect()
    }
}

/// Job -> pods until `completions` succeeded (Complete) or more than `backoffLimit` failed
/// (Failed, BackoffLimitExceeded).
pub(super) fn reconcile(store: &mut Store, pass: &Pass) {
    each(store, &pass.t.job, |store, w| run_job(store, pass, w));
}

/// One Job: pods until it completes or fails, and its status.
fn run_job(store: &mut Store, pass: &Pass, w: &Workload) {
    let t = &pass.t;
    let job = w.object;
    let pods = owned(store, &t.pod, w.uid());
    let succeeded = count(pods.iter().filter(|p| phase(p) == "Succeeded"));
    let failed = count(pods.iter().filter(|p| phase(p) == "Failed"));
    let outcome = Outcome::decide(job, succeeded, failed);
    if outcome.is_none() && !is_finished(job) {
        start_pods(store, pass, w, &pods);
    }
    let mut status = json!({
        "startTime": meta(job, "creationTimestamp"),
        "succeeded": succeeded,
        "failed": failed,
    });
    let active = count(owned(store, &t.pod, w.uid()).iter()) - succeeded - failed;
    match outcome {
        Some(outcome) => {
            status["conditions"] = Value::Array(outcome.conditions(&conditions_of(job)));
        }
        None if active > 0 => status["active"] = active.into(),
        None => {}
    }
    if outcome.is_none() && is_finished(job) {
        status["conditions"] = job["status"]["conditions"].clone();
    }
    if outcome == Some(Outcome::Complete) {
        status["completionTime"] = job["status"]["completionTime"]
            .as_str()
            .map_or_else(|| metadata::now().into(), Value::from);
    }
    store.set_status(&t.job, w.ns(), w.name(), status);
}

/// Has the Job a true `Complete` or `Failed` condition?
fn is_finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

/// Starts pods up to `parallelism`, no more than the completions still missing.
fn start_pods(store: &mut Store, pass: &Pass, w: &Workload, pods: &[Value]) {
    let completions = int(&w.object["spec"]["completions"], 1);
    let parallelism = int(&w.object["spec"]["parallelism"], 1).max(1);
    let succeeded = count(pods.iter().filter(|p| phase(p) == "Succeeded"));
    let active = count(
        pods.iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed")),
    );
    let want = (completions - succeeded).min(parallelism) - active;
    let mut seq = u64::try_from(count(pods.iter())).unwrap_or(0);
    let labels = [
        ("job-name", w.name().to_owned()),
        ("batch.kubernetes.io/job-name", w.name().to_owned()),
    ];
    for _ in 0..want.max(0) {
        seq += 1;
        let name = format!("{}-{}", w.name(), suffix(fnv_seed(w.uid(), 0, seq)));
        let pod = w.new_pod(name, &labels, pass.timing.pod_ready);
        store.put_internal(&pass.t.pod, pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_completes_on_its_completions_and_fails_past_its_backoff_limit() {
        let job = json!({"spec": {"completions": 2, "backoffLimit": 1}});
        let cases = [
            ((0, 0), None),
            ((1, 1), None),
            ((2, 0), Some(Outcome::Complete)),
            ((2, 5), Some(Outcome::Complete)),
            ((0, 2), Some(Outcome::Failed)),
        ];
        for ((succeeded, failed), expected) in cases {
            assert_eq!(
                Outcome::decide(&job, succeeded, failed),
                expected,
                "{succeeded} {failed}"
            );
        }
        let kinds: Vec<Value> = Outcome::Failed
            .conditions(&[])
            .iter()
            .map(|c| c["type"].clone())
            .collect();
        assert_eq!(kinds, [json!("FailureTarget"), json!("Failed")]);
    }
}
