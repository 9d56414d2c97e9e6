//! The release engine. Observe -> decide -> act: [`decide`] is a pure function from what was
//! last observed to the next [`Action`]; [`Engine::deploy`] acts on it. A rollback is not a
//! second path: it is "apply revision N-1" through the same apply and health steps.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use proto::{HealthPolicy, HealthStatus, Phase, ResourceHealth, RollbackPolicy};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, MANAGED_BY, ObjectRef, RELEASE_LABEL};
use crate::health::{self, Assessment};
use crate::history::{self, Revision, RevisionStatus};
use crate::lock;
use crate::render::Rendered;
use crate::{DeployError, probe};

/// Annotation that keeps an object when it leaves the release (no prune).
pub const KEEP_ANNOTATION: &str = "coxswain.dev/keep";

/// What to deploy.
#[derive(Debug, Clone)]
pub struct Release {
    /// Release name (DNS-1123 label).
    pub name: String,
    /// Namespace of the release: its history, its lock, and its namespaced objects by default.
    pub namespace: String,
    /// Human version.
    pub version: String,
    /// The intent that asked for it, for idempotency.
    pub intent_id: Option<String>,
    /// The rendered manifests.
    pub rendered: Rendered,
    /// Deadline and extra checks.
    pub health: HealthPolicy,
    /// What happens on failure.
    pub rollback: RollbackPolicy,
    /// Set when this deploy re-applies an earlier revision on request (`release rollback`).
    pub rollback_of: Option<u32>,
    /// Wait for health (and run tests and probes) before recording the revision deployed.
    /// Without it the revision is recorded deployed once applied, and nothing rolls back.
    pub wait: bool,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Who holds the release lock while an operation runs (agent name, user@host).
    pub holder: String,
    /// Lease of the release lock; a crashed holder's lock frees after this.
    pub lease: Duration,
    /// How long to wait for another operation on the same release before giving up.
    pub lock_wait: Duration,
    /// History records kept per release.
    pub history: usize,
    /// How often health is polled.
    pub poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            holder: "coxswain".into(),
            lease: Duration::from_secs(15),
            lock_wait: Duration::from_secs(60),
            history: 10,
            poll: Duration::from_millis(250),
        }
    }
}

/// A step the engine reached, as it happens (the agent turns these into outcome events).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Phase reached.
    pub phase: Phase,
    /// Revision it concerns.
    pub revision: u32,
    /// Why, for failures.
    pub reason: Option<String>,
    /// Per-object health, when known.
    pub resources: Vec<ResourceHealth>,
    /// True when nothing follows for this deploy.
    pub terminal: bool,
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Final phase: succeeded, failed, rolled_back, rollback_failed or superseded.
    pub phase: Phase,
    /// The revision it ended on.
    pub revision: Option<u32>,
    /// Why, for anything but success.
    pub reason: Option<String>,
    /// Per-object health at the end.
    pub resources: Vec<ResourceHealth>,
    /// True when the intent had already completed and nothing was applied now.
    pub replayed: bool,
}

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

/// Why a health wait ended without success.
enum Unhealthy {
    Failed(String, Vec<ResourceHealth>),
    Cancelled,
}

/// Deploys releases to one cluster.
#[derive(Debug)]
pub struct Engine {
    cluster: Cluster,
    config: EngineConfig,
}

