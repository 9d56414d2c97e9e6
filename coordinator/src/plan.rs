//! Pure rollout planning and policy: which clusters an environment targets, how they split
//! into waves, the promotion gate, what a failure reverts to, the new rollout record, and the
//! next step of a rollout given what its clusters reported. Nothing here does IO.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proto::{
    AppliedPolicy, ClusterProgress, ClusterRecord, Manifests, Phase, ReleaseState, RevertTarget,
    RollbackRequest, Rollout, RolloutRequest, RolloutStatus, SCHEMA_VERSION,
};

/// Does a cluster carry every label of the selector?
pub fn matches(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A cluster whose heartbeat is older than this is not targeted: its agent is most likely
/// gone (agents write theirs every minute).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(180);

/// Why a registered cluster cannot be targeted now, if it cannot.
pub fn unavailable(cluster: &ClusterRecord, now: Timestamp) -> Option<String> {
    if cluster.status == proto::AgentStatus::Draining {
        return Some("its agent is draining (shutting down)".into());
    }
    let age = now.duration_since(cluster.heartbeat_at);
    let stale = jiff::SignedDuration::try_from(STALE_AFTER).unwrap_or(jiff::SignedDuration::MAX);
    (age > stale).then(|| {
        format!(
            "its agent's last heartbeat was {}s ago (stale after {}s)",
            age.as_secs(),
            STALE_AFTER.as_secs()
        )
    })
}

/// The registered clusters an environment selects, by name.
pub fn targets(clusters: &[ClusterRecord], selector: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = clusters
        .iter()
        .filter(|c| matches(&c.labels, selector))
        .map(|c| c.name.clone())
        .collect();
    names.sort();
    names
}

/// Splits targets into waves: each wave selector takes the targets it matches that no earlier
/// wave took; what is left forms a last wave. No wave selectors: one wave.
pub fn waves(
    clusters: &[ClusterRecord],
    targets: &[String],
    selectors: &[BTreeMap<String, String>],
) -> Vec<Vec<String>> {
    // By name, so 10,000 clusters are split in linear time.
    let labels: std::collections::HashMap<&str, &BTreeMap<String, String>> = clusters
        .iter()
        .map(|c| (c.name.as_str(), &c.labels))
        .collect();
    let no_labels = BTreeMap::new();
    let labels_of = |name: &str| labels.get(name).copied().unwrap_or(&no_labels);
    let mut left: Vec<String> = targets.to_vec();
    let mut out = Vec::new();
    for selector in selectors {
        let (wave, rest): (Vec<String>, Vec<String>) = left
            .into_iter()
            .partition(|n| matches(labels_of(n), selector));
        left = rest;
        if !wave.is_empty() {
            out.push(wave);
        }
    }
    if !left.is_empty() {
        out.push(left);
    }
    out
}

/// The rollout id of an idempotency key: the same key always names the same rollout.
pub fn rollout_id(idempotency_key: &str) -> String {
    let digest = proto::sha256_digest(idempotency_key.as_bytes());
    let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
    format!("r{}", &hex[..20.min(hex.len())])
}

/// Why a rollout request is refused before anything is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The platform policy has no such environment.
    UnknownEnvironment(String),
    /// The environment does not allow this release or namespace.
    NotAllowed(String),
    /// The selector matches no registered cluster.
    NoTargets(String),
    /// A required environment has not seen this version, with this content, succeed.
    Gate(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownEnvironment(m)
            | Self::NotAllowed(m)
            | Self::NoTargets(m)
            | Self::Gate(m) => f.write_str(m),
        }
    }
}

/// The promotion gate: every required environment must have a succeeded rollout of the same
/// release, the same version and the same content digest, and that pass must not have been
/// withdrawn since ([`withdrawal`]). The same version with other content is refused naming
/// both digests.
pub fn gate(
    history: &[Rollout],
    request: &RolloutRequest,
    requires: &[String],
) -> Result<(), Refusal> {
    for required in requires {
        if let Some(why) = withdrawal(history, request, required) {
            return Err(Refusal::Gate(why));
        }
        let same_version: Vec<&Rollout> = history
            .iter()
            .filter(|r| {
                r.request.release == request.release
                    && r.request.environment == *required
                    && r.request.version == request.version
                    && r.status == RolloutStatus::Succeeded
            })
            .collect();
        if same_version
            .iter()
            .any(|r| r.request.content_digest == request.content_digest)
        {
            continue;
        }
        let (version, release) = (&request.version, &request.release);
        let Some(newest) = same_version.iter().max_by_key(|r| r.created_at) else {
            return Err(Refusal::Gate(format!(
                "promotion gate: version {version} of {release} has not succeeded in {required}; deploy it there first"
            )));
        };
        let passed = match newest.request.content_digest.as_str() {
            "" => "no recorded content digest".to_owned(),
            digest => digest.to_owned(),
        };
        return Err(Refusal::Gate(format!(
            "promotion gate: version {version} of {release} in {} has content {}, but {required} \
             succeeded with {passed}; deploy this content to {required} first (changed content \
             needs a new version or a new pass through {required})",
            request.environment, request.content_digest
        )));
    }
    Ok(())
}

