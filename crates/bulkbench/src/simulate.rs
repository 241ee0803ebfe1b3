//! `bulkbench simulate`: the scenario's workload through protocol and policy in process,
//! on every core, no sockets.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bulk_loadgen::simulate::{session_config, simulate};
use bulk_loadgen::{Expectations, VerifyMode};
use bulk_policy::MemoryBackend;
use bulk_population::{PopulationModel, Scenario, Workload};
use clap::Args;
use tracing::info;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Threads [default: every core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
}

/// Returns whether no reply contradicted the population.
pub fn run(args: SimulateArgs) -> anyhow::Result<bool> {
    let scenario = Scenario::load(&args.scenario)?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = args.threads {
        pool = pool.num_threads(threads as usize);
    }
    let pool = pool.build().context("cannot start the thread pool")?;
    pool.install(|| {
        let started = Instant::now();
        let model = PopulationModel::new(&scenario.population, scenario.seed);
        let backend = MemoryBackend::new(model.build());
        let workload = Workload::generate(&scenario, &model);
        info!(
            mailboxes = backend.len(),
            sessions = workload.sessions.len(),
            rcpts = workload.rcpt_count(),
            secs = workload.duration().map(|d| d.as_secs_f64()),
            setup_ms = started.elapsed().as_millis() as u64,
            "population and workload ready"
        );
        let config = session_config(&scenario, &workload);
        let expectations = Expectations::of(&scenario.server);
        let result = simulate(
            &workload,
            &backend,
            config,
            expectations,
            VerifyMode::Strict,
        );
        if result.mismatches.total > 0 {
            println!("MISMATCHES: {}", result.mismatches.total);
            for (pair, count) in &result.mismatches.by_class {
                println!("  {pair:<28} {count:>10}");
            }
        }
        println!(
            "simulated {} sessions, {} RCPTs, {} messages on {} threads ({} failed sessions)",
            result.sessions, result.rcpts, result.messages, result.threads, result.failed_sessions
        );
        println!(
            "wall {:.3} s, CPU {:.3} s: {:.0} RCPT/s, {:.0} RCPT/s per core, {:.0} ns CPU per RCPT",
            result.wall.as_secs_f64(),
            result.cpu.as_secs_f64(),
            result.rcpt_per_sec(),
            result.rcpt_per_core_sec(),
            result.cpu_ns_per_rcpt()
        );
        Ok(result.mismatches.total == 0 && result.failed_sessions == 0)
    })
}
