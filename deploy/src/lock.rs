//! One operation per release at a time: a Lease `coxswain-lock-<release>` in the release
//! namespace, held with a holder id and renewed while the operation runs. A crashed holder
//! stops renewing, its lease expires and the next operation takes over: no release is ever
//! stuck in "another operation is in progress".

use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::DeployError;
use crate::cluster::retrying;
use crate::poll::{Check, wait_until};

fn leases(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "coordination.k8s.io".into(),
        version: "v1".into(),
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        plural: "leases".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// The Lease name of a release's lock.
pub fn lease_name(release: &str) -> String {
    format!("coxswain-lock-{release}")
}

fn micro_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Who holds a lease and until when; `None` when free or expired.
pub fn holder_of(lease: &Value, now: Timestamp) -> Option<(String, Timestamp)> {
    let spec = &lease["spec"];
    let holder = spec["holderIdentity"].as_str().filter(|h| !h.is_empty())?;
    let renewed: Timestamp = spec["renewTime"].as_str()?.parse().ok()?;
    let seconds = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
    let until = renewed
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .ok()?;
    (until > now).then(|| (holder.to_owned(), until))
}

/// A held lock. Renewed in the background until released or dropped; dropped without
/// `release` (a crash, a cancelled future) it simply stops renewing and expires.
pub struct LockGuard {
    client: kube::Client,
    ns: String,
    name: String,
    holder: String,
    _renewal: DropGuard,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// Gives the lock back at once.
    pub async fn release(self, deadline: Instant) -> Result<(), DeployError> {
        let api = leases(&self.client, &self.ns);
        let current = retrying(deadline, "read release lock", || api.get_opt(&self.name)).await?;
        let ours = current
            .as_ref()
            .and_then(|l| l.data["spec"]["holderIdentity"].as_str())
            == Some(self.holder.as_str());
        if ours {
            let params = DeleteParams::default();
            let deleted =
                retrying(deadline, "release lock", || api.delete(&self.name, &params)).await;
            if let Err(error) = deleted {
                tracing::warn!(%error, lease = self.name, "cannot release the lock; it expires on its own");
            }
        }
        Ok(())
    }
}

/// The pause after a transient error taking the lock.
const TRANSIENT_PAUSE: Duration = Duration::from_millis(100);

/// How often a lock held by someone else is looked at again (sooner when its lease expires
/// sooner), and the shortest pause before that.
const HELD_PACE: Duration = Duration::from_millis(250);
const SHORTEST_PAUSE: Duration = Duration::from_millis(20);

/// Someone else holds the lock, until when unless renewed.
struct Held {
    holder: String,
    until: Timestamp,
}

/// One holder asking for one release's lock.
struct Claim<'a> {
    api: Api<DynamicObject>,
    ns: &'a str,
    release: &'a str,
    name: String,
    holder: &'a str,
    lease: Duration,
}

