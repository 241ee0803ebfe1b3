//! `summary.json`: the machine-readable result of a run, with a versioned schema
//! (`summary.schema.json` beside this crate, documented in `reports/README.md`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bulk_loadgen::{ErrorKind, Mismatches, Phase, Recorder, ReplyClass, RunResult, Totals};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The version of the summary format; bump it when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The JSON Schema every summary must satisfy.
pub const SCHEMA: &str = include_str!("../summary.schema.json");

/// The machine a run ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical cores available to this process.
    pub cores: usize,
    /// `linux`, ...
    pub os: String,
    /// Kernel release, when known.
    pub kernel: Option<String>,
    /// CPU model name, when known.
    pub cpu_model: Option<String>,
}

impl Machine {
    /// Reads this machine's description.
    pub fn current() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_owned(),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            cpu_model: read("/proc/cpuinfo").and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            }),
        }
    }
}

/// The target of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `HOST:PORT`.
    pub address: String,
    /// An external server (`bulkbench load`), not one this run started.
    pub external: bool,
    /// The policy backend of a server this run started.
    pub backend: Option<String>,
    /// The CPUs the server started by this run was pinned to (`None`: not pinned).
    #[serde(default)]
    pub server_cpus: Option<Vec<usize>>,
    /// The CPUs the generator's event loops were pinned to (`None`: not pinned).
    #[serde(default)]
    pub generator_cpus: Option<Vec<usize>>,
    /// An external server's processes whose CPU and memory were measured as the
    /// server's, with everything below them (`load --server-pid`, `compare --target-pid`);
    /// empty when none were named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<u32>,
}

/// The part of a workload a run replayed: `load --shard INDEX/COUNT`, the sessions whose
/// index % count == index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    /// I of I/N.
    pub index: u32,
    /// N of I/N.
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a merged report was merged from (`bulkbench report merge`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// N of the shards' I/N.
    pub shard_count: u32,
    /// The shards merged, by index, in order.
    pub shards: Vec<u32>,
    /// The workload's shards left out (`--partial`), by index, in order: the figures do
    /// not cover their sessions.
    pub missing: Vec<u32>,
    /// The targets' addresses: the one external server the shards ran against, or each
    /// shard's own server (`bench --shard`), in shard order.
    pub addresses: Vec<String>,
    /// Why the report has no server figures (`server` is null), when the shards had them.
    pub server_note: Option<String>,
}

impl Merged {
    /// `0/3, 1/3, 2/3`.
    pub fn shards_text(&self) -> String {
        Self::list(&self.shards, self.shard_count)
    }

    /// `2/3` (empty when none is missing).
    pub fn missing_text(&self) -> String {
        Self::list(&self.missing, self.shard_count)
    }

    fn list(indices: &[u32], count: u32) -> String {
        indices
            .iter()
            .map(|&index| Shard { index, count }.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The time a run covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Warm-up excluded from the figures.
    pub warmup_secs: f64,
    /// The window of the figures: warm-up end to the last session end.
    pub measured_secs: f64,
    /// First start to last end.
    pub elapsed_secs: f64,
    /// Stopped before the workload was done (Ctrl-C).
    pub interrupted: bool,
}

/// Percentiles of one phase, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99_9")]
    pub p99_9: u64,
    /// Largest sample.
    pub max: u64,
}

impl Latency {
    /// The percentiles of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        let at = |q: f64| {
            if histogram.is_empty() {
                0
            } else {
                histogram.value_at_quantile(q)
            }
        };
        Latency {
            count: histogram.len(),
            mean: if histogram.is_empty() {
                0.0
            } else {
                histogram.mean()
            },
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p99_9: at(0.999),
            max: if histogram.is_empty() {
                0
            } else {
                histogram.max()
            },
        }
    }
}

/// Counts, with every class and error kind present (zeros included) so consumers need no
/// defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Sessions started.
    pub sessions: u64,
    /// Sessions that reached their QUIT reply.
    pub sessions_completed: u64,
    /// Sessions failed.
    pub sessions_failed: u64,
    /// RCPT replies.
    pub rcpts: u64,
    /// RCPT replies by class.
    pub by_class: BTreeMap<String, u64>,
    /// Messages accepted.
    pub messages: u64,
    /// Sessions that fell back from BULK to MAIL (server without BULK).
    pub bulk_fallback_sessions: u64,
    /// Sessions that asked for STARTTLS, failed ones included (0 in summaries written
    /// before it was recorded: their scenarios had no STARTTLS).
    #[serde(default)]
    pub starttls_sessions: u64,
}

