//! `bulkbench load` (any SMTP server) and `bulkbench bench` (a server of our own, started
//! as a child process): run a scenario's workload, then report.

use std::io::{BufRead, BufReader, BufWriter, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bulk_loadgen::{CpuSet, Expectations, LoadConfig, Progress, RunResult, Schedule, VerifyMode};
use bulk_population::{Arrival, PopulationModel, Scenario, Workload};
use bulk_report::summary::{CpuTimes, Expected, PinnedCpuTimes, Shard, Target};
use bulk_report::{ReportDir, Summary, SummaryInput};
use clap::{Args, ValueEnum};
use tokio::signal::unix::SignalKind;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{BackendKind, BackendSpec, ServeBackend, build_store};
use crate::sys;

/// Flags shared by `load` and `bench`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    pub(crate) scenario: PathBuf,
    /// Write the report to exactly this folder (it must not exist).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Where dated report folders go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    pub(crate) reports: PathBuf,
    /// How strictly RCPT replies are checked against the population.
    #[arg(long, value_enum, default_value_t = VerifyArg::Strict)]
    pub(crate) verify: VerifyArg,
    /// Replay this saved trace instead of generating the workload.
    #[arg(long, value_name = "FILE")]
    pub(crate) trace: Option<PathBuf>,
    /// Save the workload as a trace (JSON Lines) before running it.
    #[arg(long, value_name = "FILE")]
    pub(crate) save_trace: Option<PathBuf>,
    /// Run only part I of N of the workload (sessions whose index % N == I), e.g. 0/2.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub(crate) shard: Option<(u32, u32)>,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// `bench`, `compare`: do not pin the server to the first half of this process's CPUs
    /// and the generator's event loops to the other half (pinning needs at least 2 CPUs).
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// The share of sessions (0 to 1, warm-up included) that may fail before the run
    /// exits with status 6; by default none may.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub(crate) max_failed_share: f64,
}

fn parse_share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{value:?} is not a share from 0 to 1 (0.01 allows 1%)"
        )),
    }
}

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

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum VerifyArg {
    /// Reply classes with enhanced codes.
    Strict,
    /// 2xx against 5xx only.
    Basic,
    /// No checking.
    Off,
}

fn parse_shard(value: &str) -> Result<(u32, u32), String> {
    let (i, n) = value.split_once('/').ok_or("expected I/N, as in 0/2")?;
    let i: u32 = i.parse().map_err(|_| "I must be a whole number")?;
    let n: u32 = n.parse().map_err(|_| "N must be a whole number")?;
    if n == 0 || i >= n {
        return Err("need 0 <= I < N".into());
    }
    Ok((i, n))
}

/// `bulkbench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The SMTP server to drive, HOST:PORT (a name is resolved once, at start, to its
    /// first IPv4 address if it has one; the report names the address used).
    #[arg(long, value_name = "HOST:PORT", value_parser = resolve_target)]
    target: SocketAddr,
}

/// HOST:PORT to one socket address: an IP address as it is, a name through the system's
/// resolver ([`prefer_ipv4`] of what it returns).
pub(crate) fn resolve_target(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let addrs = value
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {value:?} as HOST:PORT: {e}"))?;
    prefer_ipv4(addrs).ok_or_else(|| format!("{value:?} resolves to no address"))
}

/// The first IPv4 address, else the first: `localhost` often resolves to `::1` first
/// while servers (`bulkbench serve` among them) listen on 127.0.0.1, and the generator
/// spreads its connections over source addresses only on IPv4 loopback.
fn prefer_ipv4(addrs: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let mut first = None;
    for addr in addrs {
        if addr.is_ipv4() {
            return Some(addr);
        }
        first.get_or_insert(addr);
    }
    first
}

/// `bulkbench bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The policy backend the server runs; its store is built from the scenario.
    #[arg(long, value_enum, default_value_t = BackendKind::Memory)]
    backend: BackendKind,
    /// Then run the same workload against `serve --backend canned:SHARE` (the same server
    /// answering every RCPT by a fixed rule accepting the workload's expected share, no
    /// lookup; not verified) and report this server's figures as shares of that ceiling.
    #[arg(long)]
    ceiling: bool,
}

/// The scenario and its workload, ready to run.
pub(crate) struct Prepared {
    pub(crate) scenario: Scenario,
    pub(crate) model: PopulationModel,
    pub(crate) workload: Arc<Workload>,
}

