//! Who may do what on NATS, enforced by nats-server itself: one nkey user per role (admin,
//! coordinator, observer, one agent per cluster) and the subjects each may publish and
//! subscribe to, rendered as the `authorization` block `coxswain auth init` writes.
//!
//! Every subject below is the one async-nats sends for the operation named beside it (checked
//! against nats-server 2.15). Three rules hold the matrix together:
//! - replies come only to the user's own inbox prefix ([`inbox_prefix`]), the one subject a
//!   role other than the admin may subscribe to, so nobody reads another user's replies;
//! - only the admin creates or changes streams, buckets and consumers other than an agent's
//!   own (`coxswain topology`);
//! - an agent's grants all carry its cluster name: its consumer, its event subjects, its keys,
//!   the direct get of its own intent subjects.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use proto::{SubjectError, bucket, stream};

use crate::topology::{kv_stream, object_stream};

/// The JetStream API prefix.
const API: &str = "$JS.API";

/// The prefix of every reply subject of the user with nkey `public_key`: `_INBOX_<key>`. Both
/// `connect` (async-nats `custom_inbox_prefix`) and the generated permissions use it, so a
/// user may subscribe to its own replies and to nothing else.
pub fn inbox_prefix(public_key: &str) -> String {
    format!("_INBOX_{public_key}")
}

/// Is `key` the public key of an nkey user (`U...`), the only kind nats-server logs in?
pub fn is_user_public_key(key: &str) -> bool {
    key.starts_with('U') && nkeys::KeyPair::from_public_key(key).is_ok()
}

/// The public nkeys of every role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Creates and updates the topology; may do everything.
    pub admin: String,
    /// Publishes intents, reads events and every bucket, writes rollouts and bundles.
    pub coordinator: String,
    /// Reads events and buckets; writes nothing.
    pub observer: String,
    /// One agent per cluster, by cluster name.
    pub agents: BTreeMap<String, String>,
}

/// The roles cannot be turned into permissions.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// A role's key is not the public key of an nkey user.
    #[error("the key of {role} is not a user nkey public key (U...)")]
    BadKey {
        /// The role (`coordinator`, `agent-beta`).
        role: String,
    },
    /// Two roles share a key, so the server could not tell them apart.
    #[error("{first} and {second} have the same key")]
    SharedKey {
        /// One role.
        first: String,
        /// The other.
        second: String,
    },
    /// A cluster name cannot be a subject token.
    #[error("invalid cluster name {cluster:?}")]
    Cluster {
        /// The name as given.
        cluster: String,
        /// Why.
        #[source]
        source: SubjectError,
    },
}

/// One subject a role may use, and the operation that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    subject: String,
    why: &'static str,
}

fn grant(subject: impl Into<String>, why: &'static str) -> Grant {
    Grant {
        subject: subject.into(),
        why,
    }
}

/// What a role may publish and subscribe to; everything else is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Permissions {
    publish: Vec<Grant>,
    subscribe: Vec<Grant>,
}

/// The reply inbox: every API answer, publish ack and pulled message comes there.
fn own_inbox(public_key: &str) -> Vec<Grant> {
    vec![grant(
        format!("{}.>", inbox_prefix(public_key)),
        "replies (API answers, publish acks, pulled messages) come to this user's inbox only",
    )]
}

/// `Bus::open_topology`: stream info of every stream, bucket and store (nothing is created).
fn open_topology() -> Vec<Grant> {
    [
        stream::INTENTS.to_owned(),
        stream::EVENTS.to_owned(),
        kv_stream(bucket::CLUSTERS),
        kv_stream(bucket::STATE),
        kv_stream(bucket::ROLLOUTS),
        object_stream(bucket::BUNDLES),
    ]
    .into_iter()
    .map(|s| {
        grant(
            format!("{API}.STREAM.INFO.{s}"),
            "Bus::open_topology: stream info of every stream, bucket and store",
        )
    })
    .collect()
}