impl Counts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Counts) {
        self.sessions += other.sessions;
        self.sessions_completed += other.sessions_completed;
        self.sessions_failed += other.sessions_failed;
        self.rcpts += other.rcpts;
        for (class, count) in &other.by_class {
            *self.by_class.entry(class.clone()).or_default() += count;
        }
        self.messages += other.messages;
        self.bulk_fallback_sessions += other.bulk_fallback_sessions;
        self.starttls_sessions += other.starttls_sessions;
    }

    fn of(totals: &Totals) -> Counts {
        Counts {
            sessions: totals.sessions,
            sessions_completed: totals.sessions_completed,
            sessions_failed: totals.error_count(),
            rcpts: totals.rcpts,
            by_class: ReplyClass::ALL
                .iter()
                .map(|c| {
                    (
                        c.name().to_owned(),
                        totals.by_class.get(c).copied().unwrap_or(0),
                    )
                })
                .collect(),
            messages: totals.messages,
            bulk_fallback_sessions: totals.bulk_fallback_sessions,
            starttls_sessions: totals.starttls_sessions,
        }
    }
}

/// Throughput over the measurement window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// RCPT replies per second.
    pub rcpt_per_sec: f64,
    /// Completed sessions per second.
    pub sessions_per_sec: f64,
}

/// The server's cost over the measurement window (null for an external target).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerCost {
    /// User + system CPU seconds of the server process within the window.
    pub cpu_seconds: f64,
    /// CPU microseconds per measured RCPT.
    pub cpu_us_per_rcpt: f64,
    /// Peak resident memory of the server process (VmHWM); for an external server of
    /// several processes, the sum of their peaks.
    pub peak_rss_bytes: u64,
    /// From spawning the server to its `listening on` line (population load included);
    /// null for an external server, which this run did not start.
    pub startup_secs: Option<f64>,
    /// Time on the CPUs the server was pinned to (null: not pinned).
    #[serde(default)]
    pub cpu_set: Option<CpuSetCost>,
}

/// The generator's own cost over the measurement window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorCost {
    /// User + system CPU seconds of the generator process within the window.
    pub cpu_seconds: f64,
    /// CPU microseconds per measured RCPT.
    pub cpu_us_per_rcpt: f64,
    /// Time on the CPUs the generator's event loops were pinned to (null: not pinned).
    #[serde(default)]
    pub cpu_set: Option<CpuSetCost>,
    /// The event loops (threads) that ran the sessions (null: not recorded, a summary
    /// written before they were).
    #[serde(default)]
    pub event_loops: Option<u32>,
}

/// Time a set of CPUs spent, by kind, from `/proc/stat`, over a span of the monotonic
/// clock.
///
/// A tickless kernel times each idle period on the monotonic clock, but user, system, irq
/// and softirq are sampled at the timer tick, and a tick that finds the CPU idle is not
/// taken at all: on a CPU that goes idle thousands of times a second their sum falls short
/// of the time the CPU was not idle (by how much on the project's VM: BENCHMARKS.md,
/// section 4). So busy time is the span less idle and steal (steal as the hypervisor
/// reports it, booked at ticks), split by kind in the proportions of the samples. The split
/// assumes the four kinds are sampled alike, as with tick accounting (the project's VM); a
/// kernel built with `CONFIG_IRQ_TIME_ACCOUNTING` times irq and softirq exactly, and there
/// the split overstates them a little.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    /// Monotonic-clock seconds (since boot: only differences mean anything) times the
    /// number of CPUs.
    pub span: f64,
    /// Tick-sampled seconds in user mode (nice included).
    pub user: f64,
    /// Tick-sampled seconds in the kernel on behalf of a task (system calls, page faults).
    pub system: f64,
    /// Tick-sampled seconds in hardware interrupts.
    pub irq: f64,
    /// Tick-sampled seconds in software interrupts: for TCP, mostly receiving packets.
    pub softirq: f64,
    /// Seconds idle (iowait included).
    pub idle: f64,
    /// Seconds a hypervisor gave to something else.
    pub steal: f64,
}

