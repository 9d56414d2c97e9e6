//! Where a release's manifests come from besides a templated folder (`render`): a folder of
//! plain YAML applied as it is (`helm template` output, say), a kustomize directory rendered
//! with `kubectl kustomize`, or a Helm chart rendered with `helm template`. The tools run as
//! child processes with a deadline, their output bounded; a missing tool is an error that says
//! what to install.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits::MAX_OBJECTS_PER_RELEASE;
use crate::render::{self, RenderError, Rendered};

/// How long a rendering tool may run.
const TOOL_DEADLINE: Duration = Duration::from_secs(120);
/// The most output a rendering tool may print.
const MAX_TOOL_OUTPUT: u64 = 64 * 1024 * 1024;
/// The most bytes of a source tree the content digest reads.
const MAX_TREE_BYTES: u64 = 64 * 1024 * 1024;

/// The objects of `text`, at most [`MAX_OBJECTS_PER_RELEASE`], as a rendered release.
fn rendered(name: &str, text: &str, origin: &Path) -> Result<Rendered, RenderError> {
    let objects = render::objects_of(name, text)?;
    if objects.len() > MAX_OBJECTS_PER_RELEASE {
        return Err(RenderError::TooManyObjects {
            count: objects.len(),
            limit: MAX_OBJECTS_PER_RELEASE,
        });
    }
    if objects.is_empty() {
        return Err(RenderError::Empty(origin.to_owned()));
    }
    Ok(Rendered::from_objects(objects))
}

/// A folder of plain YAML (every `*.yaml` / `*.yml`, in name order), no templating.
pub fn plain(dir: &Path) -> Result<Rendered, RenderError> {
    let mut text = String::new();
    for path in render::manifest_files(dir)? {
        text.push_str(&render::read(&path)?);
        text.push_str("\n---\n");
    }
    rendered(&dir.display().to_string(), &text, dir)
}

/// `kubectl kustomize DIR` (kubectl from `$COXSWAIN_KUBECTL`, else PATH).
pub fn kustomize(dir: &Path) -> Result<Rendered, RenderError> {
    let kubectl = std::env::var_os("COXSWAIN_KUBECTL").unwrap_or_else(|| "kubectl".into());
    let mut command = Command::new(&kubectl);
    command.arg("kustomize").arg(dir);
    let what = format!("kubectl kustomize {}", dir.display());
    let text = run(
        command,
        &what,
        "kustomize sources are rendered with `kubectl kustomize`: install kubectl (1.14 or later; https://kubernetes.io/docs/tasks/tools/) or set COXSWAIN_KUBECTL",
        &[],
    )?;
    rendered(&what, &text, dir)
}

/// What `helm template` renders a chart with.
#[derive(Debug, Clone, Default)]
pub struct HelmValues {
    /// Values files, in order (`-f`).
    pub files: Vec<PathBuf>,
    /// `key=value` overrides (`--set`), last.
    pub sets: Vec<String>,
}

/// `helm template NAME CHART --namespace NS -f ... --set ...` (helm from `$COXSWAIN_HELM`,
/// else PATH).
pub fn helm(
    chart: &Path,
    name: &str,
    namespace: &str,
    values: &HelmValues,
) -> Result<Rendered, RenderError> {
    let helm = std::env::var_os("COXSWAIN_HELM").unwrap_or_else(|| "helm".into());
    let mut command = Command::new(&helm);
    command
        .args(["template", name])
        .arg(chart)
        .args(["--namespace", namespace]);
    for file in &values.files {
        command.arg("--values").arg(file);
    }
    for set in &values.sets {
        command.args(["--set", set]);
    }
    let what = format!("helm template {name} {}", chart.display());
    // Values may be secrets: never repeated in an error.
    let hide: Vec<&str> = values
        .sets
        .iter()
        .filter_map(|s| s.split_once('=').map(|(_, v)| v))
        .collect();
    let text = run(
        command,
        &what,
        "Helm charts are rendered with `helm template`: install Helm 3 (https://helm.sh/docs/intro/install/), or render the chart yourself and use a `plain:` folder",
        &hide,
    )?;
    rendered(&what, &text, chart)
}

/// Runs a rendering tool: its standard output, bounded in size and time; a missing tool or a
/// failure is an error naming the command and, for a missing tool, `install`. The last line
/// of its error output is kept (cut to 300 characters), with `hide` (values that may be
/// secrets, like `--set` values) replaced.
fn run(
    mut command: Command,
    what: &str,
    install: &str,
    hide: &[&str],
) -> Result<String, RenderError> {
    let failed = |reason: String| RenderError::Tool {
        tool: what.to_owned(),
        reason,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => failed(format!("not found. {install}")),
            _ => failed(format!("cannot start: {e}")),
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failed("no output pipes".into()));
    };
    // Readers report over channels, so a grandchild that keeps a pipe open cannot hold us.
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || out_tx.send(read_bounded(stdout, MAX_TOOL_OUTPUT)));
    std::thread::spawn(move || err_tx.send(read_bounded(stderr, 64 * 1024)));
    let status = wait(&mut child).map_err(failed)?;
    let grace = Duration::from_secs(5);
    let out = out_rx
        .recv_timeout(grace)
        .unwrap_or_else(|_| Err("its output did not end".into()));
    let err = err_rx
        .recv_timeout(grace)
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if !status.success() {
        let mut said: String = err
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .chars()
            .take(300)
            .collect();
        for secret in hide.iter().filter(|h| !h.is_empty()) {
            said = said.replace(secret, "(redacted)");
        }
        return Err(failed(format!("exited with {status}: {said}")));
    }
    out.map_err(failed)
}