/// Why the pass of `request`'s version and content through `environment` no longer counts,
/// if it does not: after its newest success there, the same version and content failed there
/// (a later verification), or a rollback there took that release off it while it was what the
/// environment last succeeded with. A later success of it counts again. `None` when it has
/// not passed at all (the gate says so) or still stands.
pub fn withdrawal(
    history: &[Rollout],
    request: &RolloutRequest,
    environment: &str,
) -> Option<String> {
    let mut there: Vec<&Rollout> = history
        .iter()
        .filter(|r| r.request.release == request.release && r.request.environment == environment)
        .collect();
    there.sort_by_key(|r| r.created_at);
    let same = |r: &Rollout| {
        r.request.version == request.version && r.request.content_digest == request.content_digest
    };
    // (whether ours is what the environment last succeeded with, why it was withdrawn)
    let (mut passed, mut current, mut withdrawn) = (false, false, None);
    for r in there {
        if is_rollback(r) {
            if passed && current && r.status != RolloutStatus::Superseded {
                withdrawn = Some(format!(
                    "rollout {} rolled {} back on cluster(s) {} of {environment}, requested by {}",
                    r.id,
                    request.release,
                    r.waves.concat().join(", "),
                    r.request.requested_by
                ));
                current = false;
            }
            continue;
        }
        match (same(r), r.status) {
            (true, RolloutStatus::Succeeded) => (passed, current, withdrawn) = (true, true, None),
            (true, RolloutStatus::Failed | RolloutStatus::Reverted)
                if passed && failed_on_a_cluster(r) =>
            {
                withdrawn = Some(format!(
                    "rollout {} of the same version and content failed in {environment}: {}",
                    r.id,
                    r.reason.as_deref().unwrap_or("no reason recorded")
                ));
            }
            (false, RolloutStatus::Succeeded) => current = false,
            _ => {}
        }
    }
    withdrawn.map(|why| {
        format!(
            "promotion withdrawn: version {} of {} passed {environment}, but since then {why}; \
             it may not be promoted until it passes {environment} again",
            request.version, request.release
        )
    })
}

/// Whether a cluster of `r` ended its intent other than succeeded: a failure of the version
/// itself, not a halt by policy (a freeze, a withdrawal, a dependency that never let it start).
fn failed_on_a_cluster(r: &Rollout) -> bool {
    r.clusters
        .values()
        .any(|c| c.terminal && c.phase.is_some_and(|p| p != Phase::Succeeded))
}

/// The deploy `environment` last succeeded with for `release` (a rollback is none): what a
/// rollback there takes it off.
pub fn current_pass<'a>(
    history: &'a [Rollout],
    release: &str,
    environment: &str,
) -> Option<&'a Rollout> {
    history
        .iter()
        .filter(|r| {
            r.request.release == release
                && r.request.environment == environment
                && r.status == RolloutStatus::Succeeded
                && !is_rollback(r)
        })
        .max_by_key(|r| r.created_at)
}

/// What a failed rollout reverts to: the newest succeeded rollout of the same release to the
/// same environment.
pub fn revert_target(history: &[Rollout], request: &RolloutRequest) -> Option<RevertTarget> {
    history
        .iter()
        .filter(|r| {
            r.request.release == request.release
                && r.request.environment == request.environment
                && r.status == RolloutStatus::Succeeded
                && !is_rollback(r)
        })
        .max_by_key(|r| r.created_at)
        .map(|r| RevertTarget {
            rollout_id: r.id.clone(),
            version: r.request.version.clone(),
            manifests: r.request.manifests.clone(),
        })
}

/// Every cluster of the waves, with nothing sent yet.
pub fn fresh_progress(waves: &[Vec<String>]) -> BTreeMap<String, ClusterProgress> {
    waves
        .iter()
        .enumerate()
        .flat_map(|(wave, names)| names.iter().map(move |c| (c.clone(), wave)))
        .map(|(c, wave)| {
            let progress = ClusterProgress {
                wave,
                intent_id: None,
                phase: None,
                terminal: false,
                reason: None,
                revert_intent_id: None,
                revert_phase: None,
                sent_at: None,
                blocked: None,
            };
            (c, progress)
        })
        .collect()
}

/// The clusters `selector` picks that can be deployed to now, and those it picks that cannot
/// (draining, stale) with the reason; refused when none can.
pub fn available_targets(
    registry: &[ClusterRecord],
    selector: &BTreeMap<String, String>,
    now: Timestamp,
) -> Result<(Vec<String>, BTreeMap<String, String>), Refusal> {
    let by_name: std::collections::HashMap<&str, &ClusterRecord> =
        registry.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut excluded = BTreeMap::new();
    let mut found = Vec::new();
    for name in targets(registry, selector) {
        match by_name.get(name.as_str()).and_then(|c| unavailable(c, now)) {
            Some(why) => {
                excluded.insert(name, why);
            }
            None => found.push(name),
        }
    }
    if !found.is_empty() {
        return Ok((found, excluded));
    }
    let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let selector = selector.join(",");
    let why: Vec<String> = excluded
        .iter()
        .map(|(c, why)| format!("{c}: {why}"))
        .collect();
    Err(Refusal::NoTargets(if why.is_empty() {
        format!("selector {selector} matches no registered cluster; nothing would be deployed")
    } else {
        format!(
            "selector {selector} matches no cluster that can be deployed to now ({}); nothing would be deployed",
            why.join("; ")
        )
    }))
}

