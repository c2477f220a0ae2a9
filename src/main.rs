#![forbid(unsafe_code)]
use clap::Parser;

/// glibc malloc's arena locks and cross-thread frees showed at about 15 % of the minting
/// profile; mimalloc's per-thread heaps take them out (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stint::cli::run(stint::cli::Cli::parse())
}
