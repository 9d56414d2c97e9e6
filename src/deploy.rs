//! `coxswain deploy`: what CI runs. Renders the release for the environment from
//! `coxswain.yaml`, computes its content digest (templates and defaults, before environment
//! values), submits it to the coordinator with an idempotency key, and with `--wait` follows
//! it to the end, exiting 0 only when every targeted cluster succeeded. Which clusters, waves
//! and gates apply is the coordinator's platform policy, never this request's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use coordinator::Loaded;
use coordinator::appconfig::{ReleaseConfig, Source};
use proto::{Manifests, Phase, Rollout, RolloutRequest, RolloutStatus, SCHEMA_VERSION};
use serde_json::{Value, json};

use crate::args::Output;

/// Inline manifests up to this size; larger ones go to the bundle store.
const INLINE_LIMIT: usize = 256 * 1024;

/// How to reach the coordinator.
#[derive(Debug, clap::Args)]
pub(crate) struct CoordinatorClientArgs {
    /// Coordinator URL.
    #[arg(
        long,
        env = "COXSWAIN_COORDINATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    coordinator: String,
    /// Bearer token for the coordinator. Prefer COXSWAIN_TOKEN or --token-file: a command
    /// line is visible to every user of the machine.
    #[arg(
        long,
        env = "COXSWAIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the bearer token (its first line).
    #[arg(long, env = "COXSWAIN_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// A PEM file with the private CA that signed an `https://` coordinator's certificate;
    /// only that CA is trusted then (else the system's roots).
    #[arg(long, env = "COXSWAIN_COORDINATOR_CA")]
    coordinator_ca: Option<PathBuf>,
}

impl CoordinatorClientArgs {
    pub(crate) fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.coordinator.trim_end_matches('/'));
        let mut request = client.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        // The coordinator continues this command's trace (itself continuing CI's TRACEPARENT).
        let ci = std::env::var("TRACEPARENT").ok();
        if let Some(tp) = bus::trace::traceparent_of(&tracing::Span::current(), ci.as_deref()) {
            request = request.header(bus::trace::TRACEPARENT, tp);
        }
        request
    }

    /// Reads the token file into the token (its first line); an unreadable or empty file is
    /// an error naming it. Call once, before any request.
    pub(crate) fn load_token(&mut self) -> anyhow::Result<()> {
        self.token = crate::args::secret(self.token.as_ref(), self.token_file.as_deref())?;
        Ok(())
    }

    /// The HTTP client for the coordinator: rustls, with `--coordinator-ca` when given.
    pub(crate) fn client(&self) -> anyhow::Result<reqwest::Client> {
        crate::tls::http_client(self.coordinator_ca.as_deref(), Duration::from_secs(30))
    }

    pub(crate) async fn rollout(
        &self,
        client: &reqwest::Client,
        id: &str,
    ) -> anyhow::Result<Rollout> {
        let response = self
            .request(client, reqwest::Method::GET, &format!("/v1/rollouts/{id}"))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "coordinator answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.json().await?)
    }

    /// Uploads a bundle through the coordinator (`POST /v1/bundles`) and checks the digest it
    /// was stored under.
    async fn upload_bundle(
        &self,
        client: &reqwest::Client,
        bytes: Vec<u8>,
        digest: &str,
    ) -> anyhow::Result<()> {
        let response = self
            .request(client, reqwest::Method::POST, "/v1/bundles")
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.coordinator))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "the coordinator refused the manifest bundle ({status}): {}",
                body["error"].as_str().unwrap_or("?")
            );
        }
        if body["digest"].as_str() != Some(digest) {
            bail!(
                "the coordinator stored the bundle as {}, expected {digest}",
                body["digest"]
            );
        }
        Ok(())
    }
}

