//! `bulkbench load` (any SMTP server) and `bulkbench bench` (a server of our own, started
//! as a child process): run a scenario's workload once, then report.

use clap::Args;
use tracing::warn;

use crate::backend::parse_run_backend;
use crate::run::{self, Prepared, RunArgs, RunOutcome, RunTarget, TargetAddr, parse_target};

/// `bulkbench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The SMTP server to drive, HOST:PORT (a name is resolved once, at start, to its
    /// first IPv4 address if it has one; the report names the address used). A name is
    /// also what STARTTLS sessions ask for (SNI) and, with --tls-verify, check.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_target)]
    target: TargetAddr,
    /// Measure the CPU and memory of these processes of the server, and of every process
    /// below them, as the server's cost (a Postfix master, a policy server beside it).
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',',
          value_parser = crate::run::parse_pid)]
    server_pid: Vec<u32>,
}

/// `bulkbench bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The policy backend the server runs: memory, fst, lmdb, redis, redis-cluster or
    /// postgres, its store built from the scenario (for the last three, in a throwaway
    /// server started on a free loopback port and stopped after the run, whose CPU is
    /// reported beside the server's); or KIND:URL, a store server already running, into
    /// which the scenario's population is written (under the URL's prefix or schema).
    #[arg(long, value_name = "KIND|KIND:URL", default_value = "memory",
          value_parser = parse_run_backend)]
    backend: String,
    /// Then run the same workload against `serve --backend canned:SHARE` (the same server
    /// answering every RCPT by a fixed rule accepting the workload's expected share, no
    /// lookup; not verified) and report this server's figures as shares of that ceiling.
    #[arg(long)]
    ceiling: bool,
}

/// `bulkbench load`.
pub fn load(args: LoadArgs) -> anyhow::Result<RunOutcome> {
    crate::interrupt::watch();
    let prepared = Prepared::new(&args.run)?;
    let target = RunTarget::External {
        addr: args.target.clone(),
        processes: args.server_pid.clone(),
    };
    let (summary, result) = run::once(&args.run, &prepared, &target, "load", None)?;
    run::report(&args.run, &prepared, summary, &result)
}

/// `bulkbench bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<RunOutcome> {
    crate::interrupt::watch();
    let prepared = Prepared::new(&args.run)?;
    let target = RunTarget::Backend(args.backend.clone());
    let (mut summary, result) = run::once(&args.run, &prepared, &target, "bench", None)?;
    let ceiling = if args.ceiling {
        crate::ceiling::measure_into(&mut summary, result.drawn, &args.run, &prepared)
    } else {
        Ok(())
    };
    let outcome = run::report(&args.run, &prepared, summary, &result)?;
    // The measured run is reported either way; a failed ceiling still fails the command,
    // unless the run itself already has a status of its own to report (3 or 6).
    match ceiling {
        Err(error) if outcome == RunOutcome::Clean => {
            Err(error.context("the run above is reported without its ceiling"))
        }
        Err(error) => {
            warn!("the run above is reported without its ceiling: {error:#}");
            Ok(outcome)
        }
        Ok(()) => Ok(outcome),
    }
}