pub(crate) fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    // Refuse an existing --out before the run, not after it: the report folder is created
    // (and never overwritten) only when there is something to put in it.
    if let Some(out) = args.out.as_ref().filter(|out| out.exists()) {
        return Err(bulk_report::ReportError::Exists(out.clone()).into());
    }
    let scenario = Scenario::load(&args.scenario)?;
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let started = Instant::now();
    let workload = match &args.trace {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open trace {}", path.display()))?;
            let workload = Workload::read_trace(std::io::BufReader::new(file))
                .with_context(|| format!("invalid trace {}", path.display()))?;
            // The replies are checked against the scenario's population: a trace drawn from
            // another one would be judged by the wrong verdicts.
            if (workload.scenario.as_str(), workload.seed)
                != (scenario.name.as_str(), scenario.seed)
            {
                bail!(
                    "trace {} was drawn from scenario {:?} with seed {}, not from {} \
                     (scenario {:?}, seed {}); replay it with the scenario it was saved from",
                    path.display(),
                    workload.scenario,
                    workload.seed,
                    args.scenario.display(),
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
                    args.scenario.display()
                );
            }
            workload
        }
        None => Workload::generate(&scenario, &model),
    };
    let workload = match args.shard {
        Some((i, n)) => workload.shard(i, n),
        None => workload,
    };
    // An open loop knows before it starts whether any session falls after the warm-up.
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
    // A workload sized in time is saved once the run knows how many sessions it started;
    // its file is made now, so that a path that cannot be written fails before the run.
    if let Some(path) = &args.save_trace {
        match workload.duration() {
            None => save_trace(path, &workload)?,
            Some(_) => {
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create trace {}", path.display()))?;
            }
        }
    }
    Ok(Prepared {
        scenario,
        model,
        workload: Arc::new(workload),
    })
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

/// `--save-trace` of a run sized in time: the sessions it started, which replay exactly.
fn save_timed_trace(args: &RunArgs, prepared: &Prepared, result: &RunResult) -> anyhow::Result<()> {
    match &args.save_trace {
        Some(path) if prepared.workload.duration().is_some() => {
            save_trace(path, &prepared.workload.as_run(result.drawn))
        }
        _ => Ok(()),
    }
}

fn load_config(prepared: &Prepared, target: SocketAddr, verify: VerifyArg) -> LoadConfig {
    let w = &prepared.scenario.workload;
    let schedule = match prepared.scenario.arrival() {
        Arrival::Open { .. } => Schedule::Open,
        Arrival::Closed { concurrency } => Schedule::Closed {
            concurrency: concurrency as usize,
        },
    };
    let mut config = LoadConfig::new(target, schedule);
    config.max_in_flight = max_in_flight(&prepared.scenario) as usize;
    config.command_timeout = Duration::from_millis(w.timeout_ms.get());
    config.connect_timeout = Duration::from_millis(w.timeout_ms.get());
    config.warmup = Duration::from_secs_f64(w.warmup_secs.get());
    config.verify = match verify {
        VerifyArg::Strict => VerifyMode::Strict,
        VerifyArg::Basic => VerifyMode::Basic,
        VerifyArg::Off => VerifyMode::Off,
    };
    config.expectations = Expectations::of(&prepared.scenario.server);
    config
}

/// CPU time of the server (if any) and of this process at one instant, and of each side's
/// CPUs when they are pinned.
#[derive(Clone, Copy)]
struct CpuSample {
    server: Option<Duration>,
    generator: Duration,
    /// Server's CPUs, generator's CPUs.
    sets: Option<[CpuTimes; 2]>,
}

fn sample_cpu(server_pid: Option<u32>, split: Option<&CpuSplit>) -> CpuSample {
    CpuSample {
        server: server_pid.and_then(|pid| sys::cpu_time(Some(pid))),
        generator: sys::cpu_time(None).unwrap_or_default(),
        sets: split.and_then(|s| sys::cpu_set_times([&s.server, &s.generator])),
    }
}

/// Time on each side's CPUs between two samples.
fn pinned_times(split: &CpuSplit, start: &CpuSample, end: &CpuSample) -> Option<PinnedCpuTimes> {
    let ([server_start, generator_start], [server_end, generator_end]) = (start.sets?, end.sets?);
    Some(PinnedCpuTimes {
        server: (split.server.clone(), server_end.since(&server_start)),
        generator: (
            split.generator.clone(),
            generator_end.since(&generator_start),
        ),
    })
}

