//! `coxswain.yaml`: the application's deploy configuration, kept in its repository. Releases
//! (manifests, namespace, values per environment, health) and per-environment values files.
//! Which clusters an environment is, its waves and its promotion gate are the platform's
//! (`policy`), not the application's: naming them here is an error that says so.
//! Validation reports every problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proto::{HealthPolicy, RollbackPolicy};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Releases by name.
    pub releases: BTreeMap<String, ReleaseConfig>,
    /// Values files by environment name (the environments themselves are the platform
    /// policy's).
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
}

/// One release. Its manifests come from exactly one source, relative to the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// A folder of templated manifests (`{{ values.x }}`; its `values.yaml` holds the
    /// defaults).
    #[serde(default)]
    pub manifests: Option<PathBuf>,
    /// A kustomize directory, rendered with `kubectl kustomize`; `{env}` in it is replaced by
    /// the environment (`deploy/overlays/{env}`).
    #[serde(default)]
    pub kustomize: Option<PathBuf>,
    /// A folder of plain YAML applied as it is (`helm template` output, say).
    #[serde(default)]
    pub plain: Option<PathBuf>,
    /// A Helm chart folder, rendered with `helm template` (helm on PATH); the environment's
    /// values files and `--set` go to helm.
    #[serde(default)]
    pub helm: Option<PathBuf>,
    /// Namespace of the release.
    pub namespace: String,
    /// Per-environment values files of this release, relative to the file.
    #[serde(default)]
    pub values: BTreeMap<String, PathBuf>,
    /// Health policy.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Rollback policy.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Releases of this file this one depends on: deployed together (`coxswain deploy
    /// --release db,web`), it starts on a cluster only after each of them succeeded there.
    #[serde(default)]
    pub after: Vec<String>,
}