impl CpuTimes {
    /// Seconds not idle and not stolen.
    pub fn busy(&self) -> f64 {
        (self.span - self.idle - self.steal).max(0.0)
    }

    /// `self - earlier`, kind by kind (never negative).
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        let d = |now: f64, then: f64| (now - then).max(0.0);
        CpuTimes {
            span: d(self.span, earlier.span),
            user: d(self.user, earlier.user),
            system: d(self.system, earlier.system),
            irq: d(self.irq, earlier.irq),
            softirq: d(self.softirq, earlier.softirq),
            idle: d(self.idle, earlier.idle),
            steal: d(self.steal, earlier.steal),
        }
    }

    /// `part`'s share of the busy time, by the tick samples.
    fn busy_part(&self, part: f64) -> f64 {
        let sampled = self.user + self.system + self.irq + self.softirq;
        if sampled > 0.0 {
            self.busy() * part / sampled
        } else {
            0.0
        }
    }
}

/// Time on a pinned set of CPUs within the window: everything that ran there, including
/// kernel work that no process is billed for (packets received while the CPU was idle,
/// ksoftirqd). On loopback the kernel processes a packet on the CPU that sent it, so each
/// side's set also carries the receiving half of what it sent (BENCHMARKS.md, section 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuSetCost {
    /// The CPUs.
    pub cpus: Vec<usize>,
    /// Seconds neither idle nor stolen: the window times the number of CPUs, less idle
    /// and steal.
    pub busy_seconds: f64,
    /// Busy microseconds per measured RCPT.
    pub busy_us_per_rcpt: f64,
    /// The user-mode part of the busy seconds (by the kernel's tick samples).
    pub user_seconds: f64,
    /// The part in the kernel on behalf of tasks.
    pub system_seconds: f64,
    /// The part in hardware interrupts.
    pub irq_seconds: f64,
    /// The part in software interrupts (packet receive, timers).
    pub softirq_seconds: f64,
    /// Idle seconds.
    pub idle_seconds: f64,
    /// Seconds a hypervisor gave to something else.
    pub steal_seconds: f64,
}

impl CpuSetCost {
    /// The cost of `times` spent on `cpus` for `rcpts` RCPTs.
    pub fn new(cpus: Vec<usize>, times: &CpuTimes, rcpts: u64) -> CpuSetCost {
        CpuSetCost {
            cpus,
            busy_seconds: times.busy(),
            busy_us_per_rcpt: per_rcpt_us(times.busy(), rcpts),
            user_seconds: times.busy_part(times.user),
            system_seconds: times.busy_part(times.system),
            irq_seconds: times.busy_part(times.irq),
            softirq_seconds: times.busy_part(times.softirq),
            idle_seconds: times.idle,
            steal_seconds: times.steal,
        }
    }

    /// `user 20%, system 50%, softirq 30%` of the busy time (irq only when there is any).
    pub fn split_text(&self) -> String {
        let share = |part: f64| {
            if self.busy_seconds > 0.0 {
                100.0 * part / self.busy_seconds
            } else {
                0.0
            }
        };
        let mut text = format!(
            "user {:.0}%, system {:.0}%, softirq {:.0}%",
            share(self.user_seconds),
            share(self.system_seconds),
            share(self.softirq_seconds)
        );
        if self.irq_seconds > 0.0 {
            text.push_str(&format!(", irq {:.0}%", share(self.irq_seconds)));
        }
        text
    }
}

/// What the workload asked for, to compare with what was done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// Sessions in the workload.
    pub sessions: u64,
    /// RCPTs in the workload.
    pub rcpts: u64,
}

