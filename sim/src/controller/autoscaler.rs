//! The horizontal pod autoscaler, without a metrics pipeline: every metric is at its target,
//! so an autoscaler that finds its target's scale is able to scale and active, and wants the
//! target's replicas within its bounds. It writes its status only; it does not scale.

use serde_json::{Value, json};

use super::{Pass, condition, conditions_of, int, snapshot};
use crate::metadata::meta;
use crate::store::Store;

pub(super) fn reconcile(store: &mut Store, pass: &Pass) {
    for hpa in snapshot(store, &pass.t.hpa) {
        let status = status(store, pass, &hpa);
        store.set_status(
            &pass.t.hpa,
            meta(&hpa, "namespace"),
            meta(&hpa, "name"),
            status,
        );
    }
}

/// The target's replicas, when the target exists and has a scale subresource.
fn target_replicas(store: &Store, pass: &Pass, hpa: &Value) -> Option<i64> {
    let target = &hpa["spec"]["scaleTargetRef"];
    let group = target["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .map_or("", |(group, _)| group);
    let rt = [&pass.t.deploy, &pass.t.sts, &pass.t.rs]
        .into_iter()
        .find(|rt| rt.group == group && target["kind"] == rt.kind.as_str())?;
    let object = store
        .get(rt, Some(meta(hpa, "namespace")), target["name"].as_str()?)
        .ok()?;
    Some(int(&object["spec"]["replicas"], 1))
}

fn status(store: &Store, pass: &Pass, hpa: &Value) -> Value {
    let old = conditions_of(hpa);
    let observed = int(&hpa["metadata"]["generation"], 1);
    let Some(current) = target_replicas(store, pass, hpa) else {
        let target = &hpa["spec"]["scaleTargetRef"];
        let message = format!(
            "the HPA controller was unable to get the target's current scale: {} {:?} not found",
            target["kind"].as_str().unwrap_or("?"),
            target["name"].as_str().unwrap_or("?"),
        );
        return json!({
            "observedGeneration": observed,
            "currentReplicas": 0,
            "desiredReplicas": 0,
            "conditions": [condition(&old, "AbleToScale", "False", "FailedGetScale", &message)],
        });
    };
    let min = int(&hpa["spec"]["minReplicas"], 1);
    let max = int(&hpa["spec"]["maxReplicas"], 1).max(min);
    let desired = current.clamp(min, max);
    let (limited, reason, message) = if current < min {
        (
            "True",
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if current > max {
        (
            "True",
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    } else {
        (
            "False",
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    json!({
        "observedGeneration": observed,
        "currentReplicas": current,
        "desiredReplicas": desired,
        "conditions": [
            condition(&old, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size"),
            condition(&old, "ScalingActive", "True", "ValidMetricFound", "every metric is at its target (simulated)"),
            condition(&old, "ScalingLimited", limited, reason, message),
        ],
    })
}