/// Arguments of `coxswain deploy`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// The application's deploy configuration.
    #[arg(long, env = "COXSWAIN_CONFIG", default_value = "coxswain.yaml")]
    config: PathBuf,
    /// Environment to deploy to (as named in the coordinator's platform policy; its values
    /// come from the configuration).
    #[arg(long, env = "COXSWAIN_ENV")]
    env: String,
    /// Release to deploy (as named in the configuration). Several, comma separated
    /// (`--release db,web`), are submitted in the order their `after` gives, and on each
    /// cluster a release starts only after the ones it depends on succeeded there.
    #[arg(long = "release", value_delimiter = ',', required = true)]
    releases: Vec<String>,
    /// `key.path=value` overrides, layered last (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Version deployed (the promotion gate compares it, with the content digest); default:
    /// the `image.tag` value.
    #[arg(long, env = "COXSWAIN_APP_VERSION")]
    app_version: Option<String>,
    /// Idempotency key; a CI retry with the same key never deploys twice. Default: derived
    /// from release, environment, version and manifests.
    #[arg(long, env = "COXSWAIN_IDEMPOTENCY_KEY")]
    idempotency_key: Option<String>,
    /// Start even inside a freeze window of the environment, for this reason (your identity
    /// needs the break-glass role); recorded with your identity in the rollout and the events.
    #[arg(long, value_name = "REASON")]
    break_glass: Option<String>,
    /// Who deploys (a CI job URL, a user); default $USER.
    #[arg(long, env = "COXSWAIN_REQUESTED_BY")]
    requested_by: Option<String>,
    /// Follow the rollout to its end; exit 0 only when every cluster succeeded.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (`90s`, `30m`, `1h`, or seconds; exit 3).
    #[arg(long, default_value = "30m", value_parser = crate::duration::parse)]
    timeout: Duration,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    coordinator: CoordinatorClientArgs,
}

/// One release ready to submit: its request, its manifest bytes, and the releases of the
/// same deploy it waits for.
type Built = (RolloutRequest, Vec<u8>, Vec<String>);

fn lookup<'a>(values: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(values, |v, k| v.get(k))
}

impl DeployArgs {
    /// The values files of the environment: the environment's, then the release's own for it.
    fn value_files(&self, loaded: &Loaded, release: &ReleaseConfig) -> Vec<PathBuf> {
        let env_file = loaded
            .config
            .environments
            .get(&self.env)
            .and_then(|e| e.values.as_ref());
        env_file
            .into_iter()
            .chain(release.values.get(&self.env))
            .map(|f| loaded.path(f))
            .collect()
    }

    /// The values for the environment: the defaults in `dir` (`values.yaml`) < the
    /// environment's values file < the release's values file for the environment < `--set`s.
    fn values(
        &self,
        loaded: &Loaded,
        release: &ReleaseConfig,
        dir: &Path,
    ) -> anyhow::Result<Value> {
        let mut values = deploy::render::layered_values(dir, None, &[])?;
        for file in self.value_files(loaded, release) {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let extra: Value = serde_saphyr::from_str(&text)
                .with_context(|| format!("{} is not YAML", file.display()))?;
            deploy::render::merge_values(&mut values, &extra);
        }
        for expr in &self.set {
            deploy::render::apply_set(&mut values, expr)?;
        }
        Ok(values)
    }

    /// The version: `--app-version`, else the `image.tag` value.
    fn version(&self, values: &Value) -> anyhow::Result<String> {
        Ok(match (&self.app_version, lookup(values, "image.tag")) {
            (Some(v), _) => v.clone(),
            (None, Some(Value::String(tag))) => tag.clone(),
            (None, Some(tag)) => tag.to_string(),
            (None, None) => bail!("no version: pass --app-version or set image.tag"),
        })
    }