/// Takes the release's lock for `holder`, waiting up to `wait` for a live holder to finish.
pub async fn acquire(
    client: &kube::Client,
    ns: &str,
    release: &str,
    holder: &str,
    lease: Duration,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<LockGuard, DeployError> {
    let claim = Claim {
        api: leases(client, ns),
        ns,
        release,
        name: lease_name(release),
        holder,
        lease,
    };
    let give_up = Instant::now() + wait;
    let call_deadline = give_up + Duration::from_secs(30);
    let took_over_from = wait_until(|| claim.take(call_deadline), HELD_PACE, give_up, cancel)
        .await
        .map_err(|stopped| {
            stopped.into_error(|held| DeployError::Locked {
                release: release.to_owned(),
                holder: held.holder,
                until: held.until.to_string(),
            })
        })?;
    if let Some(previous) = &took_over_from {
        tracing::warn!(
            release,
            previous,
            "took over the release lock from an expired holder"
        );
    }
    Ok(claim.hold(client))
}

impl Claim<'_> {
    /// The guard of the taken lock, renewed in the background until released or dropped.
    fn hold(self, client: &kube::Client) -> LockGuard {
        let token = CancellationToken::new();
        let renewal = renew(
            self.api,
            self.name.clone(),
            self.holder.to_owned(),
            self.lease,
            token.clone(),
        );
        let span = tracing::info_span!("renew release lock", lease = self.name);
        tokio::spawn(renewal.instrument(span));
        LockGuard {
            client: client.clone(),
            ns: self.ns.to_owned(),
            name: self.name,
            holder: self.holder.to_owned(),
            _renewal: token.drop_guard(),
        }
    }

    /// One look at the lease: taken when free, expired or already ours (`Done` with the expired
    /// holder it took over from, if any); otherwise who holds it. A write that raced another
    /// holder's reads the lease again at once.
    async fn take(&self, deadline: Instant) -> Result<Check<Option<String>, Held>, DeployError> {
        loop {
            let now = Timestamp::now();
            let current = retrying(deadline, "read release lock", || {
                self.api.get_opt(&self.name)
            })
            .await?;
            let (lease, took_over) = match &current {
                None => (self.lease(now, 0, None)?, None),
                Some(existing) => {
                    let value = serde_json::to_value(existing).unwrap_or_default();
                    let live = holder_of(&value, now);
                    if let Some((other, until)) = live.clone().filter(|(h, _)| h != self.holder) {
                        let expires_in = until.duration_since(now).unsigned_abs();
                        let held = Held {
                            holder: other,
                            until,
                        };
                        return Ok(Check::PendingFor(held, expires_in.max(SHORTEST_PAUSE)));
                    }
                    let previous = value["spec"]["holderIdentity"]
                        .as_str()
                        .filter(|h| !h.is_empty() && *h != self.holder)
                        .map(str::to_owned);
                    let transitions = value["spec"]["leaseTransitions"].as_i64().unwrap_or(0) + 1;
                    let rv = existing.metadata.resource_version.clone();
                    let took_over = if live.is_none() { previous } else { None };
                    (self.lease(now, transitions, rv)?, took_over)
                }
            };
            let params = PostParams::default();
            let written = match current {
                None => self.api.create(&params, &lease).await,
                Some(_) => self.api.replace(&self.name, &params, &lease).await,
            };
            match written {
                Ok(_) => return Ok(Check::Done(took_over)),
                // Someone else wrote the lease between our read and our write: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                // A transient API error, like for every other call: look again shortly
                // (the write may even have happened; the next read tells).
                Err(source) if crate::cluster::transient(&source) && Instant::now() < deadline => {
                    tracing::warn!(error = %source, lease = self.name, "cannot take the release lock yet; retrying");
                    tokio::time::sleep(TRANSIENT_PAUSE).await;
                    continue;
                }
                Err(source) => {
                    return Err(DeployError::Api {
                        action: "take release lock".into(),
                        source,
                    });
                }
            }
        }
    }

    /// The lease as this holder writes it, acquired and renewed `now`.
    fn lease(
        &self,
        now: Timestamp,
        transitions: i64,
        resource_version: Option<String>,
    ) -> Result<DynamicObject, DeployError> {
        let mut lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.ns,
                         "labels": {"owner": "coxswain", "name": self.release}},
            "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": self.lease.as_secs().max(1),
                     "acquireTime": micro_time(now), "renewTime": micro_time(now),
                     "leaseTransitions": transitions},
        });
        if let Some(rv) = resource_version {
            lease["metadata"]["resourceVersion"] = rv.into();
        }
        serde_json::from_value(lease).map_err(|e| DeployError::Invalid(e.to_string()))
    }
}

/// Renews the lease every third of its duration until cancelled.
async fn renew(
    api: Api<DynamicObject>,
    name: String,
    holder: String,
    lease: Duration,
    cancel: CancellationToken,
) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let patch = json!({"spec": {"renewTime": micro_time(Timestamp::now())}});
        let current = api.get_opt(&name).await;
        match current {
            Ok(Some(l)) if l.data["spec"]["holderIdentity"] == holder.as_str() => {
                if let Err(error) = api
                    .patch(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(%error, lease = name, "cannot renew the release lock");
                }
            }
            Ok(_) => {
                tracing::error!(lease = name, "lost the release lock to another holder");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, lease = name, "cannot read the release lock to renew it")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn expired_leases_have_no_holder() {
        let now: Timestamp = "2026-11-26T10:00:10Z".parse().unwrap();
        let lease = |renew: &str| json!({"spec": {"holderIdentity": "agent-a", "leaseDurationSeconds": 15, "renewTime": renew}});
        assert_eq!(
            holder_of(&lease("2026-11-26T10:00:00.000000Z"), now)
                .unwrap()
                .0,
            "agent-a"
        );
        assert_eq!(holder_of(&lease("2026-11-26T09:59:00.000000Z"), now), None);
        assert_eq!(
            holder_of(&json!({"spec": {"holderIdentity": ""}}), now),
            None
        );
    }
}
