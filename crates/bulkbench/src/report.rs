//! `bulkbench report render DIR` and `bulkbench report merge -o OUT DIR...`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulk_report::{ReportDir, RunData};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Re-render a run's report (plots, summary.md, report.html, .hgrm) from its saved
    /// results (summary.json, run.hlog, intervals.hlog).
    Render {
        /// The run's folder.
        dir: PathBuf,
    },
    /// Merge runs of shards of one workload (`load --shard I/N`) into one report:
    /// histograms added exactly, counts summed. Refuses a shard given twice, a whole run,
    /// shards of different N, runs of different scenarios, seeds, traces or targets, and a
    /// missing shard (unless --partial).
    Merge {
        /// The merged report's folder (must not exist).
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Merge even if shards of the workload are missing; the report names them.
        #[arg(long)]
        partial: bool,
        /// The runs' folders.
        #[arg(required = true, num_args = 1..)]
        dirs: Vec<PathBuf>,
    },
}

/// Writes everything a person reads from `data` into `dir`, with progress on stderr.
pub fn render_into(dir: &Path, data: &RunData, quiet: bool) -> anyhow::Result<()> {
    let report = ReportDir::existing(dir);
    report.write_run(data)?;
    let progress = crate::progress::Steps::start("rendering", quiet);
    bulk_report::render_run_with_progress(data, dir, &|done, total| progress.set(done, total))
        .with_context(|| format!("cannot render the report in {}", dir.display()))?;
    progress.finish();
    Ok(())
}

pub fn run(args: ReportArgs) -> anyhow::Result<bool> {
    match args.command {
        ReportCommand::Render { dir } => {
            let data = RunData::load(&dir)
                .with_context(|| format!("cannot read the saved results in {}", dir.display()))?;
            render_into(&dir, &data, false)?;
            println!("{}", bulk_report::table(&data.summary));
            println!("report: {}", dir.join("report.html").display());
            Ok(data.summary.mismatches.total == 0)
        }
        ReportCommand::Merge {
            output,
            partial,
            dirs,
        } => {
            let runs = dirs
                .iter()
                .map(|dir| {
                    let data = RunData::load(dir).with_context(|| {
                        format!("cannot read the saved results in {}", dir.display())
                    })?;
                    Ok((dir.display().to_string(), data))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = bulk_report::run::merge(&runs, partial)?;
            let report = ReportDir::create_exact(&output)?;
            render_into(report.path(), &merged, false)?;
            println!("{}", bulk_report::table(&merged.summary));
            println!(
                "merged {} runs: {}",
                runs.len(),
                report.path().join("report.html").display()
            );
            Ok(merged.summary.mismatches.total == 0)
        }
    }
}