/// The rollout a valid request starts under the platform's `policy` for its environment, or
/// why it must not start: targets from the registry, the gate against the history, waves,
/// and the revert target.
pub fn new_rollout(
    request: RolloutRequest,
    policy: AppliedPolicy,
    registry: &[ClusterRecord],
    history: &[Rollout],
    now: Timestamp,
) -> Result<Rollout, Refusal> {
    let (found, excluded) = available_targets(registry, &policy.selector, now)?;
    gate(history, &request, &policy.requires)?;
    let waves = waves(registry, &found, &policy.waves);
    Ok(Rollout {
        schema_version: SCHEMA_VERSION,
        id: rollout_id(&request.idempotency_key),
        revert_to: revert_target(history, &request),
        clusters: fresh_progress(&waves),
        excluded,
        request,
        policy,
        waves,
        current_wave: 0,
        status: RolloutStatus::Running,
        reason: None,
        owner: String::new(),
        owner_until: None,
        created_at: now,
        updated_at: now,
        traceparent: None,
        queued_until: None,
    })
}

/// Is this a rollback (`POST /v1/rollbacks`) rather than a deploy of manifests?
pub fn is_rollback(r: &Rollout) -> bool {
    matches!(r.request.manifests, Manifests::Revision { .. })
}

/// The one-cluster rollout that returns `cluster`'s release to an earlier revision of its own
/// history, or why not: the cluster must be registered with an environment, and the release
/// must have run there (its state names the namespace).
pub fn rollback_rollout(
    request: RollbackRequest,
    cluster: Option<&ClusterRecord>,
    state: Option<&ReleaseState>,
    now: Timestamp,
) -> Result<Rollout, Refusal> {
    let name = &request.cluster;
    let cluster = cluster.ok_or_else(|| {
        Refusal::NoTargets(format!(
            "no cluster {name:?} is registered; see GET /v1/clusters"
        ))
    })?;
    let environment = cluster
        .labels
        .get("env")
        .ok_or_else(|| Refusal::NoTargets(format!("cluster {name} has no env label")))?;
    let state = state.ok_or_else(|| {
        Refusal::NoTargets(format!(
            "release {} was never deployed to {name}; nothing to roll back",
            request.release
        ))
    })?;
    let key = format!(
        "rollback/{name}/{}/{}",
        request.release,
        now.as_millisecond()
    );
    let waves = vec![vec![name.clone()]];
    Ok(Rollout {
        schema_version: SCHEMA_VERSION,
        id: rollout_id(&key),
        request: RolloutRequest {
            schema_version: SCHEMA_VERSION,
            idempotency_key: key,
            release: request.release.clone(),
            namespace: state.namespace.clone(),
            environment: environment.clone(),
            version: request
                .to
                .map_or_else(|| "previous".to_owned(), |n| format!("revision {n}")),
            content_digest: String::new(),
            manifests: Manifests::Revision {
                revision: request.to,
            },
            health: proto::HealthPolicy {
                timeout_secs: request.timeout_secs,
                ..Default::default()
            },
            rollback: Default::default(),
            requested_by: request.requested_by,
            after: Vec::new(),
            break_glass: None,
        },
        policy: AppliedPolicy {
            revert_on_failure: false,
            ..Default::default()
        },
        clusters: fresh_progress(&waves),
        excluded: BTreeMap::new(),
        waves,
        current_wave: 0,
        status: RolloutStatus::Running,
        reason: None,
        revert_to: None,
        owner: String::new(),
        owner_until: None,
        created_at: now,
        updated_at: now,
        traceparent: None,
        queued_until: None,
    })
}

/// Intent id of a cluster's deploy in a rollout.
pub fn intent_id(rollout: &str, cluster: &str) -> String {
    format!("{rollout}.{cluster}")
}

/// Intent id of a cluster's revert in a rollout.
pub fn revert_intent_id(rollout: &str, cluster: &str) -> String {
    format!("{rollout}.{cluster}.revert")
}

/// The next thing a rollout needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Publish intents to these clusters (the current wave's, not yet sent).
    Publish(Vec<String>),
    /// Wait for outcomes.
    Wait,
    /// The current wave succeeded: start the next.
    Advance,
    /// Every wave succeeded.
    Succeed,
    /// Publish revert intents to these clusters.
    Revert(Vec<String>),
    /// A cluster failed and nothing is (left) to revert: finish with this status.
    Finish(RolloutStatus, String),
}