/// Waits for `child` until [`TOOL_DEADLINE`]; kills it (and reaps it) past that or on an
/// error.
fn wait(child: &mut std::process::Child) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + TOOL_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match outcome {
                    Err(e) => e.to_string(),
                    _ => format!("still running after {}s; stopped", TOOL_DEADLINE.as_secs()),
                });
            }
        }
    }
}

/// Everything a pipe says, up to `limit` bytes; more is an error, and the rest is drained so
/// the writer is not blocked.
fn read_bounded(pipe: impl std::io::Read, limit: u64) -> Result<String, String> {
    let mut pipe = std::io::BufReader::new(pipe);
    let mut bytes = Vec::new();
    (&mut pipe)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        return Err(format!("printed more than {limit} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "printed something that is not UTF-8".to_owned())
}

/// `sha256:<hex>` of every file under `root` (relative path and content, in path order), the
/// content digest of a kustomize or chart source; hidden entries are skipped.
pub fn tree_digest(root: &Path) -> Result<String, RenderError> {
    let mut files = Vec::new();
    collect(root, root, &mut files)?;
    files.sort();
    let mut bytes = Vec::new();
    let mut total = 0u64;
    for (relative, path) in &files {
        total += std::fs::metadata(path).map_or(0, |m| m.len());
        if total > MAX_TREE_BYTES {
            return Err(RenderError::Tool {
                tool: format!("the content digest of {}", root.display()),
                reason: format!("more than {MAX_TREE_BYTES} bytes of files"),
            });
        }
        let content = std::fs::read(path).map_err(|source| RenderError::Read {
            path: path.clone(),
            source,
        })?;
        for part in [relative.as_bytes(), content.as_slice()] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    if files.is_empty() {
        return Err(RenderError::Empty(root.to_owned()));
    }
    Ok(render::sha256(&bytes))
}

/// Every file under `dir` (symbolic links followed, as kustomize and helm follow them; `.git`
/// skipped), at most 32 folders deep.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<(), RenderError> {
    if dir.strip_prefix(root).map_or(0, |r| r.components().count()) > 32 {
        return Err(RenderError::Tool {
            tool: format!("the content digest of {}", root.display()),
            reason: format!(
                "{} is more than 32 folders deep (a link loop?)",
                dir.display()
            ),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| RenderError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            collect(root, &path, files)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            files.push((relative, path));
        }
    }
    Ok(())
}

/// The tree a kustomize directory's content digest covers: everything from the folder that
/// holds its `overlays` folder (`deploy/overlays/prod` -> `deploy`, base and every overlay),
/// so every environment's overlay has the same digest and the promotion gate can compare
/// them; the directory itself when it is not under an `overlays` folder inside `within` (the
/// application's folder).
pub fn kustomize_root(dir: &Path, within: &Path) -> PathBuf {
    let mut current = dir;
    while let Some(parent) = current.parent() {
        if !parent.starts_with(within) {
            break;
        }
        if current.file_name().is_some_and(|n| n == "overlays") {
            return parent.to_owned();
        }
        current = parent;
    }
    dir.to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_kustomize_root_holds_every_overlay() {
        let app = Path::new("app");
        let root = kustomize_root(Path::new("app/deploy/overlays/prod"), app);
        assert_eq!(root, Path::new("app/deploy"));
        assert_eq!(
            kustomize_root(Path::new("app/k8s"), app),
            Path::new("app/k8s")
        );
        let outside = kustomize_root(
            Path::new("/srv/overlays/app/k8s"),
            Path::new("/srv/overlays/app"),
        );
        assert_eq!(
            outside,
            Path::new("/srv/overlays/app/k8s"),
            "an `overlays` above the app does not count"
        );
    }

    #[test]
    fn a_missing_tool_says_what_to_install() {
        let command = Command::new("/nonexistent/kubectl");
        let err = run(command, "kubectl kustomize x", "install kubectl", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubectl kustomize x: not found. install kubectl"
        );
    }

    #[test]
    fn a_plain_folder_is_applied_as_written_and_its_tree_digested() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: \"{{ not.a.template }}\"}\n").unwrap();
        let r = plain(dir.path()).unwrap();
        assert_eq!(r.objects[0]["data"]["x"], "{{ not.a.template }}");
        let before = tree_digest(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "b").unwrap();
        assert_ne!(tree_digest(dir.path()).unwrap(), before);
    }
}