/// The whole `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The bulkbench version that wrote it.
    pub bulkbench_version: String,
    /// `bench`, `load` or `compare`.
    pub command: String,
    /// When the run started, UTC, as `YYYYMMDDTHHMMSSZ`.
    pub started_at: String,
    /// When the run started, in seconds since the Unix epoch (the `StartTime` and
    /// `BaseTime` of its `.hlog` files); `None` in summaries written before it was recorded.
    #[serde(default)]
    pub started_at_epoch_secs: Option<f64>,
    /// The scenario, a full copy.
    pub scenario: serde_json::Value,
    /// The seed of population and workload.
    pub seed: u64,
    /// The scenario's fingerprint (`Scenario::fingerprint`, 16 hex digits): runs of one
    /// workload have the same. `None` in summaries written before it was recorded, which
    /// therefore cannot be merged.
    #[serde(default)]
    pub scenario_fingerprint: Option<String>,
    /// The trace replayed (`--trace FILE`: its file name); `None` when the workload was
    /// generated from the scenario.
    #[serde(default)]
    pub trace: Option<String>,
    /// The part of the workload run (`--shard I/N`); `None` for the whole workload.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// For a merged report, what it was merged from; `None` for a run.
    #[serde(default)]
    pub merged: Option<Merged>,
    /// Where the load went.
    pub target: Target,
    /// The machine.
    pub machine: Machine,
    /// The time covered.
    pub window: Window,
    /// What the workload asked for.
    pub expected: Expected,
    /// Counts of measured sessions.
    pub totals: Counts,
    /// Counts of warm-up sessions.
    pub warmup_totals: Counts,
    /// Replies that contradicted the population.
    pub mismatches: Mismatches,
    /// Failed sessions by kind (measured and warm-up).
    pub errors: BTreeMap<String, u64>,
    /// Throughput over the window.
    pub throughput: Throughput,
    /// Per-phase latency in microseconds, measured sessions only.
    pub latency_us: BTreeMap<String, Latency>,
    /// The server's cost; null when the target is external.
    pub server: Option<ServerCost>,
    /// The generator's cost.
    pub generator: GeneratorCost,
    /// This machine's canned-reply ceiling on the same workload (`bench --ceiling`), and
    /// this run's figures as ratios to it; null when not measured.
    #[serde(default)]
    pub ceiling: Option<Ceiling>,
    /// The policy store the server asked, when it ran as a process of its own started for
    /// the run (Redis, PostgreSQL): its cost over the same window. Null otherwise (a store
    /// inside the server, or one the run did not start).
    #[serde(default)]
    pub store: Option<StoreCost>,
    /// The kernel's refusals at full listen queues during the run, for the whole network
    /// namespace; null when not read (not Linux, or a summary written before they were).
    #[serde(default)]
    pub listen_queue: Option<ListenQueue>,
}

/// How often, during a run, the kernel found a listen queue full (`TcpExtListenOverflows`
/// and `TcpExtListenDrops`, from `/proc/net/netstat`): each is a SYN or a completed
/// handshake dropped, which its client sends again a second or more later (and a resent
/// one dropped counts again), so the run's connect latencies and rate are then the
/// backlog's, not the server's. The counters are the network namespace's (the host's,
/// unless the run has a namespace of its own): another listener there counts too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenQueue {
    /// SYNs or completed handshakes dropped because an accept queue was full.
    pub overflows: u64,
    /// Every connection attempt dropped at a listener, overflows included.
    pub drops: u64,
}

/// A policy store's cost over the measurement window: the CPU time of its processes
/// (a Redis server, or a PostgreSQL postmaster and its backends), per RCPT of the run.
/// Added to the server's, it is the whole cost of an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreCost {
    /// What the store is: `redis`, `redis-cluster`, `postgres`.
    pub kind: String,
    /// User + system CPU seconds of the store's processes within the window.
    pub cpu_seconds: f64,
    /// CPU microseconds per measured RCPT.
    pub cpu_us_per_rcpt: f64,
}

impl Summary {
    /// Server and store CPU microseconds per RCPT: what an answer costs in all, when the
    /// server's was measured (a store inside the server is in the server's figure).
    pub fn whole_cpu_us_per_rcpt(&self) -> Option<f64> {
        let server = self.server.as_ref()?.cpu_us_per_rcpt;
        Some(server + self.store.as_ref().map_or(0.0, |s| s.cpu_us_per_rcpt))
    }
}

