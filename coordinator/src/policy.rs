//! The platform policy: the coordinator's own file (`--policy`), kept by the platform team,
//! not by the applications. It says which environments exist, which clusters each one is
//! (a label selector), in which waves they are deployed, which environments a release must
//! have passed first, whether a failure reverts earlier waves, and which releases and
//! namespaces each environment may receive. CI only names an environment.
//!
//! Loading validates every problem at once; admitting a request is pure.

use std::collections::BTreeMap;
use std::path::Path;

use proto::{AppliedPolicy, PLATFORM_FIELDS, Problem, RolloutRequest};
use serde::Deserialize;

use crate::plan::Refusal;

/// Where an example policy lives, for error messages.
pub const EXAMPLE: &str = "examples/platform/policy.yaml";

/// In `releases` or `namespaces`: every name is allowed.
pub const ANY: &str = "*";

/// The whole policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Environments by name.
    pub environments: BTreeMap<String, EnvironmentPolicy>,
}

/// One environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPolicy {
    /// Cluster labels that select the environment's clusters (`env: prod`).
    pub selector: BTreeMap<String, String>,
    /// Waves: further selectors within the environment, deployed in order; clusters no wave
    /// selects form a last wave.
    #[serde(default)]
    pub waves: Vec<BTreeMap<String, String>>,
    /// Environments where the same version with the same content must have succeeded first.
    #[serde(default, deserialize_with = "one_or_many")]
    pub requires: Vec<String>,
    /// Roll back earlier waves when a later one fails (default true).
    #[serde(default = "yes")]
    pub revert_on_failure: bool,
    /// Releases this environment may receive; `["*"]` allows every release. Missing or empty:
    /// none (a release must be listed).
    #[serde(default)]
    pub releases: Vec<String>,
    /// Namespaces releases may be deployed to here; `["*"]` allows every namespace. Missing or
    /// empty: none.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Windows in which no rollout starts and no next wave begins.
    #[serde(default)]
    pub freeze: Vec<crate::freeze::FreezeWindow>,
}

impl EnvironmentPolicy {
    /// Its freeze windows (validated when the policy was read).
    pub fn freeze(&self) -> crate::freeze::Freeze {
        crate::freeze::Freeze::new(&self.freeze, "").unwrap_or_default()
    }
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

fn allows(list: &[String], name: &str) -> bool {
    list.iter().any(|x| x == ANY || x == name)
}

impl EnvironmentPolicy {
    /// What a rollout to this environment records.
    pub fn applied(&self) -> AppliedPolicy {
        AppliedPolicy {
            selector: self.selector.clone(),
            waves: self.waves.clone(),
            requires: self.requires.clone(),
            revert_on_failure: self.revert_on_failure,
        }
    }
}

impl Policy {
    /// Reads and validates the policy file; every problem in one list.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Self::parse(&text).map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect()
        })
    }

    /// Parses and validates a policy; every problem in one list.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let policy: Self = serde_saphyr::from_str(text).map_err(|e| vec![e.to_string()])?;
        let problems = policy.problems();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// Every problem of the policy.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.environments.is_empty() {
            problems.push("environments: at least one environment is needed".into());
        }
        for (name, env) in &self.environments {
            if let Err(p) = proto::check_dns_label(name) {
                problems.push(Problem::new(format!("environments.{name}"), p).to_string());
            }
            self.environment_problems(name, env, &mut problems);
        }
        if let Some(cycle) = self.requires_cycle() {
            problems.push(format!(
                "requires: {} form a cycle, so none of them could ever be deployed",
                cycle.join(" -> ")
            ));
        }
        problems
    }

    fn environment_problems(
        &self,
        name: &str,
        env: &EnvironmentPolicy,
        problems: &mut Vec<String>,
    ) {
        let at = format!("environments.{name}");
        if env.selector.is_empty() {
            problems.push(format!(
                "{at}.selector: at least one label (e.g. {{env: {name}}})"
            ));
        }
        for (i, w) in env.waves.iter().enumerate() {
            if w.is_empty() {
                problems.push(format!("{at}.waves[{i}]: an empty selector"));
            }
        }
        if let Err(bad) = crate::freeze::Freeze::new(&env.freeze, &at) {
            problems.extend(bad);
        }
        for r in &env.requires {
            if r == name {
                problems.push(format!(
                    "{at}.requires: an environment cannot require itself"
                ));
            } else if !self.environments.contains_key(r) {
                problems.push(format!("{at}.requires: no environment {r:?}"));
            }
        }
        for (field, list) in [("releases", &env.releases), ("namespaces", &env.namespaces)] {
            for item in list.iter().filter(|i| *i != ANY) {
                if let Err(p) = proto::check_dns_label(item) {
                    let problem = Problem::new(format!("{at}.{field}"), p);
                    problems.push(format!("{problem} (or \"*\" for any)"));
                }
            }
        }
    }

    /// A chain of environments that require each other in a circle, if any.
    fn requires_cycle(&self) -> Option<Vec<String>> {
        for start in self.environments.keys() {
            let mut path = vec![start.clone()];
            if self.cycle_from(&mut path) {
                return Some(path);
            }
        }
        None
    }

    /// Depth-first along `requires`; `true` with `path` ending where it began.
    fn cycle_from(&self, path: &mut Vec<String>) -> bool {
        let Some(last) = path.last() else {
            return false;
        };
        let Some(env) = self.environments.get(last) else {
            return false;
        };
        for next in &env.requires {
            if next == &path[0] && path.len() > 1 {
                path.push(next.clone());
                return true;
            }
            if path.contains(next) {
                continue;
            }
            path.push(next.clone());
            if self.cycle_from(path) {
                return true;
            }
            path.pop();
        }
        false
    }

    /// The policy a request gets, or why the platform refuses it: an environment the policy
    /// does not have, a release or namespace the environment does not allow.
    pub fn admit(&self, request: &RolloutRequest) -> Result<AppliedPolicy, Refusal> {
        let name = &request.environment;
        let Some(env) = self.environments.get(name) else {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            return Err(Refusal::UnknownEnvironment(format!(
                "no environment {name:?} in the platform policy (it has: {}); deploy to one of \
                 those, or ask the platform team to add {name:?}",
                known.join(", ")
            )));
        };
        let refuse = |what: &str, value: &str, list: &[String]| {
            let listed = if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(", ")
            };
            Refusal::NotAllowed(format!(
                "environment {name} does not allow {what} {value:?} (platform policy \
                 environments.{name}.{what}s: {listed}); ask the platform team to list it"
            ))
        };
        if !allows(&env.releases, &request.release) {
            return Err(refuse("release", &request.release, &env.releases));
        }
        if !allows(&env.namespaces, &request.namespace) {
            return Err(refuse("namespace", &request.namespace, &env.namespaces));
        }
        Ok(env.applied())
    }
}

