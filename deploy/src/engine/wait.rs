//! Waiting for health: every applied object assessed until all are healthy, one fails, or the
//! deadline passes; a workload whose current pods will not start fails at once.

use proto::{HealthStatus, Phase, ResourceHealth};
use serde_json::Value;
use tokio::time::Instant;

use super::run::Run;
use super::{Attempt, Observation};
use crate::cluster::{Cluster, ObjectRef};
use crate::health::{self, Assessment};
use crate::poll::{Check, Stopped, wait_until};

/// An object failed: why, and every object's health at that look.
struct Unhealthy {
    why: String,
    resources: Vec<ResourceHealth>,
}

impl Run<'_> {
    /// Polls every object of the current revision until all are healthy; fails at once on a
    /// failed object or a pod that will not start; fails when the deadline passes. A cancelled
    /// wait supersedes the attempt.
    pub(super) async fn wait_healthy(&mut self) -> Observation {
        if self.situation.attempt == Attempt::Forward {
            self.say(Phase::Progressing, None, &[], false);
        }
        let (cluster, inventory, deadline) = (self.cluster, &self.current.inventory, self.deadline);
        let options = health::HealthOptions {
            wait_for_addresses: self.release.health.wait_for_addresses,
        };
        let waited = wait_until(
            || look(cluster, inventory, options, deadline),
            self.config.poll,
            deadline,
            self.cancel,
        )
        .await;
        let Unhealthy { why, resources } = match waited {
            Ok(resources) => {
                self.resources = resources;
                return Observation::Healthy;
            }
            Err(Stopped::Cancelled) => return Observation::Cancelled,
            Err(Stopped::Failed(unhealthy)) => unhealthy,
            Err(Stopped::TimedOut(resources)) => Unhealthy {
                why: deadline_passed(&resources),
                resources,
            },
        };
        self.reason = Some(match self.situation.attempt {
            Attempt::Forward => why,
            Attempt::Rollback => format!("rollback did not become healthy: {why}"),
        });
        self.resources = resources;
        Observation::Failed
    }
}

/// One look at every object: done when all are healthy, failed at the first failed one.
async fn look(
    cluster: &Cluster,
    inventory: &[ObjectRef],
    options: health::HealthOptions,
    deadline: Instant,
) -> Result<Check<Vec<ResourceHealth>, Vec<ResourceHealth>>, Unhealthy> {
    let mut resources = Vec::new();
    let mut failure = None;
    for target in inventory {
        let health = resource_health(target, &assess(cluster, target, options, deadline).await);
        if health.status == HealthStatus::Failed && failure.is_none() {
            failure = Some(describe(&health));
        }
        resources.push(health);
    }
    if let Some(why) = failure {
        return Err(Unhealthy { why, resources });
    }
    Ok(if resources.iter().all(is_healthy) {
        Check::Done(resources)
    } else {
        Check::Pending(resources)
    })
}

/// The health of one object as it is now; a workload whose current pods will not start has
/// failed, an object not there yet is progressing, an unreadable one unknown.
async fn assess(
    cluster: &Cluster,
    target: &ObjectRef,
    options: health::HealthOptions,
    deadline: Instant,
) -> Assessment {
    match cluster.get(target, deadline).await {
        Ok(Some(live)) => {
            let a = health::assess_with(&live, &options);
            if a.status == HealthStatus::Failed {
                return a;
            }
            match failing_pods(cluster, target, &live, deadline).await {
                Some(why) => Assessment {
                    status: HealthStatus::Failed,
                    message: why,
                },
                None => a,
            }
        }
        Ok(None) => Assessment {
            status: HealthStatus::Progressing,
            message: "not found".into(),
        },
        Err(e) => Assessment {
            status: HealthStatus::Unknown,
            message: e.to_string(),
        },
    }
}

