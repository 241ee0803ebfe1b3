//! `bulkbench population`: write a scenario's population file, or build its store: an fst
//! file, an LMDB environment, or the population written into a Redis or PostgreSQL server;
//! or write it as a Postfix access table (`--format postfix-access`).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bulk_population::{PopulationModel, Scenario};
use clap::{Args, ValueEnum};
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
    /// Where: a path (`-` for standard output, a population file or access table; an fst
    /// or lmdb store, or an access table, is written beside and moved into place whole),
    /// or the store server's URL, as `serve --backend` takes it after `KIND:`
    /// (`redis://127.0.0.1:6379/0?prefix=P`,
    /// `postgresql://bulk@127.0.0.1:5432/postgres?schema=S`).
    #[arg(short, long, value_name = "PATH|URL")]
    output: String,
    /// Write the population in another format instead of a store: `postfix-access`, a
    /// table for Postfix's check_recipient_access (build it with `postmap lmdb:PATH`),
    /// giving `serve`'s verdicts with preferences applied to all mail.
    #[arg(long, value_enum, conflicts_with = "backend")]
    format: Option<Format>,
}

/// `--format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A Postfix access table: one line per served domain (`550 5.1.1`) and per mailbox
    /// (`DUNNO` or `550 5.7.1`).
    PostfixAccess,
}

pub fn run(args: PopulationArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let started = Instant::now();
    if args.format == Some(Format::PostfixAccess) {
        write_access_table(&model, &args.output)?;
        info!(
            format = "postfix-access",
            mailboxes = model.mailbox_count(),
            domains = model.domain_count(),
            ms = started.elapsed().as_millis() as u64,
            "population written"
        );
        return Ok(());
    }
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

/// Writes the Postfix access table to `output` (`-`: standard output), whole: into a
/// temporary file beside it, renamed into place, so `postmap` never reads half a table.
fn write_access_table(model: &PopulationModel, output: &str) -> anyhow::Result<()> {
    let steps = Steps::counting("generating mailboxes", model.mailbox_count(), false);
    if output == "-" {
        bulk_postfix::write_table(model, std::io::stdout().lock(), |done| steps.at(done))
            .context("cannot write to standard output")?;
        steps.finish();
        return Ok(());
    }
    let path = std::path::Path::new(output);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // A temporary file is private (0600); a table is as readable as a file `>` makes.
    std::fs::set_permissions(
        file.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    bulk_postfix::write_table(model, file.as_file_mut(), |done| steps.at(done))
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    steps.finish();
    Ok(())
}
