//! Rendering a release: a folder of YAML manifests, optionally templated (minijinja, strict),
//! with values layered release defaults < environment file < `--set`. A missing value is an
//! error naming every missing key, before anything touches a cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

use crate::limits::{MAX_OBJECTS_PER_RELEASE, TEMPLATE_FUEL};

/// The annotation that marks a Job as a release test (run after the rollout is healthy).
pub const TEST_ANNOTATION: &str = "coxswain.dev/test";
/// The file in a release folder holding the release's default values (not a manifest).
pub const DEFAULTS_FILE: &str = "values.yaml";

/// Why a release could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A values file is not a YAML mapping.
    #[error("values file {path} is invalid: {reason}")]
    Values {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A `--set` expression is not `key.path=value`.
    #[error("--set {expr:?} is invalid: {reason}")]
    Set {
        /// The expression.
        expr: String,
        /// Why.
        reason: String,
    },
    /// Templates use values nobody set; every one is named.
    #[error("{} missing value(s): {}", .missing.len(), .missing.join(", "))]
    MissingValues {
        /// `file: key` for each missing value.
        missing: Vec<String>,
    },
    /// A template does not parse or render.
    #[error("template {file}: {reason}")]
    Template {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A rendered document is not YAML.
    #[error("{file} is not valid YAML: {reason}")]
    Yaml {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A rendered document is not a Kubernetes object.
    #[error("{file} document {index}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// Document index in the file, from 0.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The folder has no manifest.
    #[error("{0} contains no manifests (*.yaml, *.yml)")]
    Empty(PathBuf),
    /// A rendering tool (kubectl kustomize, helm template) is missing or failed.
    #[error("{tool}: {reason}")]
    Tool {
        /// The command (`kubectl kustomize overlays/prod`).
        tool: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A template ran longer than [`TEMPLATE_FUEL`] allows (a loop that does not end).
    #[error(
        "template {file} ran out of fuel: it used the limit of {limit} instructions (an endless or huge loop?)"
    )]
    OutOfFuel {
        /// The file.
        file: String,
        /// The fuel it had.
        limit: u64,
    },
    /// A value with YAML syntax did not stay one scalar: it added, changed or cut fields.
    #[error(
        "template {file}: the value of {path} does not stay one YAML scalar (its YAML syntax would add, change or cut fields); quote it in the template or change the value"
    )]
    NotAScalar {
        /// The file.
        file: String,
        /// `values.a.b` of the value.
        path: String,
    },
    /// More objects than [`MAX_OBJECTS_PER_RELEASE`].
    #[error(
        "the release renders at least {count} objects, over the limit of {limit} objects per release"
    )]
    TooManyObjects {
        /// How many it had rendered when it stopped.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl RenderError {
    /// A template error of `file`, told apart when it is the fuel running out.
    fn template(file: &str, error: &minijinja::Error) -> Self {
        if error.kind() == minijinja::ErrorKind::OutOfFuel {
            Self::OutOfFuel {
                file: file.to_owned(),
                limit: TEMPLATE_FUEL,
            }
        } else {
            Self::Template {
                file: file.to_owned(),
                // Not `{error:#}`: minijinja's debug form lists the values of the variables a
                // failing template referenced, and those may be secrets.
                reason: error.to_string(),
            }
        }
    }
}

/// The rendered release: objects in install order, test Jobs apart, and a digest of both.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Objects to apply, in install order.
    pub objects: Vec<Value>,
    /// Test Jobs, created after the rollout is healthy.
    pub tests: Vec<Value>,
    /// `sha256:<hex>` of the objects and tests.
    pub digest: String,
}

impl Rendered {
    /// Builds a rendered release from objects (a bundle, an intent's inline manifests).
    pub fn from_objects(all: Vec<Value>) -> Self {
        let (mut objects, tests): (Vec<Value>, Vec<Value>) =
            all.into_iter().partition(|o| !is_test(o));
        objects.sort_by_key(install_rank);
        let digest = digest_of(&objects, &tests);
        Self {
            objects,
            tests,
            digest,
        }
    }

    /// Every object, tests included, as a flat list (what a history record stores).
    pub fn all(&self) -> Vec<Value> {
        self.objects
            .iter()
            .chain(self.tests.iter())
            .cloned()
            .collect()
    }
}

