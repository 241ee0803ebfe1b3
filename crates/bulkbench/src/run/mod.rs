//! One run of a scenario's workload against a target, as `load`, `bench` and `compare`
//! make it: [`Prepared::new`] before the run, [`once`] for the run (against a server
//! already running, or one started for it by [`child`]), [`report`] after it.

mod child;
mod cpu;
mod outcome;
mod prepare;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bulk_loadgen::{
    Expectations, LoadConfig, Progress, RunResult, Schedule, TlsClient, VerifyMode,
};
use bulk_population::Arrival;
use bulk_report::Summary;
use bulk_report::summary::{ListenQueue, Target};
use clap::{Args, ValueEnum};

use child::{Served, run_with_server};
use cpu::{CpuSample, CpuSplit, Watched, cpu_delta, sample_cpu};
pub(crate) use outcome::{RunOutcome, report};
use outcome::{summarize, summary_input};
pub(crate) use prepare::Prepared;
use prepare::max_in_flight;

/// Flags shared by `load`, `bench` and `compare`.
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
    /// The generator's threads, each an event loop of its own running its share of the
    /// sessions (round-robin). By default one per CPU it may use (`bench`, `compare`: per
    /// CPU of its half when pinned). Fewer threads than CPUs sleep and wake less: 10
    /// lock-step sessions cost less CPU per RCPT on one thread than on two.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) generator_threads: Option<u16>,
    /// The share of sessions (0 to 1, warm-up included) that may fail before the run
    /// exits with status 6; by default none may.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub(crate) max_failed_share: f64,
    /// STARTTLS sessions check the server's certificate: it must chain to a certificate
    /// of --tls-ca and hold the target's name (or address); a session whose check fails
    /// counts as `tls_certificate`. By default any certificate is accepted (the handshake's
    /// signatures are still checked).
    #[arg(long, requires = "tls_ca")]
    pub(crate) tls_verify: bool,
    /// With --tls-verify: the certificates to trust, in a PEM file (a CA, or the server's
    /// self-signed certificate).
    #[arg(long, value_name = "FILE", requires = "tls_verify")]
    pub(crate) tls_ca: Option<PathBuf>,
}

fn parse_share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{value:?} is not a share from 0 to 1 (0.01 allows 1%)"
        )),
    }
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

/// A target as given: the address used, and the host's name when it was given by name:
/// the name STARTTLS sessions ask for (SNI) and check the certificate against.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TargetAddr {
    pub(crate) addr: SocketAddr,
    pub(crate) name: Option<String>,
}

/// HOST:PORT to a [`TargetAddr`]: resolved by [`resolve_target`], the name kept unless the
/// host is an IP address.
pub(crate) fn parse_target(value: &str) -> Result<TargetAddr, String> {
    let addr = resolve_target(value)?;
    let name = match value.parse::<SocketAddr>() {
        Ok(_) => None,
        Err(_) => value.rsplit_once(':').map(|(host, _)| host.to_owned()),
    };
    Ok(TargetAddr { addr, name })
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

/// The generator's configuration for a run of `prepared` against `target` (called `name`,
/// when it was given by name).
fn load_config(
    prepared: &Prepared,
    target: SocketAddr,
    name: Option<&str>,
    args: &RunArgs,
) -> anyhow::Result<LoadConfig> {
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
    config.verify = match args.verify {
        VerifyArg::Strict => VerifyMode::Strict,
        VerifyArg::Basic => VerifyMode::Basic,
        VerifyArg::Off => VerifyMode::Off,
    };
    config.expectations = Expectations::of(&prepared.scenario.server);
    config.tls = TlsClient::new(&prepared.certificates, name, target.ip())
        .context("cannot set up TLS for the STARTTLS sessions")?;
    if let Some(threads) = args.generator_threads {
        config.event_loops = usize::from(threads);
    }
    Ok(config)
}

/// Runs the workload with a progress bar; samples CPU at the end of the warm-up and at the
/// end of the run, so costs cover the measurement window only. Also returns the wall-clock
/// time the generator started at, the zero of its interval timestamps.
fn drive(
    runtime: &tokio::runtime::Runtime,
    prepared: &Prepared,
    config: LoadConfig,
    watched: &Watched,
    split: Option<&CpuSplit>,
    quiet: bool,
) -> Driven {
    let progress = Arc::new(Progress::default());
    let cancel = crate::interrupt::token().child_token();
    let total = match prepared.workload.duration() {
        Some(duration) => crate::progress::Total::Time(duration),
        None => crate::progress::Total::Sessions(prepared.workload.session_count()),
    };
    let bar = crate::progress::Bar::start(total, progress.clone(), quiet);
    let warmup = config.warmup;
    let workload = prepared.workload.clone();
    let (result, window_start, window_end, started_at, listen_queue) = runtime.block_on(async {
        let sampler_split = split.cloned();
        let sampler_watched = watched.clone();
        let sampler = tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            sample_cpu(&sampler_watched, sampler_split.as_ref())
        });
        let start_sample = sample_cpu(watched, split);
        let queue_before = crate::sys::listen_queue();
        let started_at = SystemTime::now();
        let result = bulk_loadgen::run(workload, config, progress, cancel).await;
        let end = sample_cpu(watched, split);
        let listen_queue = queue_before
            .zip(crate::sys::listen_queue())
            .map(|(before, after)| ListenQueue {
                overflows: after.overflows.saturating_sub(before.overflows),
                drops: after.drops.saturating_sub(before.drops),
            });
        // A run shorter than its warm-up has no window: its start is the end.
        let window_start = if sampler.is_finished() {
            sampler.await.unwrap_or(start_sample)
        } else {
            sampler.abort();
            end
        };
        (result, window_start, end, started_at, listen_queue)
    });
    bar.finish();
    Driven {
        result,
        start: window_start,
        end: window_end,
        started_at,
        listen_queue,
    }
}

