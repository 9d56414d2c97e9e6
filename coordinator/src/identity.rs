//! Who is calling the API: bearer tokens mapped to identities with roles, read from a tokens
//! file. One identity per line:
//!
//! ```text
//! # name      roles                     token (or sha256:<hex> of it)
//! ci-web      deploy:beta,deploy:prod   sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! release-bot deploy:*                  sha256:...
//! dashboard   read                      sha256:...
//! ```
//!
//! `deploy:<env>` may submit rollouts to that environment (and roll its clusters back), upload
//! bundles and read; `deploy:*` may deploy anywhere; `read` may only read. A token is kept as
//! its sha256 digest and compared in constant time against every identity, so neither the
//! comparison nor the token's length tells a caller anything.

use std::fmt;

/// One role of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Deploy to this environment (`*`: every environment).
    Deploy(String),
    /// Read rollouts, clusters and releases.
    Read,
    /// May start a rollout inside a freeze window (`--break-glass REASON`).
    BreakGlass,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deploy(env) => write!(f, "deploy:{env}"),
            Self::Read => f.write_str("read"),
            Self::BreakGlass => f.write_str("break-glass"),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its name: what `requested_by` records.
    pub name: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

impl Identity {
    /// May it deploy to `environment`?
    pub fn may_deploy(&self, environment: &str) -> bool {
        self.roles
            .iter()
            .any(|r| matches!(r, Role::Deploy(env) if env == "*" || env == environment))
    }

    /// May it deploy anywhere at all (upload a bundle)?
    /// Whether it may start a rollout inside a freeze window.
    pub fn may_break_glass(&self) -> bool {
        self.roles.contains(&Role::BreakGlass)
    }

    pub fn may_deploy_somewhere(&self) -> bool {
        self.roles.iter().any(|r| matches!(r, Role::Deploy(_)))
    }

    /// Its roles, for messages (`deploy:beta,read`).
    pub fn roles_text(&self) -> String {
        let roles: Vec<String> = self.roles.iter().map(Role::to_string).collect();
        roles.join(",")
    }
}

/// The identities the coordinator knows, by the digest of their token.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    known: Vec<(String, Identity)>,
}

/// The longest token file accepted, and the longest line.
const MAX_FILE_BYTES: usize = 1024 * 1024;

impl Tokens {
    /// Parses a tokens file; every problem is reported with its line number (never with the
    /// token itself).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_FILE_BYTES {
            return Err(format!(
                "the tokens file is {} bytes, more than the {MAX_FILE_BYTES}-byte limit",
                text.len()
            ));
        }
        let mut known: Vec<(String, Identity)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (digest, identity) =
                parse_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            if known.iter().any(|(_, i)| i.name == identity.name) {
                return Err(format!(
                    "line {}: identity {} is listed twice",
                    n + 1,
                    identity.name
                ));
            }
            if known.iter().any(|(d, _)| *d == digest) {
                return Err(format!(
                    "line {}: this token is already another identity's",
                    n + 1
                ));
            }
            known.push((digest, identity));
        }
        if known.is_empty() {
            return Err("the tokens file lists no identity".into());
        }
        Ok(Self { known })
    }

    /// One token with every right: `--token`, for a single CI system.
    pub fn single(name: &str, token: &str) -> Self {
        Self {
            known: vec![(
                digest_of(token),
                Identity {
                    name: name.to_owned(),
                    roles: vec![Role::Deploy("*".into()), Role::Read, Role::BreakGlass],
                },
            )],
        }
    }

    /// The identity whose token `presented` is. Every identity is compared, in constant time
    /// over fixed-length digests.
    pub fn authenticate(&self, presented: &str) -> Option<&Identity> {
        let digest = digest_of(presented);
        let mut found = None;
        for (known, identity) in &self.known {
            if same(known.as_bytes(), digest.as_bytes()) {
                found = Some(identity);
            }
        }
        found
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

fn parse_line(line: &str) -> Result<(String, Identity), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, roles, token] = fields[..] else {
        return Err("expected three fields: <name> <roles> <token or sha256:hex>".into());
    };
    if name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(format!(
            "identity name {:?} must be at most 128 letters, digits, '-', '_', '.' or '@'",
            name.chars().take(64).collect::<String>()
        ));
    }
    let roles = roles
        .split(',')
        .map(parse_role)
        .collect::<Result<Vec<Role>, String>>()?;
    let digest = match token.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("sha256:{}", hex.to_ascii_lowercase())
        }
        Some(_) => return Err("a sha256: token digest is 64 hex digits".into()),
        None if token.len() < 16 => {
            return Err("a token must be at least 16 characters".into());
        }
        None => digest_of(token),
    };
    Ok((
        digest,
        Identity {
            name: name.to_owned(),
            roles,
        },
    ))
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "read" => Ok(Role::Read),
        "break-glass" => Ok(Role::BreakGlass),
        _ => match text.strip_prefix("deploy:") {
            Some(env) if !env.is_empty() => Ok(Role::Deploy(env.to_owned())),
            _ => Err(format!(
                "unknown role {:?}: roles are deploy:<env>, deploy:*, read and break-glass",
                text.chars().take(64).collect::<String>()
            )),
        },
    }
}

fn digest_of(token: &str) -> String {
    proto::sha256_digest(token.as_bytes())
}

/// Constant-time equality of two byte strings of the same length (digests always are).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FILE: &str = "# who may do what\n\
        ci-beta   deploy:beta             beta-token-0123456789\n\
        ci-all    deploy:*                all-token-0123456789\n\
        dashboard read sha256:a40b6bd03a2ea75a58fa0e1c4a3f7f50c4bd5e2c1dc4e17e28e3bd3cc2b7b1d2\n";

    #[test]
    fn tokens_map_to_identities_and_roles() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 3);
        let beta = tokens.authenticate("beta-token-0123456789").unwrap();
        assert_eq!(beta.name, "ci-beta");
        assert!(beta.may_deploy("beta") && !beta.may_deploy("prod"));
        let all = tokens.authenticate("all-token-0123456789").unwrap();
        assert!(all.may_deploy("prod") && all.may_deploy("beta"));
        assert!(tokens.authenticate("beta-token-012345678").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn a_digest_line_matches_the_token_it_hashes() {
        let token = "dashboard-token-0123456789";
        let line = format!("dashboard read {}", digest_of(token));
        let tokens = Tokens::parse(&line).unwrap();
        let reader = tokens.authenticate(token).unwrap();
        assert_eq!(reader.roles, [Role::Read]);
        assert!(!reader.may_deploy_somewhere());
    }

    #[test]
    fn bad_lines_are_refused_by_number_without_echoing_tokens() {
        for (text, expected) in [
            ("a deploy:beta", "line 1: expected three fields"),
            (
                "a admin long-enough-token-123",
                "line 1: unknown role \"admin\"",
            ),
            (
                "a deploy: long-enough-token-123",
                "line 1: unknown role \"deploy:\"",
            ),
            (
                "a read short",
                "line 1: a token must be at least 16 characters",
            ),
            (
                "a read sha256:abc",
                "line 1: a sha256: token digest is 64 hex digits",
            ),
            (
                "a read token-aaaaaaaaaaaaaa\na read token-bbbbbbbbbbbbbb",
                "line 2: identity a is listed twice",
            ),
            (
                "a read token-aaaaaaaaaaaaaa\nb read token-aaaaaaaaaaaaaa",
                "line 2: this token is already another identity's",
            ),
            ("# nobody\n", "the tokens file lists no identity"),
        ] {
            let error = Tokens::parse(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
            assert!(!error.contains("token-aaa"), "{error}");
        }
    }
}