fn is_test(o: &Value) -> bool {
    o["kind"] == "Job" && o["metadata"]["annotations"][TEST_ANNOTATION] == "true"
}

/// `sha256:<hex>` of the canonical JSON of the objects.
pub fn digest_of(objects: &[Value], tests: &[Value]) -> String {
    let bytes =
        serde_json::to_vec(&json!({"objects": objects, "tests": tests})).unwrap_or_default();
    sha256(&bytes)
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    proto::sha256_digest(bytes)
}

/// Install order: Namespaces, CRDs, ServiceAccounts, RBAC, ConfigMaps and Secrets, Services,
/// workloads, then everything else (custom resources last, once their CRDs exist).
pub fn install_rank(o: &Value) -> u8 {
    match o["kind"].as_str().unwrap_or_default() {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" => 2,
        "ClusterRole" | "Role" => 3,
        "ClusterRoleBinding" | "RoleBinding" => 4,
        "ConfigMap" | "Secret" => 5,
        "PersistentVolumeClaim" => 6,
        "Service" => 7,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Pod" => 8,
        "Job" | "CronJob" => 9,
        "Ingress" | "HorizontalPodAutoscaler" | "PodDisruptionBudget" | "NetworkPolicy" => 10,
        _ => 11,
    }
}

/// Deep-merges `over` into `base`: maps key by key, everything else replaced.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_values(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

pub(crate) fn read(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path).map_err(|source| RenderError::Read {
        path: path.to_owned(),
        source,
    })
}

fn values_file(path: &Path) -> Result<Value, RenderError> {
    let text = read(path)?;
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| RenderError::Values {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(json!({})),
        _ => Err(RenderError::Values {
            path: path.to_owned(),
            reason: "the top level must be a mapping".into(),
        }),
    }
}

/// Applies one `--set a.b.c=value`: `true`/`false` are booleans, plain integers numbers,
/// everything else a string. A value is one YAML-safe scalar: a line break or any other
/// control character is refused (a newline in `--set tag=...` would otherwise let the value
/// add fields to a manifest); multi-line values belong in a values file.
pub fn apply_set(values: &mut Value, expr: &str) -> Result<(), RenderError> {
    let bad = |reason: &str| RenderError::Set {
        expr: expr.to_owned(),
        reason: reason.to_owned(),
    };
    let (key, raw) = expr
        .split_once('=')
        .ok_or_else(|| bad("expected key.path=value"))?;
    if let Some((at, c)) = raw.char_indices().find(|(_, c)| c.is_control()) {
        return Err(bad(&format!(
            "the value has the control character {c:?} at byte {at}; a --set value must be a single-line scalar (put multi-line values in a values file)"
        )));
    }
    let path: Vec<&str> = key.split('.').collect();
    if path.iter().any(|p| p.trim().is_empty()) {
        return Err(bad("empty key segment"));
    }
    // Only `true`, `false` and plain integers become non-strings: `2.0` stays "2.0" (an image
    // tag read as the float 2 is exactly the outage this tool exists to prevent).
    let integer = raw.strip_prefix('-').unwrap_or(raw);
    let is_int = !integer.is_empty()
        && integer.bytes().all(|b| b.is_ascii_digit())
        && (integer == "0" || !integer.starts_with('0'));
    let value = match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ if is_int => raw
            .parse::<i64>()
            .map_or_else(|_| Value::String(raw.to_owned()), Value::from),
        _ => Value::String(raw.to_owned()),
    };
    let mut node = values;
    for (i, segment) in path.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return Err(bad("not a mapping"));
        };
        if i + 1 == path.len() {
            map.insert((*segment).to_owned(), value);
            return Ok(());
        }
        node = map
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// Values for a release: `<dir>/values.yaml` < the environment file < `--set`s, in order.
pub fn layered_values(
    dir: &Path,
    env_file: Option<&Path>,
    sets: &[String],
) -> Result<Value, RenderError> {
    let mut values = json!({});
    let defaults = dir.join(DEFAULTS_FILE);
    if defaults.is_file() {
        merge_values(&mut values, &values_file(&defaults)?);
    }
    if let Some(file) = env_file {
        merge_values(&mut values, &values_file(file)?);
    }
    for expr in sets {
        apply_set(&mut values, expr)?;
    }
    Ok(values)
}