/// Reading a key-value bucket: `get` (direct get, the key in the subject) and `all` (`keys`).
fn kv_read(bucket: &str) -> Vec<Grant> {
    let s = kv_stream(bucket);
    vec![
        grant(
            format!("{API}.DIRECT.GET.{s}.$KV.{bucket}.>"),
            "key-value get: direct get of the last value, the key in the subject",
        ),
        grant(
            format!("{API}.CONSUMER.CREATE.{s}"),
            "key-value all (keys): an ordered push consumer, created without a name",
        ),
        grant(
            format!("{API}.CONSUMER.CREATE.{s}.>"),
            "key-value all (keys): ... recreated after a gap as <name>_<n> with its filter",
        ),
        grant(
            format!("$JS.FC.{s}.>"),
            "key-value all (keys): ... its flow-control replies",
        ),
        grant(
            format!("{API}.CONSUMER.DELETE.{s}.*"),
            "key-value all (keys): ... a recreated consumer deletes the previous one first",
        ),
    ]
}

/// Reading outcome events: `EventFeed` (an ordered pull consumer).
fn event_reader() -> Vec<Grant> {
    let s = stream::EVENTS;
    vec![
        grant(
            format!("{API}.CONSUMER.CREATE.{s}"),
            "EventFeed::open: an ordered pull consumer, created without a name",
        ),
        grant(
            format!("{API}.CONSUMER.CREATE.{s}.>"),
            "EventFeed: ... recreated after a gap as <name>_<n> with its filter",
        ),
        grant(
            format!("{API}.CONSUMER.MSG.NEXT.{s}.*"),
            "EventFeed: its pulls",
        ),
        grant(
            format!("{API}.CONSUMER.INFO.{s}.*"),
            "EventFeed: its info after a reconnect",
        ),
        grant(
            format!("{API}.CONSUMER.DELETE.{s}.*"),
            "EventFeed: a recreated consumer deletes the previous one first",
        ),
    ]
}

/// Reading bundles: `Bundles::get` (meta by direct get, chunks by an ordered push consumer).
fn bundle_read() -> Vec<Grant> {
    let b = bucket::BUNDLES;
    let s = object_stream(b);
    vec![
        grant(
            format!("{API}.DIRECT.GET.{s}.$O.{b}.M.>"),
            "Bundles::get / put: the meta record by direct get",
        ),
        grant(
            format!("{API}.CONSUMER.CREATE.{s}"),
            "Bundles::get: the chunks through an ordered push consumer, created without a name",
        ),
        grant(
            format!("{API}.CONSUMER.CREATE.{s}.>"),
            "Bundles::get: ... recreated after a gap as <name>_<n> with its filter",
        ),
        grant(
            format!("$JS.FC.{s}.>"),
            "Bundles::get: ... its flow-control replies (without them a read stalls at 2 MiB)",
        ),
        grant(
            format!("{API}.CONSUMER.DELETE.{s}.*"),
            "Bundles::get: ... a recreated consumer deletes the previous one first",
        ),
    ]
}

fn coordinator(public_key: &str) -> Permissions {
    let (b, rollouts) = (bucket::BUNDLES, bucket::ROLLOUTS);
    let mut publish = vec![
        grant(
            stream::INTENT_SUBJECTS,
            "Bus::publish_intent: any cluster, any release",
        ),
        grant(
            stream::NOTICE_SUBJECTS,
            "Bus::publish_notice: its notices (promotion withdrawn), never an outcome event",
        ),
    ];
    publish.extend(open_topology());
    publish.extend(event_reader());
    publish.push(grant(
        format!("$KV.{rollouts}.>"),
        "Rollouts::create / update: a publish on $KV.<bucket>.<key>",
    ));
    publish.extend(kv_read(rollouts));
    publish.extend(kv_read(bucket::CLUSTERS));
    publish.extend(kv_read(bucket::STATE));
    publish.push(grant(format!("$O.{b}.C.>"), "Bundles::put: the chunks"));
    publish.push(grant(
        format!("$O.{b}.M.>"),
        "Bundles::put: the meta record (no purge right: an existing bundle is never rewritten)",
    ));
    publish.extend(bundle_read());
    publish.push(grant(
        format!("{API}.CONSUMER.INFO.{}.*", stream::INTENTS),
        "Bus::intent_backlog: an agent's consumer info (read only)",
    ));
    Permissions {
        publish,
        subscribe: own_inbox(public_key),
    }
}

