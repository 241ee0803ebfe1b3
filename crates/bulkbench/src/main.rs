//! `bulkbench`: serve and measure per-recipient bulk-mail filtering in SMTP.
//!
//! The command-line front end: parses flags with clap, turns them into the typed configs of
//! the library crates, and decides exit codes. No protocol or policy logic lives here.

mod load;
mod population;
mod progress;
mod serve;
mod simulate;
mod sys;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bulkbench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the BULK-capable ESMTP server on a population file.
    Serve(serve::ServeArgs),
    /// Generate a scenario's population file.
    Population(population::PopulationArgs),
    /// Replay a scenario's workload against any SMTP server and report.
    Load(load::LoadArgs),
    /// Start `bulkbench serve` on a scenario's population, replay its workload, report.
    Bench(load::BenchArgs),
    /// Run a scenario's workload through protocol and policy in process, on every core.
    Simulate(simulate::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| true),
        Command::Population(args) => population::run(args).map(|()| true),
        Command::Load(args) => load::load(args),
        Command::Bench(args) => load::bench(args),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // The run itself worked, but replies contradicted the population: the report says
        // so first, and scripts must see it.
        Ok(false) => ExitCode::from(3),
        Err(error) => {
            eprintln!("bulkbench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error (standard output carries the `listening on` line), filtered
/// by `RUST_LOG`, `info` by default.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