/// The manifest files of a release folder, sorted by name.
pub(crate) fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RenderError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            (name.ends_with(".yaml") || name.ends_with(".yml"))
                && name != DEFAULTS_FILE
                && !name.starts_with(['.', '_'])
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RenderError::Empty(dir.to_owned()));
    }
    Ok(files)
}

/// Renders a release folder with `values`; `release` is `{name, namespace}` for templates.
/// Each template runs with [`TEMPLATE_FUEL`]; at most [`MAX_OBJECTS_PER_RELEASE`] objects.
pub fn render(dir: &Path, values: &Value, release: &Value) -> Result<Rendered, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    let context = json!({"values": values, "release": release});
    let jinja_context = minijinja::Value::from(minijinja::value::Serde(&context));
    let sources = sources(dir)?;
    check_values(&env, &sources, &context, &jinja_context)?;
    let mut all = Vec::new();
    for (name, text) in &sources {
        let rendered = env
            .render_str(text, &jinja_context)
            .map_err(|e| RenderError::template(name, &e))?;
        let objects = objects_of(name, &rendered)?;
        if let Some(path) = crate::injection::broken_scalar(values, &rendered, &objects) {
            return Err(RenderError::NotAScalar {
                file: name.clone(),
                path,
            });
        }
        all.extend(objects);
        if all.len() > MAX_OBJECTS_PER_RELEASE {
            return Err(RenderError::TooManyObjects {
                count: all.len(),
                limit: MAX_OBJECTS_PER_RELEASE,
            });
        }
    }
    if all.is_empty() {
        return Err(RenderError::Empty(dir.to_owned()));
    }
    Ok(Rendered::from_objects(all))
}

/// Every manifest file of the folder as (file name, text), in name order.
fn sources(dir: &Path) -> Result<Vec<(String, String)>, RenderError> {
    let mut sources = Vec::new();
    for path in &manifest_files(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        sources.push((name, read(path)?));
    }
    Ok(sources)
}

/// `sha256:<hex>` of a release's content: its manifest templates and its defaults
/// (`values.yaml`), each as file name and text, in name order; environment values and `--set`
/// overrides are not part of it. The same content has the same digest in every environment,
/// which is what the promotion gate compares.
pub fn content_digest(dir: &Path) -> Result<String, RenderError> {
    let mut files = sources(dir)?;
    let defaults = dir.join(DEFAULTS_FILE);
    if defaults.is_file() {
        files.push((DEFAULTS_FILE.to_owned(), read(&defaults)?));
    }
    files.sort();
    let mut bytes = Vec::new();
    for (name, text) in &files {
        for part in [name.as_bytes(), text.as_bytes()] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    Ok(sha256(&bytes))
}

/// Every missing value, from every file, before failing.
fn check_values(
    env: &Environment<'_>,
    sources: &[(String, String)],
    context: &Value,
    jinja_context: &minijinja::Value,
) -> Result<(), RenderError> {
    let mut missing = BTreeSet::new();
    for (name, text) in sources {
        let template = env
            .template_from_str(text)
            .map_err(|e| RenderError::Template {
                file: name.clone(),
                reason: e.to_string(),
            })?;
        if let Err(e) = template.render(jinja_context) {
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                return Err(RenderError::template(name, &e));
            }
            for var in template.undeclared_variables(true) {
                if lookup(context, &var).is_none() && env.globals().all(|(g, _)| g != var) {
                    missing.insert(format!("{name}: {var}"));
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RenderError::MissingValues {
            missing: missing.into_iter().collect(),
        })
    }
}

/// The objects of one rendered file: its YAML documents, `List` items unpacked, empty
/// documents skipped, each checked.
pub(crate) fn objects_of(name: &str, rendered: &str) -> Result<Vec<Value>, RenderError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(rendered).map_err(|e| RenderError::Yaml {
            file: name.to_owned(),
            reason: e.to_string(),
        })?;
    let mut objects = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        match doc {
            Value::Null => {}
            Value::Object(_) if doc["kind"] == "List" => {
                for item in doc["items"].as_array().into_iter().flatten() {
                    objects.push(check_object(name, index, item.clone())?);
                }
            }
            other => objects.push(check_object(name, index, other)?),
        }
    }
    Ok(objects)
}