    /// A source that takes no values (kustomize, plain YAML) rendered for the environment: its
    /// version must come from `--app-version`, and `--set` is refused.
    fn render_unvalued(
        &self,
        loaded: &Loaded,
        name: &str,
        source: Source<'_>,
    ) -> anyhow::Result<(deploy::render::Rendered, String, String)> {
        let (kind, dir) = match source {
            Source::Plain(dir) => ("plain YAML", dir),
            Source::Kustomize(dir) => ("kustomize", dir),
            _ => bail!("not a source without values"),
        };
        if !self.set.is_empty() {
            bail!(
                "release {} is a {kind} source, which takes no values: --set applies to \
                 `manifests` and `helm` sources (for kustomize, set images in the overlay: \
                 `kustomize edit set image`)",
                name
            );
        }
        let version = self.app_version.clone().with_context(|| {
            format!("release {} is a {kind} source: pass --app-version (the version the promotion gate compares)", name)
        })?;
        let dir = loaded.path(Path::new(
            &dir.to_string_lossy().replace("{env}", &self.env),
        ));
        if matches!(source, Source::Plain(_)) {
            let rendered = deploy::sources::plain(&dir)?;
            Ok((rendered, deploy::sources::tree_digest(&dir)?, version))
        } else {
            let root = deploy::sources::kustomize_root(&dir, &loaded.base);
            let rendered = deploy::sources::kustomize(&dir)?;
            Ok((rendered, deploy::sources::tree_digest(&root)?, version))
        }
    }

    /// The release rendered for the environment from its source, its content digest (the
    /// same in every environment: what the promotion gate compares), and its version.
    fn render_source(
        &self,
        loaded: &Loaded,
        name: &str,
        release: &ReleaseConfig,
    ) -> anyhow::Result<(deploy::render::Rendered, String, String)> {
        let source = release
            .source()
            .context("the release names no single source of manifests")?;
        match source {
            Source::Templated(dir) => {
                let dir = loaded.path(dir);
                let values = self.values(loaded, release, &dir)?;
                let meta =
                    json!({"name": name, "namespace": release.namespace, "environment": self.env});
                let rendered = deploy::render::render(&dir, &values, &meta)?;
                Ok((
                    rendered,
                    deploy::render::content_digest(&dir)?,
                    self.version(&values)?,
                ))
            }
            Source::Helm(chart) => {
                let chart = loaded.path(chart);
                let values = self.values(loaded, release, &chart)?;
                let helm_values = deploy::sources::HelmValues {
                    files: self.value_files(loaded, release),
                    sets: self.set.clone(),
                };
                let rendered =
                    deploy::sources::helm(&chart, name, &release.namespace, &helm_values)?;
                Ok((
                    rendered,
                    deploy::sources::tree_digest(&chart)?,
                    self.version(&values)?,
                ))
            }
            Source::Kustomize(_) | Source::Plain(_) => self.render_unvalued(loaded, name, source),
        }
    }

    /// The application's configuration, once the environment is known to be a name.
    fn load(&self) -> anyhow::Result<Loaded> {
        // The environment names a folder of some sources (`{env}`): a label, never a path.
        if let Err(problem) = proto::check_dns_label(&self.env) {
            bail!(
                "--env {:?} is not an environment name: {problem:?}",
                self.env
            );
        }
        Loaded::load(&self.config).map_err(|problems| {
            anyhow::anyhow!(
                "{} is invalid ({} problem(s)):\n  - {}",
                self.config.display(),
                problems.len(),
                problems.join("\n  - ")
            )
        })
    }

