//! The engine's view of a cluster: objects by apiVersion and kind resolved through discovery
//! (never guessed plurals), server-side apply as `coxswain`, and transient API errors retried
//! with backoff until the caller's deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kube::api::GroupVersionKind;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::DeployError;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "coxswain";
/// Label naming the release an object belongs to.
pub const RELEASE_LABEL: &str = "coxswain.dev/release";
/// Label marking objects Coxswain manages.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Annotation every applied object carries: the namespace of the release it belongs to (a
/// release is its name and its namespace; two releases `web` in two namespaces own different
/// objects).
pub const RELEASE_NAMESPACE: &str = "coxswain.dev/release-namespace";

/// One object of a release's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} {}/{}", self.api_version, self.kind, ns, self.name),
            None => write!(f, "{}/{} {}", self.api_version, self.kind, self.name),
        }
    }
}

/// What discovery found for one apiVersion and kind.
type Discovered = (ApiResource, ApiCapabilities);

/// A Kubernetes cluster reached through `kube`, with a discovery cache it owns. The cache lock
/// is taken by a plain closure (`cached`), so it is never held across `.await`.
pub struct Cluster {
    client: kube::Client,
    discovery: Mutex<HashMap<(String, String), Discovered>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// Is this error worth another try (the server or the network, not the request)?
pub fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs an API call, retrying transient failures with exponential backoff until `deadline`.
pub async fn retrying<T, F, Fut>(deadline: Instant, what: &str, call: F) -> Result<T, DeployError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times();
    let attempt = call
        .retry(policy)
        .sleep(tokio::time::sleep)
        .when(transient)
        .notify(|error, wait| tracing::warn!(%error, ?wait, what, "kubernetes api call failed; retrying"));
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(DeployError::Api {
            action: what.to_owned(),
            source,
        }),
        Err(_) => Err(DeployError::DeadlineExceeded {
            during: what.to_owned(),
        }),
    }
}

