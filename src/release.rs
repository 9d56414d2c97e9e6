//! `coxswain release`, `coxswain diff` and `coxswain health`: the release engine from a shell,
//! with no NATS involved. Useful on its own and for debugging what an agent would do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use deploy::{Engine, EngineConfig, Progress, Release, Report};
use proto::{HealthPolicy, HealthStatus, Phase, RollbackPolicy};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::args::{KubeArgs, Output, cancel_on_signal, hostname};

/// A release folder and its values.
#[derive(Debug, clap::Args)]
pub(crate) struct RenderArgs {
    /// Folder of YAML manifests (templated with `{{ values.x }}`, or plain `helm template` /
    /// `kustomize build` output); `values.yaml` in it holds the release defaults.
    dir: PathBuf,
    /// Release name (DNS-1123 label).
    #[arg(long)]
    name: String,
    /// Namespace of the release.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Environment values file, layered over the release defaults.
    #[arg(long = "values", short = 'f')]
    values: Option<PathBuf>,
    /// `key.path=value` overrides, layered last (repeatable). `true`/`false` and integers are
    /// typed; everything else stays a string (`image.tag=2.0` is "2.0").
    #[arg(long = "set")]
    set: Vec<String>,
}

impl RenderArgs {
    fn render(&self) -> anyhow::Result<deploy::Rendered> {
        for (what, value) in [("--name", &self.name), ("--namespace", &self.namespace)] {
            if let Err(problem) = proto::check_dns_label(value) {
                bail!("{what} {value:?} is not a DNS-1123 label: {problem:?}");
            }
        }
        let values = deploy::render::layered_values(&self.dir, self.values.as_deref(), &self.set)?;
        let release = json!({"name": self.name, "namespace": self.namespace});
        Ok(deploy::render::render(&self.dir, &values, &release)?)
    }
}

