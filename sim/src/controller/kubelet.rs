//! The kubelet: each pod's status follows from its behaviour and age.

use serde_json::{Value, json};

use super::{Memory, Pass, annotated_delay, forget_gone, snapshot};
use crate::behavior::{self, Behavior};
use crate::hash::fnv_hex;
use crate::metadata::meta;
use crate::store::Store;

pub(super) fn reconcile(store: &mut Store, memory: &mut Memory, pass: &mut Pass) {
    let all = snapshot(store, &pass.t.pod);
    forget_gone(&mut memory.pods, &all);
    for pod in all {
        let uid = meta(&pod, "uid").to_owned();
        let created = *memory.pods.entry(uid).or_insert(pass.now);
        let delay = annotated_delay(&pod).unwrap_or(pass.timing.pod_ready);
        let is_job = pod["metadata"]["ownerReferences"][0]["kind"] == "Job";
        let behavior = pod_behavior(&pod);
        let elapsed = pass.now.saturating_duration_since(created);
        let started = elapsed >= delay;
        if !started {
            pass.due_at(created + delay);
        }
        let status = pod_status(&pod, behavior, started, is_job);
        store.set_status(
            &pass.t.pod,
            meta(&pod, "namespace"),
            meta(&pod, "name"),
            status,
        );
    }
}

fn pod_behavior(pod: &Value) -> Behavior {
    let as_template = json!({"metadata": pod["metadata"].clone(), "spec": pod["spec"].clone()});
    behavior::of_template(&as_template, &Value::Null)
}

/// What the containers of a pod are doing.
#[derive(Debug, Clone, PartialEq)]
struct Containers {
    phase: &'static str,
    ready: bool,
    /// Why the pod is not ready.
    reason: Option<&'static str>,
    state: Value,
    restarts: u32,
    last_state: Option<Value>,
}

/// What the containers do, from the pod's behaviour, whether its start-up delay has passed,
/// and whether a Job owns it (its containers run to completion).
fn containers(behavior: Behavior, started: bool, is_job: bool, since: &str) -> Containers {
    let waiting =
        |reason: &str, message: &str| json!({"waiting": {"reason": reason, "message": message}});
    let terminated = |exit_code: i32, reason: &str| json!({"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": since, "finishedAt": since}});
    let not_ready = |phase, reason, state| Containers {
        phase,
        ready: false,
        reason: Some(reason),
        state,
        restarts: 0,
        last_state: None,
    };
    if !started {
        let state = match behavior {
            Behavior::ImagePull => waiting("ErrImagePull", "failed to pull image"),
            _ => waiting("ContainerCreating", ""),
        };
        return not_ready("Pending", "ContainersNotReady", state);
    }
    match (behavior, is_job) {
        (Behavior::Healthy | Behavior::Slow, false) => Containers {
            phase: "Running",
            ready: true,
            reason: None,
            state: json!({"running": {"startedAt": since}}),
            restarts: 0,
            last_state: None,
        },
        (Behavior::Healthy | Behavior::Slow, true) => {
            not_ready("Succeeded", "PodCompleted", terminated(0, "Completed"))
        }
        (Behavior::CrashLoop, false) => Containers {
            restarts: 3,
            last_state: Some(terminated(1, "Error")),
            ..not_ready(
                "Running",
                "ContainersNotReady",
                waiting(
                    "CrashLoopBackOff",
                    "back-off 10s restarting failed container",
                ),
            )
        },
        (Behavior::CrashLoop, true) => not_ready("Failed", "PodFailed", terminated(1, "Error")),
        (Behavior::ImagePull, _) => not_ready(
            "Pending",
            "ContainersNotReady",
            waiting("ImagePullBackOff", "Back-off pulling image"),
        ),
    }
}

fn pod_status(pod: &Value, behavior: Behavior, started: bool, is_job: bool) -> Value {
    let since = meta(pod, "creationTimestamp");
    let c = containers(behavior, started, is_job, since);
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|spec| {
            let mut status = json!({
                "name": spec["name"], "image": spec["image"], "imageID": "",
                "ready": c.ready, "started": c.ready, "restartCount": c.restarts, "state": c.state,
            });
            if let Some(last) = &c.last_state {
                status["lastState"] = last.clone();
            }
            status
        })
        .collect();
    json!({
        "phase": c.phase,
        "conditions": conditions(c.ready, c.reason),
        "hostIP": "10.0.0.10",
        "podIP": format!("10.244.0.{}", 2 + fnv_hex(meta(pod, "uid").as_bytes()).as_bytes()[0] % 250),
        "startTime": since,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    })
}

fn conditions(ready: bool, reason: Option<&str>) -> Value {
    let status = if ready { "True" } else { "False" };
    let mut ready_cond = json!({"type": "Ready", "status": status});
    let mut containers_cond = json!({"type": "ContainersReady", "status": status});
    if let Some(r) = reason {
        ready_cond["reason"] = r.into();
        containers_cond["reason"] = r.into();
    }
    json!([
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        containers_cond,
        ready_cond,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_follow_behaviour_start_and_owner() {
        use Behavior::{CrashLoop, Healthy, ImagePull, Slow};
        let since = "2026-01-01T00:00:00Z";
        const NOT_READY: Option<&str> = Some("ContainersNotReady");
        // (behaviour, started, job) -> (phase, ready, reason, waiting reason, restarts)
        #[rustfmt::skip]
        let cases = [
            ((Healthy, false, false), ("Pending", false, NOT_READY, Some("ContainerCreating"), 0)),
            ((ImagePull, false, false), ("Pending", false, NOT_READY, Some("ErrImagePull"), 0)),
            ((Healthy, true, false), ("Running", true, None, None, 0)),
            ((Slow, true, false), ("Running", true, None, None, 0)),
            ((Healthy, true, true), ("Succeeded", false, Some("PodCompleted"), None, 0)),
            ((CrashLoop, true, false), ("Running", false, NOT_READY, Some("CrashLoopBackOff"), 3)),
            ((CrashLoop, true, true), ("Failed", false, Some("PodFailed"), None, 0)),
            ((ImagePull, true, true), ("Pending", false, NOT_READY, Some("ImagePullBackOff"), 0)),
        ];
        for ((behavior, started, is_job), (phase, ready, reason, waiting, restarts)) in cases {
            let c = containers(behavior, started, is_job, since);
            let got = (
                c.phase,
                c.ready,
                c.reason,
                c.state["waiting"]["reason"].as_str(),
                c.restarts,
            );
            assert_eq!(
                got,
                (phase, ready, reason, waiting, restarts),
                "{behavior:?} {started} {is_job}"
            );
            assert_eq!(c.last_state.is_some(), behavior == CrashLoop && !is_job);
        }
    }

    #[test]
    fn a_pod_status_has_a_container_status_per_container() {
        let pod = json!({"metadata": {"uid": "u", "creationTimestamp": "t"},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let status = pod_status(&pod, Behavior::CrashLoop, true, false);
        let statuses = status["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[1]["name"], "b");
        assert_eq!(statuses[1]["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(status["conditions"][3]["type"], "Ready");
        assert_eq!(status["conditions"][3]["status"], "False");
    }
}