/// This machine's canned-reply ceiling: the same workload, with the same server flags and
/// pinning, against `bulkbench serve --backend canned:SHARE`, the same server answering
/// every RCPT by a fixed rule without any lookup (`bulk_policy::CannedBackend`). The
/// measured server's figures as ratios to these carry from one machine to another where
/// absolute RCPT/s do not. The canned arm's replies come from its rule, not the
/// population, so they were not verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// What the canned server ran, as its `--backend` flag: `canned:0.873`.
    pub backend: String,
    /// The rule's share of accepted RCPTs: the workload's expected share of accepted
    /// RCPTs among those of its BULK transactions.
    pub accept_share: f64,
    /// Always false: the canned arm's replies were not checked (they come from the rule).
    pub verified: bool,
    /// The canned arm's measurement window, after the same warm-up.
    pub measured_secs: f64,
    /// The canned arm was stopped before its workload was done (Ctrl-C).
    pub interrupted: bool,
    /// RCPT replies in the canned arm's window.
    pub rcpts: u64,
    /// Of which accepted (250): the reply mix the rule gave.
    pub rcpts_accepted: u64,
    /// Messages accepted in the canned arm's window: the DATA traffic the mix led to.
    pub messages: u64,
    /// Failed sessions of the canned arm, warm-up included.
    pub sessions_failed: u64,
    /// The canned arm's RCPT replies per second.
    pub rcpt_per_sec: f64,
    /// The canned server's CPU microseconds per RCPT (null: not measured).
    pub server_cpu_us_per_rcpt: Option<f64>,
    /// The generator's CPU microseconds per RCPT in the canned arm.
    pub generator_cpu_us_per_rcpt: f64,
    /// The busy share of the server's pinned CPUs in the canned arm (null: not pinned).
    pub server_cpus_busy: Option<f64>,
    /// The busy share of the generator's pinned CPUs in the canned arm (null: not pinned):
    /// near 1, the generator, not the server, set the ceiling's rate.
    pub generator_cpus_busy: Option<f64>,
    /// The canned arm's RCPT latency, median, in microseconds.
    pub rcpt_p50_us: u64,
    /// The canned arm's RCPT latency, 99th percentile, in microseconds.
    pub rcpt_p99_us: u64,
    /// This run's figures divided by the canned arm's (null where either is missing or
    /// the canned one is 0).
    pub ratios: CeilingRatios,
}

/// The measured run's figures as ratios to the canned arm's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CeilingRatios {
    /// Measured RCPT/s over the ceiling's: the share of the ceiling this server reached.
    pub rcpt_per_sec: Option<f64>,
    /// Measured server CPU per RCPT over the canned server's: what deciding by a store
    /// costs on top of the session (1: nothing).
    pub server_cpu_per_rcpt: Option<f64>,
    /// Measured generator CPU per RCPT over the canned arm's (near 1: the two arms drove
    /// the same work).
    pub generator_cpu_per_rcpt: Option<f64>,
}

impl Ceiling {
    /// The ceiling measured by `canned` (the canned arm's summary, run with `backend`
    /// accepting `accept_share`), with `measured`'s figures as ratios to it.
    pub fn new(
        backend: String,
        accept_share: f64,
        measured: &Summary,
        canned: &Summary,
    ) -> Ceiling {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
            _ => None,
        };
        let server_cpu = |s: &Summary| s.server.as_ref().map(|c| c.cpu_us_per_rcpt);
        let busy = |set: Option<&CpuSetCost>| {
            set.and_then(|set| {
                let span = set.busy_seconds + set.idle_seconds + set.steal_seconds;
                (span > 0.0).then(|| set.busy_seconds / span)
            })
        };
        let rcpt = canned.latency_us.get(Phase::Rcpt.name());
        Ceiling {
            backend,
            accept_share,
            verified: false,
            measured_secs: canned.window.measured_secs,
            interrupted: canned.window.interrupted,
            rcpts: canned.totals.rcpts,
            rcpts_accepted: canned
                .totals
                .by_class
                .get(ReplyClass::Accepted.name())
                .copied()
                .unwrap_or(0),
            messages: canned.totals.messages,
            sessions_failed: canned.errors.values().sum(),
            rcpt_per_sec: canned.throughput.rcpt_per_sec,
            server_cpu_us_per_rcpt: server_cpu(canned),
            generator_cpu_us_per_rcpt: canned.generator.cpu_us_per_rcpt,
            server_cpus_busy: busy(canned.server.as_ref().and_then(|s| s.cpu_set.as_ref())),
            generator_cpus_busy: busy(canned.generator.cpu_set.as_ref()),
            rcpt_p50_us: rcpt.map_or(0, |l| l.p50),
            rcpt_p99_us: rcpt.map_or(0, |l| l.p99),
            ratios: CeilingRatios {
                rcpt_per_sec: ratio(
                    Some(measured.throughput.rcpt_per_sec),
                    Some(canned.throughput.rcpt_per_sec),
                ),
                server_cpu_per_rcpt: ratio(server_cpu(measured), server_cpu(canned)),
                generator_cpu_per_rcpt: ratio(
                    Some(measured.generator.cpu_us_per_rcpt),
                    Some(canned.generator.cpu_us_per_rcpt),
                ),
            },
        }
    }
}