/// What [`drive`] measured: the run's result, CPU samples at the start of its measurement
/// window and at its end, and the wall-clock time the generator started at.
struct Driven {
    result: RunResult,
    start: CpuSample,
    end: CpuSample,
    started_at: SystemTime,
    /// The kernel's listen-queue refusals (the network namespace's) over the whole run,
    /// warm-up included.
    listen_queue: Option<ListenQueue>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What a run drives.
#[derive(Clone, Debug)]
pub(crate) enum RunTarget {
    /// An SMTP server already running, and the roots of its process trees whose CPU (and
    /// memory) is measured as the server's (none: not measured).
    External {
        addr: TargetAddr,
        processes: Vec<u32>,
    },
    /// `bulkbench serve` started for this run with this policy backend.
    Backend(String),
    /// `bulkbench serve --backend canned:SHARE` started for this run (`bench --ceiling`).
    Canned(bulk_policy::AcceptShare),
}

/// Runs the workload once against `target`; returns the summary and the raw result.
/// `stores`: where `compare` keeps each backend's store for its repeats (else each run
/// builds its own in a folder of its own).
pub(crate) fn once(
    args: &RunArgs,
    prepared: &Prepared,
    target: &RunTarget,
    command: &str,
    stores: Option<&Stores>,
) -> anyhow::Result<(Summary, RunResult)> {
    let runtime = runtime()?;
    match target {
        RunTarget::External {
            addr: target,
            processes,
        } => {
            let addr = &target.addr;
            let config = load_config(prepared, *addr, target.name.as_deref(), args)?;
            let watched = Watched {
                server_tree: processes.clone(),
                ..Watched::default()
            };
            let driven = drive(&runtime, prepared, config, &watched, None, args.quiet);
            let target = Target {
                address: addr.to_string(),
                external: true,
                backend: None,
                server_cpus: None,
                generator_cpus: None,
                processes: processes.clone(),
            };
            let mut input = summary_input(command, args, prepared, target, &driven);
            // An external server's memory: the sum of its processes' peaks (an upper
            // bound for several), read at the end; it has no startup of ours to time.
            input.server = cpu_delta(driven.start.server, driven.end.server).map(|cpu| {
                let rss = crate::sys::tree_peak_rss_bytes(processes).unwrap_or(0);
                (cpu, rss, None)
            });
            summarize(input, driven.result)
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

/// A process of an external server to measure (`load --server-pid`, `compare
/// --target-pid`), alive now.
pub(crate) fn parse_pid(value: &str) -> Result<u32, String> {
    let pid: u32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a process id"))?;
    match Path::new(&format!("/proc/{pid}")).exists() {
        true => Ok(pid),
        false => Err(format!("no process {pid} is running")),
    }
}

/// Stores built for one run and kept for the runs after it: `compare` builds each
/// backend's store once, for all of its repeats. A private folder under the system's
/// temporary directory, removed when dropped, also when a comparison returns early with an
/// error (its stores can take gigabytes).
/// Store servers (Redis, PostgreSQL) are kept the same way: started (or a given one
/// loaded) at an arm's first run, stopped when this is dropped.
pub(crate) struct Stores {
    // Declared first, dropped first: the servers stop before the folder goes.
    servers: std::cell::RefCell<Vec<(String, ServerStore)>>,
    dir: tempfile::TempDir,
}

/// A store server ready for the runs of one arm: where it is, and its processes when it
/// was started for the comparison.
pub(crate) struct ServerStore {
    spec: crate::backend::BackendSpec,
    local: Option<crate::store::LocalStore>,
}

impl Stores {
    pub(crate) fn new() -> anyhow::Result<Stores> {
        Ok(Stores {
            servers: std::cell::RefCell::new(Vec::new()),
            dir: tempdir()?,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A fresh private folder under the system's temporary directory, removed when dropped.
/// Made by `tempfile` (mode 0700, a name no other process can take) rather than by hand.
fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("bulkbench-")
        .tempdir()
        .context("cannot create a temporary folder")
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
        // A name is kept for TLS (SNI); an address, bracketed or not, is not a name.
        let named = parse_target("localhost:2525").unwrap();
        assert_eq!(named.name.as_deref(), Some("localhost"));
        assert_eq!(named.addr, local);
        assert_eq!(parse_target("127.0.0.1:2525").unwrap().name, None);
        assert_eq!(parse_target("[::1]:25").unwrap().name, None);
        for bad in ["localhost", "localhost:99999", "127.0.0.1", ":25"] {
            let error = resolve_target(bad).unwrap_err();
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }
}