fn agent(cluster: &str, public_key: &str) -> Result<Permissions, SubjectError> {
    let intents = stream::INTENTS;
    let consumer = proto::consumer_name(cluster)?;
    let filter = proto::intent_filter(cluster)?;
    let key = proto::cluster_key(cluster)?;
    let mut publish = vec![grant(
        proto::event_filter(Some(cluster), None)?,
        "Bus::publish_outcome: this cluster's events only",
    )];
    publish.extend(open_topology());
    publish.extend([
        grant(
            format!("{API}.CONSUMER.CREATE.{intents}.{consumer}.{filter}"),
            "IntentConsumer::create: its own durable consumer with its own filter (the server \
             refuses a body whose filter differs from the subject's)",
        ),
        grant(
            format!("{API}.CONSUMER.MSG.NEXT.{intents}.{consumer}"),
            "IntentConsumer::next",
        ),
        grant(
            format!("{API}.CONSUMER.INFO.{intents}.{consumer}"),
            "IntentConsumer::pending",
        ),
        grant(
            format!("$JS.ACK.{intents}.{consumer}.>"),
            "Delivery: ack, double ack, progress, nak, term",
        ),
        grant(
            format!("$KV.{}.{key}", bucket::CLUSTERS),
            "Registry::put: its own record",
        ),
        grant(
            format!("$KV.{}.{key}.*", bucket::STATE),
            "ReleaseStates::put: its own releases",
        ),
        grant(
            format!(
                "{API}.DIRECT.GET.{}.$KV.{}.{key}.*",
                kv_stream(bucket::STATE),
                bucket::STATE
            ),
            "ReleaseStates::get: its own releases (the replay check), the key in the subject",
        ),
    ]);
    publish.extend(bundle_read());
    publish.push(grant(
        format!("{API}.DIRECT.GET.{intents}.{filter}"),
        "Bus::latest_intent_sequence: direct get of the last intent on its own subjects only",
    ));
    Ok(Permissions {
        publish,
        subscribe: own_inbox(public_key),
    })
}

fn observer(public_key: &str) -> Permissions {
    let mut publish = open_topology();
    publish.extend(event_reader());
    publish.extend(kv_read(bucket::CLUSTERS));
    publish.extend(kv_read(bucket::STATE));
    publish.extend(kv_read(bucket::ROLLOUTS));
    Permissions {
        publish,
        subscribe: own_inbox(public_key),
    }
}

/// One user of the generated configuration.
struct User {
    role: String,
    about: &'static str,
    key: String,
    /// `None`: everything (the admin).
    permissions: Option<Permissions>,
}

fn users(roles: &Roles) -> Result<Vec<User>, RolesError> {
    let mut users = vec![
        User {
            role: "admin".into(),
            about: "creates and updates the topology (`coxswain topology`); may do everything",
            key: roles.admin.clone(),
            permissions: None,
        },
        User {
            role: "coordinator".into(),
            about: "publishes intents, reads events and buckets, writes rollouts and bundles",
            key: roles.coordinator.clone(),
            permissions: Some(coordinator(&roles.coordinator)),
        },
        User {
            role: "observer".into(),
            about: "reads events and buckets, writes nothing",
            key: roles.observer.clone(),
            permissions: Some(observer(&roles.observer)),
        },
    ];
    for (cluster, key) in &roles.agents {
        let permissions = agent(cluster, key).map_err(|source| RolesError::Cluster {
            cluster: cluster.clone(),
            source,
        })?;
        users.push(User {
            role: format!("agent-{cluster}"),
            about: "consumes its cluster's intents, publishes its events, writes its own keys",
            key: key.clone(),
            permissions: Some(permissions),
        });
    }
    let mut seen = BTreeMap::new();
    for user in &users {
        if !is_user_public_key(&user.key) {
            return Err(RolesError::BadKey {
                role: user.role.clone(),
            });
        }
        if let Some(first) = seen.insert(user.key.as_str(), user.role.as_str()) {
            return Err(RolesError::SharedKey {
                first: first.to_owned(),
                second: user.role.clone(),
            });
        }
    }
    Ok(users)
}

