//! Verifying a healthy rollout: test Jobs (an earlier run deleted first, then created fresh,
//! each must complete) and HTTP probes. A cancelled (superseded) release stops at once.

use proto::HealthStatus;
use serde_json::Value;

use super::Observation;
use super::apply::labelled;
use super::run::Run;
use crate::cluster::ObjectRef;
use crate::health;
use crate::poll::{Check, Stopped, wait_until};
use crate::probe::{self, ProbeError};

/// Why verification did not pass.
enum Unverified {
    /// A test or probe failed, or the deadline passed: why.
    Failed(String),
    /// The release was superseded meanwhile.
    Cancelled,
}

impl Run<'_> {
    /// Runs the test Jobs (unless the policy skips them), then the HTTP probes.
    pub(super) async fn verify(&mut self) -> Observation {
        match self.checks().await {
            Ok(()) => Observation::Verified,
            Err(Unverified::Failed(why)) => {
                self.reason = Some(why);
                Observation::Failed
            }
            Err(Unverified::Cancelled) => Observation::Cancelled,
        }
    }

    /// The test Jobs, then the probes; the first that does not pass ends verification.
    async fn checks(&self) -> Result<(), Unverified> {
        if self.release.health.run_tests {
            for test in &self.rendered.tests {
                self.test(test).await?;
            }
        }
        let scope = probe::Scope::new(
            &self.rendered.objects,
            &self.release.namespace,
            &self.config.probes,
        );
        for p in &self.release.health.http_probes {
            probe::run(p, &scope, self.deadline, self.cancel)
                .await
                .map_err(|e| match e {
                    ProbeError::Cancelled => Unverified::Cancelled,
                    failed => Unverified::Failed(failed.to_string()),
                })?;
        }
        Ok(())
    }

    /// One test Job: the previous run deleted and gone, a new one created, then completed.
    async fn test(&self, test: &Value) -> Result<(), Unverified> {
        let failed = |e: crate::DeployError| Unverified::Failed(e.to_string());
        let ns = self.release.namespace.as_str();
        let mut object = labelled(test, &self.release.name, ns);
        let (_, target) = self
            .cluster
            .api_for(&object, ns, self.deadline)
            .await
            .map_err(failed)?;
        self.cluster
            .delete(&target, self.deadline)
            .await
            .map_err(failed)?;
        // Wait until the previous run is gone before creating the new one.
        let gone = |live: Option<Value>| {
            Ok(if live.is_none() {
                Check::Done(())
            } else {
                Check::Pending(())
            })
        };
        let late = format!(
            "test {} from an earlier run is still being deleted",
            target.name
        );
        self.watch(&target, gone, late).await?;
        if object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = ns.into();
        }
        self.cluster
            .create(&object, ns, self.deadline)
            .await
            .map_err(failed)?;
        let completed = |live: Option<Value>| match live.as_ref().map(health::assess) {
            Some(a) if a.status == HealthStatus::Healthy => Ok(Check::Done(())),
            Some(a) if a.status == HealthStatus::Failed => {
                Err(format!("test {} failed: {}", target.name, a.message))
            }
            _ => Ok(Check::Pending(())),
        };
        let late = format!("test {} did not complete before the deadline", target.name);
        self.watch(&target, completed, late).await
    }

    /// Reads `target` until `verdict` on it is done or failed; `late` is why the deadline
    /// passing fails it.
    async fn watch(
        &self,
        target: &ObjectRef,
        verdict: impl Fn(Option<Value>) -> Result<Check<()>, String>,
        late: String,
    ) -> Result<(), Unverified> {
        let (cluster, deadline) = (self.cluster, self.deadline);
        let look = || async {
            verdict(
                cluster
                    .get(target, deadline)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        };
        wait_until(look, self.config.poll, deadline, self.cancel)
            .await
            .map_err(|stopped| match stopped {
                Stopped::Failed(why) => Unverified::Failed(why),
                Stopped::TimedOut(()) => Unverified::Failed(late),
                Stopped::Cancelled => Unverified::Cancelled,
            })
    }
}