/// What a summary is built from besides the run's result.
#[derive(Clone, Debug)]
pub struct SummaryInput {
    /// `bench` or `load`.
    pub command: String,
    /// When the run started: taken just before the generator starts, the zero of its
    /// interval timestamps.
    pub started_at: SystemTime,
    /// The scenario as JSON.
    pub scenario: serde_json::Value,
    /// Its seed.
    pub seed: u64,
    /// `Scenario::fingerprint` of the scenario.
    pub scenario_fingerprint: u64,
    /// The trace replayed (its file name), if the workload came from one.
    pub trace: Option<String>,
    /// The part of the workload run (`--shard I/N`); `None`: all of it.
    pub shard: Option<Shard>,
    /// Where the load went.
    pub target: Target,
    /// What the workload asked for.
    pub expected: Expected,
    /// Warm-up excluded, seconds.
    pub warmup_secs: f64,
    /// Server CPU seconds in the window, peak RSS, startup (None: not measured, an external
    /// target whose processes were not named; startup None: an external target).
    pub server: Option<(f64, u64, Option<f64>)>,
    /// The store's kind and CPU seconds in the window, when it ran beside the server as
    /// processes of its own.
    pub store: Option<(String, f64)>,
    /// Generator CPU seconds in the window.
    pub generator_cpu_seconds: f64,
    /// The generator's event loops (threads).
    pub generator_event_loops: u32,
    /// Time on the server's and the generator's pinned CPUs in the window (None: not
    /// pinned).
    pub cpu_sets: Option<PinnedCpuTimes>,
    /// Listen-queue refusals during the run (None: not read).
    pub listen_queue: Option<ListenQueue>,
}

/// Time on each side's pinned CPUs over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct PinnedCpuTimes {
    /// The server's CPUs and their time.
    pub server: (Vec<usize>, CpuTimes),
    /// The generator's CPUs and their time.
    pub generator: (Vec<usize>, CpuTimes),
}

/// CPU microseconds per RCPT.
pub fn per_rcpt_us(cpu_seconds: f64, rcpts: u64) -> f64 {
    if rcpts == 0 {
        0.0
    } else {
        cpu_seconds * 1e6 / rcpts as f64
    }
}

impl Summary {
    /// Sessions that fell back to MAIL FROM (the server did not advertise BULK), warm-up
    /// included, as the session counts of the reports are.
    pub fn fallback_sessions(&self) -> u64 {
        self.totals.bulk_fallback_sessions + self.warmup_totals.bulk_fallback_sessions
    }

