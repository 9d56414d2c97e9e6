//! Health as pure predicates over an object's JSON: kubectl rollout-status semantics for
//! workloads (generation gate first), Job completion, the verdicts Argo CD's health checks give
//! Pods, HorizontalPodAutoscalers, APIServices, LoadBalancer Services and Ingresses, kstatus
//! rules for everything else, and fast failure on pods that will not start.

use proto::HealthStatus;
use serde_json::Value;

/// A verdict on one object, with the reason in the object's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Healthy, progressing or failed.
    pub status: HealthStatus,
    /// Why.
    pub message: String,
}

impl Assessment {
    fn healthy(message: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Healthy,
            message: message.into(),
        }
    }
    fn progressing(message: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Progressing,
            message: message.into(),
        }
    }
    fn failed(message: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Failed,
            message: message.into(),
        }
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn is_true(c: Option<&Value>) -> bool {
    c.is_some_and(|c| c["status"] == "True")
}

/// The generation gate: a status that describes an older spec says nothing about this one.
fn generation_pending(object: &Value) -> Option<Assessment> {
    let generation = int(&object["metadata"]["generation"]);
    let observed = int(&object["status"]["observedGeneration"]);
    (generation > observed).then(|| {
        Assessment::progressing(format!(
            "waiting for the controller to observe generation {generation} (observed {observed})"
        ))
    })
}

/// How strict some verdicts are, for clusters that cannot meet them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthOptions {
    /// A LoadBalancer Service or an Ingress is healthy only once its status has an address
    /// (`status.loadBalancer.ingress`). Off for clusters without a load balancer controller,
    /// where none ever comes.
    pub wait_for_addresses: bool,
}

impl Default for HealthOptions {
    fn default() -> Self {
        Self {
            wait_for_addresses: true,
        }
    }
}

/// The health of one object, with the default [`HealthOptions`].
pub fn assess(object: &Value) -> Assessment {
    assess_with(object, &HealthOptions::default())
}

/// The health of one object.
pub fn assess_with(object: &Value, options: &HealthOptions) -> Assessment {
    let kind = object["kind"].as_str().unwrap_or_default();
    // Workloads: a status that describes an older spec says nothing about this one.
    if matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet")
        && let Some(pending) = generation_pending(object)
    {
        return pending;
    }
    match kind {
        "Deployment" => deployment(object),
        "StatefulSet" => stateful_set(object),
        "DaemonSet" => daemon_set(object),
        "Job" => job(object),
        "Pod" => pod(object),
        "CustomResourceDefinition" => {
            if is_true(condition(object, "Established")) {
                Assessment::healthy("established")
            } else {
                Assessment::progressing("waiting for the CRD to be established")
            }
        }
        "Namespace" => match object["status"]["phase"].as_str() {
            Some("Terminating") => Assessment::progressing("namespace is terminating"),
            _ => Assessment::healthy("active"),
        },
        "PersistentVolumeClaim" => match object["status"]["phase"].as_str() {
            Some("Bound") => Assessment::healthy("bound"),
            Some("Lost") => Assessment::failed("claim lost its volume"),
            _ => Assessment::progressing("waiting for the claim to be bound"),
        },
        "HorizontalPodAutoscaler" => autoscaler(object),
        "APIService" => api_service(object),
        "Service" if object["spec"]["type"] == "LoadBalancer" && options.wait_for_addresses => {
            addressed(object, "load balancer")
        }
        "Ingress" if options.wait_for_addresses => addressed(object, "ingress"),
        _ => kstatus(object),
    }
}

/// A LoadBalancer Service or an Ingress: healthy once its status has an address.
fn addressed(o: &Value, what: &str) -> Assessment {
    let addresses: Vec<&str> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
        .collect();
    if addresses.is_empty() {
        Assessment::progressing(format!("waiting for the {what} to get an address"))
    } else {
        Assessment::healthy(format!("address {}", addresses.join(", ")))
    }
}

