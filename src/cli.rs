//! Command-line arguments: one struct per concern, every flag documented and readable from a
//! `COXSWAIN_*` environment variable.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::Instrument;

use crate::{
    agent, auth, coordinate, deploy, observe, release, rollback, schema, simulate, topology,
};

/// Coxswain: automatic, fast and safe Kubernetes deploys over NATS JetStream.
///
/// CI publishes a deploy intent; the coordinator targets clusters and publishes one intent per
/// cluster; each cluster's agent applies it with server-side apply, checks health, rolls back
/// automatically and reports outcome events anyone can follow.
#[derive(Debug, Parser)]
#[command(name = "coxswain", version, propagate_version = true, after_long_help = EXIT_CODES)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

/// The exit codes every subcommand keeps to, shown by `--help`.
pub(crate) const EXIT_CODES: &str = "Exit codes:
  0  success: the command did what it was asked (a deploy: every targeted cluster succeeded)
  1  it ran and the answer is no: a rollout failed, was reverted or refused (policy, gate,
     identity), a diff found changes, an intent is invalid; or an error the message explains
  2  usage: a flag, an argument or the deploy configuration is wrong (the message says which)
  3  --timeout passed before the rollout ended; it keeps going, and re-running the same
     command follows it (same inputs, same idempotency key)

Colours: only on a terminal, and never when NO_COLOR is set.
Completions: `coxswain completions bash|zsh|fish`.";

/// Logging.
#[derive(Debug, clap::Args)]
pub(crate) struct LogArgs {
    /// Log filter, `tracing` syntax (`info`, `coxswain=debug,async_nats=warn`).
    #[arg(
        long,
        global = true,
        env = "COXSWAIN_LOG",
        default_value = "warn,coxswain=info,agent=info,coordinator=info,deploy=info,sim=info"
    )]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "COXSWAIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the JSON Schema of a message, so CI in any language can build valid intents.
    Schema(schema::SchemaArgs),
    /// Work with deploy intents without sending them anywhere.
    #[command(subcommand)]
    Intent(schema::IntentCommand),
    /// Run simulated Kubernetes clusters (no real cluster needed): kubectl and coxswain talk to
    /// them like to any cluster.
    Sim(simulate::SimArgs),
    /// Run the agent of one cluster: consume its intents, deploy, report outcomes.
    Agent(agent::AgentArgs),
    /// Run the coordinator: the HTTP API for CI, targeting, waves, promotion gates.
    Coordinator(coordinate::CoordinatorArgs),
    /// Create or update the streams, buckets and object store on NATS (admin key; once per
    /// installation and after upgrades): every other process only opens them.
    Topology(topology::TopologyArgs),
    /// Keys for every role and the nats-server configuration enforcing their permissions.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Deploy a release to an environment through the coordinator (what CI runs).
    #[command(after_long_help = EXIT_CODES)]
    Deploy(deploy::DeployArgs),
    /// Stream outcome events live (Ctrl-C stops).
    Watch(observe::WatchArgs),
    /// The audit trail: who deployed what, where, when, and how it ended.
    History(observe::HistoryArgs),
    /// The clusters x releases matrix: version, phase, age.
    Status(observe::StatusArgs),
    /// Roll a release back on one cluster to an earlier revision, through its agent.
    #[command(after_long_help = EXIT_CODES)]
    Rollback(rollback::RollbackArgs),
    /// Apply, inspect and roll back releases directly on a cluster (no NATS).
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Show what applying a release would change (server-side dry run); exit 1 when anything.
    Diff(release::DiffArgs),
    /// Judge the health of saved resource snapshots (`kubectl get -o yaml` output).
    Health(release::HealthArgs),
    /// Print a shell completion script: `source <(coxswain completions bash)`, or write it to
    /// your shell's completions folder (`coxswain completions fish >
    /// ~/.config/fish/completions/coxswain.fish`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// GET a health URL and exit 0 when it answers 2xx, 1 otherwise (a container
    /// HEALTHCHECK without curl: `coxswain healthcheck http://127.0.0.1:8080/healthz`).
    Healthcheck {
        /// The URL to check.
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = crate::duration::parse)]
        timeout: std::time::Duration,
    },
}

impl Args {
    /// The service name its spans are exported under.
    pub(crate) fn service(&self) -> &'static str {
        match self.command {
            Command::Agent(_) => "coxswain-agent",
            Command::Coordinator(_) => "coxswain-coordinator",
            Command::Sim(_) => "coxswain-sim",
            _ => "coxswain-cli",
        }
    }

    /// Runs the chosen subcommand.
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let Self { log: _, command } = self;
        match command {
            Command::Schema(args) => args.run(),
            Command::Intent(command) => command.run(),
            Command::Sim(args) => runtime()?.block_on(args.run()),
            Command::Agent(args) => runtime()?.block_on(args.run()),
            Command::Coordinator(args) => runtime()?.block_on(args.run()),
            Command::Topology(args) => runtime()?.block_on(args.run()),
            Command::Auth(command) => command.run(),
            Command::Deploy(args) => runtime()?.block_on(args.run().instrument(ci_span("deploy"))),
            Command::Watch(args) => runtime()?.block_on(args.run()),
            Command::History(args) => runtime()?.block_on(args.run()),
            Command::Status(args) => runtime()?.block_on(args.run()),
            Command::Rollback(args) => {
                runtime()?.block_on(args.run().instrument(ci_span("rollback")))
            }
            Command::Release(command) => runtime()?.block_on(command.run()),
            Command::Diff(args) => runtime()?.block_on(args.run()),
            Command::Health(args) => args.run(),
            Command::Completions { shell } => {
                let mut command = <Self as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "coxswain", &mut script);
                std::io::Write::write_all(&mut std::io::stdout(), &script)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Healthcheck { url, timeout } => {
                runtime()?.block_on(healthcheck(&url, timeout))
            }
        }
    }
}

/// `coxswain healthcheck`: 0 when `url` answers 2xx within `timeout`.
async fn healthcheck(url: &str, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let http = crate::tls::http_client(None, timeout)?;
    let status = http.get(url).send().await?.status();
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{url} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// The span of a command CI runs: it continues `TRACEPARENT` from the environment (W3C trace
/// context, as CI tracing integrations export it), so one trace runs from CI through the
/// coordinator to every agent.
fn ci_span(command: &'static str) -> tracing::Span {
    let span = tracing::info_span!("coxswain", command);
    bus::trace::continue_trace(&span, std::env::var("TRACEPARENT").ok().as_deref());
    span
}

/// The runtime of the long-running subcommands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Sets up logs and traces on stderr; stdout is kept for command output.
pub(crate) fn init_tracing(args: &Args) -> crate::telemetry::Telemetry {
    let LogArgs {
        log_level,
        log_format,
    } = &args.log;
    crate::telemetry::init(
        log_level,
        matches!(log_format, LogFormat::Json),
        args.service(),
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Args::command().debug_assert();
    }
}
