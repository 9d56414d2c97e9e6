//! `coxswain auth`: one nkey user per role and the nats-server configuration that enforces
//! each role's permissions (`bus::auth`), plus the coordinator's intent-signing key, all in one
//! directory. Seeds are written mode 0600 and never printed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bus::auth::Roles;
use clap::Subcommand;
use nkeys::{KeyPair, KeyPairType};

/// The nats-server configuration (an `authorization` block).
const CONFIG: &str = "nats-server.conf";
/// The public key of every role, so `add-cluster` can rebuild the configuration.
const ROLES: &str = "roles.json";
/// The coordinator's intent-signing seed and public key.
const SIGNING_SEED: &str = "signing.nk";
const SIGNING_PUBLIC: &str = "signing.pub";
/// The signing key is an account-type nkey (`SA...`/`A...`): nats-server logs in user keys
/// only, so it can never double as a NATS login.
const SIGNING_KEY_TYPE: KeyPairType = KeyPairType::Account;

/// `coxswain auth ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Create a key for every role (admin, coordinator, observer, one agent per cluster), the
    /// coordinator's intent-signing key, and the nats-server configuration granting each role
    /// only what it needs.
    Init(InitArgs),
    /// Add the key of a new cluster's agent and rewrite the nats-server configuration, keeping
    /// every existing key; then reload the server.
    AddCluster(AddClusterArgs),
}

impl AuthCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Init(args) => args.run(),
            Self::AddCluster(args) => args.run(),
        }
    }
}

/// Arguments of `coxswain auth init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Directory for the keys and the configuration (created, mode 0700, if absent).
    #[arg(long, env = "COXSWAIN_AUTH_DIR")]
    dir: PathBuf,
    /// Clusters whose agents get a key, comma separated (DNS-1123 labels); more later with
    /// `coxswain auth add-cluster`.
    #[arg(long, env = "COXSWAIN_CLUSTERS", value_delimiter = ',')]
    clusters: Vec<String>,
    /// Replace keys already in the directory: every process then needs its new key.
    #[arg(long, env = "COXSWAIN_AUTH_FORCE")]
    force: bool,
}

impl InitArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            dir,
            clusters,
            force,
        } = self;
        check_clusters(&clusters)?;
        let mut files = vec![CONFIG.to_owned(), ROLES.to_owned()];
        files.extend(["admin", "coordinator", "observer"].map(seed_file));
        files.extend(clusters.iter().map(|c| seed_file(&agent_role(c))));
        files.extend([SIGNING_SEED.to_owned(), SIGNING_PUBLIC.to_owned()]);
        let existing: Vec<&str> = files
            .iter()
            .filter(|f| dir.join(f).exists())
            .map(String::as_str)
            .collect();
        if !existing.is_empty() && !force {
            bail!(
                "{} already holds {}; pass --force to replace them (every process then needs its \
                 new key), or add a cluster with `coxswain auth add-cluster`",
                dir.display(),
                existing.join(", ")
            );
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;

        let admin = new_key(KeyPairType::User)?;
        let coordinator = new_key(KeyPairType::User)?;
        let observer = new_key(KeyPairType::User)?;
        let agents = clusters
            .iter()
            .map(|c| Ok((c.clone(), new_key(KeyPairType::User)?)))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        let signing = new_key(SIGNING_KEY_TYPE)?;
        let roles = Roles {
            admin: admin.public.clone(),
            coordinator: coordinator.public.clone(),
            observer: observer.public.clone(),
            agents: agents
                .iter()
                .map(|(c, k)| (c.clone(), k.public.clone()))
                .collect(),
        };
        let config = bus::auth::authorization_block(&roles)?;

        write_seed(&dir, "admin", &admin)?;
        write_seed(&dir, "coordinator", &coordinator)?;
        write_seed(&dir, "observer", &observer)?;
        for (cluster, key) in &agents {
            write_seed(&dir, &agent_role(cluster), key)?;
        }
        write_file(
            &dir.join(SIGNING_SEED),
            &format!("{}\n", signing.seed),
            0o600,
        )?;
        write_file(
            &dir.join(SIGNING_PUBLIC),
            &format!("{}\n", signing.public),
            0o644,
        )?;
        write_file(&dir.join(ROLES), &roles_json(&roles), 0o644)?;
        write_file(&dir.join(CONFIG), &config, 0o644)?;

        let d = dir.display();
        println!("wrote {d}: {}", files.join(", "));
        println!("next:");
        println!("  nats-server -c {d}/{CONFIG} -js -sd <store dir>");
        println!("  coxswain topology --nats-nkey {d}/admin.nk");
        println!("  coxswain coordinator --nats-nkey {d}/coordinator.nk ...");
        for cluster in &clusters {
            println!("  coxswain agent --cluster {cluster} --nats-nkey {d}/agent-{cluster}.nk ...");
        }
        println!("  coxswain watch | history | status --nats-nkey {d}/observer.nk");
        println!(
            "every *.nk file is a secret (a login; {SIGNING_SEED} signs intents): give each \
             process its own only; agents trust {d}/{SIGNING_PUBLIC}"
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `coxswain auth add-cluster`.
#[derive(Debug, clap::Args)]
pub(crate) struct AddClusterArgs {
    /// Directory `coxswain auth init` wrote.
    #[arg(long, env = "COXSWAIN_AUTH_DIR")]
    dir: PathBuf,
    /// Name of the new cluster (DNS-1123 label).
    cluster: String,
}

impl AddClusterArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let Self { dir, cluster } = self;
        check_clusters(std::slice::from_ref(&cluster))?;
        let roles_path = dir.join(ROLES);
        let text = std::fs::read_to_string(&roles_path).with_context(|| {
            format!(
                "cannot read {} (run `coxswain auth init` first)",
                roles_path.display()
            )
        })?;
        let mut roles =
            parse_roles(&text).with_context(|| format!("in {}", roles_path.display()))?;
        let role = agent_role(&cluster);
        let seed_path = dir.join(seed_file(&role));
        if roles.agents.contains_key(&cluster) || seed_path.exists() {
            bail!(
                "cluster {cluster} has a key already ({})",
                seed_path.display()
            );
        }
        let key = new_key(KeyPairType::User)?;
        roles.agents.insert(cluster.clone(), key.public.clone());
        let config = bus::auth::authorization_block(&roles)?;
        write_seed(&dir, &role, &key)?;
        write_file(&roles_path, &roles_json(&roles), 0o644)?;
        write_file(&dir.join(CONFIG), &config, 0o644)?;

        let d = dir.display();
        println!("added {role}: {d}/{role}.nk; rewrote {d}/{CONFIG} (every other key kept)");
        println!("apply it to the running server (connections stay up):");
        println!("  nats-server --signal reload=<pid>    # or: kill -HUP <pid>");
        println!("then: coxswain agent --cluster {cluster} --nats-nkey {d}/{role}.nk ...");
        Ok(ExitCode::SUCCESS)
    }
}

