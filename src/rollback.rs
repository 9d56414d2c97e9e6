//! `coxswain rollback`: one cluster's release back to an earlier revision of its own history.
//! It goes through the coordinator (`POST /v1/rollbacks`), which signs the intent like any
//! other, and is followed like `coxswain deploy --wait`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use proto::Rollout;
use serde_json::Value;

use crate::args::Output;
use crate::deploy::{CoordinatorClientArgs, follow, summarize};

/// Arguments of `coxswain rollback`.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// Release to roll back.
    #[arg(long)]
    release: String,
    /// Cluster to roll it back on.
    #[arg(long)]
    cluster: String,
    /// Revision to return to (`coxswain release history`); default: the one deployed before
    /// the current one.
    #[arg(long)]
    to: Option<u32>,
    /// Who asks; default $USER.
    #[arg(long, env = "COXSWAIN_REQUESTED_BY")]
    requested_by: Option<String>,
    /// Give up waiting after this long (`90s`, `10m`, or seconds; exit 3). It is also the
    /// rollback's own health deadline.
    #[arg(long, default_value = "10m", value_parser = crate::duration::parse)]
    timeout: Duration,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    coordinator: CoordinatorClientArgs,
}

impl RollbackArgs {
    /// Asks the coordinator for the rollback and follows it; exit 0 when the earlier revision
    /// is back and healthy, 1 when it failed, 3 on timeout.
    pub(crate) async fn run(mut self) -> anyhow::Result<ExitCode> {
        self.coordinator.load_token()?;
        let http = self.coordinator.client()?;
        let rollout = self.submit(&http).await?;
        if self.output == Output::Table {
            println!(
                "rollback {} of {} on {} sent",
                rollout.id, self.release, self.cluster
            );
        }
        let Some(rollout) =
            follow(&self.coordinator, &http, rollout, self.timeout, self.output).await
        else {
            return Ok(ExitCode::from(3));
        };
        summarize(&rollout, self.output)
    }

    async fn submit(&self, http: &reqwest::Client) -> anyhow::Result<Rollout> {
        let request = proto::RollbackRequest {
            release: self.release.clone(),
            cluster: self.cluster.clone(),
            to: self.to,
            timeout_secs: self.timeout.as_secs().clamp(1, 86_400),
            requested_by: self
                .requested_by
                .clone()
                .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into())),
        };
        let response = self
            .coordinator
            .request(http, reqwest::Method::POST, "/v1/rollbacks")
            .json(&request)
            .send()
            .await
            .context("cannot reach the coordinator")?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "the coordinator refused the rollback ({status}): {}",
                body["error"].as_str().unwrap_or("?")
            );
        }
        Ok(response.json().await?)
    }
}
