#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    stint::cli::run(stint::cli::Cli::parse())
}
