//! After a run: its summary, its report, and the outcome that sets the exit status.

use std::time::SystemTime;

use anyhow::bail;
use bulk_loadgen::RunResult;
use bulk_report::summary::{Expected, Shard, Target};
use bulk_report::{ReportDir, Summary, SummaryInput};

use super::cpu::cpu_delta;
use super::{Driven, Prepared, RunArgs};

/// How a `load` or `bench` run ended, for its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every reply as expected, no more failed sessions than allowed.
    Clean,
    /// Replies contradicted the population.
    Mismatches,
    /// More sessions failed than `--max-failed-share` allows.
    Failed,
}

impl RunOutcome {
    /// The outcome of a run, printing why it is not clean to stderr. Mismatches come first:
    /// a wrong answer is worse than no answer.
    pub(crate) fn of(summary: &Summary, max_failed_share: f64) -> RunOutcome {
        let started = summary.totals.sessions + summary.warmup_totals.sessions;
        let failed = summary.totals.sessions_failed + summary.warmup_totals.sessions_failed;
        let share = if started > 0 {
            failed as f64 / started as f64
        } else {
            0.0
        };
        if summary.mismatches.total > 0 {
            eprintln!(
                "MISMATCHES: {} RCPT replies contradicted the population",
                summary.mismatches.total
            );
            RunOutcome::Mismatches
        } else if share > max_failed_share {
            eprintln!(
                "FAILED: {failed} of {started} sessions failed ({:.2}%), more than \
                 --max-failed-share {max_failed_share} allows; the report lists them by kind",
                share * 100.0
            );
            RunOutcome::Failed
        } else {
            RunOutcome::Clean
        }
    }
}

/// Refuses a run whose measurement window holds no session: its figures would all be
/// zero, and a zero is not a measurement.
fn check_window(summary: &Summary) -> anyhow::Result<()> {
    if summary.totals.sessions > 0 {
        return Ok(());
    }
    if summary.window.interrupted {
        bail!(
            "the run was interrupted during its warm-up ({:.1} s): nothing was measured",
            summary.window.warmup_secs
        );
    }
    bail!(
        "the run ended during its warm-up ({:.1} s; every session started before it ended): \
         lower warmup_secs or raise sessions/duration_secs",
        summary.window.warmup_secs
    )
}

/// The run's summary, refused when its measurement window holds no session.
pub(super) fn summarize(
    input: SummaryInput,
    result: RunResult,
) -> anyhow::Result<(Summary, RunResult)> {
    let summary = Summary::new(input, &result);
    check_window(&summary)?;
    Ok((summary, result))
}

/// Writes the run's report (and, for a run sized in time, its `--save-trace`), prints its
/// table, and says how the run ended.
pub(crate) fn report(
    args: &RunArgs,
    prepared: &Prepared,
    summary: Summary,
    result: &RunResult,
) -> anyhow::Result<RunOutcome> {
    let dir = match &args.out {
        Some(out) => ReportDir::create_exact(out)?,
        None => ReportDir::create_dated(&args.reports, &prepared.scenario.name, SystemTime::now())?,
    };
    let data = bulk_report::RunData::new(summary, result);
    crate::report::render_into(dir.path(), &data, args.quiet)?;
    println!("{}", bulk_report::table(&data.summary));
    println!("report: {}", dir.path().join("report.html").display());
    prepared.save_timed_trace(args, result)?;
    Ok(RunOutcome::of(&data.summary, args.max_failed_share))
}
/// What every run's summary records about itself; the caller adds the server's figures.
pub(super) fn summary_input(
    command: &str,
    args: &RunArgs,
    prepared: &Prepared,
    target: Target,
    driven: &Driven,
) -> SummaryInput {
    let result = &driven.result;
    SummaryInput {
        command: command.to_owned(),
        started_at: driven.started_at,
        scenario: serde_json::to_value(&prepared.scenario).unwrap_or(serde_json::Value::Null),
        seed: prepared.scenario.seed,
        scenario_fingerprint: prepared.scenario.fingerprint(),
        trace: args.trace.as_ref().map(|path| {
            path.file_name()
                .unwrap_or(path.as_os_str())
                .to_string_lossy()
                .into_owned()
        }),
        shard: args.shard.map(|(index, count)| Shard { index, count }),
        target,
        // Sized in time, the plan is what was drawn before the time was up.
        expected: match prepared.workload.duration() {
            Some(_) => Expected {
                sessions: result.drawn,
                rcpts: prepared.workload.as_run(result.drawn).rcpt_count(),
            },
            None => Expected {
                sessions: prepared.workload.session_count(),
                rcpts: prepared.workload.rcpt_count(),
            },
        },
        warmup_secs: prepared.scenario.workload.warmup_secs.get(),
        server: None,
        store: None,
        generator_cpu_seconds: cpu_delta(Some(driven.start.generator), Some(driven.end.generator))
            .unwrap_or(0.0),
        generator_event_loops: u32::try_from(result.event_loops).unwrap_or(u32::MAX),
        listen_queue: driven.listen_queue,
        cpu_sets: None,
    }
}