fn failure(r: &Rollout) -> Option<String> {
    r.clusters.iter().find_map(|(name, c)| {
        let failed = c.terminal && c.phase.is_some_and(|p| p != Phase::Succeeded);
        failed.then(|| {
            format!(
                "cluster {name} ended {}{}",
                c.phase.map(|p| p.to_string()).unwrap_or_default(),
                c.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )
        })
    })
}

/// A cluster that received a newer intent for the release than this rollout's (another
/// rollout, or someone's `coxswain rollback`): the rollout must stop, not revert.
fn overtaken(r: &Rollout) -> Option<String> {
    r.clusters.iter().find_map(|(name, c)| {
        let forward = c.terminal && c.phase == Some(Phase::Superseded);
        let revert = c.revert_phase == Some(Phase::Superseded);
        (forward || revert).then(|| {
            format!(
                "cluster {name} received a newer intent for {}",
                r.request.release
            )
        })
    })
}

/// Ends, as failed, every cluster that was sent an intent and has not reported a final
/// outcome within the release's health timeout plus `grace` (time to be queued behind other
/// releases, a slow apply); `true` when one was.
pub fn expire_silent(r: &mut Rollout, now: Timestamp, grace: std::time::Duration) -> bool {
    let allowed = std::time::Duration::from_secs(r.request.health.timeout_secs) + grace;
    let limit = jiff::SignedDuration::try_from(allowed).unwrap_or(jiff::SignedDuration::MAX);
    let overdue = |sent: Option<Timestamp>| sent.is_some_and(|at| now.duration_since(at) > limit);
    let mut changed = false;
    for (name, c) in &mut r.clusters {
        let silent = format!("no outcome from {name} within {}s", allowed.as_secs());
        if c.revert_intent_id.is_some() {
            if c.revert_phase.is_none() && overdue(c.sent_at) {
                c.revert_phase = Some(Phase::Failed);
                c.reason = Some(format!("revert: {silent}"));
                changed = true;
            }
        } else if c.intent_id.is_some() && !c.terminal && overdue(c.sent_at) {
            c.phase = Some(Phase::Failed);
            c.terminal = true;
            c.reason = Some(silent);
            changed = true;
        }
    }
    changed
}

/// The next step once a cluster failed: revert the clusters earlier waves updated (when the
/// policy says so and there is something to go back to), wait for what is in flight, finish.
fn after_failure(r: &Rollout, reason: String) -> Step {
    // A cluster still in flight in the failed wave must finish before anything is final: the
    // record then says how each cluster ended (a dependant rollout reads it).
    let in_flight = r
        .clusters
        .values()
        .any(|c| c.intent_id.is_some() && !c.terminal);
    if !(r.policy.revert_on_failure && r.revert_to.is_some()) {
        return if in_flight {
            Step::Wait
        } else {
            Step::Finish(RolloutStatus::Failed, reason)
        };
    }
    // Clusters this rollout changed and left on the new version go back.
    let updated: Vec<&String> = r
        .clusters
        .iter()
        .filter(|(_, c)| c.terminal && c.phase == Some(Phase::Succeeded))
        .map(|(n, _)| n)
        .collect();
    let unsent: Vec<String> = updated
        .iter()
        .filter(|n| {
            r.clusters
                .get(**n)
                .is_some_and(|c| c.revert_intent_id.is_none())
        })
        .map(|n| (*n).clone())
        .collect();
    if !unsent.is_empty() {
        return Step::Revert(unsent);
    }
    let reverts_done = updated.iter().all(|n| {
        r.clusters.get(*n).is_some_and(
            |c| matches!(c.revert_phase, Some(p) if p.always_terminal() || p == Phase::Failed),
        )
    });
    if in_flight || !reverts_done {
        return Step::Wait;
    }
    let status = if updated.is_empty() {
        RolloutStatus::Failed
    } else {
        RolloutStatus::Reverted
    };
    Step::Finish(status, reason)
}

/// Decides the next step from the rollout record alone.
pub fn decide(r: &Rollout) -> Step {
    if let Some(reason) = overtaken(r) {
        return Step::Finish(RolloutStatus::Superseded, reason);
    }
    if let Some(reason) = failure(r) {
        return after_failure(r, reason);
    }
    let Some(wave) = r.waves.get(r.current_wave) else {
        return succeed_unless_blocked(r);
    };
    let blocked = |n: &String| r.clusters.get(n).is_some_and(|c| c.blocked.is_some());
    let unsent: Vec<String> = wave
        .iter()
        .filter(|n| !blocked(n) && r.clusters.get(*n).is_none_or(|c| c.intent_id.is_none()))
        .cloned()
        .collect();
    if !unsent.is_empty() {
        return Step::Publish(unsent);
    }
    let done = wave.iter().all(|n| {
        blocked(n)
            || r.clusters
                .get(n)
                .is_some_and(|c| c.terminal && c.phase == Some(Phase::Succeeded))
    });
    if !done {
        return Step::Wait;
    }
    if r.current_wave + 1 >= r.waves.len() {
        succeed_unless_blocked(r)
    } else {
        Step::Advance
    }
}

