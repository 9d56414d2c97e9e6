//! The release engine: render manifests, apply them with server-side apply, wait for health,
//! keep the release history in the cluster, roll back automatically, prune and lock.
//!
//! It talks to Kubernetes only and never to NATS; the agent joins the two. Filled by the
//! release-engine issue.
