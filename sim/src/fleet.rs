//! A fleet of virtual clusters in one process: each served on its own port with its own
//! kubeconfig, its controllers running until the fleet shuts down.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::timing::Timing;

/// Many virtual clusters, their controller tasks and their servers.
#[derive(Debug)]
pub struct Sim {
    timing: Timing,
    clusters: Mutex<BTreeMap<String, Arc<Cluster>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Where a served cluster can be reached.
#[derive(Debug, Clone)]
pub struct Served {
    /// Cluster name.
    pub name: String,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its kubeconfig, when a directory was given.
    pub kubeconfig: Option<PathBuf>,
}

impl Sim {
    /// An empty fleet. Call within a tokio runtime.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            clusters: Mutex::new(BTreeMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Adds a cluster (or returns the existing one) and starts its controllers.
    pub fn add_cluster(&self, name: &str) -> Arc<Cluster> {
        let mut clusters = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clusters.get(name) {
            return Arc::clone(c);
        }
        let cluster = Arc::new(Cluster::new(name, self.timing));
        clusters.insert(name.to_owned(), Arc::clone(&cluster));
        let (c, cancel) = (Arc::clone(&cluster), self.cancel.clone());
        self.tasks.spawn(
            async move { c.run_controllers(cancel).await }
                .instrument(tracing::info_span!("sim_controllers", cluster = name)),
        );
        cluster
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every cluster.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        self.clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Serves every cluster on its own port of `ip` (`0` picks free ports), and writes
    /// `<dir>/<cluster>.yaml` kubeconfigs when `kubeconfig_dir` is given.
    pub async fn serve(
        &self,
        ip: IpAddr,
        kubeconfig_dir: Option<&Path>,
    ) -> io::Result<Vec<Served>> {
        if let Some(dir) = kubeconfig_dir {
            std::fs::create_dir_all(dir)?;
        }
        let mut served = Vec::new();
        for cluster in self.clusters() {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?;
            let addr = listener.local_addr()?;
            let url = format!("http://{addr}");
            let kubeconfig = match kubeconfig_dir {
                Some(dir) => {
                    let path = dir.join(format!("{}.yaml", cluster.name()));
                    write_kubeconfig(&path, cluster.name(), &url)?;
                    Some(path)
                }
                None => None,
            };
            let router = crate::http::router(Arc::clone(&cluster));
            let cancel = self.cancel.clone();
            let name = cluster.name().to_owned();
            self.tasks.spawn(
                async move {
                    let shutdown = async move { cancel.cancelled().await };
                    if let Err(error) = axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        tracing::error!(%error, "simulated api server failed");
                    }
                }
                .instrument(tracing::info_span!("sim_api", cluster = %name, %addr)),
            );
            served.push(Served {
                name: cluster.name().to_owned(),
                url,
                kubeconfig,
            });
        }
        Ok(served)
    }

    /// Stops every server and controller and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A kubeconfig for one simulated cluster, usable by kubectl and kube-rs alike.
pub fn write_kubeconfig(path: &Path, name: &str, url: &str) -> io::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n\
         contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n\
         current-context: {name}\nusers:\n- name: {name}\n  user: {{}}\n"
    );
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}
