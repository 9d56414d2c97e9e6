//! `coxswain sim`: simulated clusters for trying Coxswain, for tests and for the demo.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

/// Arguments of `coxswain sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    /// Names of the clusters to simulate, comma separated (DNS-1123 labels).
    #[arg(
        long,
        env = "COXSWAIN_SIM_CLUSTERS",
        value_delimiter = ',',
        default_value = "beta,prod-east,prod-west"
    )]
    clusters: Vec<String>,
    /// Directory to write one kubeconfig per cluster into (`<dir>/<cluster>.yaml`), so that
    /// `KUBECONFIG=<dir>/beta.yaml kubectl get ns` works.
    #[arg(long, env = "COXSWAIN_SIM_KUBECONFIG_DIR")]
    kubeconfig_dir: PathBuf,
    /// Address to serve on; each cluster gets its own free port.
    #[arg(long, env = "COXSWAIN_SIM_LISTEN", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Run time at human speed (pods ready after ~1.5 s, one simulated second per second)
    /// instead of the millisecond timing tests use.
    #[arg(long, env = "COXSWAIN_SIM_DEMO_TIMING")]
    demo_timing: bool,
}

impl SimArgs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            clusters,
            kubeconfig_dir,
            listen,
            demo_timing,
        } = self;
        if clusters.is_empty() {
            bail!("--clusters names no cluster");
        }
        for name in &clusters {
            if let Err(problem) = proto::check_dns_label(name) {
                bail!("cluster name {name:?} is not usable: {problem:?}");
            }
        }
        let timing = if demo_timing {
            sim::Timing::demo()
        } else {
            sim::Timing::fast()
        };
        let fleet = sim::Sim::new(timing);
        for name in &clusters {
            fleet.add_cluster(name);
        }
        let served = fleet
            .serve(listen, Some(&kubeconfig_dir))
            .await
            .with_context(|| format!("cannot serve the simulated clusters on {listen}"))?;
        for s in &served {
            let kubeconfig = s
                .kubeconfig
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            println!("cluster {} {} kubeconfig {kubeconfig}", s.name, s.url);
            tracing::info!(cluster = %s.name, url = %s.url, %kubeconfig, "simulated cluster ready");
        }
        crate::shutdown::signalled().await;
        tracing::info!("shutting down the simulated clusters");
        fleet.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }
}