/// A fresh key pair: its seed (secret) and public key.
struct NewKey {
    seed: String,
    public: String,
}

fn new_key(kind: KeyPairType) -> anyhow::Result<NewKey> {
    let pair = KeyPair::new(kind);
    let seed = pair
        .seed()
        .map_err(|e| anyhow::anyhow!("cannot encode a new nkey seed: {}", e.kind()))?;
    Ok(NewKey {
        seed,
        public: pair.public_key(),
    })
}

fn agent_role(cluster: &str) -> String {
    format!("agent-{cluster}")
}

fn seed_file(role: &str) -> String {
    format!("{role}.nk")
}

/// Every name a DNS-1123 label (a safe subject token), none twice.
fn check_clusters(clusters: &[String]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for cluster in clusters {
        if let Err(kind) = proto::check_dns_label(cluster) {
            bail!("{}", proto::Problem::new("cluster", kind));
        }
        if !seen.insert(cluster) {
            bail!("cluster {cluster} is given twice");
        }
    }
    Ok(())
}

fn write_seed(dir: &Path, role: &str, key: &NewKey) -> anyhow::Result<()> {
    write_file(
        &dir.join(seed_file(role)),
        &format!("{}\n", key.seed),
        0o600,
    )
}

/// Writes `path` whole or not at all (a temporary file renamed over it, so a server reloading
/// meanwhile reads the old or the new file), created with `mode` from the start.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is no file name", path.display()))?;
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// `roles.json`: public keys only, never a seed.
fn roles_json(roles: &Roles) -> String {
    let Roles {
        admin,
        coordinator,
        observer,
        agents,
    } = roles;
    let value = serde_json::json!({
        "admin": admin,
        "coordinator": coordinator,
        "observer": observer,
        "agents": agents,
    });
    format!("{value:#}\n")
}

fn parse_roles(text: &str) -> anyhow::Result<Roles> {
    let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let key = |role: &str| -> anyhow::Result<String> {
        value
            .get(role)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("no public key of {role}"))
    };
    let mut agents = BTreeMap::new();
    if let Some(map) = value.get("agents") {
        let map = map.as_object().context("agents is not a map")?;
        for (cluster, key) in map {
            let key = key
                .as_str()
                .with_context(|| format!("the key of agent-{cluster} is not a string"))?;
            agents.insert(cluster.clone(), key.to_owned());
        }
    }
    Ok(Roles {
        admin: key("admin")?,
        coordinator: key("coordinator")?,
        observer: key("observer")?,
        agents,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key() -> String {
        KeyPair::new_user().public_key()
    }

    #[test]
    fn roles_survive_their_file() {
        let roles = Roles {
            admin: key(),
            coordinator: key(),
            observer: key(),
            agents: [("beta".to_owned(), key()), ("prod".to_owned(), key())].into(),
        };
        let text = roles_json(&roles);
        // A seed is a token starting with `SU`; a public key may hold those letters inside.
        assert!(!text.contains("\"SU"), "no seed in roles.json");
        assert_eq!(parse_roles(&text).unwrap(), roles);
        assert!(parse_roles("{\"admin\": \"U\"}").is_err());
    }

    #[test]
    fn cluster_names_are_labels_given_once() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_clusters(&names(&["beta", "prod-east"])).is_ok());
        assert!(check_clusters(&names(&["beta", "beta"])).is_err());
        for bad in ["a.b", "*", ">", "Prod", "", "a b"] {
            assert!(check_clusters(&names(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_keys_are_of_their_type_and_files_get_their_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let user = new_key(KeyPairType::User).unwrap();
        assert!(user.seed.starts_with("SU") && user.public.starts_with('U'));
        let signing = new_key(SIGNING_KEY_TYPE).unwrap();
        assert!(signing.public.starts_with('A'));
        let dir = std::env::temp_dir().join(format!("coxswain-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.nk");
        write_file(&path, "one\n", 0o600).unwrap();
        write_file(&path, "two\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        let files = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(files, 1, "no leftovers");
    }
}