/// A HorizontalPodAutoscaler, as Argo CD judges it: failed when it cannot get or update the
/// scale of its target or its selector is invalid, healthy once it is able to scale and its
/// metrics are active (or scaling is deliberately disabled), progressing until then.
fn autoscaler(h: &Value) -> Assessment {
    if h["status"]["observedGeneration"].is_i64()
        && let Some(pending) = generation_pending(h)
    {
        return pending;
    }
    let able = condition(h, "AbleToScale");
    let active = condition(h, "ScalingActive");
    if let Some(c) = able.filter(|c| c["status"] == "False") {
        return Assessment::failed(format!("AbleToScale {}", because(c)));
    }
    if let Some(c) = active.filter(|c| {
        c["status"] == "False" && matches!(c["reason"].as_str(), Some("InvalidSelector"))
    }) {
        return Assessment::failed(format!("ScalingActive {}", because(c)));
    }
    match active {
        Some(c) if is_true(able) && c["status"] == "True" => {
            Assessment::healthy(format!("ScalingActive {}", because(c)))
        }
        Some(c) if is_true(able) && c["reason"] == "ScalingDisabled" => {
            Assessment::healthy(format!("ScalingActive {}", because(c)))
        }
        Some(c) => Assessment::progressing(format!("waiting to autoscale: {}", because(c))),
        None => Assessment::progressing("waiting to autoscale"),
    }
}

/// An APIService: healthy when `Available`, progressing otherwise (its backend may come).
fn api_service(a: &Value) -> Assessment {
    match condition(a, "Available") {
        Some(c) if c["status"] == "True" => {
            Assessment::healthy(format!("Available {}", because(c)))
        }
        Some(c) => Assessment::progressing(format!("not Available {}", because(c))),
        None => Assessment::progressing("waiting for the API service to be available"),
    }
}

/// `reason: message` of a condition.
fn because(c: &Value) -> String {
    format!(
        "{}: {}",
        c["reason"].as_str().unwrap_or_default(),
        c["message"].as_str().unwrap_or_default()
    )
}