    /// Renders release `name` for the environment; the request (which names no clusters,
    /// waves or gates: those are the platform policy's) and the manifest bytes.
    fn build(&self, loaded: &Loaded, name: &str) -> anyhow::Result<(RolloutRequest, Vec<u8>)> {
        let release = loaded
            .config
            .releases
            .get(name)
            .with_context(|| format!("{} has no release {name:?}", self.config.display()))?;
        let (rendered, content_digest, version) = self.render_source(loaded, name, release)?;
        let objects = rendered.all();
        let bytes = serde_json::to_vec(&objects)?;
        let digest = deploy::render::sha256(&bytes);
        let manifests = if bytes.len() > INLINE_LIMIT {
            Manifests::Bundle {
                digest: digest.clone(),
                size: bytes.len() as u64,
            }
        } else {
            Manifests::Inline {
                digest: digest.clone(),
                objects,
            }
        };
        let key = match &self.idempotency_key {
            Some(key) if self.releases.len() > 1 => format!("{key}-{name}"),
            Some(key) => key.clone(),
            None => format!("{name}-{}-{version}-{}", self.env, &digest[7..23]),
        };
        let requested_by = self
            .requested_by
            .clone()
            .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
        let request = RolloutRequest {
            schema_version: SCHEMA_VERSION,
            idempotency_key: key,
            release: name.to_owned(),
            namespace: release.namespace.clone(),
            environment: self.env.clone(),
            version,
            content_digest,
            manifests,
            health: release.health.clone(),
            rollback: release.rollback.clone(),
            requested_by,
            after: Vec::new(),
            break_glass: self.break_glass.clone(),
        };
        Ok((request, bytes))
    }

    /// Every release asked for, in dependency order, built, each with the releases of the
    /// group it waits for.
    fn build_all(&self) -> anyhow::Result<Vec<Built>> {
        let loaded = self.load()?;
        let releases = &loaded.config.releases;
        let order = coordinator::appconfig::deploy_order(releases, &self.releases);
        let mut built = Vec::new();
        for name in &order {
            let (request, bytes) = self.build(&loaded, name)?;
            let deps = coordinator::appconfig::group_dependencies(releases, name, &self.releases);
            built.push((request, bytes, deps));
        }
        Ok(built)
    }

    pub(crate) async fn run(mut self) -> anyhow::Result<ExitCode> {
        self.coordinator.load_token()?;
        let built = match self.build_all() {
            Ok(built) => built,
            Err(error) => {
                eprintln!("error: {error:#}");
                return Ok(ExitCode::from(2));
            }
        };
        let http = self.coordinator.client()?;
        let mut rollouts = Vec::new();
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        for (mut request, bytes, deps) in built {
            request.after = deps.iter().filter_map(|d| ids.get(d).cloned()).collect();
            let Some(rollout) = self.send(&http, &request, bytes).await? else {
                return Ok(ExitCode::FAILURE);
            };
            ids.insert(request.release.clone(), rollout.id.clone());
            rollouts.push(rollout);
        }
        if !self.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut code = ExitCode::SUCCESS;
        for rollout in rollouts {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(rollout) = follow(&self.coordinator, &http, rollout, left, self.output).await
            else {
                return Ok(ExitCode::from(3));
            };
            if summarize(&rollout, self.output)? != ExitCode::SUCCESS {
                code = ExitCode::FAILURE;
            }
        }
        Ok(code)
    }

    /// Uploads the bundle (when the manifests are one) and submits the request, printing the
    /// rollout; `None` when the coordinator refused it.
    async fn send(
        &self,
        http: &reqwest::Client,
        request: &RolloutRequest,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Option<Rollout>> {
        if let Manifests::Bundle { digest, .. } = &request.manifests {
            self.coordinator.upload_bundle(http, bytes, digest).await?;
        }
        let Some((rollout, existing)) = self.submit(http, request).await? else {
            return Ok(None);
        };
        let printed = !self.wait && self.output.print(&rollout)?;
        if !printed && self.output == Output::Table && rollout.status == RolloutStatus::Queued {
            println!(
                "rollout {}: {}",
                rollout.id,
                rollout.reason.as_deref().unwrap_or("queued")
            );
        }
        if !printed && self.output == Output::Table {
            let waves: Vec<String> = rollout.waves.iter().map(|w| w.join(",")).collect();
            let after = if request.after.is_empty() {
                String::new()
            } else {
                format!(", after {}", request.after.join(", "))
            };
            println!(
                "rollout {}{}: {} {} to {} in waves [{}]{after}",
                rollout.id,
                if existing { " (already submitted)" } else { "" },
                rollout.request.release,
                rollout.request.version,
                rollout.request.environment,
                waves.join("] [")
            );
        }
        Ok(Some(rollout))
    }

    /// Submits the request; the rollout and whether it existed already, or `None` (after
    /// printing why) when the coordinator refused it.
    async fn submit(
        &self,
        http: &reqwest::Client,
        request: &RolloutRequest,
    ) -> anyhow::Result<Option<(Rollout, bool)>> {
        let response = self
            .coordinator
            .request(http, reqwest::Method::POST, "/v1/rollouts")
            .json(request)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the coordinator at {}",
                    self.coordinator.coordinator
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            eprintln!(
                "error: the coordinator refused the rollout ({status}): {}",
                body["error"].as_str().unwrap_or("?")
            );
            for p in body["problems"].as_array().into_iter().flatten() {
                eprintln!("  - {}", p.as_str().unwrap_or_default());
            }
            return Ok(None);
        }
        let rollout: Rollout = response.json().await?;
        Ok(Some((rollout, status == reqwest::StatusCode::OK)))
    }
}