/// The top of the configuration, up to the first user.
const HEADER: &str = concat!(
    "# Coxswain roles for nats-server, written by `coxswain auth init` and\n",
    "# `coxswain auth add-cluster`. Users are nkey public keys; the comment above each names\n",
    "# its role. Whatever a user is not allowed below is denied.\n",
    "# Start:  nats-server -c <this file> -js -sd <store dir>\n",
    "# Reload: nats-server --signal reload=<pid>\n",
    "authorization {\n  users = [\n",
);

/// The `authorization { users = [...] }` block for nats-server: one nkey user per role, each
/// with the permissions of its role, the role named in a comment above it. No listen address,
/// port or store: `nats-server -c FILE -js -sd STORE -p PORT` chooses them.
pub fn authorization_block(roles: &Roles) -> Result<String, RolesError> {
    let users = users(roles)?;
    let mut out = String::from(HEADER);
    for user in users {
        let _ = writeln!(out, "    # {}: {}", user.role, user.about);
        out.push_str("    {\n");
        let _ = writeln!(out, "      nkey: {}", user.key);
        if let Some(permissions) = user.permissions {
            out.push_str("      permissions: {\n");
            render_list(&mut out, "publish", &permissions.publish);
            render_list(&mut out, "subscribe", &permissions.subscribe);
            out.push_str("      }\n");
        }
        out.push_str("    }\n");
    }
    out.push_str("  ]\n}\n");
    Ok(out)
}