    /// Builds the summary of `result`.
    pub fn new(input: SummaryInput, result: &RunResult) -> Summary {
        let rcpts = result.totals.rcpts;
        let sets = input.cpu_sets;
        let mut errors: BTreeMap<String, u64> = ErrorKind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), 0))
            .collect();
        for totals in [&result.totals, &result.warmup_totals] {
            for (kind, count) in &totals.errors {
                *errors.entry(kind.name().to_owned()).or_default() += count;
            }
        }
        Summary {
            schema_version: SCHEMA_VERSION,
            bulkbench_version: env!("CARGO_PKG_VERSION").to_owned(),
            command: input.command,
            started_at: crate::utc_stamp(input.started_at),
            started_at_epoch_secs: Some(
                input
                    .started_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            ),
            scenario: input.scenario,
            seed: input.seed,
            scenario_fingerprint: Some(format!("{:016x}", input.scenario_fingerprint)),
            trace: input.trace,
            shard: input.shard,
            merged: None,
            target: input.target,
            machine: Machine::current(),
            window: Window {
                warmup_secs: input.warmup_secs,
                measured_secs: result.window.as_secs_f64(),
                elapsed_secs: result.elapsed.as_secs_f64(),
                interrupted: result.interrupted,
            },
            expected: input.expected,
            totals: Counts::of(&result.totals),
            warmup_totals: Counts::of(&result.warmup_totals),
            mismatches: result.mismatches.clone(),
            errors,
            throughput: Throughput {
                rcpt_per_sec: result.rcpt_per_sec(),
                sessions_per_sec: result.sessions_per_sec(),
            },
            latency_us: latency_table(&result.measured),
            server: input
                .server
                .map(|(cpu_seconds, peak_rss_bytes, startup_secs)| ServerCost {
                    cpu_seconds,
                    cpu_us_per_rcpt: per_rcpt_us(cpu_seconds, rcpts),
                    peak_rss_bytes,
                    startup_secs,
                    cpu_set: sets
                        .as_ref()
                        .map(|s| CpuSetCost::new(s.server.0.clone(), &s.server.1, rcpts)),
                }),
            generator: GeneratorCost {
                cpu_seconds: input.generator_cpu_seconds,
                cpu_us_per_rcpt: per_rcpt_us(input.generator_cpu_seconds, rcpts),
                cpu_set: sets
                    .as_ref()
                    .map(|s| CpuSetCost::new(s.generator.0.clone(), &s.generator.1, rcpts)),
                event_loops: Some(input.generator_event_loops),
            },
            ceiling: None,
            store: input.store.map(|(kind, cpu_seconds)| StoreCost {
                kind,
                cpu_seconds,
                cpu_us_per_rcpt: per_rcpt_us(cpu_seconds, rcpts),
            }),
            listen_queue: input.listen_queue,
        }
    }
}

/// The latency table of whole-run histograms by phase.
pub fn latency_of<'a>(
    phases: impl IntoIterator<Item = (&'a Phase, &'a Histogram<u64>)>,
) -> BTreeMap<String, Latency> {
    phases
        .into_iter()
        .map(|(p, h)| (p.name().to_owned(), Latency::of(h)))
        .collect()
}

fn latency_table(recorder: &Recorder) -> BTreeMap<String, Latency> {
    Phase::ALL
        .iter()
        .map(|p| (p.name().to_owned(), Latency::of(recorder.phase(*p))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(span: f64, [user, system, irq, softirq]: [f64; 4], idle: f64) -> CpuTimes {
        CpuTimes {
            span,
            user,
            system,
            irq,
            softirq,
            idle,
            steal: 0.0,
        }
    }

    #[test]
    fn busy_time_is_the_span_less_idle_split_by_the_samples() {
        let before = times(1000.0, [10.0, 20.0, 0.0, 5.0], 900.0);
        // 10 s of wall clock, 4 s idle: 6 s busy, though the ticks saw only 5.
        let after = times(1010.0, [11.0, 22.5, 0.0, 6.5], 904.0);
        let window = after.since(&before);
        assert_eq!(window, times(10.0, [1.0, 2.5, 0.0, 1.5], 4.0));
        let cost = CpuSetCost::new(vec![0], &window, 100_000);
        assert_eq!(cost.busy_seconds, 6.0);
        assert_eq!(cost.busy_us_per_rcpt, 60.0);
        assert_eq!(cost.user_seconds, 1.2);
        assert_eq!(cost.system_seconds, 3.0);
        assert_eq!(cost.split_text(), "user 20%, system 50%, softirq 30%");
        // A counter that went backwards (a CPU taken offline and back) counts as nothing.
        assert_eq!(before.since(&after), CpuTimes::default());
        // Stolen time is not busy.
        let stolen = CpuTimes {
            steal: 1.0,
            ..window
        };
        assert_eq!(stolen.busy(), 5.0);
    }

    #[test]
    fn irq_shows_only_when_there_is_some() {
        let cost = CpuSetCost::new(vec![2, 3], &times(4.0, [1.0, 1.0, 1.0, 1.0], 0.0), 0);
        assert_eq!(
            cost.split_text(),
            "user 25%, system 25%, softirq 25%, irq 25%"
        );
        assert_eq!(cost.busy_us_per_rcpt, 0.0);
        let idle = CpuSetCost::new(vec![0], &times(1.0, [0.0; 4], 1.0), 10);
        assert_eq!(idle.busy_seconds, 0.0);
        assert_eq!(idle.split_text(), "user 0%, system 0%, softirq 0%");
    }
}
