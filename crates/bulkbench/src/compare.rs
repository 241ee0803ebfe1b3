//! `bulkbench compare SCENARIO`: the same workload, byte for byte, against several arms
//! (backends served by `bulkbench serve`, or SMTP servers already running), interleaved
//! `--repeat K` times in a seeded random order per repeat, reported side by side with a
//! confidence interval on every ratio.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use bulk_loadgen::RunResult;
use bulk_report::compare::{Arm, Comparison, RunOrder, render_comparison, run_order};
use bulk_report::{ReportDir, RunData, Summary};
use clap::Args;
use tracing::{error, info, warn};

use crate::run::{self, Prepared, RunArgs, RunTarget, Stores, TargetAddr};

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A policy backend to serve with `bulkbench serve` (repeatable), as `bench --backend`
    /// takes it: memory, fst, lmdb, redis, redis-cluster, postgres (a store server started
    /// for the comparison and kept for its repeats), or KIND:URL (one already running).
    #[arg(long = "backend", value_name = "KIND|KIND:URL",
          value_parser = crate::backend::parse_run_backend)]
    backends: Vec<String>,
    /// An SMTP server already running (repeatable), as NAME=HOST:PORT.
    #[arg(long = "target", value_name = "NAME=HOST:PORT", value_parser = parse_target)]
    targets: Vec<(String, TargetAddr)>,
    /// Measure the CPU and memory of these processes of target NAME, and of every process
    /// below them, as its server's cost (repeatable, one per target): a Postfix master and
    /// the policy server it asks, say.
    #[arg(long = "target-pid", value_name = "NAME=PID[,PID...]", value_parser = parse_target_pids)]
    target_pids: Vec<(String, Vec<u32>)>,
    /// Runs per arm, interleaved: every arm once per repeat, in a random order per repeat.
    /// With 2 or more, each ratio gets a 95% confidence interval (5 or more to narrow it).
    #[arg(long, value_name = "K", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// The seed of the arms' order in each repeat (the same seed, the same order).
    #[arg(long, value_name = "N", default_value_t = 1)]
    order_seed: u64,
    /// A saved comparison folder to check against (CI): exit 4 when an arm regresses.
    #[arg(long, value_name = "DIR", requires = "max_regression")]
    baseline: Option<PathBuf>,
    /// With --baseline: the largest tolerated regression of RCPT/s, RCPT p99 or server CPU
    /// per RCPT, in percent; a figure fails only when its whole 95% interval is past it.
    #[arg(long, value_name = "PCT", requires = "baseline",
          value_parser = parse_percent)]
    max_regression: Option<f64>,
}

fn parse_percent(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(pct) if pct.is_finite() && pct >= 0.0 => Ok(pct),
        _ => Err("expected a percentage, 0 or more".into()),
    }
}

fn parse_target(value: &str) -> Result<(String, TargetAddr), String> {
    let (name, addr) = value.split_once('=').ok_or("expected NAME=HOST:PORT")?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("the NAME must be letters, digits, '-', '_' or '.'".into());
    }
    Ok((name.to_owned(), run::parse_target(addr)?))
}

fn parse_target_pids(value: &str) -> Result<(String, Vec<u32>), String> {
    let (name, pids) = value.split_once('=').ok_or("expected NAME=PID[,PID...]")?;
    let pids = pids
        .split(',')
        .map(run::parse_pid)
        .collect::<Result<_, _>>()?;
    Ok((name.to_owned(), pids))
}

/// Exit statuses beyond success: see main.rs.
pub enum Outcome {
    Clean,
    Mismatches,
    Regressed,
    ArmFailed,
}

pub fn run(args: CompareArgs) -> anyhow::Result<Outcome> {
    let arms = arms(&args)?;
    let baseline = match &args.baseline {
        Some(dir) => Some(Comparison::load(dir).with_context(|| {
            format!("cannot read the baseline comparison in {}", dir.display())
        })?),
        None => None,
    };
    crate::interrupt::watch();
    // One workload for every arm and repeat: the same sessions, byte for byte.
    let prepared = Prepared::new(&args.run)?;
    let report = match &args.run.out {
        Some(out) => ReportDir::create_exact(out)?,
        None => ReportDir::create_dated(
            &args.run.reports,
            &format!("compare-{}", prepared.scenario.name),
            SystemTime::now(),
        )?,
    };
    let (results, ran) = run_arms(&args, &arms, &prepared, report.path())?;
    let mut comparison = Comparison::new(&prepared.scenario.name, &results);
    comparison.run_order = Some(ran);
    // The verdict is part of the comparison: saved and rendered with it, not only printed.
    if let (Some(baseline), Some(dir), Some(pct)) = (&baseline, &args.baseline, args.max_regression)
    {
        comparison.verdict = Some(comparison.verdict(baseline, &dir.display().to_string(), pct));
    }
    comparison.save(report.path())?;
    render_comparison(&comparison, &results, report.path())?;
    let text = std::fs::read_to_string(report.path().join("comparison.md")).unwrap_or_default();
    println!("{text}");
    println!(
        "report: {}",
        report.path().join("comparison.html").display()
    );
    Ok(outcome(&comparison, &results))
}

