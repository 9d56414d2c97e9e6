//! `coxswain schema` and `coxswain intent validate`: the wire contract, for CI in any language.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use proto::{DeployIntent, Schema, Validate};

/// Arguments of `coxswain schema`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchemaArgs {
    /// Which message.
    #[arg(value_enum)]
    message: Message,
}

/// The messages with a published schema.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Message {
    /// A deploy intent for one cluster (`coxswain.intent.<cluster>.<release>`).
    Intent,
    /// An outcome event (`coxswain.event.<cluster>.<release>`).
    Outcome,
    /// A cluster registry record (`coxswain-clusters` bucket).
    Cluster,
    /// A release state record (`coxswain-state` bucket).
    State,
}

impl SchemaArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let Self { message } = self;
        let which = match message {
            Message::Intent => Schema::Intent,
            Message::Outcome => Schema::Outcome,
            Message::Cluster => Schema::Cluster,
            Message::State => Schema::State,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&proto::schema_for(which))?
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// `coxswain intent ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum IntentCommand {
    /// Check a JSON intent and print every problem at once; exits 1 when there are any.
    Validate {
        /// The intent as JSON; `-` reads standard input.
        file: PathBuf,
    },
}

impl IntentCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let Self::Validate { file } = self;
        let bytes = if file.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the intent from standard input")?;
            buf
        } else {
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
        };
        let intent: DeployIntent = match proto::decode(Some("application/json"), &bytes) {
            Ok(intent) => intent,
            Err(error) => {
                eprintln!("invalid intent: {error}");
                return Ok(ExitCode::FAILURE);
            }
        };
        match intent.validate() {
            Ok(()) => {
                println!(
                    "valid intent {} for {}/{}",
                    intent.id, intent.cluster, intent.release
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("invalid intent: {} problem(s)", errors.problems().len());
                for problem in errors.problems() {
                    eprintln!("  - {problem}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