/// Runs the workload with a progress bar; samples CPU at the end of the warm-up and at the
/// end of the run, so costs cover the measurement window only. Also returns the wall-clock
/// time the generator started at, the zero of its interval timestamps.
fn drive(
    runtime: &tokio::runtime::Runtime,
    prepared: &Prepared,
    config: LoadConfig,
    server_pid: Option<u32>,
    split: Option<&CpuSplit>,
    quiet: bool,
) -> (RunResult, CpuSample, CpuSample, SystemTime) {
    let progress = Arc::new(Progress::default());
    let cancel = interrupt().child_token();
    let total = match prepared.workload.duration() {
        Some(duration) => crate::progress::Total::Time(duration),
        None => crate::progress::Total::Sessions(prepared.workload.session_count()),
    };
    let bar = crate::progress::Bar::start(total, progress.clone(), quiet);
    let warmup = config.warmup;
    let workload = prepared.workload.clone();
    let (result, window_start, window_end, started_at) = runtime.block_on(async {
        let sampler_split = split.cloned();
        let sampler = tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            sample_cpu(server_pid, sampler_split.as_ref())
        });
        let start_sample = sample_cpu(server_pid, split);
        let started_at = SystemTime::now();
        let result = bulk_loadgen::run(workload, config, progress, cancel).await;
        let end = sample_cpu(server_pid, split);
        // A run shorter than its warm-up has no window: its start is the end.
        let window_start = if sampler.is_finished() {
            sampler.await.unwrap_or(start_sample)
        } else {
            sampler.abort();
            end
        };
        (result, window_start, end, started_at)
    });
    bar.finish();
    (result, window_start, window_end, started_at)
}

fn cpu_delta(start: Option<Duration>, end: Option<Duration>) -> Option<f64> {
    Some(end?.saturating_sub(start?).as_secs_f64())
}

fn report(
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
    Ok(RunOutcome::of(&data.summary, args.max_failed_share))
}

fn summary_input(
    command: &str,
    args: &RunArgs,
    prepared: &Prepared,
    target: Target,
    started_at: SystemTime,
    result: &RunResult,
) -> SummaryInput {
    SummaryInput {
        command: command.to_owned(),
        started_at,
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
        generator_cpu_seconds: 0.0,
        cpu_sets: None,
    }
}

/// Ctrl-C for the whole command, cancelled at the first SIGINT: each run's cancel token is
/// its child, so the run in progress stops and reports what it measured, a run that has
/// not started yet stops at once, and `compare` stops between runs. Before
/// [`watch_interrupts`] a SIGINT ends the process as usual.
pub(crate) fn interrupt() -> &'static CancellationToken {
    static INTERRUPT: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    INTERRUPT.get_or_init(CancellationToken::new)
}

