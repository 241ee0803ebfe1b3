//! `bulkbench`: serve and measure per-recipient bulk-mail filtering in SMTP.
//!
//! The command-line front end: parses flags with clap, turns them into the typed configs of
//! the library crates, and decides exit codes. No protocol or policy logic lives here.

mod backend;
mod ceiling;
mod compare;
mod interrupt;
mod load;
mod policy;
mod policyd;
mod population;
mod progress;
mod report;
mod run;
mod serve;
mod simulate;
mod store;
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
    /// Run a Postfix policy server (check_policy_service) answering RCPTs from a backend.
    Policyd(policyd::PolicydArgs),
    /// Write a scenario's population file, or build its fst or LMDB store.
    Population(population::PopulationArgs),
    /// Read or change one recipient's preference in an updatable (LMDB) store.
    Policy(policy::PolicyArgs),
    /// Replay a scenario's workload against any SMTP server and report.
    Load(load::LoadArgs),
    /// Start `bulkbench serve` on a scenario's population, replay its workload, report.
    Bench(load::BenchArgs),
    /// Run a scenario's workload through protocol and policy in process, on every core.
    Simulate(simulate::SimulateArgs),
    /// Replay one workload against several backends or servers, interleaved, side by side.
    Compare(compare::CompareArgs),
    /// Re-render or merge saved runs.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| Status::Clean),
        Command::Policyd(args) => policyd::run(args).map(|()| Status::Clean),
        Command::Population(args) => population::run(args).map(|()| Status::Clean),
        Command::Policy(args) => policy::run(args).map(|()| Status::Clean),
        Command::Load(args) => load::load(args).map(run_status),
        Command::Bench(args) => load::bench(args).map(run_status),
        Command::Simulate(args) => simulate::run(args).map(status_of),
        Command::Report(args) => report::run(args).map(status_of),
        Command::Compare(args) => compare::run(args).map(|outcome| match outcome {
            compare::Outcome::Clean => Status::Clean,
            compare::Outcome::Mismatches => Status::Mismatches,
            compare::Outcome::Regressed => Status::Regressed,
            compare::Outcome::ArmFailed => Status::ArmFailed,
        }),
    };
    match result {
        Ok(Status::Clean) => ExitCode::SUCCESS,
        // The run itself worked, but replies contradicted the population: the report says
        // so first, and scripts must see it.
        Ok(Status::Mismatches) => ExitCode::from(3),
        Ok(Status::Regressed) => ExitCode::from(4),
        Ok(Status::ArmFailed) => ExitCode::from(5),
        Ok(Status::Failed) => ExitCode::from(6),
        Err(error) => {
            eprintln!("bulkbench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a command ended, beyond errors (exit 1): what scripts and CI must tell apart.
enum Status {
    /// Exit 0.
    Clean,
    /// Exit 3: replies contradicted the population.
    Mismatches,
    /// Exit 4: `compare --baseline` found a regression beyond `--max-regression`.
    Regressed,
    /// Exit 5: a `compare` arm failed (the others completed and are reported).
    ArmFailed,
    /// Exit 6: more sessions failed than `--max-failed-share` allows (a dead or refusing
    /// target, timeouts, refused messages).
    Failed,
}

fn run_status(outcome: run::RunOutcome) -> Status {
    match outcome {
        run::RunOutcome::Clean => Status::Clean,
        run::RunOutcome::Mismatches => Status::Mismatches,
        run::RunOutcome::Failed => Status::Failed,
    }
}

fn status_of(clean: bool) -> Status {
    if clean {
        Status::Clean
    } else {
        Status::Mismatches
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