/// The reason a workload's current pods will not start (crash loop, image pull), if any.
/// Only pods of the current template count: pods of an older or newer ReplicaSet do not.
async fn failing_pods(
    cluster: &Cluster,
    target: &ObjectRef,
    live: &Value,
    deadline: Instant,
) -> Option<String> {
    if !health::has_pods(&target.kind) {
        return None;
    }
    let ns = target.namespace.as_deref()?;
    let selector = selector_of(live)?;
    let current = match target.kind.as_str() {
        "Deployment" => {
            let sets = cluster
                .list("apps/v1", "ReplicaSet", ns, &selector, deadline)
                .await
                .ok()?;
            let hash = current_template_hash(live, &sets)?;
            format!("{selector},pod-template-hash={hash}")
        }
        "StatefulSet" => {
            let revision = live["status"]["updateRevision"].as_str()?;
            format!("{selector},controller-revision-hash={revision}")
        }
        _ => return None,
    };
    let pods = cluster
        .list("v1", "Pod", ns, &current, deadline)
        .await
        .ok()?;
    pods.iter().find_map(health::pod_failure)
}

/// The `pod-template-hash` of the Deployment's ReplicaSet running its current template.
fn current_template_hash<'a>(deployment: &Value, sets: &'a [Value]) -> Option<&'a str> {
    let uid = &deployment["metadata"]["uid"];
    let rs = sets.iter().find(|rs| {
        let owned = rs["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| &r["uid"] == uid));
        let mut template = rs["spec"]["template"].clone();
        if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
            labels.remove("pod-template-hash");
        }
        owned && template == deployment["spec"]["template"]
    })?;
    rs["metadata"]["labels"]["pod-template-hash"].as_str()
}

/// A workload's label selector, `k=v,k=v`.
fn selector_of(object: &Value) -> Option<String> {
    let labels = object["spec"]["selector"]["matchLabels"].as_object()?;
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn resource_health(target: &ObjectRef, a: &Assessment) -> ResourceHealth {
    ResourceHealth {
        api_version: target.api_version.clone(),
        kind: target.kind.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        status: a.status,
        message: Some(a.message.clone()),
    }
}

fn is_healthy(r: &ResourceHealth) -> bool {
    r.status == HealthStatus::Healthy
}

/// `Deployment web: 1 of 2 updated replicas available`.
fn describe(r: &ResourceHealth) -> String {
    format!(
        "{} {}: {}",
        r.kind,
        r.name,
        r.message.as_deref().unwrap_or("")
    )
}

/// Why a health wait failed at its deadline: every object still awaited.
fn deadline_passed(resources: &[ResourceHealth]) -> String {
    let waiting: Vec<String> = resources
        .iter()
        .filter(|r| !is_healthy(r))
        .map(describe)
        .collect();
    format!(
        "health deadline passed; still waiting for {}",
        waiting.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": image}]}})
    }

    fn replica_set(owner: &str, image: &str, hash: &str) -> Value {
        let mut t = template(image);
        t["metadata"]["labels"]["pod-template-hash"] = hash.into();
        json!({"metadata": {"labels": {"pod-template-hash": hash},
                            "ownerReferences": [{"uid": owner}]},
               "spec": {"template": t}})
    }

    #[test]
    fn only_the_replica_set_of_the_current_template_counts() {
        let deployment = json!({"metadata": {"uid": "d1"},
            "spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}},
                     "template": template("web:2")}});
        let sets = [
            replica_set("d1", "web:1", "old"),
            replica_set("other", "web:2", "foreign"),
            replica_set("d1", "web:2", "new"),
        ];
        assert_eq!(current_template_hash(&deployment, &sets), Some("new"));
        assert_eq!(current_template_hash(&deployment, &sets[..2]), None);
        assert_eq!(
            selector_of(&deployment).as_deref(),
            Some("app=web,tier=front")
        );
    }

    #[test]
    fn a_passed_deadline_names_every_object_still_awaited() {
        let target = |name: &str| ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        };
        let resources = [
            resource_health(
                &target("web"),
                &Assessment {
                    status: HealthStatus::Progressing,
                    message: "1 of 2 updated replicas".into(),
                },
            ),
            resource_health(
                &target("api"),
                &Assessment {
                    status: HealthStatus::Healthy,
                    message: "2 of 2 replicas available".into(),
                },
            ),
        ];
        assert_eq!(
            deadline_passed(&resources),
            "health deadline passed; still waiting for Deployment web: 1 of 2 updated replicas"
        );
    }
}