impl Cluster {
    /// A cluster behind a kube client.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            discovery: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the discovery cache under its lock.
    fn cached<R>(&self, f: impl FnOnce(&mut HashMap<(String, String), Discovered>) -> R) -> R {
        f(&mut self
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Forgets what discovery found (after CRDs were created, say), so kinds are asked again.
    pub fn forget_discovery(&self) {
        self.cached(HashMap::clear);
    }

    /// The resource serving `apiVersion` + `kind`. Each kind is discovered on its own, with
    /// one small request retried like every other API call (a flaky API server does not
    /// have to answer a whole discovery pass at once), and remembered.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
        deadline: Instant,
    ) -> Result<Discovered, DeployError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.cached(|cache| cache.get(&key).cloned()) {
            return Ok(found);
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let client = self.client.clone();
        let found = retrying(deadline, "discovery", || {
            let (client, gvk) = (client.clone(), gvk.clone());
            async move { kube::discovery::pinned_kind(&client, &gvk).await }
        })
        .await;
        let unknown = || DeployError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        };
        match found {
            Ok(found) => {
                self.cached(|cache| cache.insert(key, found.clone()));
                Ok(found)
            }
            Err(DeployError::Api {
                source: kube::Error::Discovery(_),
                ..
            }) => Err(unknown()),
            Err(DeployError::Api {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 404 => Err(unknown()),
            Err(error) => Err(error),
        }
    }

    /// The API for an object and where it lives: its namespace (or `default_ns`), its name.
    pub async fn api_for(
        &self,
        object: &Value,
        default_ns: &str,
        deadline: Instant,
    ) -> Result<(Api<DynamicObject>, ObjectRef), DeployError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (ar, caps) = self.resolve(api_version, kind, deadline).await?;
        let (api, namespace) = match caps.scope {
            Scope::Namespaced => {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(default_ns)
                    .to_owned();
                (
                    Api::namespaced_with(self.client.clone(), &ns, &ar),
                    Some(ns),
                )
            }
            Scope::Cluster => (Api::all_with(self.client.clone(), &ar), None),
        };
        Ok((
            api,
            ObjectRef {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                namespace,
                name,
            },
        ))
    }

    /// The API serving an object known by reference.
    async fn api_of(
        &self,
        target: &ObjectRef,
        deadline: Instant,
    ) -> Result<Api<DynamicObject>, DeployError> {
        let object = serde_json::json!({"apiVersion": target.api_version, "kind": target.kind,
            "metadata": {"name": target.name, "namespace": target.namespace}});
        let default_ns = target.namespace.as_deref().unwrap_or("default");
        let (api, _) = self.api_for(&object, default_ns, deadline).await?;
        Ok(api)
    }

    /// Server-side apply (forced, as `coxswain`); `dry_run` changes nothing.
    pub async fn apply(
        &self,
        object: &Value,
        default_ns: &str,
        dry_run: bool,
        deadline: Instant,
    ) -> Result<(ObjectRef, Value), DeployError> {
        let (api, target) = self.api_for(object, default_ns, deadline).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        let mut body = object.clone();
        if let (Some(ns), Some(meta)) = (&target.namespace, body["metadata"].as_object_mut()) {
            meta.insert("namespace".into(), ns.clone().into());
        }
        let what = format!("apply {target}");
        let patch = Patch::Apply(&body);
        let applied =
            retrying(deadline, &what, || api.patch(&target.name, &params, &patch)).await?;
        Ok((target, serde_json::to_value(applied).unwrap_or_default()))
    }

    /// A server-side apply dry run of `object` without force: the fields other managers now
    /// hold with other values than `object` sets, as `(field path, manager)` (the API server's
    /// conflict answer); empty when there is none.
    pub async fn apply_conflicts(
        &self,
        object: &Value,
        default_ns: &str,
        deadline: Instant,
    ) -> Result<Vec<(String, String)>, DeployError> {
        let (api, target) = self.api_for(object, default_ns, deadline).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.dry_run = true;
        let mut body = object.clone();
        if let (Some(ns), Some(meta)) = (&target.namespace, body["metadata"].as_object_mut()) {
            meta.insert("namespace".into(), ns.clone().into());
        }
        let patch = Patch::Apply(&body);
        let call = api.patch(&target.name, &params, &patch);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(_)) => Ok(Vec::new()),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(status
                .details
                .iter()
                .flat_map(|d| d.causes.iter())
                .map(|cause| {
                    let manager = cause
                        .message
                        .split('"')
                        .nth(1)
                        .unwrap_or("unknown")
                        .to_owned();
                    (cause.field.clone(), manager)
                })
                .collect()),
            Ok(Err(source)) => Err(DeployError::Api {
                action: format!("dry-run apply {target}"),
                source,
            }),
            Err(_) => Err(DeployError::DeadlineExceeded {
                during: format!("dry-run apply {target}"),
            }),
        }
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(
        &self,
        target: &ObjectRef,
        deadline: Instant,
    ) -> Result<Option<Value>, DeployError> {
        let api = self.api_of(target, deadline).await?;
        let found = retrying(deadline, &format!("get {target}"), || {
            api.get_opt(&target.name)
        })
        .await?;
        Ok(found.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// Deletes an object (background propagation); absent is fine.
    pub async fn delete(&self, target: &ObjectRef, deadline: Instant) -> Result<(), DeployError> {
        let api = match self.api_of(target, deadline).await {
            Ok(found) => found,
            // Its kind is gone (a CRD was removed first): nothing left to delete.
            Err(DeployError::UnknownKind { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let params = DeleteParams::background();
        let result = retrying(deadline, &format!("delete {target}"), || {
            api.delete(&target.name, &params)
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(DeployError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Objects of a kind in a namespace matching a label selector.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        selector: &str,
        deadline: Instant,
    ) -> Result<Vec<Value>, DeployError> {
        let (ar, _) = self.resolve(api_version, kind, deadline).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let params = ListParams::default().labels(selector);
        let list = retrying(deadline, &format!("list {kind} in {ns}"), || {
            api.list(&params)
        })
        .await?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect())
    }

    /// Creates an object (no apply: a test Job run, a Lease).
    pub async fn create(
        &self,
        object: &Value,
        default_ns: &str,
        deadline: Instant,
    ) -> Result<Value, DeployError> {
        let (api, target) = self.api_for(object, default_ns, deadline).await?;
        let body: DynamicObject = serde_json::from_value(object.clone())
            .map_err(|e| DeployError::Invalid(format!("{target}: {e}")))?;
        let params = PostParams::default();
        let created = retrying(deadline, &format!("create {target}"), || {
            api.create(&params, &body)
        })
        .await?;
        Ok(serde_json::to_value(created).unwrap_or_default())
    }
}