/// From now on a SIGINT cancels [`interrupt`] instead of ending the process; a second one
/// ends it at once (the `bench` server child gets its SIGTERM from the kernel, see
/// `sys::tie_child_to_this_process`). The signal is watched on a thread of its own, so a
/// Ctrl-C is seen between runs too, while a store is built or the server starts.
pub(crate) fn watch_interrupts() {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| {
        let watcher = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build();
        let Ok(watcher) = watcher else {
            warn!("cannot watch for Ctrl-C; it ends the process without a report");
            return;
        };
        // Registered before this returns, so no SIGINT falls between two handlers.
        let first =
            watcher.block_on(async { tokio::signal::unix::signal(SignalKind::interrupt()) });
        let Ok(mut sigint) = first else {
            warn!("cannot watch for Ctrl-C; it ends the process without a report");
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("bulkbench-sigint".into())
            .spawn(move || {
                watcher.block_on(async {
                    sigint.recv().await;
                    warn!(
                        "interrupted: stopping; what was measured is still reported \
                         (Ctrl-C again to quit at once)"
                    );
                    interrupt().cancel();
                    sigint.recv().await;
                    warn!("interrupted again: quitting without a report");
                    std::process::exit(130);
                })
            });
        if let Err(error) = spawned {
            warn!(%error, "cannot watch for Ctrl-C; it ends the process without a report");
        }
    });
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sessions in flight at most: the closed loop's concurrency, the open loop's cap.
fn max_in_flight(scenario: &Scenario) -> u64 {
    match scenario.arrival() {
        Arrival::Closed { concurrency } => u64::from(concurrency),
        Arrival::Open { max_in_flight, .. } => u64::from(max_in_flight),
    }
}

pub(crate) fn check_open_files(prepared: &Prepared) {
    let wanted = max_in_flight(&prepared.scenario) + 64;
    let limit = sys::raise_open_files_limit();
    if limit < wanted {
        warn!(
            open_files_limit = limit,
            wanted,
            "the open-files limit is below the scenario's concurrency; expect too_many_open_files errors"
        );
    }
}

/// What a run drives.
#[derive(Clone, Debug)]
pub(crate) enum RunTarget {
    /// An SMTP server already running.
    External(SocketAddr),
    /// `bulkbench serve` started for this run with this policy backend.
    Backend(String),
    /// `bulkbench serve --backend canned:SHARE` started for this run (`bench --ceiling`).
    Canned(bulk_policy::AcceptShare),
}

/// Runs the workload once against `target`; returns the summary and the raw result.
pub(crate) fn run_once(
    args: &RunArgs,
    prepared: &Prepared,
    target: &RunTarget,
    command: &str,
    stores: Option<&Path>,
) -> anyhow::Result<(Summary, RunResult)> {
    let runtime = runtime()?;
    match target {
        RunTarget::External(addr) => {
            let config = load_config(prepared, *addr, args.verify);
            let (result, start, end, started_at) =
                drive(&runtime, prepared, config, None, None, args.quiet);
            let mut input = summary_input(
                command,
                args,
                prepared,
                Target {
                    address: addr.to_string(),
                    external: true,
                    backend: None,
                    server_cpus: None,
                    generator_cpus: None,
                },
                started_at,
                &result,
            );
            input.generator_cpu_seconds =
                cpu_delta(Some(start.generator), Some(end.generator)).unwrap_or(0.0);
            let summary = Summary::new(input, &result);
            check_window(&summary)?;
            Ok((summary, result))
        }
        RunTarget::Backend(backend) => {
            let work = tempdir()?;
            run_with_server(
                args,
                prepared,
                Served::Store(backend),
                command,
                &runtime,
                work.path(),
                stores,
            )
        }
        RunTarget::Canned(share) => {
            let work = tempdir()?;
            let served = Served::Canned(*share);
            run_with_server(args, prepared, served, command, &runtime, work.path(), None)
        }
    }
}

/// What the server `run_with_server` starts serves by.
enum Served<'a> {
    /// This backend, on a store built from the scenario's population.
    Store(&'a str),
    /// The canned rule: no store.
    Canned(bulk_policy::AcceptShare),
}

fn run_with_server(
    args: &RunArgs,
    prepared: &Prepared,
    served: Served<'_>,
    command: &str,
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    stores: Option<&Path>,
) -> anyhow::Result<(Summary, RunResult)> {
    let (store, backend) = match served {
        Served::Canned(share) => (ServeBackend::Canned(share), format!("canned:{share}")),
        Served::Store(backend) => {
            let kind = BackendKind::from_name(backend).with_context(|| {
                format!("unknown backend {backend:?}; known: memory, fst, lmdb")
            })?;
            // A comparison builds each backend's store once and reuses it for every repeat.
            let store = BackendSpec {
                kind,
                path: stores
                    .unwrap_or(work)
                    .join(format!("population.{}", kind.name())),
            };
            if stores.is_none() || !store.path.exists() {
                build_store(kind, &prepared.model, &store.path, args.quiet)?;
            }
            (ServeBackend::Store(store), backend.to_owned())
        }
    };
    let pinning = if args.no_pin {
        None
    } else {
        CpuSplit::halves(&bulk_loadgen::allowed_cpus()).and_then(CpuSplit::pinning)
    };
    let server = ServerProcess::spawn(
        &store,
        prepared,
        &work.join("server.log"),
        pinning.as_ref().map(|p| p.server),
        args.quiet,
    )?;
    info!(addr = %server.addr, startup_ms = server.startup.as_millis() as u64, "server ready");
    let pid = server.child.id();
    let mut config = load_config(prepared, server.addr, args.verify);
    if let Some(pinning) = &pinning {
        config.event_loops = pinning.split.generator.len();
        config.cpus = Some(pinning.generator);
    }
    let split = pinning.as_ref().map(|p| &p.split);
    let (result, start, end, started_at) =
        drive(runtime, prepared, config, Some(pid), split, args.quiet);
    let cpu_sets = split.and_then(|split| pinned_times(split, &start, &end));
    let peak_rss = sys::peak_rss_bytes(pid).unwrap_or_else(|| {
        warn!(
            pid,
            "the server had exited before the end of the run; its peak memory is reported as 0 \
             (see its log)"
        );
        0
    });
    let server_cpu = cpu_delta(start.server, end.server);
    let (addr, startup) = (server.addr, server.startup);
    server.stop()?;
    let mut input = summary_input(
        command,
        args,
        prepared,
        Target {
            address: addr.to_string(),
            external: false,
            backend: Some(backend),
            server_cpus: pinning.as_ref().map(|p| p.split.server.clone()),
            generator_cpus: pinning.map(|p| p.split.generator),
        },
        started_at,
        &result,
    );
    input.server = server_cpu.map(|cpu| (cpu, peak_rss, startup.as_secs_f64()));
    input.cpu_sets = cpu_sets;
    input.generator_cpu_seconds =
        cpu_delta(Some(start.generator), Some(end.generator)).unwrap_or(0.0);
    let summary = Summary::new(input, &result);
    check_window(&summary)?;
    Ok((summary, result))
}

/// `bulkbench load`.
pub fn load(args: LoadArgs) -> anyhow::Result<RunOutcome> {
    watch_interrupts();
    let prepared = prepare(&args.run)?;
    check_open_files(&prepared);
    let (summary, result) = run_once(
        &args.run,
        &prepared,
        &RunTarget::External(args.target),
        "load",
        None,
    )?;
    let outcome = report(&args.run, &prepared, summary, &result)?;
    save_timed_trace(&args.run, &prepared, &result)?;
    Ok(outcome)
}

/// Which CPUs the server and the generator run on, when `bench` pins them.
///
/// Pinned by default: on shared cores, when both processes are busy the scheduler splits
/// the CPUs between them evenly, and each one's CPU time then shows its share, not its
/// work (seen here on two cores: server and generator CPU seconds equal to the hundredth,
/// run after run). On CPUs of their own, each uses what its work needs, and the side that
/// limits the rate shows it by using all of its CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CpuSplit {
    server: Vec<usize>,
    generator: Vec<usize>,
}