/// Where a release's manifests come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A templated folder.
    Templated(&'a Path),
    /// A kustomize directory (`{env}` not yet replaced).
    Kustomize(&'a Path),
    /// Plain YAML.
    Plain(&'a Path),
    /// A Helm chart.
    Helm(&'a Path),
}

impl ReleaseConfig {
    /// Its one source; `None` when it names none or several.
    pub fn source(&self) -> Option<Source<'_>> {
        let named: Vec<Source<'_>> = [
            self.manifests.as_deref().map(Source::Templated),
            self.kustomize.as_deref().map(Source::Kustomize),
            self.plain.as_deref().map(Source::Plain),
            self.helm.as_deref().map(Source::Helm),
        ]
        .into_iter()
        .flatten()
        .collect();
        match named.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// One environment, as the application sees it: only its values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Values file for every release in this environment, relative to the file.
    #[serde(default)]
    pub values: Option<PathBuf>,
    // What moved to the platform policy: read only to say so.
    #[serde(default)]
    selector: Option<IgnoredAny>,
    #[serde(default)]
    waves: Option<IgnoredAny>,
    #[serde(default)]
    requires: Option<IgnoredAny>,
    #[serde(default)]
    revert_on_failure: Option<IgnoredAny>,
}

impl EnvironmentConfig {
    /// The platform-policy fields this entry still names.
    fn moved(&self) -> Vec<&'static str> {
        [
            ("selector", self.selector.is_some()),
            ("waves", self.waves.is_some()),
            ("requires", self.requires.is_some()),
            ("revert_on_failure", self.revert_on_failure.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// A configuration file and the folder its paths are relative to.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: AppConfig,
    /// The file's folder.
    pub base: PathBuf,
}

impl Loaded {
    /// Reads and validates `path`; every problem in one error.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        let config: AppConfig =
            serde_saphyr::from_str(&text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        // `./` when the file is in the current folder, so no path from it can read as a flag
        // when handed to kubectl or helm.
        let base = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let loaded = Self { config, base };
        loaded.validate()?;
        Ok(loaded)
    }

    /// A path of the file, made absolute against its folder.
    pub fn path(&self, relative: &Path) -> PathBuf {
        self.base.join(relative)
    }

    fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.config.releases.is_empty() {
            problems.push("releases: at least one release is needed".into());
        }
        for (name, release) in &self.config.releases {
            self.release_problems(name, release, &mut problems);
        }
        for (name, env) in &self.config.environments {
            self.environment_problems(name, env, &mut problems);
        }
        problems.extend(dependency_problems(&self.config.releases));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn release_problems(&self, name: &str, r: &ReleaseConfig, problems: &mut Vec<String>) {
        label(&format!("releases.{name}"), name, problems);
        label(
            &format!("releases.{name}.namespace"),
            &r.namespace,
            problems,
        );
        match r.source() {
            None => problems.push(format!(
                "releases.{name}: name exactly one source of manifests: `manifests` (a templated \
                 folder), `kustomize` (a kustomize directory), `plain` (a folder of YAML) or \
                 `helm` (a chart)"
            )),
            Some(Source::Kustomize(dir)) => {
                // `{env}` is checked when an environment is deployed; the rest must exist.
                let fixed: PathBuf = dir
                    .components()
                    .take_while(|c| !c.as_os_str().to_string_lossy().contains("{env}"))
                    .collect();
                if !self.path(&fixed).is_dir() {
                    problems.push(format!(
                        "releases.{name}.kustomize: {} is not a folder",
                        self.path(&fixed).display()
                    ));
                }
            }
            Some(Source::Templated(dir) | Source::Plain(dir) | Source::Helm(dir)) => {
                if !self.path(dir).is_dir() {
                    let field = match r.source() {
                        Some(Source::Plain(_)) => "plain",
                        Some(Source::Helm(_)) => "helm",
                        _ => "manifests",
                    };
                    problems.push(format!(
                        "releases.{name}.{field}: {} is not a folder",
                        self.path(dir).display()
                    ));
                }
            }
        }
        for (env, file) in &r.values {
            label(&format!("releases.{name}.values.{env}"), env, problems);
            if !self.path(file).is_file() {
                problems.push(format!(
                    "releases.{name}.values.{env}: {} does not exist",
                    self.path(file).display()
                ));
            }
        }
        if r.health.timeout_secs == 0 {
            problems.push(format!("releases.{name}.health.timeout_secs: at least 1"));
        }
    }

    fn environment_problems(&self, name: &str, e: &EnvironmentConfig, problems: &mut Vec<String>) {
        label(&format!("environments.{name}"), name, problems);
        if let Some(file) = &e.values
            && !self.path(file).is_file()
        {
            problems.push(format!(
                "environments.{name}.values: {} does not exist",
                self.path(file).display()
            ));
        }
        for field in e.moved() {
            problems.push(format!(
                "environments.{name}.{field}: moved to the platform policy (the coordinator's \
                 --policy file, see examples/platform/policy.yaml); remove it here, an \
                 environment in coxswain.yaml keeps only `values`"
            ));
        }
    }
}

/// A DNS-1123 label problem of `field`, if any.
/// Every `after` naming a release the file does not have, and every dependency cycle, spelled
/// out once (`web -> db -> web`).
fn dependency_problems(releases: &BTreeMap<String, ReleaseConfig>) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, r) in releases {
        for dep in r.after.iter().filter(|d| !releases.contains_key(*d)) {
            problems.push(format!(
                "releases.{name}.after: no release {dep:?} in this file"
            ));
        }
    }
    let mut reported: Vec<Vec<String>> = Vec::new();
    for start in releases.keys() {
        let mut path = vec![start.clone()];
        let mut seen = std::collections::BTreeSet::new();
        if let Some(cycle) = find_cycle(releases, &mut path, &mut seen) {
            // The same cycle found from another of its releases is reported once.
            let mut key = cycle[..cycle.len() - 1].to_vec();
            key.sort();
            if !reported.contains(&key) {
                problems.push(format!(
                    "releases.{}.after: dependency cycle {}",
                    cycle[0],
                    cycle.join(" -> ")
                ));
                reported.push(key);
            }
        }
    }
    problems
}

/// A cycle back to `path[0]` through `after`, as the releases on it (first and last equal).
/// Each release is explored once per start (`seen`), so a dense graph stays linear.
fn find_cycle(
    releases: &BTreeMap<String, ReleaseConfig>,
    path: &mut Vec<String>,
    seen: &mut std::collections::BTreeSet<String>,
) -> Option<Vec<String>> {
    let last = path.last()?.clone();
    for dep in releases
        .get(&last)
        .map(|r| r.after.as_slice())
        .unwrap_or_default()
    {
        if *dep == path[0] {
            let mut cycle = path.clone();
            cycle.push(dep.clone());
            return Some(cycle);
        }
        if !releases.contains_key(dep) || !seen.insert(dep.clone()) {
            continue;
        }
        path.push(dep.clone());
        if let Some(cycle) = find_cycle(releases, path, seen) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

/// `names` in an order where each comes after the ones of `names` it depends on (their
/// `after`, transitively through releases of the file); the file is validated (no cycles).
pub fn deploy_order(releases: &BTreeMap<String, ReleaseConfig>, names: &[String]) -> Vec<String> {
    fn visit(
        name: &str,
        releases: &BTreeMap<String, ReleaseConfig>,
        seen: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_owned());
        for dep in releases
            .get(name)
            .map(|r| r.after.as_slice())
            .unwrap_or_default()
        {
            visit(dep, releases, seen, out);
        }
        out.push(name.to_owned());
    }
    let (mut seen, mut all) = (Vec::new(), Vec::new());
    for name in names {
        visit(name, releases, &mut seen, &mut all);
    }
    all.retain(|n| names.contains(n));
    all
}

/// The releases of `names` that `name` depends on, directly or through releases not in
/// `names`.
pub fn group_dependencies(
    releases: &BTreeMap<String, ReleaseConfig>,
    name: &str,
    names: &[String],
) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack: Vec<&str> = releases
        .get(name)
        .map(|r| r.after.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    while let Some(dep) = stack.pop() {
        if seen.contains(&dep) {
            continue;
        }
        seen.push(dep);
        if names.iter().any(|n| n == dep) {
            found.push(dep.to_owned());
        } else if let Some(r) = releases.get(dep) {
            stack.extend(r.after.iter().map(String::as_str));
        }
    }
    found.sort();
    found
}

fn label(field: &str, value: &str, problems: &mut Vec<String>) {
    if let Err(p) = proto::check_dns_label(value) {
        problems.push(proto::Problem::new(field, p).to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        let path = dir.path().join("coxswain.yaml");
        std::fs::write(
            &path,
            "releases:\n  web:\n    manifests: web\n    namespace: Shop\n    values: {qa: qa.yaml}\n  Api:\n    manifests: nowhere\n    namespace: api\n\
             environments:\n  prod:\n    values: prod.yaml\n",
        )
        .unwrap();
        let problems = Loaded::load(&path).unwrap_err();
        let text = problems.join("\n");
        assert_eq!(problems.len(), 5, "{text}");
        for needle in [
            "releases.Api: \"Api\" is not a DNS-1123 label",
            "releases.Api.manifests",
            "releases.web.namespace: \"Shop\" is not a DNS-1123 label",
            "releases.web.values.qa: ",
            "environments.prod.values: ",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn what_the_platform_decides_is_an_error_that_says_where_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("beta.yaml"), "replicas: 1\n").unwrap();
        let path = dir.path().join("coxswain.yaml");
        let write = |environments: &str| {
            std::fs::write(
                &path,
                format!("releases:\n  web: {{manifests: web, namespace: shop}}\n{environments}"),
            )
            .unwrap();
        };
        write("environments:\n  beta:\n    values: beta.yaml\n");
        let loaded = Loaded::load(&path).unwrap();
        assert!(loaded.config.environments["beta"].values.is_some());
        write("");
        assert!(Loaded::load(&path).unwrap().config.environments.is_empty());
        write(
            "environments:\n  beta:\n    selector: {env: beta}\n  prod:\n    requires: beta\n    waves: [{region: east}]\n    revert_on_failure: false\n",
        );
        let problems = Loaded::load(&path).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for (problem, field) in problems.iter().zip([
            "beta.selector",
            "prod.waves",
            "prod.requires",
            "prod.revert_on_failure",
        ]) {
            assert!(
                problem.starts_with(&format!(
                    "environments.{field}: moved to the platform policy"
                )),
                "{problem}"
            );
            assert!(
                problem.contains("examples/platform/policy.yaml"),
                "{problem}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coxswain.yaml");
        std::fs::write(&path, "releases: {}\nenvironments: {}\nenviroments: {}\n").unwrap();
        assert!(Loaded::load(&path).unwrap_err()[0].contains("enviroments"));
    }

    #[test]
    fn dependencies_order_releases_and_a_cycle_is_spelled_out() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["db", "queue", "web"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let path = dir.path().join("coxswain.yaml");
        std::fs::write(
            &path,
            "releases:\n  web: {manifests: web, namespace: shop, after: [db, queue]}\n  \
             db: {manifests: db, namespace: shop}\n  queue: {manifests: queue, namespace: shop, after: [db]}\n",
        )
        .unwrap();
        let loaded = Loaded::load(&path).unwrap();
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let releases = &loaded.config.releases;
        assert_eq!(
            deploy_order(releases, &names(&["web", "db", "queue"])),
            ["db", "queue", "web"]
        );
        assert_eq!(
            group_dependencies(releases, "web", &names(&["db", "web"])),
            ["db"],
            "through queue"
        );
        std::fs::write(
            &path,
            "releases:\n  web: {manifests: web, namespace: shop, after: [db]}\n  \
             db: {manifests: db, namespace: shop, after: [queue]}\n  queue: {manifests: queue, namespace: shop, after: [web, cache]}\n",
        )
        .unwrap();
        let problems = Loaded::load(&path).unwrap_err();
        assert_eq!(
            problems,
            [
                "releases.queue.after: no release \"cache\" in this file",
                "releases.db.after: dependency cycle db -> queue -> web -> db",
            ],
            "{problems:#?}"
        );
    }
}
