//! `coxswain.yaml`: the application's deploy configuration, kept in its repository. Releases
//! (manifests, namespace, values, health) and environments (cluster selector, values, waves,
//! promotion gate). Validation reports every problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proto::{HealthPolicy, RollbackPolicy};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Releases by name.
    pub releases: BTreeMap<String, ReleaseConfig>,
    /// Environments by name.
    pub environments: BTreeMap<String, EnvironmentConfig>,
}

/// One release.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// Folder of manifests, relative to the file (its `values.yaml` holds the defaults).
    pub manifests: PathBuf,
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
}

/// One environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Cluster labels that select the environment's clusters (`env: prod`).
    pub selector: BTreeMap<String, String>,
    /// Values file for every release in this environment, relative to the file.
    #[serde(default)]
    pub values: Option<PathBuf>,
    /// Waves: further selectors within the environment, deployed in order.
    #[serde(default)]
    pub waves: Vec<BTreeMap<String, String>>,
    /// Environments a version must have succeeded in first (`requires: beta`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub requires: Vec<String>,
    /// Roll back earlier waves when a later one fails (default true).
    #[serde(default = "yes")]
    pub revert_on_failure: bool,
}

fn yes() -> bool {
    true
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
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
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
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
        let label = |what: &str, v: &str, problems: &mut Vec<String>| {
            if let Err(p) = proto::check_dns_label(v) {
                problems.push(format!("{what} {v:?}: {p:?}"));
            }
        };
        if self.config.releases.is_empty() {
            problems.push("releases: at least one release is needed".into());
        }
        for (name, r) in &self.config.releases {
            label("release", name, &mut problems);
            label(
                &format!("releases.{name}.namespace"),
                &r.namespace,
                &mut problems,
            );
            if !self.path(&r.manifests).is_dir() {
                problems.push(format!(
                    "releases.{name}.manifests: {} is not a folder",
                    self.path(&r.manifests).display()
                ));
            }
            for (env, file) in &r.values {
                if !self.config.environments.contains_key(env) {
                    problems.push(format!("releases.{name}.values.{env}: no such environment"));
                }
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
        for (name, e) in &self.config.environments {
            label("environment", name, &mut problems);
            if e.selector.is_empty() {
                problems.push(format!("environments.{name}.selector: at least one label"));
            }
            if let Some(file) = &e.values
                && !self.path(file).is_file()
            {
                problems.push(format!(
                    "environments.{name}.values: {} does not exist",
                    self.path(file).display()
                ));
            }
            for (i, w) in e.waves.iter().enumerate() {
                if w.is_empty() {
                    problems.push(format!("environments.{name}.waves[{i}]: an empty selector"));
                }
            }
            for r in &e.requires {
                if r == name {
                    problems.push(format!(
                        "environments.{name}.requires: an environment cannot require itself"
                    ));
                } else if !self.config.environments.contains_key(r) {
                    problems.push(format!(
                        "environments.{name}.requires: no environment {r:?}"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
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
            "releases:\n  web:\n    manifests: web\n    namespace: Shop\n  Api:\n    manifests: nowhere\n    namespace: api\n\
             environments:\n  prod:\n    selector: {env: prod}\n    requires: staging\n  beta:\n    selector: {}\n",
        )
        .unwrap();
        let problems = Loaded::load(&path).unwrap_err();
        let text = problems.join("\n");
        assert_eq!(problems.len(), 5, "{text}");
        for needle in [
            "release \"Api\"",
            "releases.Api.manifests",
            "releases.web.namespace \"Shop\"",
            "environments.beta.selector",
            "no environment \"staging\"",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coxswain.yaml");
        std::fs::write(&path, "releases: {}\nenvironments: {}\nenviroments: {}\n").unwrap();
        assert!(Loaded::load(&path).unwrap_err()[0].contains("enviroments"));
    }
}