/// Every wave is done: success, unless a cluster never started because a dependency failed
/// there (the rollout then ends `failed`, naming each such cluster).
fn succeed_unless_blocked(r: &Rollout) -> Step {
    let blocked: Vec<String> = r
        .clusters
        .iter()
        .filter_map(|(name, c)| c.blocked.as_ref().map(|why| format!("{name} ({why})")))
        .collect();
    if blocked.is_empty() {
        Step::Succeed
    } else {
        Step::Finish(
            RolloutStatus::Failed,
            format!("did not start on {}", blocked.join("; ")),
        )
    }
}

/// How the rollouts `r` depends on stand on `cluster`: `Ok(true)` when each succeeded there
/// (or does not target it), `Ok(false)` while one is still on its way there, `Err(why)` when
/// one failed there, ended without reaching it, or is unknown.
pub fn dependencies_on(r: &Rollout, deps: &[Rollout], cluster: &str) -> Result<bool, String> {
    let mut ready = true;
    for id in &r.request.after {
        let Some(dep) = deps.iter().find(|d| d.id == *id) else {
            return Err(format!("dependency rollout {id} not found"));
        };
        let name = &dep.request.release;
        let Some(c) = dep.clusters.get(cluster) else {
            continue;
        };
        if c.revert_intent_id.is_some() {
            return Err(format!(
                "dependency {name} was reverted on {cluster} after a later wave failed"
            ));
        }
        if c.terminal && c.phase == Some(Phase::Succeeded) {
            continue;
        }
        if c.terminal || c.blocked.is_some() {
            let how = c
                .phase
                .map_or_else(|| "did not start".to_owned(), |p| format!("ended {p}"));
            return Err(format!("dependency {name} failed on {cluster}: it {how}"));
        }
        if dep.status.is_final() {
            return Err(format!(
                "dependency {name} never reached {cluster}: its rollout {} ended {}",
                dep.id,
                dep.status.as_str()
            ));
        }
        ready = false;
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cluster(name: &str, labels: &[(&str, &str)]) -> ClusterRecord {
        ClusterRecord {
            schema_version: 1,
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            agent_version: "0".into(),
            capabilities: vec![],
            status: proto::AgentStatus::Ready,
            heartbeat_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn sel(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn targets_and_waves() {
        let fleet = [
            cluster("beta", &[("env", "beta")]),
            cluster("prod-east", &[("env", "prod"), ("region", "east")]),
            cluster("prod-west", &[("env", "prod"), ("region", "west")]),
            cluster("prod-south", &[("env", "prod"), ("region", "south")]),
        ];
        let prod = targets(&fleet, &sel(&[("env", "prod")]));
        assert_eq!(prod, ["prod-east", "prod-south", "prod-west"]);
        assert!(targets(&fleet, &sel(&[("env", "staging")])).is_empty());
        let w = waves(
            &fleet,
            &prod,
            &[sel(&[("region", "west")]), sel(&[("region", "east")])],
        );
        assert_eq!(
            w,
            vec![
                vec!["prod-west".to_owned()],
                vec!["prod-east".to_owned()],
                vec!["prod-south".to_owned()]
            ]
        );
        assert_eq!(waves(&fleet, &prod, &[]).len(), 1);
    }

    fn digest(content: &str) -> String {
        proto::sha256_digest(content.as_bytes())
    }

    fn rollout(waves: Vec<Vec<&str>>, revert: bool) -> Rollout {
        let request = RolloutRequest {
            schema_version: 1,
            idempotency_key: "k".into(),
            release: "web".into(),
            namespace: "web".into(),
            environment: "prod".into(),
            version: "2".into(),
            content_digest: digest("content"),
            manifests: Manifests::Bundle {
                digest: "d".into(),
                size: 1,
            },
            health: Default::default(),
            rollback: Default::default(),
            requested_by: "ci".into(),
            after: Vec::new(),
            break_glass: None,
        };
        let waves: Vec<Vec<String>> = waves
            .iter()
            .map(|w| w.iter().map(|c| (*c).to_owned()).collect())
            .collect();
        Rollout {
            schema_version: 1,
            id: "r1".into(),
            request,
            policy: AppliedPolicy {
                selector: sel(&[("env", "prod")]),
                revert_on_failure: revert,
                ..Default::default()
            },
            clusters: fresh_progress(&waves),
            excluded: BTreeMap::new(),
            waves,
            current_wave: 0,
            status: RolloutStatus::Running,
            reason: None,
            revert_to: Some(RevertTarget {
                rollout_id: "r0".into(),
                version: "1".into(),
                manifests: Manifests::Bundle {
                    digest: "d0".into(),
                    size: 1,
                },
            }),
            owner: String::new(),
            owner_until: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            traceparent: None,
            queued_until: None,
        }
    }

    fn report(r: &mut Rollout, cluster: &str, phase: Phase, terminal: bool) {
        let c = r.clusters.get_mut(cluster).unwrap();
        c.intent_id = Some(intent_id("r1", cluster));
        c.phase = Some(phase);
        c.terminal = terminal;
    }

    #[test]
    fn waves_advance_only_when_every_cluster_succeeded() {
        let mut r = rollout(vec![vec!["a", "b"], vec!["c"]], true);
        assert_eq!(decide(&r), Step::Publish(vec!["a".into(), "b".into()]));
        report(&mut r, "a", Phase::Succeeded, true);
        report(&mut r, "b", Phase::Progressing, false);
        assert_eq!(decide(&r), Step::Wait);
        report(&mut r, "b", Phase::Succeeded, true);
        assert_eq!(decide(&r), Step::Advance);
        r.current_wave = 1;
        assert_eq!(decide(&r), Step::Publish(vec!["c".into()]));
        report(&mut r, "c", Phase::Succeeded, true);
        assert_eq!(decide(&r), Step::Succeed);
    }

    #[test]
    fn a_failure_halts_and_reverts_earlier_waves() {
        let mut r = rollout(vec![vec!["a"], vec!["b"], vec!["c"]], true);
        report(&mut r, "a", Phase::Succeeded, true);
        r.current_wave = 1;
        report(&mut r, "b", Phase::RolledBack, true);
        assert_eq!(decide(&r), Step::Revert(vec!["a".into()]));
        r.clusters.get_mut("a").unwrap().revert_intent_id = Some("x".into());
        assert_eq!(decide(&r), Step::Wait);
        r.clusters.get_mut("a").unwrap().revert_phase = Some(Phase::Succeeded);
        assert!(
            matches!(decide(&r), Step::Finish(RolloutStatus::Reverted, reason) if reason.starts_with("cluster b ended rolled_back"))
        );
        // c never got an intent.
        assert!(r.clusters["c"].intent_id.is_none());
    }

    #[test]
    fn without_revert_or_anything_to_revert_to_a_failure_just_fails() {
        let mut r = rollout(vec![vec!["a"], vec!["b"]], false);
        report(&mut r, "a", Phase::Succeeded, true);
        r.current_wave = 1;
        report(&mut r, "b", Phase::Failed, true);
        assert!(matches!(decide(&r), Step::Finish(RolloutStatus::Failed, _)));
        let mut r = rollout(vec![vec!["a"]], true);
        r.revert_to = None;
        report(&mut r, "a", Phase::Rejected, true);
        assert!(matches!(decide(&r), Step::Finish(RolloutStatus::Failed, _)));
    }

    fn done(env: &str, version: &str, status: RolloutStatus, at: i64) -> Rollout {
        let mut r = rollout(vec![vec!["a"]], true);
        r.id = format!("{env}-{version}-{at}");
        r.request.environment = env.into();
        r.request.version = version.into();
        r.status = status;
        r.created_at = jiff::Timestamp::from_second(at).unwrap();
        r
    }

    fn with_content(mut r: Rollout, content: &str) -> Rollout {
        r.request.content_digest = if content.is_empty() {
            String::new()
        } else {
            digest(content)
        };
        r
    }

    #[test]
    fn a_cluster_waits_for_its_dependencies_and_is_blocked_where_one_failed() {
        let mut db = rollout(vec![vec!["a", "b", "c"]], false);
        db.id = "rdb".into();
        report(&mut db, "a", Phase::Succeeded, true);
        report(&mut db, "b", Phase::RolledBack, true);
        report(&mut db, "c", Phase::Progressing, false);
        let mut web = rollout(vec![vec!["a", "b", "c", "d"]], false);
        web.request.after = vec!["rdb".into()];
        let deps = [db.clone()];
        assert_eq!(dependencies_on(&web, &deps, "a"), Ok(true));
        assert_eq!(
            dependencies_on(&web, &deps, "b"),
            Err("dependency web failed on b: it ended rolled_back".into())
        );
        assert_eq!(
            dependencies_on(&web, &deps, "c"),
            Ok(false),
            "still running there"
        );
        assert_eq!(
            dependencies_on(&web, &deps, "d"),
            Ok(true),
            "db does not target d"
        );
        db.status = RolloutStatus::Failed;
        assert!(
            dependencies_on(&web, &[db], "c")
                .unwrap_err()
                .contains("never reached c")
        );
        assert!(
            dependencies_on(&web, &[], "a")
                .unwrap_err()
                .contains("rdb not found")
        );

        // A blocked cluster is skipped: the wave goes on without it, and the rollout ends
        // failed naming it.
        web.clusters.get_mut("b").unwrap().blocked = Some("dependency db failed on b".into());
        assert_eq!(
            decide(&web),
            Step::Publish(vec!["a".into(), "c".into(), "d".into()])
        );
        for c in ["a", "c", "d"] {
            report(&mut web, c, Phase::Succeeded, true);
        }
        assert_eq!(
            decide(&web),
            Step::Finish(
                RolloutStatus::Failed,
                "did not start on b (dependency db failed on b)".into()
            )
        );
    }

    #[test]
    fn a_pass_is_withdrawn_by_a_later_failure_or_rollback_and_restored_by_a_new_pass() {
        use RolloutStatus::{Failed, Succeeded};
        let beta = ["beta".to_owned()];
        let request = |version: &str| {
            let mut r = rollout(vec![vec!["a"]], true).request;
            r.version = version.into();
            r
        };
        let rollback = |at: i64| {
            let mut r = done("beta", "previous", Succeeded, at);
            r.request.manifests = Manifests::Revision { revision: None };
            r
        };
        let rolled_back = [done("beta", "1", Succeeded, 1), rollback(2)];
        let refusal = gate(&rolled_back, &request("1"), &beta)
            .unwrap_err()
            .to_string();
        assert!(
            refusal.starts_with("promotion withdrawn: version 1 of web passed beta, but since then rollout beta-previous-2 rolled web back on cluster(s) a of beta"),
            "{refusal}"
        );
        let newer_rolled_back = [
            done("beta", "1", Succeeded, 1),
            done("beta", "2", Succeeded, 2),
            rollback(3),
        ];
        assert!(
            gate(&newer_rolled_back, &request("1"), &beta).is_ok(),
            "1 was not running"
        );
        assert!(gate(&newer_rolled_back, &request("2"), &beta).is_err());
        let halted = [
            done("beta", "1", Succeeded, 1),
            done("beta", "1", Failed, 2),
        ];
        assert!(
            gate(&halted, &request("1"), &beta).is_ok(),
            "a halt by policy (no cluster failed) withdraws nothing"
        );
        let mut failed = done("beta", "1", Failed, 2);
        report(&mut failed, "a", Phase::RolledBack, true);
        let failed_later = [done("beta", "1", Succeeded, 1), failed];
        let refusal = gate(&failed_later, &request("1"), &beta)
            .unwrap_err()
            .to_string();
        assert!(
            refusal.contains("rollout beta-1-2 of the same version and content failed in beta"),
            "{refusal}"
        );
        let passed_again = [
            done("beta", "1", Succeeded, 1),
            rollback(2),
            done("beta", "1", Succeeded, 3),
        ];
        assert!(gate(&passed_again, &request("1"), &beta).is_ok());
    }

    #[test]
    fn the_gate_needs_the_same_version_and_content_succeeded_in_every_required_environment() {
        let history = [
            done("beta", "1", RolloutStatus::Succeeded, 1),
            done("beta", "2", RolloutStatus::Failed, 2),
            done("qa", "1", RolloutStatus::Reverted, 3),
            with_content(done("beta", "4", RolloutStatus::Succeeded, 4), "old"),
            with_content(done("beta", "5", RolloutStatus::Succeeded, 5), "old"),
            done("beta", "5", RolloutStatus::Succeeded, 6),
            with_content(done("beta", "6", RolloutStatus::Succeeded, 7), ""),
        ];
        let cases: [(&[&str], &str, &str, bool); 10] = [
            (&[], "2", "content", true),
            (&["beta"], "1", "content", true),
            (&["beta"], "1", "edited", false),
            (&["beta"], "2", "content", false),
            (&["beta"], "3", "content", false),
            (&["beta"], "4", "content", false),
            (&["beta"], "5", "content", true),
            (&["beta"], "6", "content", false),
            (&["beta", "qa"], "1", "content", false),
            (&["qa"], "1", "content", false),
        ];
        for (requires, version, content, passes) in cases {
            let mut request = rollout(vec![vec!["a"]], true).request;
            request.version = version.into();
            request.content_digest = digest(content);
            let requires: Vec<String> = requires.iter().map(|e| (*e).to_owned()).collect();
            assert_eq!(
                gate(&history, &request, &requires).is_ok(),
                passes,
                "{requires:?} {version} {content}"
            );
        }
        let beta = ["beta".to_owned()];
        let mut request = rollout(vec![vec!["a"]], true).request;
        assert_eq!(
            gate(&history, &request, &beta).unwrap_err().to_string(),
            "promotion gate: version 2 of web has not succeeded in beta; deploy it there first"
        );
        request.version = "4".into();
        let refusal = gate(&history, &request, &beta).unwrap_err().to_string();
        let both = format!(
            "promotion gate: version 4 of web in prod has content {}, but beta succeeded with {};",
            digest("content"),
            digest("old")
        );
        assert!(refusal.starts_with(&both), "{refusal}");
        request.version = "6".into();
        let refusal = gate(&history, &request, &beta).unwrap_err().to_string();
        assert!(
            refusal.contains("but beta succeeded with no recorded content digest"),
            "{refusal}"
        );
    }

    #[test]
    fn a_revert_goes_to_the_newest_success_in_the_same_environment() {
        let request = rollout(vec![vec!["a"]], true).request;
        let cases = [
            (vec![], None),
            (vec![done("beta", "1", RolloutStatus::Succeeded, 5)], None),
            (vec![done("prod", "1", RolloutStatus::Failed, 5)], None),
            (
                vec![
                    done("prod", "1", RolloutStatus::Succeeded, 1),
                    done("prod", "3", RolloutStatus::Succeeded, 3),
                    done("prod", "4", RolloutStatus::Reverted, 4),
                ],
                Some("3"),
            ),
        ];
        for (history, version) in cases {
            let target = revert_target(&history, &request);
            assert_eq!(target.map(|t| t.version).as_deref(), version);
        }
    }

    #[test]
    fn a_new_rollout_has_its_waves_its_clusters_and_its_id_or_a_refusal() {
        let fleet = [
            cluster("p1", &[("env", "prod"), ("region", "east")]),
            cluster("p2", &[("env", "prod"), ("region", "west")]),
        ];
        let request = rollout(vec![vec!["a"]], true).request;
        let mut policy = AppliedPolicy {
            selector: sel(&[("env", "prod")]),
            waves: vec![sel(&[("region", "east")])],
            ..Default::default()
        };
        let now = jiff::Timestamp::UNIX_EPOCH;
        let r = new_rollout(request.clone(), policy.clone(), &fleet, &[], now).unwrap();
        assert_eq!(r.waves, [vec!["p1".to_owned()], vec!["p2".to_owned()]]);
        assert_eq!(r.clusters["p2"].wave, 1);
        assert_eq!(r.id, rollout_id("k"));
        assert_eq!(r.id.len(), 21);
        assert!(r.revert_to.is_none());
        assert_eq!(r.policy, policy, "the record keeps the policy applied");

        policy.selector = sel(&[("env", "nowhere")]);
        assert!(matches!(
            new_rollout(request.clone(), policy.clone(), &fleet, &[], now),
            Err(Refusal::NoTargets(m)) if m == "selector env=nowhere matches no registered cluster; nothing would be deployed"
        ));
        policy.selector = sel(&[("env", "prod")]);
        policy.requires = vec!["beta".into()];
        assert!(matches!(
            new_rollout(request, policy, &fleet, &[], now),
            Err(Refusal::Gate(_))
        ));
    }

    #[test]
    fn draining_and_stale_clusters_are_not_targeted_and_the_rollout_says_why() {
        let now = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(1);
        let fresh = |name: &str| ClusterRecord {
            heartbeat_at: now - jiff::SignedDuration::from_secs(30),
            ..cluster(name, &[("env", "prod")])
        };
        let fleet = vec![
            fresh("live"),
            ClusterRecord {
                status: proto::AgentStatus::Draining,
                ..fresh("leaving")
            },
            ClusterRecord {
                heartbeat_at: now - jiff::SignedDuration::from_secs(600),
                ..fresh("dead")
            },
        ];
        let request = rollout(vec![vec!["a"]], true).request;
        let policy = AppliedPolicy {
            selector: sel(&[("env", "prod")]),
            ..Default::default()
        };
        let r = new_rollout(request.clone(), policy.clone(), &fleet, &[], now).unwrap();
        assert_eq!(r.waves, [vec!["live".to_owned()]]);
        assert_eq!(
            r.excluded.get("leaving").map(String::as_str),
            Some("its agent is draining (shutting down)")
        );
        assert_eq!(
            r.excluded.get("dead").map(String::as_str),
            Some("its agent's last heartbeat was 600s ago (stale after 180s)")
        );
        // Nothing left: refused, naming why.
        let refused = new_rollout(request, policy, &fleet[1..], &[], now).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("dead: its agent's last heartbeat was 600s ago"),
            "{refused}"
        );
    }

    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

    #[test]
    fn a_silent_cluster_fails_its_wave_by_its_deadline_and_is_named() {
        let mut r = rollout(vec![vec!["a", "b"]], false);
        r.request.health.timeout_secs = 30;
        let sent = jiff::Timestamp::UNIX_EPOCH;
        for c in ["a", "b"] {
            report(&mut r, c, Phase::Received, false);
            r.clusters.get_mut(c).unwrap().sent_at = Some(sent);
        }
        report(&mut r, "a", Phase::Succeeded, true);
        assert!(!expire_silent(
            &mut r,
            sent + jiff::SignedDuration::from_secs(90),
            MINUTE
        ));
        assert_eq!(decide(&r), Step::Wait);
        assert!(expire_silent(
            &mut r,
            sent + jiff::SignedDuration::from_secs(91),
            MINUTE
        ));
        assert_eq!(
            decide(&r),
            Step::Finish(
                RolloutStatus::Failed,
                "cluster b ended failed: no outcome from b within 90s".into()
            )
        );
        assert_eq!(
            r.clusters["a"].phase,
            Some(Phase::Succeeded),
            "a is untouched"
        );
    }

    #[test]
    fn a_cluster_given_a_newer_intent_stops_the_rollout_without_reverting() {
        let mut r = rollout(vec![vec!["a"], vec!["b"]], true);
        report(&mut r, "a", Phase::Succeeded, true);
        r.current_wave = 1;
        report(&mut r, "b", Phase::Superseded, true);
        assert_eq!(
            decide(&r),
            Step::Finish(
                RolloutStatus::Superseded,
                "cluster b received a newer intent for web".into()
            )
        );
    }
}
