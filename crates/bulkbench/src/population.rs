//! `bulkbench population`: write a scenario's population file, or build its store for the
//! fst or LMDB backend.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bulk_population::{PopulationModel, Scenario};
use clap::Args;
use tracing::info;

use crate::backend::{BackendKind, build_store};
use crate::progress::Steps;

#[derive(Debug, Args)]
pub struct PopulationArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// What to write: the population file (memory), an FST file (fst) or an LMDB
    /// environment directory (lmdb).
    #[arg(long, value_enum, default_value_t = BackendKind::Memory)]
    backend: BackendKind,
    /// Where (`-` for standard output, memory only). An fst or lmdb store is built beside
    /// and moved into place whole.
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
}

pub fn run(args: PopulationArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let started = Instant::now();
    if args.output.as_os_str() == "-" {
        if args.backend != BackendKind::Memory {
            bail!("only the memory backend's population file can go to standard output");
        }
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let steps = Steps::counting("generating mailboxes", model.mailbox_count(), false);
        model
            .write_file_with_progress(&mut out, |done| steps.at(done))
            .and_then(|()| out.flush())
            .context("cannot write to standard output")?;
        steps.finish();
    } else {
        build_store(args.backend, &model, &args.output, false)?;
    }
    info!(
        backend = args.backend.name(),
        mailboxes = model.mailbox_count(),
        domains = model.domain_count(),
        ms = started.elapsed().as_millis() as u64,
        "population written"
    );
    Ok(())
}
