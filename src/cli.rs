//! Command-line arguments: one struct per concern, every flag documented and readable from a
//! `COXSWAIN_*` environment variable.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    agent, auth, coordinate, deploy, observe, release, rollback, schema, simulate, topology,
};

/// Coxswain: automatic, fast and safe Kubernetes deploys over NATS JetStream.
///
/// CI publishes a deploy intent; the coordinator targets clusters and publishes one intent per
/// cluster; each cluster's agent applies it with server-side apply, checks health, rolls back
/// automatically and reports outcome events anyone can follow.
#[derive(Debug, Parser)]
#[command(name = "coxswain", version, propagate_version = true)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

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
    Deploy(deploy::DeployArgs),
    /// Stream outcome events live (Ctrl-C stops).
    Watch(observe::WatchArgs),
    /// The audit trail: who deployed what, where, when, and how it ended.
    History(observe::HistoryArgs),
    /// The clusters x releases matrix: version, phase, age.
    Status(observe::StatusArgs),
    /// Roll a release back on one cluster to an earlier revision, through its agent.
    Rollback(rollback::RollbackArgs),
    /// Apply, inspect and roll back releases directly on a cluster (no NATS).
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Show what applying a release would change (server-side dry run); exit 1 when anything.
    Diff(release::DiffArgs),
    /// Judge the health of saved resource snapshots (`kubectl get -o yaml` output).
    Health(release::HealthArgs),
}

impl Args {
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
            Command::Deploy(args) => runtime()?.block_on(args.run()),
            Command::Watch(args) => runtime()?.block_on(args.run()),
            Command::History(args) => runtime()?.block_on(args.run()),
            Command::Status(args) => runtime()?.block_on(args.run()),
            Command::Rollback(args) => runtime()?.block_on(args.run()),
            Command::Release(command) => runtime()?.block_on(command.run()),
            Command::Diff(args) => runtime()?.block_on(args.run()),
            Command::Health(args) => args.run(),
        }
    }
}

/// The runtime of the long-running subcommands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Sets up logs and traces on stderr; stdout is kept for command output.
pub(crate) fn init_tracing(args: &LogArgs) -> crate::telemetry::Telemetry {
    let LogArgs {
        log_level,
        log_format,
    } = args;
    crate::telemetry::init(log_level, matches!(log_format, LogFormat::Json))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Args::command().debug_assert();
    }
}