/// Polls the rollout until it is final, printing each cluster's changes; `None` when
/// `timeout` passed first.
pub(crate) async fn follow(
    coordinator: &CoordinatorClientArgs,
    http: &reqwest::Client,
    mut rollout: Rollout,
    timeout: Duration,
    output: Output,
) -> Option<Rollout> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if output == Output::Table {
            show_changes(&rollout, &mut shown);
        }
        if rollout.status.is_final() {
            return Some(rollout);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "error: rollout {} still running after {timeout:?}",
                rollout.id
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match coordinator.rollout(http, &rollout.id).await {
            Ok(r) => rollout = r,
            Err(error) => tracing::warn!(%error, "cannot read the rollout; retrying"),
        }
    }
}

/// Prints how the rollout ended; exit 0 only when every cluster succeeded.
pub(crate) fn summarize(rollout: &Rollout, output: Output) -> anyhow::Result<ExitCode> {
    if !output.print(rollout)? {
        let reason = rollout.reason.as_deref().unwrap_or("?");
        let how = match rollout.status {
            RolloutStatus::Succeeded => "succeeded on every cluster".to_owned(),
            RolloutStatus::Failed => format!("failed: {reason}"),
            RolloutStatus::Reverted => format!("failed and reverted: {reason}"),
            RolloutStatus::Superseded => format!("stopped: {reason}"),
            RolloutStatus::Running => "running".to_owned(),
            RolloutStatus::Queued => format!("queued: {reason}"),
        };
        println!("rollout {}: {how}", rollout.id);
        for (cluster, why) in &rollout.excluded {
            println!("  not targeted: {cluster}: {why}");
        }
        for (cluster, c) in &rollout.clusters {
            if let Some(why) = &c.blocked {
                println!("  not started: {cluster}: {why}");
            }
        }
        let untouched: Vec<&str> = rollout
            .clusters
            .iter()
            .filter(|(_, c)| c.intent_id.is_none() && c.blocked.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !untouched.is_empty() {
            println!("  not deployed (halted): {}", untouched.join(", "));
        }
    }
    let ok = rollout.status == RolloutStatus::Succeeded
        && rollout
            .clusters
            .values()
            .all(|c| c.phase == Some(Phase::Succeeded));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints each cluster whose line changed since last shown.
fn show_changes(rollout: &Rollout, shown: &mut BTreeMap<String, String>) {
    for (cluster, c) in &rollout.clusters {
        let mut line = match c.phase {
            Some(p) => format!("{p}"),
            None if c.intent_id.is_some() => "sent".into(),
            None => continue,
        };
        if let Some(p) = c.revert_phase {
            line = format!("{line}, reverted: {p}");
        } else if c.revert_intent_id.is_some() {
            line = format!("{line}, reverting");
        }
        if shown.get(cluster) != Some(&line) {
            println!("  {cluster} (wave {}): {line}", c.wave + 1);
            shown.insert(cluster.clone(), line);
        }
    }
}