/// `coxswain release ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ReleaseCommand {
    /// Render and apply a release; with --wait, wait for health and roll back on failure.
    Apply {
        #[command(flatten)]
        render: RenderArgs,
        /// Human version recorded in the history (a git sha, a tag).
        #[arg(long, env = "COXSWAIN_APP_VERSION", default_value = "manual")]
        app_version: String,
        /// Wait for health, run tests and probes, roll back automatically when they fail.
        #[arg(long)]
        wait: bool,
        /// Deadline for the whole release (`60s`, `5m`, `1h30m`, or seconds).
        #[arg(long, default_value = "5m", value_parser = crate::duration::parse)]
        timeout: Duration,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// The revisions of a release, oldest first.
    History {
        /// Release name.
        name: String,
        /// Namespace of the release.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Re-apply an earlier revision (default: the one deployed before the current one).
    Rollback {
        /// Release name.
        name: String,
        /// Namespace of the release.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Revision to return to.
        #[arg(long)]
        to: Option<u32>,
        /// Deadline (`60s`, `5m`, `1h30m`, or seconds).
        #[arg(long, default_value = "5m", value_parser = crate::duration::parse)]
        timeout: Duration,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

fn engine_config() -> EngineConfig {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    EngineConfig {
        holder: format!("coxswain-cli/{user}@{}/{}", hostname(), std::process::id()),
        ..Default::default()
    }
}

fn print_progress(p: &Progress) {
    match &p.reason {
        Some(reason) => eprintln!("revision {}: {} ({reason})", p.revision, p.phase),
        None => eprintln!("revision {}: {}", p.revision, p.phase),
    }
}

fn finish(report: &Report) -> ExitCode {
    let revision = report
        .revision
        .map_or_else(|| "-".to_owned(), |r| r.to_string());
    if report.replayed {
        println!("already done: revision {revision} {}", report.phase);
    } else {
        println!("revision {revision}: {}", report.phase);
    }
    if let Some(reason) = &report.reason {
        println!("reason: {reason}");
    }
    if report.phase == Phase::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

impl ReleaseCommand {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let cancel = cancel_on_signal();
        match self {
            Self::Apply {
                render,
                app_version,
                wait,
                timeout,
                kube,
            } => apply(render, app_version, wait, timeout, kube, &cancel).await,
            Self::History {
                name,
                namespace,
                output,
                kube,
            } => history(&name, &namespace, output, kube).await,
            Self::Rollback {
                name,
                namespace,
                to,
                timeout,
                kube,
            } => {
                let mut engine = Engine::new(kube.client().await?, engine_config());
                let health = HealthPolicy {
                    timeout_secs: timeout.as_secs().max(1),
                    ..Default::default()
                };
                let target = deploy::Rollback {
                    name,
                    namespace,
                    to,
                    intent_id: None,
                    health,
                };
                let report = engine.rollback(target, &print_progress, &cancel).await?;
                Ok(finish(&report))
            }
        }
    }
}

async fn apply(
    render: RenderArgs,
    version: String,
    wait: bool,
    timeout: Duration,
    kube: KubeArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let rendered = render.render()?;
    let mut engine = Engine::new(kube.client().await?, engine_config());
    let release = Release {
        name: render.name,
        namespace: render.namespace,
        version,
        intent_id: None,
        rendered,
        health: HealthPolicy {
            timeout_secs: timeout.as_secs().max(1),
            ..Default::default()
        },
        rollback: RollbackPolicy::default(),
        rollback_of: None,
        wait,
    };
    let report = engine.deploy(release, &print_progress, cancel).await?;
    Ok(finish(&report))
}

async fn history(
    name: &str,
    namespace: &str,
    output: Output,
    kube: KubeArgs,
) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(kube.client().await?, engine_config());
    let revisions = engine.history(namespace, name).await?;
    if output != Output::Table {
        let rows: Vec<Value> = revisions
            .iter()
            .map(|r| json!({"revision": r.number, "status": r.status, "version": r.version, "intent_id": r.intent_id,
                "outcome": r.outcome, "rollback_of": r.rollback_of, "reason": r.reason, "digest": r.digest,
                "updated_at": r.updated_at.to_string()}))
            .collect();
        output.print(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if revisions.is_empty() {
        println!("release {name} has no history in namespace {namespace}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<9} {:<11} {:<16} {:<16} {:<25} NOTE",
        "REVISION", "STATUS", "VERSION", "OUTCOME", "UPDATED"
    );
    for r in &revisions {
        let outcome = r.outcome.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let rollback = r.rollback_of.map(|n| format!("rollback to {n}"));
        let note = match (rollback, &r.reason) {
            (Some(rb), Some(reason)) => format!("{rb}: {reason}"),
            (Some(rb), None) => rb,
            (None, Some(reason)) => reason.clone(),
            (None, None) => String::new(),
        };
        println!(
            "{:<9} {:<11} {:<16} {:<16} {:<25} {note}",
            r.number,
            r.status.as_str(),
            r.version,
            outcome,
            r.updated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `coxswain diff`.
#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    #[command(flatten)]
    render: RenderArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

impl DiffArgs {
    /// Exit 0 when nothing would change, 1 when something would (like `kubectl diff`).
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self { render, kube } = self;
        let rendered = render.render()?;
        let mut engine = Engine::new(kube.client().await?, engine_config());
        let diff = engine
            .diff(&rendered, &render.namespace, &render.name)
            .await?;
        if diff.is_empty() {
            eprintln!("no changes");
            Ok(ExitCode::SUCCESS)
        } else {
            print!("{diff}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Arguments of `coxswain health`.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// A file or folder of resource snapshots (YAML or JSON, one or many documents, `kind:
    /// List` too), e.g. saved with `kubectl get deploy -o yaml`.
    #[arg(short = 'f', long = "filename")]
    path: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

fn snapshots(path: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?
        {
            let p = entry?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{} is not YAML or JSON", file.display()))?;
        for doc in docs {
            match doc {
                Value::Null => {}
                d if d["kind"] == "List" || d["items"].is_array() => {
                    objects.extend(d["items"].as_array().cloned().unwrap_or_default())
                }
                d => objects.push(d),
            }
        }
    }
    Ok(objects)
}

impl HealthArgs {
    /// Exit 0 when every object is healthy, 1 otherwise.
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let Self { path, output } = self;
        let objects = snapshots(&path)?;
        if objects.is_empty() {
            bail!("{} holds no objects", path.display());
        }
        let rows: Vec<(Value, deploy::health::Assessment)> = objects
            .into_iter()
            .map(|o| {
                let a = deploy::health::assess(&o);
                (o, a)
            })
            .collect();
        let status_word = |s: HealthStatus| match s {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Progressing => "progressing",
            HealthStatus::Failed => "failed",
            HealthStatus::Unknown => "unknown",
        };
        if output != Output::Table {
            let out: Vec<Value> = rows.iter().map(|(o, a)| json!({
                "apiVersion": o["apiVersion"], "kind": o["kind"], "namespace": o["metadata"]["namespace"],
                "name": o["metadata"]["name"], "status": status_word(a.status), "message": a.message,
            })).collect();
            output.print(&out)?;
        } else {
            println!("{:<24} {:<32} {:<12} REASON", "KIND", "NAME", "STATUS");
            for (o, a) in &rows {
                let name = match o["metadata"]["namespace"].as_str() {
                    Some(ns) => format!("{ns}/{}", o["metadata"]["name"].as_str().unwrap_or("?")),
                    None => o["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
                };
                println!(
                    "{:<24} {:<32} {:<12} {}",
                    o["kind"].as_str().unwrap_or("?"),
                    name,
                    status_word(a.status),
                    a.message
                );
            }
        }
        let all_healthy = rows.iter().all(|(_, a)| a.status == HealthStatus::Healthy);
        Ok(if all_healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