fn lookup<'a>(context: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(context, |v, k| v.as_object()?.get(k))
}

fn check_object(file: &str, index: usize, object: Value) -> Result<Value, RenderError> {
    let invalid = |reason: String| RenderError::Invalid {
        file: file.to_owned(),
        index,
        reason,
    };
    if !object.is_object() {
        return Err(invalid("a document must be a mapping".into()));
    }
    let mut problems = Vec::new();
    for key in ["apiVersion", "kind"] {
        if object[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{key} is required"));
        }
    }
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        problems.push("metadata.name is required".into());
    }
    if problems.is_empty() {
        Ok(object)
    } else {
        Err(invalid(problems.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {{ values.replicas }}\n  template:\n    spec:\n      containers:\n      - name: web\n        image: \"{{ values.image.repo }}:{{ values.image.tag }}\"\n";

    #[test]
    fn values_layer_defaults_then_environment_then_set() {
        let dir = folder(&[
            (
                "values.yaml",
                "replicas: 1\nimage: {repo: web, tag: '1.0'}\n",
            ),
            ("prod.yaml", "replicas: 3\n"),
        ]);
        let values = layered_values(
            dir.path(),
            Some(&dir.path().join("prod.yaml")),
            &[
                "image.tag=2.0".into(),
                "debug=true".into(),
                "port=8080".into(),
                "sha=0123".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            values,
            json!({"replicas": 3, "image": {"repo": "web", "tag": "2.0"}, "debug": true, "port": 8080, "sha": "0123"})
        );
    }

    #[test]
    fn a_missing_value_names_every_missing_key() {
        let dir = folder(&[
            ("deploy.yaml", DEPLOY),
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ values.name }}\n",
            ),
        ]);
        let err = render(dir.path(), &json!({"image": {"repo": "web"}}), &json!({})).unwrap_err();
        let RenderError::MissingValues { missing } = err else {
            panic!("{err}")
        };
        assert_eq!(
            missing,
            [
                "cm.yaml: values.name",
                "deploy.yaml: values.image.tag",
                "deploy.yaml: values.replicas"
            ]
        );
    }

    #[test]
    fn renders_in_install_order_with_tests_apart_and_a_stable_digest() {
        let dir = folder(&[
            ("a-deploy.yaml", DEPLOY),
            (
                "b-more.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: smoke\n  annotations: {coxswain.dev/test: 'true'}\n",
            ),
            (
                "values.yaml",
                "replicas: 2\nimage: {repo: web, tag: '1.0'}\n",
            ),
            ("notes.txt", "not a manifest"),
        ]);
        let values = layered_values(dir.path(), None, &[]).unwrap();
        let r = render(dir.path(), &values, &json!({"name": "web"})).unwrap();
        let kinds: Vec<&str> = r
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Namespace", "Service", "Deployment"]);
        assert_eq!(r.tests.len(), 1);
        assert_eq!(r.objects[2]["spec"]["replicas"], 2);
        assert_eq!(
            r.objects[2]["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:1.0"
        );
        let again = render(dir.path(), &values, &json!({"name": "web"})).unwrap();
        assert_eq!(r.digest, again.digest);
        assert!(r.digest.starts_with("sha256:") && r.digest.len() == 71);
    }

    #[test]
    fn the_content_digest_covers_templates_and_defaults_not_environment_values() {
        let dir = folder(&[("deploy.yaml", DEPLOY), ("values.yaml", "replicas: 2\n")]);
        let env = folder(&[("prod.yaml", "replicas: 3\n")]);
        let before = content_digest(dir.path()).unwrap();
        assert!(before.starts_with("sha256:") && before.len() == 71);
        std::fs::write(env.path().join("prod.yaml"), "replicas: 5\n").unwrap();
        assert_eq!(
            content_digest(dir.path()).unwrap(),
            before,
            "environment values"
        );
        let same = folder(&[
            ("values.yaml", "replicas: 2\n"),
            ("deploy.yaml", DEPLOY),
            ("notes.txt", "not content"),
        ]);
        assert_eq!(
            content_digest(same.path()).unwrap(),
            before,
            "order, non-manifests"
        );
        std::fs::write(dir.path().join("values.yaml"), "replicas: 4\n").unwrap();
        let defaults = content_digest(dir.path()).unwrap();
        assert_ne!(defaults, before, "defaults");
        let edited = DEPLOY.replace("name: web", "name: web2");
        std::fs::write(dir.path().join("deploy.yaml"), edited).unwrap();
        let template = content_digest(dir.path()).unwrap();
        assert_ne!(template, defaults, "a template edit");
        std::fs::rename(
            dir.path().join("deploy.yaml"),
            dir.path().join("other.yaml"),
        )
        .unwrap();
        assert_ne!(
            content_digest(dir.path()).unwrap(),
            template,
            "a renamed template"
        );
    }

    #[test]
    fn plain_yaml_and_lists_are_accepted_and_bad_documents_named() {
        let dir = folder(&[(
            "out.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n",
        )]);
        let r = render(dir.path(), &json!({}), &json!({})).unwrap();
        assert_eq!(r.objects.len(), 1);
        let dir = folder(&[(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\n---\nkind: Secret\nmetadata: {name: s}\n",
        )]);
        let err = render(dir.path(), &json!({}), &json!({}))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "bad.yaml document 0: metadata.name is required");
    }

    #[test]
    fn an_endless_template_loop_runs_out_of_fuel_and_the_next_render_works() {
        let endless =
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}\n";
        let dir = folder(&[("loop.yaml", endless)]);
        let err = render(dir.path(), &json!({}), &json!({})).unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::OutOfFuel {
                    limit: TEMPLATE_FUEL,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("template loop.yaml ran out of fuel")
                && text.contains(&TEMPLATE_FUEL.to_string()),
            "{text}"
        );
        let dir = folder(&[(
            "cm.yaml",
            "{% for i in range(3) %}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c{{ i }}}\n{% endfor %}",
        )]);
        assert_eq!(
            render(dir.path(), &json!({}), &json!({}))
                .unwrap()
                .objects
                .len(),
            3
        );
    }

    #[test]
    fn a_set_value_with_a_line_break_cannot_inject_fields() {
        let dir = folder(&[(
            "deploy.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  tag: {{ values.tag }}\n",
        )]);
        for evil in [
            "1\nkind: ClusterRoleBinding",
            "1\r\nkind: ClusterRoleBinding",
            "1\u{85}x",
        ] {
            let err = layered_values(dir.path(), None, &[format!("tag={evil}")]).unwrap_err();
            assert!(
                matches!(&err, RenderError::Set { reason, .. } if reason.contains("single-line scalar")),
                "{err}"
            );
        }
        let values = layered_values(dir.path(), None, &["tag=v2".into()]).unwrap();
        let r = render(dir.path(), &values, &json!({})).unwrap();
        assert_eq!(r.objects[0]["kind"], "ConfigMap");
        assert_eq!(r.objects[0]["data"], json!({"tag": "v2"}));
    }

    #[test]
    fn a_single_line_value_cannot_add_fields_through_a_flow_mapping() {
        let dir = folder(&[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"{{ values.name }}\"}\n",
        )]);
        let values = layered_values(
            dir.path(),
            None,
            &["name=web\", namespace: \"kube-system".into()],
        )
        .unwrap();
        let err = render(dir.path(), &values, &json!({})).unwrap_err();
        assert!(
            matches!(&err, RenderError::NotAScalar { path, .. } if path == "values.name"),
            "{err}"
        );
        let values = layered_values(dir.path(), None, &["name=web".into()]).unwrap();
        let r = render(dir.path(), &values, &json!({})).unwrap();
        assert_eq!(r.objects[0]["metadata"], json!({"name": "web"}));
    }

    #[test]
    fn more_objects_than_the_limit_are_refused_naming_limit_and_count() {
        let many = format!(
            "{{% for i in range({}) %}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{{{{ i }}}}}}\n{{% endfor %}}",
            MAX_OBJECTS_PER_RELEASE + 1
        );
        let dir = folder(&[("many.yaml", &many)]);
        let err = render(dir.path(), &json!({}), &json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the release renders at least {} objects, over the limit of {MAX_OBJECTS_PER_RELEASE} objects per release",
                MAX_OBJECTS_PER_RELEASE + 1
            )
        );
    }
}
