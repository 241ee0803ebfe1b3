//! `bulkbench population`: write a scenario's population file.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bulk_population::{PopulationModel, Scenario};
use clap::Args;
use tracing::info;

#[derive(Debug, Args)]
pub struct PopulationArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Where to write the population file (`-` for standard output).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

pub fn run(args: PopulationArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let started = Instant::now();
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, w);
        model.write_file(&mut w)?;
        w.flush()
    };
    if args.output.as_os_str() == "-" {
        write(&mut std::io::stdout().lock()).context("cannot write to standard output")?;
    } else {
        let mut file = std::fs::File::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
        write(&mut file).with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    info!(
        mailboxes = model.mailbox_count(),
        domains = model.domain_count(),
        ms = started.elapsed().as_millis() as u64,
        "population written"
    );
    Ok(())
}
