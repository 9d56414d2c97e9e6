//! Drift: whether the live objects of a release's deployed revision still hold what it
//! applied, in the fields the release manages. Each object is applied as a server-side dry run
//! without force, as Coxswain's field manager: the API server answers a conflict for every
//! field another manager changed since (and took over), naming that manager. That is drift,
//! unless the manager is one the agent leaves alone (an autoscaler scaling replicas). An
//! object that is gone is drift too. Nothing is written unless asked to correct: then the
//! drifted objects are applied again, with force.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::apply::labelled;
use crate::history::RevisionStatus;
use crate::render::Rendered;
use crate::{DeployError, lock};

/// One field another manager changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftedField {
    /// The object (`apps/v1/Deployment shop/web`).
    pub object: String,
    /// Its field path (`.spec.replicas`); `(deleted)` when the object is gone.
    pub field: String,
    /// Who changed it (`kubectl-edit`); empty for a deleted object.
    pub manager: String,
}

/// What a drift check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// The revision checked.
    pub revision: u32,
    /// Its version.
    pub version: String,
    /// Every drifted field.
    pub fields: Vec<DriftedField>,
    /// The drifted objects were applied again.
    pub corrected: bool,
}

impl Drift {
    /// `N field(s) changed: <object> <field> (by <manager>); ...`, for an event's reason.
    pub fn summary(&self) -> String {
        let each: Vec<String> = self
            .fields
            .iter()
            .map(|f| match f.manager.as_str() {
                "" => format!("{} {}", f.object, f.field),
                m => format!("{} {} (by {m})", f.object, f.field),
            })
            .collect();
        format!(
            "{} field(s) drifted: {}",
            self.fields.len(),
            each.join("; ")
        )
    }
}

/// Whether `manager` is one whose changes are not drift: an exact name of `ignore`, or a
/// prefix of it ending in `*`.
fn ignored(manager: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|i| match i.strip_suffix('*') {
        Some(prefix) => manager.starts_with(prefix),
        None => manager == i,
    })
}

impl Engine {
    /// Checks release `name` in `namespace` for drift from its deployed revision, and with
    /// `correct` applies the drifted objects again. `None` when there is no deployed revision,
    /// no drift, or another operation holds the release's lock (the next check tries again).
    pub async fn check_drift(
        &self,
        namespace: &str,
        name: &str,
        correct: bool,
        ignore: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Drift>, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = self.cluster.client();
        // A holder of its own: the agent's deploys hold the lock as the agent, and a holder
        // counts its own lock as free.
        let holder = format!("{}/drift", self.config.holder);
        let lease = self.config.lease;
        let guard = match lock::acquire(
            client,
            namespace,
            name,
            &holder,
            lease,
            Duration::ZERO,
            cancel,
        )
        .await
        {
            Ok(guard) => guard,
            Err(DeployError::Locked { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        // The history read under the lock: the revision no deploy is replacing right now.
        let outcome = match self.history(namespace, name).await {
            Ok(revisions) => match revisions
                .iter()
                .rev()
                .find(|r| r.status == RevisionStatus::Deployed)
            {
                Some(deployed) => {
                    self.drift_of(deployed, namespace, name, correct, ignore, deadline)
                        .await
                }
                None => Ok(Drift::default()),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = guard.release(deadline).await {
            tracing::warn!(%error, release = name, "cannot release the lock after a drift check");
        }
        let drift = outcome?;
        Ok((!drift.fields.is_empty()).then_some(drift))
    }

    /// The drift of `deployed`'s objects, and with `correct` the drifted ones applied again.
    async fn drift_of(
        &self,
        deployed: &crate::history::Revision,
        namespace: &str,
        name: &str,
        correct: bool,
        ignore: &[String],
        deadline: Instant,
    ) -> Result<Drift, DeployError> {
        let mut drift = Drift {
            revision: deployed.number,
            version: deployed.version.clone(),
            ..Drift::default()
        };
        let mut drifted = Vec::new();
        for object in Rendered::from_objects(deployed.objects.clone()).objects {
            let applied = labelled(&object, name, namespace);
            let fields = self
                .object_drift(&applied, namespace, ignore, deadline)
                .await?;
            if !fields.is_empty() {
                drift.fields.extend(fields);
                drifted.push(applied);
            }
        }
        if correct && !drifted.is_empty() {
            for object in &drifted {
                self.cluster
                    .apply(object, namespace, false, deadline)
                    .await?;
            }
            drift.corrected = true;
        }
        Ok(drift)
    }

    /// The drifted fields of one object as the release applies it.
    async fn object_drift(
        &self,
        applied: &serde_json::Value,
        namespace: &str,
        ignore: &[String],
        deadline: Instant,
    ) -> Result<Vec<DriftedField>, DeployError> {
        let (_, target) = self.cluster.api_for(applied, namespace, deadline).await?;
        let object = target.to_string();
        if self.cluster.get(&target, deadline).await?.is_none() {
            return Ok(vec![DriftedField {
                object,
                field: "(deleted)".into(),
                manager: String::new(),
            }]);
        }
        let conflicts = self
            .cluster
            .apply_conflicts(applied, namespace, deadline)
            .await?;
        Ok(conflicts
            .into_iter()
            .filter(|(_, manager)| !ignored(manager, ignore))
            .map(|(field, manager)| DriftedField {
                object: object.clone(),
                field,
                manager,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_are_left_alone_by_name_or_prefix() {
        let ignore = ["kube-controller-manager".to_owned(), "keda-*".to_owned()];
        assert!(ignored("kube-controller-manager", &ignore));
        assert!(ignored("keda-operator", &ignore));
        assert!(!ignored("kubectl-edit", &ignore));
        let drift = Drift {
            revision: 2,
            version: "1.0".into(),
            fields: vec![DriftedField {
                object: "apps/v1/Deployment shop/web".into(),
                field: ".spec.replicas".into(),
                manager: "kubectl-edit".into(),
            }],
            corrected: false,
        };
        assert_eq!(
            drift.summary(),
            "1 field(s) drifted: apps/v1/Deployment shop/web .spec.replicas (by kubectl-edit)"
        );
    }
}