/// `kind: { allow: [...] }`, each run of grants under the comment that says why.
fn render_list(out: &mut String, kind: &str, grants: &[Grant]) {
    let _ = write!(out, "        {kind}: ");
    out.push_str("{ allow: [\n");
    let mut last_why = "";
    for Grant { subject, why } in grants {
        if *why != last_why {
            let _ = writeln!(out, "          # {why}");
            last_why = why;
        }
        let _ = writeln!(out, "          \"{subject}\"");
    }
    out.push_str("        ] }\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use super::*;

    /// The subjects of a role's grants.
    fn subjects(grants: &[Grant]) -> BTreeSet<&str> {
        grants.iter().map(|g| g.subject.as_str()).collect()
    }

    fn key() -> String {
        nkeys::KeyPair::new_user().public_key()
    }

    fn roles(clusters: &[&str]) -> Roles {
        Roles {
            admin: key(),
            coordinator: key(),
            observer: key(),
            agents: clusters.iter().map(|c| ((*c).to_owned(), key())).collect(),
        }
    }

    #[test]
    fn every_role_subscribes_to_its_own_inbox_only() {
        let k = key();
        let expected = BTreeSet::from([format!("_INBOX_{k}.>")]);
        for p in [coordinator(&k), observer(&k), agent("beta", &k).unwrap()] {
            let got: BTreeSet<String> = p.subscribe.iter().map(|g| g.subject.clone()).collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn an_agent_is_confined_to_its_cluster() {
        let p = agent("beta", &key()).unwrap();
        let publish = subjects(&p.publish);
        for wanted in [
            "coxswain.event.beta.*",
            "$JS.API.CONSUMER.CREATE.COXSWAIN_INTENTS.agent-beta.coxswain.intent.beta.>",
            "$JS.API.CONSUMER.MSG.NEXT.COXSWAIN_INTENTS.agent-beta",
            "$JS.API.CONSUMER.INFO.COXSWAIN_INTENTS.agent-beta",
            "$JS.ACK.COXSWAIN_INTENTS.agent-beta.>",
            "$KV.coxswain-clusters.beta",
            "$KV.coxswain-state.beta.*",
            "$JS.API.DIRECT.GET.KV_coxswain-state.$KV.coxswain-state.beta.*",
            "$JS.API.DIRECT.GET.COXSWAIN_INTENTS.coxswain.intent.beta.>",
            "$JS.FC.OBJ_coxswain-bundles.>",
        ] {
            assert!(publish.contains(wanted), "agent lacks {wanted}");
        }
        // Whatever names an intent, event, key or consumer names beta; the rest is reading
        // the topology and bundles, which every cluster shares.
        for subject in &publish {
            let shared = subject.starts_with("$JS.API.STREAM.INFO.")
                || subject.contains("OBJ_coxswain-bundles");
            assert!(
                shared || subject.contains("beta"),
                "{subject} is not confined to beta"
            );
        }
        // Never a grant whose subject does not name what it reads (a body could name any).
        assert!(!publish.iter().any(|s| s.contains("STREAM.MSG.GET")));
        assert!(!publish.iter().any(|s| s.starts_with("coxswain.intent")));
        assert!(
            !publish
                .iter()
                .any(|s| s.starts_with("$KV.coxswain-rollouts"))
        );
    }

    #[test]
    fn only_the_admin_creates_or_changes_the_topology() {
        let k = key();
        for p in [coordinator(&k), observer(&k), agent("beta", &k).unwrap()] {
            for g in &p.publish {
                for forbidden in [
                    ".STREAM.CREATE.",
                    ".STREAM.UPDATE.",
                    ".STREAM.DELETE.",
                    ".STREAM.PURGE.",
                    ".STREAM.MSG.DELETE.",
                    ".CONSUMER.DURABLE.CREATE.",
                ] {
                    assert!(!g.subject.contains(forbidden), "{}", g.subject);
                }
                assert_ne!(g.subject, ">");
            }
        }
    }

    #[test]
    fn the_observer_writes_nothing_and_the_coordinator_publishes_no_event() {
        let k = key();
        let observer = observer(&k);
        for g in &observer.publish {
            assert!(
                g.subject.starts_with("$JS."),
                "observer may write {}",
                g.subject
            );
        }
        let coordinator = coordinator(&k);
        let publish = subjects(&coordinator.publish);
        assert!(publish.contains("coxswain.intent.*.*"));
        assert!(publish.contains("$KV.coxswain-rollouts.>"));
        assert!(!publish.iter().any(|s| s.starts_with("coxswain.event")));
        assert!(
            !publish
                .iter()
                .any(|s| s.starts_with("$KV.coxswain-clusters."))
        );
        assert!(!publish.iter().any(|s| s.starts_with("$KV.coxswain-state.")));
    }

    #[test]
    fn the_block_names_every_role_and_comments_every_grant() {
        let roles = roles(&["beta", "prod-east"]);
        let block = authorization_block(&roles).unwrap();
        assert!(block.starts_with("# Coxswain roles"));
        assert!(!block.contains("listen") && !block.contains("port:"));
        for role in [
            "admin",
            "coordinator",
            "observer",
            "agent-beta",
            "agent-prod-east",
        ] {
            assert!(block.contains(&format!("    # {role}: ")), "{role} missing");
        }
        for k in [&roles.admin, &roles.coordinator, &roles.observer] {
            assert!(block.contains(&format!("nkey: {k}")));
        }
        // The admin has no permissions block; the others have one each.
        assert_eq!(block.matches("permissions: {").count(), 4);
        // Every quoted subject is preceded, within its run, by a comment.
        let mut commented = false;
        for line in block.lines().map(str::trim) {
            if line.starts_with('#') {
                commented = true;
            } else if line.starts_with('"') {
                assert!(commented, "uncommented grant {line}");
            } else {
                commented = false;
            }
        }
    }

    #[test]
    fn bad_keys_and_names_are_refused() {
        let mut r = roles(&["beta"]);
        r.observer = "UNOTAKEY".into();
        assert!(matches!(
            authorization_block(&r),
            Err(RolesError::BadKey { role }) if role == "observer"
        ));
        let mut r = roles(&["beta"]);
        // A seed or an account key is not a user public key.
        r.coordinator = nkeys::KeyPair::new_account().public_key();
        assert!(authorization_block(&r).is_err());
        let mut r = roles(&["beta"]);
        r.coordinator = r.admin.clone();
        assert!(matches!(
            authorization_block(&r),
            Err(RolesError::SharedKey { .. })
        ));
        let mut r = roles(&[]);
        r.agents.insert("a.b".into(), key());
        assert!(matches!(
            authorization_block(&r),
            Err(RolesError::Cluster { .. })
        ));
        // A key cannot inject configuration.
        let mut r = roles(&["beta"]);
        r.agents.insert("prod".into(), format!("{}\n}}", key()));
        assert!(authorization_block(&r).is_err());
    }

    #[test]
    fn the_inbox_prefix_is_one_subject_token() {
        let k = key();
        let prefix = inbox_prefix(&k);
        assert!(!prefix.contains(['.', '*', '>', ' ']));
        assert!(prefix.starts_with("_INBOX_U"));
    }
}