/// A request body as sent: the request's own fields, and whatever else it carried.
#[derive(Deserialize)]
struct Submitted {
    #[serde(flatten)]
    request: RolloutRequest,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// Decodes a `POST /v1/rollouts` body (JSON). A field the platform policy sets (`selector`,
/// `waves`, `requires`, `revert_on_failure`) is refused by name rather than ignored, and so
/// is any other field a request does not have.
pub fn decode_request(body: &[u8]) -> Result<RolloutRequest, String> {
    let Submitted { request, rest } = proto::decode(Some("application/json"), body)
        .map_err(|e| format!("invalid rollout request: {e}"))?;
    let (platform, unknown): (Vec<&str>, Vec<&str>) = rest
        .keys()
        .map(String::as_str)
        .partition(|k| PLATFORM_FIELDS.contains(k));
    if !platform.is_empty() {
        return Err(format!(
            "{} set by the platform policy, not by the request: remove {} (the coordinator's \
             policy file decides each environment's clusters, waves, promotion gate and revert)",
            platform.join(", "),
            if platform.len() == 1 { "it" } else { "them" }
        ));
    }
    if !unknown.is_empty() {
        return Err(format!(
            "unknown field(s) in the rollout request: {}; remove them",
            unknown.join(", ")
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    const FLEET: &str = "environments:
  beta:
    selector: {env: beta}
    releases: [\"*\"]
    namespaces: [\"*\"]
  prod:
    selector: {env: prod}
    waves:
      - {region: east}
      - {region: west}
    requires: beta
    releases: [web]
    namespaces: [shop]
  frozen:
    selector: {env: frozen}
    revert_on_failure: false
";

    #[test]
    fn a_policy_parses_with_safe_defaults() {
        let p = Policy::parse(FLEET).unwrap();
        let prod = &p.environments["prod"];
        assert_eq!(prod.requires, ["beta"]);
        assert_eq!(prod.waves.len(), 2);
        assert!(prod.revert_on_failure);
        let frozen = &p.environments["frozen"];
        assert!(!frozen.revert_on_failure);
        assert!(frozen.releases.is_empty() && frozen.namespaces.is_empty());
        assert!(frozen.waves.is_empty() && frozen.requires.is_empty());
    }

    #[test]
    fn the_example_policy_is_valid() {
        let text = include_str!("../../examples/platform/policy.yaml");
        let p = Policy::parse(text).unwrap();
        assert_eq!(p.environments["prod"].requires, ["beta"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "environments:
  Prod:
    selector: {}
    waves: [{}]
    requires: [Prod, staging]
    releases: [web, Bad_Name, \"*\"]
    namespaces: [\"a.b\"]
";
        let problems = Policy::parse(text).unwrap_err();
        let all = problems.join("\n");
        for needle in [
            "environments.Prod: \"Prod\" is not a DNS-1123 label",
            "environments.Prod.selector: at least one label",
            "environments.Prod.waves[0]: an empty selector",
            "environments.Prod.requires: an environment cannot require itself",
            "environments.Prod.requires: no environment \"staging\"",
            "environments.Prod.releases: \"Bad_Name\"",
            "environments.Prod.namespaces: \"a.b\"",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        assert_eq!(problems.len(), 7, "{all}");
    }

    #[test]
    fn malformed_policies_are_refused() {
        let cases = [
            ("environments: {}\n", "at least one environment"),
            ("environments:\n  beta: {}\n", "selector"),
            (
                "environments:\n  beta:\n    selector: {env: beta}\n    wave: []\n",
                "wave",
            ),
            (
                "environments:\n  a: {selector: {e: a}, requires: c}\n  b: {selector: {e: b}, requires: a}\n  c: {selector: {e: c}, requires: b}\n",
                "a -> c -> b -> a form a cycle",
            ),
        ];
        for (text, needle) in cases {
            let all = Policy::parse(text).unwrap_err().join("\n");
            assert!(
                all.contains(needle),
                "{text}: {needle} missing from:\n{all}"
            );
        }
    }

    fn request(env: &str, release: &str, namespace: &str) -> RolloutRequest {
        RolloutRequest {
            schema_version: 1,
            idempotency_key: "k".into(),
            release: release.into(),
            namespace: namespace.into(),
            environment: env.into(),
            version: "1".into(),
            content_digest: proto::sha256_digest(b"c"),
            manifests: proto::Manifests::Bundle {
                digest: proto::sha256_digest(b"m"),
                size: 1,
            },
            health: Default::default(),
            rollback: Default::default(),
            requested_by: "ci".into(),
            after: Vec::new(),
            break_glass: None,
        }
    }

    #[test]
    fn admission_follows_the_environment_lists() {
        let p = Policy::parse(FLEET).unwrap();
        let cases: [(&str, &str, &str, Result<(), &str>); 7] = [
            ("beta", "web", "shop", Ok(())),
            ("beta", "api", "anything", Ok(())),
            ("prod", "web", "shop", Ok(())),
            (
                "prod",
                "api",
                "shop",
                Err(
                    "does not allow release \"api\" (platform policy environments.prod.releases: web)",
                ),
            ),
            (
                "prod",
                "web",
                "kube-system",
                Err(
                    "does not allow namespace \"kube-system\" (platform policy environments.prod.namespaces: shop)",
                ),
            ),
            (
                "frozen",
                "web",
                "shop",
                Err(
                    "environment frozen does not allow release \"web\" (platform policy environments.frozen.releases: none)",
                ),
            ),
            (
                "staging",
                "web",
                "shop",
                Err(
                    "no environment \"staging\" in the platform policy (it has: beta, frozen, prod)",
                ),
            ),
        ];
        for (env, release, namespace, want) in cases {
            let got = p.admit(&request(env, release, namespace));
            match (got, want) {
                (Ok(_), Ok(())) => {}
                (Err(refusal), Err(needle)) => {
                    assert!(
                        refusal.to_string().contains(needle),
                        "{env}/{release}/{namespace}: {refusal}"
                    );
                }
                (got, want) => panic!("{env}/{release}/{namespace}: {got:?}, wanted {want:?}"),
            }
        }
        assert!(matches!(
            p.admit(&request("staging", "web", "shop")),
            Err(Refusal::UnknownEnvironment(_))
        ));
        assert!(matches!(
            p.admit(&request("prod", "api", "shop")),
            Err(Refusal::NotAllowed(_))
        ));
        let applied = p.admit(&request("prod", "web", "shop")).unwrap();
        assert_eq!(applied.requires, ["beta"]);
        assert_eq!(applied.waves.len(), 2);
        assert_eq!(applied.selector["env"], "prod");
        assert!(applied.revert_on_failure);
    }

    #[test]
    fn a_request_naming_what_the_platform_decides_is_refused_by_field() {
        let base = serde_json::to_value(request("prod", "web", "shop")).unwrap();
        let with = |extra: serde_json::Value| {
            let mut body = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            decode_request(&serde_json::to_vec(&body).unwrap())
        };
        assert_eq!(with(json!({})).unwrap(), request("prod", "web", "shop"));
        let cases = [
            (
                json!({"selector": {"env": "prod"}}),
                "selector set by the platform policy, not by the request: remove it",
            ),
            (json!({"waves": []}), "waves set by the platform policy"),
            (
                json!({"requires": []}),
                "requires set by the platform policy",
            ),
            (
                json!({"revert_on_failure": false}),
                "revert_on_failure set by the platform policy",
            ),
            (
                json!({"requires": [], "selector": {}}),
                "requires, selector set by the platform policy, not by the request: remove them",
            ),
            (
                json!({"requires": [], "colour": 1}),
                "requires set by the platform policy",
            ),
            (
                json!({"colour": 1}),
                "unknown field(s) in the rollout request: colour",
            ),
            (json!({"schema_version": 9}), "invalid rollout request"),
        ];
        for (extra, needle) in cases {
            let error = with(extra.clone()).unwrap_err();
            assert!(error.contains(needle), "{extra}: {error}");
        }
    }
}
