//! The `coxswain` binary: one executable, a subcommand per role.

mod agent;
mod args;
mod auth;
mod cli;
mod coordinate;
mod deploy;
mod duration;
mod observe;
mod release;
mod rollback;
mod schema;
mod shutdown;
mod simulate;
mod telemetry;
mod tls;
mod topology;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    tls::install_crypto();
    let _telemetry = cli::init_tracing(&args);
    match args.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