/// A [`CpuSplit`] ready to pin with: both sets built, and tried.
struct Pinning {
    split: CpuSplit,
    server: CpuSet,
    generator: CpuSet,
}

impl CpuSplit {
    /// The first half of `cpus` (rounded up) for the server, the rest for the generator;
    /// `None` with fewer than two.
    fn halves(cpus: &[usize]) -> Option<CpuSplit> {
        if cpus.len() < 2 {
            return None;
        }
        let (server, generator) = cpus.split_at(cpus.len().div_ceil(2));
        Some(CpuSplit {
            server: server.to_vec(),
            generator: generator.to_vec(),
        })
    }

    /// The sets to pin with, once a short-lived thread has been pinned to each, so that a
    /// report never claims a pinning that did not happen; if that fails, says why.
    fn pinning(self) -> Option<Pinning> {
        let sets = CpuSet::new(&self.server).and_then(|server| {
            let generator = CpuSet::new(&self.generator)?;
            std::thread::spawn(move || {
                server.pin_current_thread()?;
                generator.pin_current_thread()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the trial thread panicked")))?;
            Ok((server, generator))
        });
        match sets {
            Ok((server, generator)) => Some(Pinning {
                split: self,
                server,
                generator,
            }),
            Err(error) => {
                warn!(%error, "cannot pin to CPUs; server and generator share them");
                None
            }
        }
    }
}

/// A `bulkbench serve` child process.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    startup: Duration,
}

impl ServerProcess {
    /// Spawns `bulkbench serve` on 127.0.0.1:0 and waits for its `listening on` line.
    /// `cpus`: pin the server to these (it then sizes its runtime to them).
    fn spawn(
        store: &ServeBackend,
        prepared: &Prepared,
        log: &Path,
        cpus: Option<CpuSet>,
        quiet: bool,
    ) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("cannot find the bulkbench executable")?;
        let concurrency = max_in_flight(&prepared.scenario);
        // At least 1.1x the scenario's concurrency, so the limit never refuses the load.
        let max_connections = (concurrency * 11).div_ceil(10).max(100) + 16;
        let server = &prepared.scenario.server;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--backend")
            .arg(store.to_string())
            .args(["--max-connections", &max_connections.to_string()])
            .args(["--max-recipients", &server.max_recipients.get().to_string()])
            .args(["--hostname", "bulkbench.test"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        if server.harvest_resistant {
            command.arg("--harvest-resistant");
        }
        if let Some(cpus) = cpus {
            sys::pin_child(&mut command, cpus);
        }
        sys::tie_child_to_this_process(&mut command);
        let started = Instant::now();
        let mut child = command.spawn().context("cannot start bulkbench serve")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = reader.read_to_end(&mut Vec::new());
        });
        // Loading a large population takes the server a while: show that it is waited for.
        let waiting =
            crate::progress::Steps::spinner("starting the server (it loads the population)", quiet);
        let deadline = Instant::now() + Duration::from_secs(300);
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break Ok(line),
                Err(RecvTimeoutError::Disconnected) => break Ok(String::new()),
                Err(RecvTimeoutError::Timeout) if interrupt().is_cancelled() => {
                    break Err("interrupted while the server was starting");
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    break Err("the server did not report `listening on` within 300 s");
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        };
        waiting.finish();
        let line = match line {
            Ok(line) => line,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{why} (log: {})", log.display());
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the server did not start (log: {}): {}",
                log.display(),
                tail(log)
            );
        };
        let addr: SocketAddr = addr.parse().context("bad address in `listening on` line")?;
        Ok(ServerProcess {
            child,
            addr,
            startup: started.elapsed(),
        })
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    warn!(%status, "the server exited with an error");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                warn!("the server did not stop within 30 s of SIGTERM; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// `bulkbench bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<RunOutcome> {
    watch_interrupts();
    let prepared = prepare(&args.run)?;
    check_open_files(&prepared);
    let target = RunTarget::Backend(args.backend.name().to_owned());
    let (mut summary, result) = run_once(&args.run, &prepared, &target, "bench", None)?;
    let ceiling = if args.ceiling {
        crate::ceiling::measure_into(&mut summary, result.drawn, &args.run, &prepared)
    } else {
        Ok(())
    };
    let outcome = report(&args.run, &prepared, summary, &result)?;
    save_timed_trace(&args.run, &prepared, &result)?;
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

/// A fresh private folder under the system's temporary directory, removed when dropped:
/// also when a run or a comparison returns early with an error (its stores can take
/// gigabytes). Made by `tempfile` (mode 0700, a name no other process can take) rather
/// than by hand.
pub(crate) fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("bulkbench-")
        .tempdir()
        .context("cannot create a temporary folder")
}

/// Used by `progress` for the live rate.
pub(crate) fn rcpts(progress: &Progress) -> u64 {
    progress.rcpts.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_addresses_or_names_with_a_port() {
        assert_eq!(
            resolve_target("127.0.0.1:2525").unwrap(),
            "127.0.0.1:2525".parse().unwrap()
        );
        assert_eq!(
            resolve_target("[::1]:25").unwrap(),
            "[::1]:25".parse().unwrap()
        );
        // A name from the hosts file (no query leaves the machine).
        let local = resolve_target("localhost:2525").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 2525, "{local}");
        let v6: SocketAddr = "[::1]:25".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:25".parse().unwrap();
        assert_eq!(prefer_ipv4([v6, v4]), Some(v4));
        assert_eq!(prefer_ipv4([v6]), Some(v6));
        assert_eq!(prefer_ipv4([]), None);
        for bad in ["localhost", "localhost:99999", "127.0.0.1", ":25"] {
            let error = resolve_target(bad).unwrap_err();
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }

    #[test]
    fn cpus_split_in_halves_with_the_odd_one_to_the_server() {
        assert_eq!(CpuSplit::halves(&[]), None);
        assert_eq!(CpuSplit::halves(&[3]), None);
        let split = |server: &[usize], generator: &[usize]| CpuSplit {
            server: server.to_vec(),
            generator: generator.to_vec(),
        };
        assert_eq!(CpuSplit::halves(&[0, 1]), Some(split(&[0], &[1])));
        assert_eq!(CpuSplit::halves(&[2, 5, 7]), Some(split(&[2, 5], &[7])));
        assert_eq!(
            CpuSplit::halves(&[0, 1, 2, 3]),
            Some(split(&[0, 1], &[2, 3]))
        );
    }
}