/// A Deployment past the generation gate, as `kubectl rollout status` sees it.
fn deployment(d: &Value) -> Assessment {
    let s = &d["status"];
    if let Some(c) = condition(d, "Progressing")
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        return Assessment::failed(format!(
            "ProgressDeadlineExceeded: {}",
            c["message"]
                .as_str()
                .unwrap_or("the rollout exceeded its progress deadline")
        ));
    }
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (replicas, updated, available) = (
        int(&s["replicas"]),
        int(&s["updatedReplicas"]),
        int(&s["availableReplicas"]),
    );
    if updated < desired {
        return Assessment::progressing(format!("{updated} of {desired} updated replicas"));
    }
    if replicas > updated {
        return Assessment::progressing(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Assessment::progressing(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Assessment::healthy(format!("{available} of {desired} replicas available"))
}

/// A StatefulSet past the generation gate: ready pods, then the partition or update revision.
fn stateful_set(s: &Value) -> Assessment {
    let st = &s["status"];
    let desired = s["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = int(&st["readyReplicas"]);
    if ready < desired {
        return Assessment::progressing(format!("{ready} of {desired} pods ready"));
    }
    let strategy = &s["spec"]["updateStrategy"];
    if strategy["type"] == "OnDelete" {
        // kubectl reports no rollout for OnDelete: pods change only when deleted.
        return Assessment::healthy(format!("{ready} of {desired} pods ready (OnDelete)"));
    }
    let partition = int(&strategy["rollingUpdate"]["partition"]);
    let updated = int(&st["updatedReplicas"]);
    if partition > 0 {
        let want = desired - partition;
        if updated < want {
            return Assessment::progressing(format!(
                "{updated} of {want} pods updated (partition {partition})"
            ));
        }
        return Assessment::healthy(format!("partitioned roll out complete: {updated} new pods"));
    }
    if st["updateRevision"] != st["currentRevision"] {
        return Assessment::progressing(format!(
            "{updated} of {desired} pods at the update revision"
        ));
    }
    Assessment::healthy(format!("{ready} of {desired} pods ready"))
}

/// A DaemonSet past the generation gate: updated, then available pods.
fn daemon_set(d: &Value) -> Assessment {
    let s = &d["status"];
    let desired = int(&s["desiredNumberScheduled"]);
    if d["spec"]["updateStrategy"]["type"] == "OnDelete" {
        return Assessment::healthy("OnDelete: pods change only when deleted");
    }
    let updated = int(&s["updatedNumberScheduled"]);
    if updated < desired {
        return Assessment::progressing(format!("{updated} of {desired} pods updated"));
    }
    let available = int(&s["numberAvailable"]);
    if available < desired {
        return Assessment::progressing(format!("{available} of {desired} updated pods available"));
    }
    Assessment::healthy(format!("{available} of {desired} pods available"))
}

fn job(j: &Value) -> Assessment {
    if let Some(c) = condition(j, "Failed").filter(|c| c["status"] == "True") {
        return Assessment::failed(format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or("Failed"),
            c["message"].as_str().unwrap_or("the job failed")
        ));
    }
    if is_true(condition(j, "Complete")) {
        return Assessment::healthy("complete");
    }
    let s = &j["status"];
    Assessment::progressing(format!(
        "{} active, {} succeeded, {} failed",
        int(&s["active"]),
        int(&s["succeeded"]),
        int(&s["failed"])
    ))
}

/// Does a container waiting for this reason wait for something that will not fix itself?
/// As Argo CD reads them: `Err...`, `...Error` and `...BackOff` (`CrashLoopBackOff`,
/// `ImagePullBackOff`, `ErrImagePull`, `CreateContainerConfigError`, `Error`), and
/// `InvalidImageName`.
fn is_fatal_waiting(reason: &str) -> bool {
    reason.starts_with("Err")
        || reason.ends_with("Error")
        || reason.ends_with("BackOff")
        || reason == "InvalidImageName"
}

/// The statuses of a pod's init and app containers.
fn container_statuses(pod: &Value) -> impl Iterator<Item = &Value> {
    let s = &pod["status"];
    ["initContainerStatuses", "containerStatuses"]
        .into_iter()
        .flat_map(|k| s[k].as_array().into_iter().flatten())
}

fn container_of(c: &Value, pod: &Value) -> String {
    format!(
        "container {} of pod {}",
        c["name"].as_str().unwrap_or("?"),
        pod["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The reason a pod will not start, if it will not.
pub fn pod_failure(pod: &Value) -> Option<String> {
    container_statuses(pod).find_map(|c| {
        let reason = c["state"]["waiting"]["reason"].as_str()?;
        is_fatal_waiting(reason).then(|| format!("{reason}: {}", container_of(c, pod)))
    })
}

/// A container that is not ready, has restarted, and whose last run ended in an error: it
/// keeps crashing, whatever it is doing at this moment (restarting, running, terminated).
fn crash_looping(pod: &Value) -> Option<String> {
    let restarts_always = matches!(pod["spec"]["restartPolicy"].as_str(), None | Some("Always"));
    if !restarts_always {
        return None;
    }
    container_statuses(pod).find_map(|c| {
        let restarts = int(&c["restartCount"]);
        if c["ready"] == true || restarts == 0 {
            return None;
        }
        let ended = [&c["state"]["terminated"], &c["lastState"]["terminated"]]
            .into_iter()
            .find(|t| int(&t["exitCode"]) != 0)?;
        Some(format!(
            "{}: {} exited with code {} and restarted {restarts} times",
            ended["reason"].as_str().unwrap_or("Error"),
            container_of(c, pod),
            int(&ended["exitCode"]),
        ))
    })
}

fn pod(p: &Value) -> Assessment {
    if let Some(reason) = pod_failure(p).or_else(|| crash_looping(p)) {
        return Assessment::failed(reason);
    }
    match p["status"]["phase"].as_str() {
        Some("Succeeded") => Assessment::healthy("succeeded"),
        Some("Failed") => Assessment::failed("pod failed"),
        _ if is_true(condition(p, "Ready")) => Assessment::healthy("ready"),
        _ => Assessment::progressing("waiting for the pod to be ready"),
    }
}

/// kstatus: observedGeneration gate, then `Stalled`, `Reconciling`, `Ready`; an object without
/// conditions is current as soon as it exists.
fn kstatus(o: &Value) -> Assessment {
    if o["status"]["observedGeneration"].is_i64()
        && let Some(pending) = generation_pending(o)
    {
        return pending;
    }
    if let Some(c) = condition(o, "Stalled").filter(|c| c["status"] == "True") {
        return Assessment::failed(format!("Stalled {}", because(c)));
    }
    if let Some(c) = condition(o, "Reconciling").filter(|c| c["status"] == "True") {
        return Assessment::progressing(format!("Reconciling {}", because(c)));
    }
    match condition(o, "Ready") {
        Some(c) if c["status"] == "True" => Assessment::healthy("Ready"),
        Some(c) => Assessment::progressing(format!("not Ready {}", because(c))),
        None => Assessment::healthy("current"),
    }
}

/// Does this kind have pods whose failure should fail it at once?
pub fn has_pods(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use HealthStatus::{Failed, Healthy, Progressing};
    use serde_json::json;

    fn deploy(generation: i64, status: Value) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn deployments_follow_rollout_status() {
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        let cases = [
            ("complete", deploy(2, done.clone()), Healthy),
            (
                "stale observedGeneration, status looks complete",
                deploy(3, done.clone()),
                Progressing,
            ),
            (
                "not all updated",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}),
                ),
                Progressing,
            ),
            (
                "old replicas left",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                ),
                Progressing,
            ),
            (
                "updated not available",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                ),
                Progressing,
            ),
            (
                "deadline exceeded",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
                ),
                Failed,
            ),
            ("no status yet", deploy(1, json!({})), Progressing),
        ];
        for (name, object, expected) in cases {
            assert_eq!(
                assess(&object).status,
                expected,
                "{name}: {}",
                assess(&object).message
            );
        }
        let failed = assess(&deploy(
            2,
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "m"}]}),
        ));
        assert_eq!(failed.message, "ProgressDeadlineExceeded: m");
    }

    #[test]
    fn stateful_sets_with_partition_and_on_delete() {
        let sts = |strategy: Value, status: Value| {
            json!({"kind": "StatefulSet", "metadata": {"generation": 2},
            "spec": {"replicas": 3, "updateStrategy": strategy}, "status": status})
        };
        let rolling = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
        let cases = [
            (
                "complete",
                sts(
                    rolling.clone(),
                    json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3, "currentRevision": "a", "updateRevision": "a"}),
                ),
                Healthy,
            ),
            (
                "revisions differ",
                sts(
                    rolling.clone(),
                    json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}),
                ),
                Progressing,
            ),
            (
                "not ready",
                sts(
                    rolling.clone(),
                    json!({"observedGeneration": 2, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "a"}),
                ),
                Progressing,
            ),
            (
                "stale generation",
                sts(
                    rolling,
                    json!({"observedGeneration": 1, "readyReplicas": 3, "currentRevision": "a", "updateRevision": "a"}),
                ),
                Progressing,
            ),
            (
                "partition reached",
                sts(
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
                    json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}),
                ),
                Healthy,
            ),
            (
                "partition not reached",
                sts(
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}),
                    json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}),
                ),
                Progressing,
            ),
            (
                "OnDelete ready",
                sts(
                    json!({"type": "OnDelete"}),
                    json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 0, "currentRevision": "a", "updateRevision": "b"}),
                ),
                Healthy,
            ),
        ];
        for (name, object, expected) in cases {
            assert_eq!(
                assess(&object).status,
                expected,
                "{name}: {}",
                assess(&object).message
            );
        }
    }

    #[test]
    fn daemon_sets() {
        let ds = |status: Value| json!({"kind": "DaemonSet", "metadata": {"generation": 1}, "spec": {}, "status": status});
        assert_eq!(assess(&ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}))).status, Healthy);
        assert_eq!(assess(&ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1, "numberAvailable": 2}))).status, Progressing);
        assert_eq!(assess(&ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}))).status, Progressing);
        assert_eq!(assess(&ds(json!({"observedGeneration": 0, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}))).status, Progressing);
    }

    #[test]
    fn jobs_complete_or_fail() {
        let job = |conditions: Value| json!({"kind": "Job", "metadata": {}, "status": {"conditions": conditions}});
        assert_eq!(
            assess(&job(json!([{"type": "Complete", "status": "True"}]))).status,
            Healthy
        );
        let failed = assess(&job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit"}]),
        ));
        assert_eq!(
            (failed.status, failed.message.as_str()),
            (Failed, "BackoffLimitExceeded: limit")
        );
        assert_eq!(assess(&job(json!([]))).status, Progressing);
    }

    #[test]
    fn pods_fail_fast_on_crash_loops_and_pull_errors() {
        let pod = |waiting: &str| {
            json!({"kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": waiting}}}]}})
        };
        assert_eq!(assess(&pod("CrashLoopBackOff")).status, Failed);
        assert_eq!(assess(&pod("ImagePullBackOff")).status, Failed);
        assert_eq!(assess(&pod("ContainerCreating")).status, Progressing);
        assert_eq!(
            pod_failure(&pod("ErrImagePull")).unwrap(),
            "ErrImagePull: container c of pod p"
        );
        let ready = json!({"kind": "Pod", "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(assess(&ready).status, Healthy);
    }

    /// Resource snapshots as `kubectl get -o yaml` prints them (deploy/tests/snapshots/), each
    /// with the verdict Argo CD's health checks give it.
    const SNAPSHOTS: [(&str, &str, HealthStatus); 14] = [
        (
            "pod-crash-restarting",
            include_str!("../tests/snapshots/pod-crash-restarting.yaml"),
            Failed,
        ),
        (
            "pod-waiting-error",
            include_str!("../tests/snapshots/pod-waiting-error.yaml"),
            Failed,
        ),
        (
            "pod-restarted-now-ready",
            include_str!("../tests/snapshots/pod-restarted-now-ready.yaml"),
            Healthy,
        ),
        (
            "hpa-failed-get-scale",
            include_str!("../tests/snapshots/hpa-failed-get-scale.yaml"),
            Failed,
        ),
        (
            "hpa-no-metrics-yet",
            include_str!("../tests/snapshots/hpa-no-metrics-yet.yaml"),
            Progressing,
        ),
        (
            "hpa-new",
            include_str!("../tests/snapshots/hpa-new.yaml"),
            Progressing,
        ),
        (
            "hpa-active",
            include_str!("../tests/snapshots/hpa-active.yaml"),
            Healthy,
        ),
        (
            "apiservice-unavailable",
            include_str!("../tests/snapshots/apiservice-unavailable.yaml"),
            Progressing,
        ),
        (
            "apiservice-available",
            include_str!("../tests/snapshots/apiservice-available.yaml"),
            Healthy,
        ),
        (
            "service-load-balancer-pending",
            include_str!("../tests/snapshots/service-load-balancer-pending.yaml"),
            Progressing,
        ),
        (
            "service-load-balancer-ready",
            include_str!("../tests/snapshots/service-load-balancer-ready.yaml"),
            Healthy,
        ),
        (
            "ingress-pending",
            include_str!("../tests/snapshots/ingress-pending.yaml"),
            Progressing,
        ),
        (
            "ingress-ready",
            include_str!("../tests/snapshots/ingress-ready.yaml"),
            Healthy,
        ),
        (
            "a ClusterIP service",
            "{kind: Service, metadata: {name: web}, spec: {type: ClusterIP}}",
            Healthy,
        ),
    ];

    fn snapshot(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn snapshots_get_the_verdicts_argo_cd_gives_them() {
        for (name, yaml, expected) in SNAPSHOTS {
            let verdict = assess(&snapshot(yaml));
            assert_eq!(verdict.status, expected, "{name}: {}", verdict.message);
        }
        let crashing = assess(&snapshot(SNAPSHOTS[0].1));
        assert_eq!(
            crashing.message,
            "Error: container api of pod api-7c9f8d6b5-x2x9k exited with code 1 and restarted 4 times"
        );
        let cannot_scale = assess(&snapshot(SNAPSHOTS[3].1));
        assert!(
            cannot_scale
                .message
                .starts_with("AbleToScale FailedGetScale: "),
            "{}",
            cannot_scale.message
        );
    }

    #[test]
    fn addresses_need_not_be_waited_for_without_a_load_balancer() {
        let lenient = HealthOptions {
            wait_for_addresses: false,
        };
        for name in ["service-load-balancer-pending", "ingress-pending"] {
            let (_, yaml, _) = SNAPSHOTS.iter().find(|(n, ..)| *n == name).unwrap();
            assert_eq!(
                assess_with(&snapshot(yaml), &lenient).status,
                Healthy,
                "{name}"
            );
        }
    }

    #[test]
    fn a_snapshot_with_a_duplicate_key_is_refused_naming_the_key_and_line() {
        // As `coxswain health -f` reads snapshot files.
        let text = include_str!("../tests/snapshots/refused/duplicate-key.yaml");
        let error = serde_saphyr::from_multiple::<Value>(text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("duplicate mapping key: app"), "{error}");
        assert!(error.contains("line 10 column 22"), "{error}");
    }

    #[test]
    fn everything_else_by_kstatus() {
        let cr = |status: Value| json!({"kind": "Widget", "metadata": {"generation": 2}, "status": status});
        assert_eq!(
            assess(&json!({"kind": "ConfigMap", "metadata": {}})).status,
            Healthy
        );
        assert_eq!(
            assess(&cr(
                json!({"conditions": [{"type": "Ready", "status": "True"}]})
            ))
            .status,
            Healthy
        );
        assert_eq!(
            assess(&cr(
                json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting"}]})
            ))
            .status,
            Progressing
        );
        assert_eq!(
            assess(&cr(
                json!({"conditions": [{"type": "Stalled", "status": "True", "reason": "Bad"}]})
            ))
            .status,
            Failed
        );
        assert_eq!(
            assess(&cr(
                json!({"conditions": [{"type": "Reconciling", "status": "True"}]})
            ))
            .status,
            Progressing
        );
        assert_eq!(assess(&cr(json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}))).status, Progressing);
        assert_eq!(assess(&json!({"kind": "CustomResourceDefinition", "status": {"conditions": [{"type": "Established", "status": "True"}]}})).status, Healthy);
    }
}
