//! `bulkbench population`: write a scenario's population file, or build its store: an fst
//! file, an LMDB environment, or the population written into a Redis or PostgreSQL server.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bulk_population::{PopulationModel, Scenario};
use clap::Args;
use tracing::info;

use crate::backend::{BackendKind, BackendSpec, build_store, parse_spec};
use crate::progress::Steps;

#[derive(Debug, Args)]
pub struct PopulationArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// What to write: the population file (memory), an FST file (fst), an LMDB
    /// environment directory (lmdb), or into a store server (redis, redis-cluster,
    /// postgres; it replaces what the key prefix or schema held).
    #[arg(long, value_enum, default_value_t = BackendKind::Memory)]
    backend: BackendKind,
    /// Where: a path (`-` for standard output, memory only; an fst or lmdb store is built
    /// beside and moved into place whole), or the store server's URL, as `serve --backend`
    /// takes it after `KIND:` (`redis://127.0.0.1:6379/0?prefix=P`,
    /// `postgresql://bulk@127.0.0.1:5432/postgres?schema=S`).
    #[arg(short, long, value_name = "PATH|URL")]
    output: String,
}

pub fn run(args: PopulationArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let started = Instant::now();
    if args.output == "-" {
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
        // The same check as `--backend KIND:LOCATION` elsewhere (a URL is parsed now).
        let spec: BackendSpec = parse_spec(&format!("{}:{}", args.backend.name(), args.output))
            .map_err(|error| anyhow::anyhow!("-o {}: {error}", args.output))?;
        build_store(&spec, &model, false)?;
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
