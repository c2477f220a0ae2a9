#![forbid(unsafe_code)]
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "stint", version, about = "Temporary-credential broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and simulate policies offline.
    #[command(subcommand)]
    Policy(stint::cli::policy::PolicyCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Policy(command) => stint::cli::policy::run(command),
    }
}
