//! Before a run: the scenario loaded, its workload generated (or a saved trace read and
//! checked against the scenario), and every mistake that would spoil the run refused
//! before it starts.

use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bulk_loadgen::{CertificateCheck, RunResult};
use bulk_population::{Arrival, PopulationModel, Scenario, Workload};
use tracing::{info, warn};

use super::RunArgs;
use crate::sys;

/// The scenario and its workload, ready to run.
pub(crate) struct Prepared {
    pub(crate) scenario: Scenario,
    pub(crate) model: PopulationModel,
    pub(crate) workload: Arc<Workload>,
    /// How STARTTLS sessions check the server's certificate (`--tls-verify`).
    pub(crate) certificates: CertificateCheck,
}

impl Prepared {
    /// Loads the scenario, draws (or reads) its workload and takes this run's shard of it;
    /// refuses an existing `--out`, a trace from another scenario, and an open loop that
    /// would measure nothing. Raises the open-files limit for the scenario's concurrency.
    pub(crate) fn new(args: &RunArgs) -> anyhow::Result<Prepared> {
        // Refuse an existing --out before the run, not after it: the report folder is
        // created (and never overwritten) only when there is something to put in it.
        if let Some(out) = args.out.as_ref().filter(|out| out.exists()) {
            return Err(bulk_report::ReportError::Exists(out.clone()).into());
        }
        let scenario = Scenario::load(&args.scenario)?;
        // Read before the workload is drawn: a bad file fails at once.
        let certificates = match &args.tls_ca {
            Some(path) => CertificateCheck::from_pem_file(path)
                .context("--tls-ca: cannot use this file as the trusted certificates")?,
            None => CertificateCheck::Off,
        };
        let model = PopulationModel::new(&scenario.population, scenario.seed);
        let started = Instant::now();
        let workload = match &args.trace {
            Some(path) => read_trace(path, &args.scenario, &scenario)?,
            None => Workload::generate(&scenario, &model),
        };
        let workload = match args.shard {
            Some((i, n)) => workload.shard(i, n),
            None => workload,
        };
        check_warmup(&scenario, &workload)?;
        match workload.duration() {
            Some(duration) => info!(
                secs = duration.as_secs_f64(),
                "workload sized in time: sessions are drawn until the time is up"
            ),
            None => info!(
                sessions = workload.session_count(),
                rcpts = workload.rcpt_count(),
                ms = started.elapsed().as_millis() as u64,
                "workload ready"
            ),
        }
        // A workload sized in time is saved once the run knows how many sessions it
        // started; its file is made now, so that a path that cannot be written fails
        // before the run.
        if let Some(path) = &args.save_trace {
            match workload.duration() {
                None => save_trace(path, &workload)?,
                Some(_) => {
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create trace {}", path.display()))?;
                }
            }
        }
        let prepared = Prepared {
            scenario,
            model,
            workload: Arc::new(workload),
            certificates,
        };
        prepared.check_open_files();
        Ok(prepared)
    }

    /// `--save-trace` of a run sized in time: the sessions it started, which replay
    /// exactly. (A workload of fixed size was saved before the run.)
    pub(crate) fn save_timed_trace(
        &self,
        args: &RunArgs,
        result: &RunResult,
    ) -> anyhow::Result<()> {
        match &args.save_trace {
            Some(path) if self.workload.duration().is_some() => {
                save_trace(path, &self.workload.as_run(result.drawn))
            }
            _ => Ok(()),
        }
    }

    fn check_open_files(&self) {
        let wanted = max_in_flight(&self.scenario) + 64;
        let limit = sys::raise_open_files_limit();
        if limit < wanted {
            warn!(
                open_files_limit = limit,
                wanted,
                "the open-files limit is below the scenario's concurrency; expect too_many_open_files errors"
            );
        }
    }
}

/// A saved trace, refused unless it was drawn from this scenario's population: the replies
/// are checked against that population, and a trace drawn from another one would be judged
/// by the wrong verdicts.
fn read_trace(path: &Path, scenario_file: &Path, scenario: &Scenario) -> anyhow::Result<Workload> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open trace {}", path.display()))?;
    let workload = Workload::read_trace(std::io::BufReader::new(file))
        .with_context(|| format!("invalid trace {}", path.display()))?;
    if (workload.scenario.as_str(), workload.seed) != (scenario.name.as_str(), scenario.seed) {
        bail!(
            "trace {} was drawn from scenario {:?} with seed {}, not from {} \
             (scenario {:?}, seed {}); replay it with the scenario it was saved from",
            path.display(),
            workload.scenario,
            workload.seed,
            scenario_file.display(),
            scenario.name,
            scenario.seed
        );
    }
    // Same name and seed, other population parameters (an edited file): the same.
    if let Some(drawn) = workload.population
        && drawn != scenario.population.fingerprint()
    {
        bail!(
            "trace {} was drawn from a population with other parameters than \
             [population] in {}; replay it with the scenario it was saved from",
            path.display(),
            scenario_file.display()
        );
    }
    Ok(workload)
}

/// An open loop knows before it starts whether any session falls after the warm-up.
fn check_warmup(scenario: &Scenario, workload: &Workload) -> anyhow::Result<()> {
    let warmup_us = (scenario.workload.warmup_secs.get() * 1e6) as u64;
    if let (Arrival::Open { .. }, Some(last)) = (scenario.arrival(), workload.sessions.last())
        && last.start_offset_us < warmup_us
    {
        bail!(
            "every session starts during the warm-up ({:.1} s; the last at {:.1} s), so nothing \
             would be measured: lower warmup_secs or raise sessions/duration_secs",
            scenario.workload.warmup_secs.get(),
            last.start_offset_us as f64 / 1e6
        );
    }
    Ok(())
}

fn save_trace(path: &Path, workload: &Workload) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create trace {}", path.display()))?;
    let mut writer = BufWriter::new(file);
    workload
        .write_trace(&mut writer)
        .and_then(|()| std::io::Write::flush(&mut writer))
        .with_context(|| format!("cannot write trace {}", path.display()))
}

/// Sessions in flight at most: the closed loop's concurrency, the open loop's cap.
pub(super) fn max_in_flight(scenario: &Scenario) -> u64 {
    match scenario.arrival() {
        Arrival::Closed { concurrency } => u64::from(concurrency),
        Arrival::Open { max_in_flight, .. } => u64::from(max_in_flight),
    }
}