/// The arms to compare, backends first, each with a name of its own.
fn arms(args: &CompareArgs) -> anyhow::Result<Vec<(String, RunTarget)>> {
    let mut arms: Vec<(String, RunTarget)> = Vec::new();
    for backend in &args.backends {
        // A store server given by URL is named by its kind: a URL makes no folder name,
        // and may hold a password.
        let name = backend
            .split_once(':')
            .map_or(backend.as_str(), |(kind, _)| kind);
        arms.push((name.to_owned(), RunTarget::Backend(backend.clone())));
    }
    for (name, _) in &args.target_pids {
        if !args.targets.iter().any(|(target, _)| target == name) {
            bail!("--target-pid {name}=...: no --target is named {name:?}");
        }
        if args
            .target_pids
            .iter()
            .filter(|(other, _)| other == name)
            .count()
            > 1
        {
            bail!("--target-pid {name}=... given twice: list every process in one");
        }
    }
    for (name, addr) in &args.targets {
        let processes = args
            .target_pids
            .iter()
            .find(|(target, _)| target == name)
            .map(|(_, pids)| pids.clone())
            .unwrap_or_default();
        arms.push((
            name.clone(),
            RunTarget::External {
                addr: addr.clone(),
                processes,
            },
        ));
    }
    if arms.is_empty() {
        bail!("nothing to compare: give at least one --backend NAME or --target NAME=HOST:PORT");
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &arms {
        if !seen.insert(name.clone()) {
            bail!("arm name {name:?} given twice: names must be unique");
        }
    }
    Ok(arms)
}

/// Runs every arm `--repeat` times, interleaved, saving each run under `report/runs/`;
/// returns each arm's complete runs (or its error) and the order they ran in.
fn run_arms(
    args: &CompareArgs,
    arms: &[(String, RunTarget)],
    prepared: &Prepared,
    report: &Path,
) -> anyhow::Result<(Vec<Arm>, RunOrder)> {
    let runs_dir = report.join("runs");
    std::fs::create_dir(&runs_dir)
        .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    // Each backend's store is built once, at its first run, and kept for the repeats.
    let stores = Stores::new()?;
    let mut results: Vec<Arm> = arms
        .iter()
        .map(|(name, _)| Arm {
            name: name.clone(),
            runs: Vec::new(),
            error: None,
        })
        .collect();
    let interrupt = crate::interrupt::token();
    // Each repeat runs every arm once, in an order of its own: an arm that always ran first
    // (or right after another) would carry the machine's drift as its difference.
    let order = run_order(arms.len(), args.repeat, args.order_seed);
    let mut ran = RunOrder {
        seed: args.order_seed,
        repeats: Vec::new(),
    };
    'runs: for (repeat, arm_order) in (1..=args.repeat).zip(&order) {
        ran.repeats.push(Vec::new());
        for &i in arm_order {
            let (name, target) = &arms[i];
            if interrupt.is_cancelled() {
                warn!("interrupted: comparing the runs that completed");
                break 'runs;
            }
            if results[i].error.is_some() {
                continue; // a failed arm is not retried: its error stands in the report
            }
            if let Some(this_repeat) = ran.repeats.last_mut() {
                this_repeat.push(name.clone());
            }
            info!(arm = %name, repeat, of = args.repeat, "running");
            match run_arm(&args.run, prepared, target, &stores) {
                Ok((summary, result)) => {
                    let data = RunData::new(summary, &result);
                    let dir = ReportDir::create_exact(&runs_dir.join(format!("{name}-{repeat}")))?;
                    dir.write_run(&data)?;
                    // A run cut short by Ctrl-C is kept under runs/ but not compared: it
                    // did a different amount of work from the others.
                    if result.interrupted {
                        warn!(arm = %name, repeat, "interrupted run saved, left out of the comparison");
                    } else {
                        results[i].runs.push(data);
                    }
                }
                Err(e) => {
                    error!(arm = %name, error = %format!("{e:#}"), "arm failed; the others go on");
                    results[i].error = Some(format!("{e:#}"));
                }
            }
        }
    }
    if interrupt.is_cancelled() {
        for arm in results.iter_mut().filter(|arm| arm.runs.is_empty()) {
            arm.error
                .get_or_insert_with(|| "interrupted before a complete run".into());
        }
    }
    ran.repeats.retain(|arms| !arms.is_empty());
    Ok((results, ran))
}

/// One run of one arm; an arm in which no session completed did not run: its error says
/// why, by kind.
fn run_arm(
    args: &RunArgs,
    prepared: &Prepared,
    target: &RunTarget,
    stores: &Stores,
) -> anyhow::Result<(Summary, RunResult)> {
    let (summary, result) = run::once(args, prepared, target, "compare", Some(stores))?;
    let completed = result.totals.sessions_completed + result.warmup_totals.sessions_completed;
    if completed == 0 && !prepared.workload.sessions.is_empty() {
        let kinds: Vec<String> = summary
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        bail!("no session completed ({})", kinds.join(", "));
    }
    Ok((summary, result))
}

/// The exit status: a regression first, then a failed arm, then mismatches.
fn outcome(comparison: &Comparison, results: &[Arm]) -> Outcome {
    if let Some(verdict) = &comparison.verdict {
        println!("{}", verdict.headline());
        if !verdict.passed {
            println!("REGRESSIONS against the baseline:");
            for check in verdict.failures() {
                println!("  {check}");
            }
            return Outcome::Regressed;
        }
    }
    if results.iter().any(|arm| arm.error.is_some()) {
        warn!("at least one arm failed; see the report");
        return Outcome::ArmFailed;
    }
    let mismatches = results
        .iter()
        .flat_map(|arm| &arm.runs)
        .any(|run| run.summary.mismatches.total > 0);
    if mismatches {
        Outcome::Mismatches
    } else {
        Outcome::Clean
    }
}