fn labelled(object: &Value, release: &str) -> Value {
    let mut o = object.clone();
    if !o["metadata"]["labels"].is_object() {
        o["metadata"]["labels"] = json!({});
    }
    o["metadata"]["labels"][MANAGED_BY] = "coxswain".into();
    o["metadata"]["labels"][RELEASE_LABEL] = release.into();
    o
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

impl Engine {
    /// An engine for the cluster behind `client`.
    pub fn new(client: kube::Client, config: EngineConfig) -> Self {
        Self {
            cluster: Cluster::new(client),
            config,
        }
    }

    /// The history of a release, oldest first.
    pub async fn history(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Vec<Revision>, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        history::list(self.cluster.client(), namespace, release, deadline).await
    }

    /// Re-applies an earlier revision (`to`, or the one deployed before the current one)
    /// through the normal deploy path.
    #[allow(
        clippy::too_many_arguments,
        reason = "a rollback is a deploy with a target"
    )]
    pub async fn rollback(
        &mut self,
        namespace: &str,
        name: &str,
        to: Option<u32>,
        intent_id: Option<String>,
        health: HealthPolicy,
        observe: &(dyn Fn(&Progress) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<Report, DeployError> {
        let revisions = self.history(namespace, name).await?;
        let current = revisions
            .iter()
            .rev()
            .find(|r| r.status == RevisionStatus::Deployed)
            .map(|r| r.number);
        let was_deployed =
            |r: &&Revision| matches!(r.outcome, Some(Phase::Succeeded | Phase::RolledBack));
        let target = match to {
            Some(n) => revisions.iter().find(|r| r.number == n),
            None => revisions
                .iter()
                .rev()
                .filter(was_deployed)
                .find(|r| current.is_none_or(|c| r.number < c)),
        };
        let Some(target) = target.cloned() else {
            return Err(DeployError::NoRevision {
                release: name.to_owned(),
                wanted: to.map_or_else(
                    || "deployed before the current one".to_owned(),
                    |n| n.to_string(),
                ),
            });
        };
        let release = Release {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            version: target.version.clone(),
            intent_id,
            rendered: Rendered::from_objects(target.objects.clone()),
            health,
            rollback: RollbackPolicy::default(),
            rollback_of: Some(target.number),
            wait: true,
        };
        self.deploy(release, observe, cancel).await
    }

    /// A server-side dry run of every object, as a readable diff against the live objects.
    pub async fn diff(
        &mut self,
        rendered: &Rendered,
        namespace: &str,
        release: &str,
    ) -> Result<String, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut out = String::new();
        for object in rendered.objects.iter().chain(rendered.tests.iter()) {
            let object = labelled(object, release);
            let (_, target) = self.cluster.api_for(&object, namespace, deadline).await?;
            let live = self.cluster.get(&target, deadline).await?;
            let after = match self.cluster.apply(&object, namespace, true, deadline).await {
                Ok((_, after)) => after,
                // A namespace created by this release does not exist yet: show the object.
                Err(DeployError::Api {
                    source: kube::Error::Api(s),
                    ..
                }) if s.code == 404 => object.clone(),
                Err(e) => return Err(e),
            };
            let show = |v: &Option<Value>| v.as_ref().map(comparable).unwrap_or_default();
            let (before, after) = (show(&live), show(&Some(after)));
            if before == after {
                continue;
            }
            out.push_str(&format!(
                "--- {target} (live)\n+++ {target} (after apply)\n"
            ));
            let diff = similar::TextDiff::from_lines(&before, &after);
            for change in diff.iter_all_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                out.push_str(&format!("{sign}{change}"));
            }
        }
        Ok(out)
    }

    /// Makes sure the release namespace exists, for the lock and the history.
    async fn ensure_namespace(
        &mut self,
        namespace: &str,
        deadline: Instant,
    ) -> Result<(), DeployError> {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {MANAGED_BY: "coxswain"}}});
        let target = ObjectRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: namespace.into(),
        };
        if self.cluster.get(&target, deadline).await?.is_none() {
            self.cluster.apply(&ns, namespace, false, deadline).await?;
        }
        Ok(())
    }

    /// Deploys a release: lock, record, apply, wait, verify, prune, commit; on failure roll back
    /// to the last deployed revision through the same steps. `observe` sees every phase.
    pub async fn deploy(
        &mut self,
        release: Release,
        observe: &(dyn Fn(&Progress) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<Report, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(release.health.timeout_secs);
        let ns = release.namespace.clone();
        self.ensure_namespace(&ns, deadline).await?;
        let lock = lock::acquire(
            self.cluster.client(),
            &ns,
            &release.name,
            &self.config.holder,
            self.config.lease,
            self.config.lock_wait,
            cancel,
        )
        .await?;
        let result = self
            .deploy_locked(&release, deadline, observe, cancel)
            .await;
        // Hand the lock back even when the deploy failed; a release failure must not leave it.
        let unlock = lock.release(Instant::now() + Duration::from_secs(30)).await;
        let report = result?;
        unlock?;
        Ok(report)
    }

    async fn deploy_locked(
        &mut self,
        release: &Release,
        mut deadline: Instant,
        observe: &(dyn Fn(&Progress) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<Report, DeployError> {
        let client = self.cluster.client().clone();
        let ns = release.namespace.as_str();
        let mut revisions = history::list(&client, ns, &release.name, deadline).await?;

        // Idempotency: an intent that already completed is reported again, not applied again.
        if let Some(id) = &release.intent_id
            && let Some(done) = revisions
                .iter()
                .rev()
                .find(|r| r.intent_id.as_ref() == Some(id) && r.outcome.is_some())
        {
            return Ok(Report {
                phase: done.outcome.unwrap_or(Phase::Succeeded),
                revision: Some(done.number),
                reason: done.reason.clone(),
                resources: Vec::new(),
                replayed: true,
            });
        }
        // A pending revision under a lock we now hold was abandoned by a crashed operation.
        for r in revisions
            .iter_mut()
            .filter(|r| r.status == RevisionStatus::Pending)
        {
            r.status = RevisionStatus::Failed;
            r.reason = Some(
                "abandoned: the operation that held the release lock stopped before finishing"
                    .into(),
            );
            r.updated_at = Timestamp::now();
            history::save(&client, r, deadline).await?;
            tracing::warn!(
                release = release.name,
                revision = r.number,
                "marked an abandoned revision failed"
            );
        }
        let last_deployed = revisions
            .iter()
            .rev()
            .find(|r| r.status == RevisionStatus::Deployed)
            .cloned();
        let mut number = revisions.last().map_or(1, |r| r.number + 1);
        let now = Timestamp::now();
        let mut current = Revision {
            release: release.name.clone(),
            namespace: ns.to_owned(),
            number,
            status: RevisionStatus::Pending,
            intent_id: release.intent_id.clone(),
            outcome: None,
            version: release.version.clone(),
            digest: release.rendered.digest.clone(),
            objects: release.rendered.all(),
            inventory: Vec::new(),
            rollback_of: release.rollback_of,
            reason: None,
            created_at: now,
            updated_at: now,
        };
        history::save(&client, &current, deadline).await?;

        let mut rendered = release.rendered.clone();
        let mut prune_base: Vec<ObjectRef> = last_deployed
            .as_ref()
            .map(|r| r.inventory.clone())
            .unwrap_or_default();
        let mut keep: Vec<Value> = last_deployed
            .as_ref()
            .map(|r| r.objects.clone())
            .unwrap_or_default();
        let mut situation = Situation {
            attempt: Attempt::Forward,
            last: Observation::Started,
            can_roll_back: release.rollback.enabled && last_deployed.is_some(),
            wait: release.wait,
        };
        let mut reason: Option<String> = None;
        let mut resources: Vec<ResourceHealth> = Vec::new();
        let say = |phase: Phase,
                   number: u32,
                   reason: &Option<String>,
                   resources: &[ResourceHealth],
                   terminal: bool| {
            observe(&Progress {
                phase,
                revision: number,
                reason: reason.clone(),
                resources: resources.to_vec(),
                terminal,
            });
        };

        loop {
            let action = decide(&situation);
            tracing::debug!(
                release = release.name,
                revision = number,
                ?situation,
                ?action,
                "release engine step"
            );
            situation.last = match action {
                Action::Apply => {
                    let phase = match situation.attempt {
                        Attempt::Forward => Phase::Applying,
                        Attempt::Rollback => Phase::RollingBack,
                    };
                    let rolling_back = situation.attempt == Attempt::Rollback;
                    let why = if rolling_back { reason.clone() } else { None };
                    say(phase, number, &why, &[], false);
                    match self
                        .apply_all(&rendered.objects, release, &mut current.inventory, deadline)
                        .await
                    {
                        Ok(()) => {
                            history::save(&client, &current, deadline).await?;
                            if cancel.is_cancelled() {
                                Observation::Cancelled
                            } else {
                                Observation::Applied
                            }
                        }
                        Err(e) if rolling_back => {
                            reason = Some(format!("rollback apply failed: {e}"));
                            Observation::Failed
                        }
                        Err(e) => {
                            reason = Some(format!("apply failed: {e}"));
                            Observation::Failed
                        }
                    }
                }
                Action::WaitHealthy => {
                    if situation.attempt == Attempt::Forward {
                        say(Phase::Progressing, number, &None, &[], false);
                    }
                    match self
                        .wait_healthy(&current.inventory, deadline, cancel)
                        .await
                    {
                        Ok(health) => {
                            resources = health;
                            Observation::Healthy
                        }
                        Err(Unhealthy::Failed(why, health)) => {
                            reason = Some(match situation.attempt {
                                Attempt::Forward => why,
                                Attempt::Rollback => {
                                    format!("rollback did not become healthy: {why}")
                                }
                            });
                            resources = health;
                            Observation::Failed
                        }
                        Err(Unhealthy::Cancelled) => Observation::Cancelled,
                    }
                }
                Action::Verify => match self.verify(&rendered.tests, release, deadline).await {
                    Ok(()) => Observation::Verified,
                    Err(why) => {
                        reason = Some(why);
                        Observation::Failed
                    }
                },
                Action::Prune => {
                    self.prune(&prune_base, &current.inventory, &keep, deadline)
                        .await;
                    Observation::Pruned
                }
                Action::Commit => {
                    for r in revisions
                        .iter_mut()
                        .filter(|r| r.status == RevisionStatus::Deployed)
                    {
                        r.status = RevisionStatus::Superseded;
                        r.updated_at = Timestamp::now();
                        history::save(&client, r, deadline).await?;
                    }
                    current.status = RevisionStatus::Deployed;
                    current.outcome = Some(match situation.attempt {
                        Attempt::Forward => Phase::Succeeded,
                        Attempt::Rollback => Phase::RolledBack,
                    });
                    current.updated_at = Timestamp::now();
                    history::save(&client, &current, deadline).await?;
                    revisions.push(current.clone());
                    if let Err(error) =
                        history::trim(&client, &revisions, self.config.history, deadline).await
                    {
                        tracing::warn!(%error, release = release.name, "cannot trim release history");
                    }
                    Observation::Committed
                }
                Action::RollBack => {
                    // The rollback gets its own deadline: the forward attempt may have used it all.
                    deadline = Instant::now() + Duration::from_secs(release.health.timeout_secs);
                    let Some(target) = last_deployed.clone() else {
                        situation.can_roll_back = false;
                        continue;
                    };
                    current.status = RevisionStatus::Failed;
                    current.outcome = Some(Phase::Failed);
                    current.reason = reason.clone();
                    current.updated_at = Timestamp::now();
                    history::save(&client, &current, deadline).await?;
                    say(Phase::Failed, number, &reason, &resources, false);
                    revisions.push(current.clone());
                    // The failed revision's objects are what a successful rollback prunes.
                    prune_base = current.inventory.clone();
                    keep = current.objects.clone();
                    number += 1;
                    let now = Timestamp::now();
                    current = Revision {
                        number,
                        status: RevisionStatus::Pending,
                        outcome: None,
                        version: target.version.clone(),
                        digest: target.digest.clone(),
                        objects: target.objects.clone(),
                        inventory: Vec::new(),
                        rollback_of: Some(target.number),
                        reason: reason.clone(),
                        created_at: now,
                        updated_at: now,
                        ..current
                    };
                    history::save(&client, &current, deadline).await?;
                    rendered = Rendered::from_objects(target.objects.clone());
                    situation = Situation {
                        attempt: Attempt::Rollback,
                        last: Observation::Started,
                        can_roll_back: false,
                        wait: true,
                    };
                    continue;
                }
                Action::Supersede => {
                    current.status = RevisionStatus::Superseded;
                    current.outcome = Some(Phase::Superseded);
                    current.reason = Some("superseded by a newer intent".into());
                    current.updated_at = Timestamp::now();
                    history::save(&client, &current, Instant::now() + Duration::from_secs(30))
                        .await?;
                    say(Phase::Superseded, number, &current.reason, &[], true);
                    return Ok(Report {
                        phase: Phase::Superseded,
                        revision: Some(number),
                        reason: current.reason,
                        resources,
                        replayed: false,
                    });
                }
                Action::Finish(phase) => {
                    return self
                        .finish(
                            release,
                            current,
                            phase,
                            reason,
                            resources,
                            last_deployed.is_none(),
                            deadline,
                            observe,
                        )
                        .await;
                }
            };
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the end state of a deploy")]
    async fn finish(
        &mut self,
        release: &Release,
        mut current: Revision,
        phase: Phase,
        reason: Option<String>,
        resources: Vec<ResourceHealth>,
        first_install: bool,
        deadline: Instant,
        observe: &(dyn Fn(&Progress) + Send + Sync),
    ) -> Result<Report, DeployError> {
        let client = self.cluster.client().clone();
        let save_by = Instant::now() + Duration::from_secs(30);
        if matches!(phase, Phase::Failed | Phase::RollbackFailed) {
            current.status = RevisionStatus::Failed;
            current.outcome = Some(phase);
            current.reason = reason.clone();
            current.updated_at = Timestamp::now();
            history::save(&client, &current, save_by).await?;
            if phase == Phase::Failed && first_install && release.rollback.uninstall_failed_install
            {
                let inventory = current.inventory.clone();
                self.prune(&inventory, &[], &[], deadline.max(save_by))
                    .await;
            }
        }
        observe(&Progress {
            phase,
            revision: current.number,
            reason: reason.clone(),
            resources: resources.clone(),
            terminal: true,
        });
        Ok(Report {
            phase,
            revision: Some(current.number),
            reason,
            resources,
            replayed: false,
        })
    }

    /// Applies objects in install order; after CRDs, waits until they are established and
    /// discovers again so their custom resources can follow in the same release.
    async fn apply_all(
        &mut self,
        objects: &[Value],
        release: &Release,
        inventory: &mut Vec<ObjectRef>,
        deadline: Instant,
    ) -> Result<(), DeployError> {
        inventory.clear();
        let mut pending_crds: Vec<ObjectRef> = Vec::new();
        for object in objects {
            let is_crd = object["kind"] == "CustomResourceDefinition";
            if !is_crd && !pending_crds.is_empty() {
                self.wait_established(&pending_crds, deadline).await?;
                pending_crds.clear();
                self.cluster.refresh(deadline).await?;
            }
            let (target, _) = self
                .cluster
                .apply(
                    &labelled(object, &release.name),
                    &release.namespace,
                    false,
                    deadline,
                )
                .await?;
            tracing::debug!(release = release.name, object = %target, "applied");
            if is_crd {
                pending_crds.push(target.clone());
            }
            inventory.push(target);
        }
        if !pending_crds.is_empty() {
            self.wait_established(&pending_crds, deadline).await?;
            self.cluster.refresh(deadline).await?;
        }
        Ok(())
    }

    async fn wait_established(
        &mut self,
        crds: &[ObjectRef],
        deadline: Instant,
    ) -> Result<(), DeployError> {
        for crd in crds {
            loop {
                let live = self.cluster.get(crd, deadline).await?;
                if live
                    .as_ref()
                    .is_some_and(|c| health::assess(c).status == HealthStatus::Healthy)
                {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(DeployError::DeadlineExceeded {
                        during: format!("waiting for {crd} to be established"),
                    });
                }
                tokio::time::sleep(self.config.poll.min(Duration::from_millis(100))).await;
            }
        }
        Ok(())
    }

    /// Polls every object until all are healthy; fails at once on a failed object or a pod that
    /// will not start; fails when the deadline passes.
    async fn wait_healthy(
        &mut self,
        inventory: &[ObjectRef],
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<ResourceHealth>, Unhealthy> {
        loop {
            let mut report = Vec::new();
            let mut failure = None;
            for target in inventory {
                let assessment = match self.cluster.get(target, deadline).await {
                    Ok(Some(live)) => {
                        let mut a = health::assess(&live);
                        if a.status != HealthStatus::Failed
                            && let Some(why) = self.failing_pods(target, &live, deadline).await
                        {
                            a = Assessment {
                                status: HealthStatus::Failed,
                                message: why,
                            };
                        }
                        a
                    }
                    Ok(None) => Assessment {
                        status: HealthStatus::Progressing,
                        message: "not found".into(),
                    },
                    Err(e) => Assessment {
                        status: HealthStatus::Unknown,
                        message: e.to_string(),
                    },
                };
                if assessment.status == HealthStatus::Failed && failure.is_none() {
                    failure = Some(format!(
                        "{} {}: {}",
                        target.kind, target.name, assessment.message
                    ));
                }
                report.push(resource_health(target, &assessment));
            }
            if let Some(why) = failure {
                return Err(Unhealthy::Failed(why, report));
            }
            if report.iter().all(|r| r.status == HealthStatus::Healthy) {
                return Ok(report);
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = report
                    .iter()
                    .filter(|r| r.status != HealthStatus::Healthy)
                    .map(|r| {
                        format!(
                            "{} {}: {}",
                            r.kind,
                            r.name,
                            r.message.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                return Err(Unhealthy::Failed(
                    format!(
                        "health deadline passed; still waiting for {}",
                        waiting.join("; ")
                    ),
                    report,
                ));
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Unhealthy::Cancelled),
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// The reason a workload's current pods will not start (crash loop, image pull), if any.
    /// Only pods of the current template count: pods of an older or newer ReplicaSet do not.
    async fn failing_pods(
        &mut self,
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
                let sets = self
                    .cluster
                    .list("apps/v1", "ReplicaSet", ns, &selector, deadline)
                    .await
                    .ok()?;
                let uid = &live["metadata"]["uid"];
                let rs = sets.iter().find(|rs| {
                    let owned = rs["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|r| &r["uid"] == uid));
                    let mut template = rs["spec"]["template"].clone();
                    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
                        labels.remove("pod-template-hash");
                    }
                    owned && template == live["spec"]["template"]
                })?;
                let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str()?;
                format!("{selector},pod-template-hash={hash}")
            }
            "StatefulSet" => {
                let revision = live["status"]["updateRevision"].as_str()?;
                format!("{selector},controller-revision-hash={revision}")
            }
            _ => return None,
        };
        let pods = self
            .cluster
            .list("v1", "Pod", ns, &current, deadline)
            .await
            .ok()?;
        pods.iter().find_map(health::pod_failure)
    }

    /// Runs test Jobs (created fresh, must complete) and HTTP probes.
    async fn verify(
        &mut self,
        tests: &[Value],
        release: &Release,
        deadline: Instant,
    ) -> Result<(), String> {
        if release.health.run_tests {
            for test in tests {
                let object = labelled(test, &release.name);
                let (_, target) = self
                    .cluster
                    .api_for(&object, &release.namespace, deadline)
                    .await
                    .map_err(|e| e.to_string())?;
                self.cluster
                    .delete(&target, deadline)
                    .await
                    .map_err(|e| e.to_string())?;
                // Wait until the previous run is gone before creating the new one.
                while self
                    .cluster
                    .get(&target, deadline)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "test {} from an earlier run is still being deleted",
                            target.name
                        ));
                    }
                    tokio::time::sleep(self.config.poll).await;
                }
                let mut object = object;
                if object["metadata"]["namespace"].is_null() {
                    object["metadata"]["namespace"] = release.namespace.clone().into();
                }
                self.cluster
                    .create(&object, &release.namespace, deadline)
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    let live = self
                        .cluster
                        .get(&target, deadline)
                        .await
                        .map_err(|e| e.to_string())?;
                    let a = live.as_ref().map(health::assess);
                    match a {
                        Some(a) if a.status == HealthStatus::Healthy => break,
                        Some(a) if a.status == HealthStatus::Failed => {
                            return Err(format!("test {} failed: {}", target.name, a.message));
                        }
                        _ if Instant::now() >= deadline => {
                            return Err(format!(
                                "test {} did not complete before the deadline",
                                target.name
                            ));
                        }
                        _ => tokio::time::sleep(self.config.poll).await,
                    }
                }
            }
        }
        for p in &release.health.http_probes {
            probe::run(p, deadline).await?;
        }
        Ok(())
    }

    /// Deletes what left the release (`before` minus `after`), except Namespaces, CRDs and
    /// objects annotated `coxswain.dev/keep: "true"`. Failures are logged, not fatal: the
    /// release is healthy; a leftover object is reported and retried next deploy.
    async fn prune(
        &mut self,
        before: &[ObjectRef],
        after: &[ObjectRef],
        manifests: &[Value],
        deadline: Instant,
    ) {
        let keep: BTreeSet<&ObjectRef> = after.iter().collect();
        let kept_by_annotation = |t: &ObjectRef| {
            manifests.iter().any(|m| {
                m["kind"] == t.kind.as_str()
                    && m["metadata"]["name"] == t.name.as_str()
                    && m["metadata"]["annotations"][KEEP_ANNOTATION] == "true"
            })
        };
        for target in before.iter().rev() {
            if keep.contains(target)
                || matches!(
                    target.kind.as_str(),
                    "Namespace" | "CustomResourceDefinition"
                )
                || kept_by_annotation(target)
            {
                continue;
            }
            match self.cluster.delete(target, deadline).await {
                Ok(()) => tracing::info!(object = %target, "pruned"),
                Err(error) => tracing::warn!(object = %target, %error, "cannot prune"),
            }
        }
    }
}

/// An object as a diff shows it: YAML without the fields the server keeps.
fn comparable(object: &Value) -> String {
    let mut o = object.clone();
    if let Some(meta) = o["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    serde_saphyr::to_string(&o).unwrap_or_default()
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
