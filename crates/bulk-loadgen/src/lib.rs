//! The bulkbench load generator: replays a workload of SMTP sessions against any server,
//! checks every RCPT reply against the population's verdict, and records latency honestly.
//!
//! [`run`] takes a [`Workload`] (from `bulk-population`) and a [`LoadConfig`], and returns a
//! [`RunResult`]: per-phase HdrHistograms ([`Phase`]), an interval series, counts by
//! [`ReplyClass`], [`Mismatches`] and failures by [`ErrorKind`]. Two schedules:
//!
//! - closed loop: N sessions in flight, each starting when one ends;
//! - open loop: each session starts at its intended time (Poisson arrivals in the
//!   workload). Connect and session latencies count from the *intended* start, and the lag
//!   between intended and actual start is its own phase, so a stalled server cannot hide
//!   its stall (coordinated omission). No `record_correct` on top: that would correct twice.
//!
//! Sessions drawn with `starttls` upgrade their connection with STARTTLS (RFC 3207) over
//! rustls, through one [`TlsClient`] per run ([`LoadConfig::tls`]; certificates unchecked
//! unless [`CertificateCheck::Roots`]); their handshake is its own phase.
//!
//! Sessions run on a few single-threaded event loops, one per thread (`event_loops.rs`).
//! Samples are recorded by session into one shard per loop (one uncontended lock per
//! session, not per sample) and merged at the end; HdrHistograms add exactly.
#![warn(missing_docs)]

mod client;
mod event_loops;
pub mod message;
mod precise_timer;
pub mod record;
pub mod result;
mod script;
pub mod simulate;
pub mod tls;
pub mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulk_population::{SessionSpec, Workload};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{Buffers, SessionContext, SessionLog, micros, run_session};
use crate::event_loops::EventLoops;
pub use crate::event_loops::{CpuSet, allowed_cpus};
use crate::precise_timer::PreciseTimer;
pub use crate::record::{Interval, Phase, Recorder};
pub use crate::result::{ErrorKind, RunResult, Totals};
pub use crate::tls::{CertificateCheck, TlsClient, TlsError};
pub use crate::verify::{
    Expectations, MismatchExample, Mismatches, ReplyClass, Verifier, VerifyMode,
};

/// How sessions are started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// `concurrency` sessions in flight, each starting when one ends.
    Closed {
        /// Sessions in flight.
        concurrency: usize,
    },
    /// Each session at its intended start (`SessionSpec::start_offset_us`).
    Open,
}

/// Everything a run needs besides its workload.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The SMTP server.
    pub target: SocketAddr,
    /// Closed or open loop.
    pub schedule: Schedule,
    /// A reply slower than this fails the session (`timeout`).
    pub command_timeout: Duration,
    /// A connect slower than this fails the session (`connect_timeout`).
    pub connect_timeout: Duration,
    /// How strictly RCPT replies are checked.
    pub verify: VerifyMode,
    /// The server's recipient limit and harvest mode, for the expected classes.
    pub expectations: Expectations,
    /// Sessions starting (intended) within this time of the run's start are warm-up:
    /// recorded apart, excluded from the figures.
    pub warmup: Duration,
    /// The name sent with EHLO.
    pub helo_name: String,
    /// Local addresses to connect from, round-robin by session: many loopback addresses
    /// (127.0.0.0/8) multiply the ephemeral ports available, so long runs do not run out
    /// of them to TIME_WAIT. Empty: the system chooses.
    pub source_ips: Vec<IpAddr>,
    /// Open loop: sessions in flight at most (bounds sockets and memory); a session that
    /// has to wait for a slot shows it as schedule lag.
    pub max_in_flight: usize,
    /// Threads that run sessions, each its own single-threaded event loop (see
    /// `event_loops.rs`); sessions are spread over them round-robin.
    pub event_loops: usize,
    /// CPUs the event loops are pinned to; `None`: not pinned.
    pub cpus: Option<CpuSet>,
    /// The TLS client of the sessions that use STARTTLS; by default for the target's
    /// address, accepting any certificate.
    pub tls: TlsClient,
}

impl LoadConfig {
    /// A configuration with this project's defaults for `target`.
    pub fn new(target: SocketAddr, schedule: Schedule) -> Self {
        LoadConfig {
            target,
            schedule,
            command_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            verify: VerifyMode::Strict,
            expectations: Expectations {
                max_recipients: bulk_proto::limits::DEFAULT_MAX_RECIPIENTS,
                harvest_resistant: false,
                preferences_apply_to_all: false,
            },
            warmup: Duration::ZERO,
            helo_name: "bulkbench.invalid".to_owned(),
            source_ips: loopback_sources(target, LOOPBACK_SOURCES),
            max_in_flight: 10_000,
            event_loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpus: None,
            tls: TlsClient::unverified(target.ip()),
        }
    }
}

/// Loopback addresses a [`LoadConfig::new`] spreads its connections over, round-robin by
/// session: a server's per-address limit sees about this fraction of them from each.
pub const LOOPBACK_SOURCES: u8 = 16;

/// `count` source addresses in 127.0.0.0/8 when `target` is an IPv4 loopback address
/// (127.0.0.1, 127.0.0.2, ...); none otherwise.
pub fn loopback_sources(target: SocketAddr, count: u8) -> Vec<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (1..=count.max(1))
            .map(|last| IpAddr::from([127, 0, 0, last]))
            .collect(),
        _ => Vec::new(),
    }
}

/// Live counters for a progress display, updated as sessions end.
#[derive(Debug, Default)]
pub struct Progress {
    /// Sessions ended (completed or failed).
    pub sessions: AtomicU64,
    /// RCPT replies received.
    pub rcpts: AtomicU64,
    /// Sessions failed.
    pub errors: AtomicU64,
    /// Mismatched RCPT replies.
    pub mismatches: AtomicU64,
    /// Sessions in flight.
    pub in_flight: AtomicU64,
}

/// What one shard accumulates.
#[derive(Default)]
struct Shard {
    measured: Recorder,
    warmup: Recorder,
    totals: Totals,
    warmup_totals: Totals,
    mismatches: Mismatches,
}

/// State shared by the sessions of a run.
struct Run {
    context: SessionContext,
    config: LoadConfig,
    shards: Vec<Mutex<Shard>>,
    progress: Arc<Progress>,
    start: Instant,
    /// Microseconds from `start` to the last session end.
    last_end_us: AtomicU64,
}

/// A session in flight, counted for the progress display until dropped (also when the
/// session is cancelled mid-way).
struct InFlight<'a>(&'a Progress);

impl<'a> InFlight<'a> {
    fn count(progress: &'a Progress) -> Self {
        progress.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(progress)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one task that runs sessions keeps from session to session.
struct Worker {
    log: SessionLog,
    buffers: Buffers,
    /// Its event loop's recorder shard: tasks of one loop share it, and only they do.
    shard: usize,
}

impl Worker {
    fn new(shard: usize) -> Self {
        Worker {
            log: SessionLog::default(),
            buffers: Buffers::default(),
            shard,
        }
    }
}

/// Buffer capacity a pooled worker keeps: one large message must not leave every pooled
/// worker holding its size.
const POOLED_CAPACITY: usize = 64 * 1024;
/// Samples a pooled worker's list keeps room for (one per RCPT, about 1,000 RCPTs).
const POOLED_SAMPLES: usize = 1024;

/// An open-loop lane's idle workers, so a session reuses the buffers and sample list of
/// one that ended instead of growing new ones (a dozen allocations per session). Only the
/// lane's own loop touches it, so its lock is never contended; it holds at most as many
/// workers as the lane ever had sessions in flight at once.
/// Shared by the lane's session tasks through one `Arc`.
struct WorkerPool {
    idle: Mutex<Vec<Worker>>,
    shard: usize,
}

impl WorkerPool {
    fn new(shard: usize) -> Arc<Self> {
        Arc::new(WorkerPool {
            idle: Mutex::default(),
            shard,
        })
    }

    fn take(&self) -> Worker {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.unwrap_or_else(|| Worker::new(self.shard))
    }

    fn give_back(&self, mut worker: Worker) {
        for buffer in [&mut worker.buffers.write, &mut worker.buffers.read] {
            if buffer.capacity() > POOLED_CAPACITY {
                *buffer = Vec::new();
            }
        }
        if worker.log.samples.capacity() > POOLED_SAMPLES {
            worker.log.samples = Vec::new();
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(worker);
    }
}

impl Run {
    /// Runs one session and records it. `lag_us`: open loop, how late it started.
    ///
    /// Cancellation is the caller's: it drops this future when the run is interrupted (one
    /// wait on the token per task, not one per session), and an interrupted session is
    /// neither a result nor an error: it is not counted.
    async fn session(
        &self,
        spec: &SessionSpec,
        intended: Instant,
        lag_us: Option<u64>,
        worker: &mut Worker,
    ) {
        let Worker {
            log,
            buffers,
            shard,
        } = worker;
        log.clear();
        if let Some(lag_us) = lag_us {
            log.samples
                .push((Phase::ScheduleLag, lag_us, Instant::now()));
        }
        let source = match self.config.source_ips.len() {
            0 => None,
            n => Some(self.config.source_ips[spec.index as usize % n]),
        };
        let in_flight = InFlight::count(&self.progress);
        let outcome = run_session(spec, &self.context, source, intended, log, buffers).await;
        drop(in_flight);
        self.finish(*shard, intended, log, outcome);
    }

    /// Hands a session's samples and counts to its shard: one lock per session.
    fn finish(
        &self,
        shard: usize,
        intended: Instant,
        log: &SessionLog,
        outcome: Result<(), ErrorKind>,
    ) {
        let warm = intended < self.start + self.config.warmup;
        let end = Instant::now();
        let end_us = micros(end.saturating_duration_since(self.start));
        self.last_end_us.fetch_max(end_us, Ordering::Relaxed);
        let mut shard = self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let shard = &mut *shard;
        let (recorder, totals) = if warm {
            (&mut shard.warmup, &mut shard.warmup_totals)
        } else {
            (&mut shard.measured, &mut shard.totals)
        };
        for &(phase, latency_us, at) in &log.samples {
            recorder.record(phase, latency_us);
            let at_us = micros(at.saturating_duration_since(self.start));
            recorder.record_interval(at_us, phase, latency_us);
        }
        totals.sessions += 1;
        totals.rcpts += log.counts.rcpts;
        totals.messages += log.counts.messages;
        for (class, count) in ReplyClass::ALL.iter().zip(log.counts.by_class) {
            if count > 0 {
                *totals.by_class.entry(*class).or_default() += count;
            }
        }
        totals.bulk_fallback_sessions += u64::from(log.counts.bulk_fallback);
        totals.starttls_sessions += u64::from(log.counts.starttls);
        match outcome {
            Ok(()) => totals.sessions_completed += 1,
            Err(kind) => {
                *totals.errors.entry(kind).or_default() += 1;
                recorder.record_error(end_us);
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        shard.mismatches.merge(&log.counts.mismatches);
        self.progress.sessions.fetch_add(1, Ordering::Relaxed);
        self.progress
            .rcpts
            .fetch_add(log.counts.rcpts, Ordering::Relaxed);
        self.progress
            .mismatches
            .fetch_add(log.counts.mismatches.total, Ordering::Relaxed);
    }
}

/// Replays `workload` against `config.target` until it is done or `cancel` fires, and
/// returns what was measured (a cancelled run returns what it measured so far).
pub async fn run(
    workload: Arc<Workload>,
    config: LoadConfig,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> RunResult {
    let loops = EventLoops::start(config.event_loops, config.cpus);
    tracing::debug!(event_loops = loops.len(), "generator event loops started");
    let run = Arc::new(Run {
        context: SessionContext {
            target: config.target,
            helo_name: config.helo_name.clone(),
            command_timeout: config.command_timeout,
            connect_timeout: config.connect_timeout,
            verifier: Verifier {
                expectations: config.expectations,
                mode: config.verify,
            },
            tls: config.tls.clone(),
        },
        shards: (0..loops.len())
            .map(|_| Mutex::new(Shard::default()))
            .collect(),
        progress,
        start: Instant::now(),
        last_end_us: AtomicU64::new(0),
        config,
    });
    // One child token per loop: a task waits on its loop's token (once, around all the
    // sessions it runs), so the waiter lists it locks are never shared between threads. A
    // task on loop `lane` uses that loop's token and recorder shard.
    let loop_cancel: Vec<CancellationToken> =
        (0..loops.len()).map(|_| cancel.child_token()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    // Closed loop: the next session to start, by its place in the workload.
    let drawn = Arc::new(AtomicU64::new(0));
    let lanes = Lanes {
        loops: &loops,
        cancel: &loop_cancel,
    };
    match run.config.schedule {
        Schedule::Closed { concurrency } => {
            spawn_closed(&mut tasks, lanes, &run, &workload, &drawn, concurrency);
        }
        Schedule::Open => spawn_open(&mut tasks, lanes, &run, &workload),
    }
    while tasks.join_next().await.is_some() {}
    let event_loops = loops.len();
    drop(loops);

    let run = Arc::try_unwrap(run).unwrap_or_else(|_| unreachable!("every task has ended"));
    let mut result = RunResult {
        interrupted: cancel.is_cancelled(),
        event_loops,
        // A number is taken only to start a session, but past the end of a list.
        drawn: match (run.config.schedule, workload.duration()) {
            (Schedule::Closed { .. }, Some(_)) => drawn.load(Ordering::Relaxed),
            (Schedule::Closed { .. }, None) => {
                drawn.load(Ordering::Relaxed).min(workload.session_count())
            }
            (Schedule::Open, _) => workload.sessions.len() as u64,
        },
        ..RunResult::default()
    };
    for shard in run.shards {
        let shard = shard
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        result.measured.merge(&shard.measured);
        result.warmup.merge(&shard.warmup);
        result.totals.merge(&shard.totals);
        result.warmup_totals.merge(&shard.warmup_totals);
        result.mismatches.merge(&shard.mismatches);
    }
    let last_end = Duration::from_micros(run.last_end_us.load(Ordering::Relaxed));
    result.elapsed = last_end;
    result.window = last_end.saturating_sub(run.config.warmup);
    result
}

/// The generator's event loops, each with its cancel token.
#[derive(Clone, Copy)]
struct Lanes<'a> {
    loops: &'a EventLoops,
    cancel: &'a [CancellationToken],
}

/// The closed loop: `concurrency` workers spread over the event loops, each starting the
/// next session of the workload (by `drawn`) when its last one ends, until the workload or
/// its time is up.
fn spawn_closed(
    tasks: &mut tokio::task::JoinSet<()>,
    lanes: Lanes<'_>,
    run: &Arc<Run>,
    workload: &Arc<Workload>,
    drawn: &Arc<AtomicU64>,
    concurrency: usize,
) {
    let (loops, loop_cancel) = (lanes.loops, lanes.cancel);
    // Sized in time: no session starts after this (those in flight finish).
    let end = workload.duration().and_then(|d| run.start.checked_add(d));
    for worker in 0..concurrency.max(1) {
        let (run, workload) = (run.clone(), workload.clone());
        let drawn = drawn.clone();
        let lane = worker % loop_cancel.len();
        let mut state = Worker::new(lane);
        let cancel = loop_cancel[lane].clone();
        let stop = cancel.clone();
        let sessions = async move {
            loop {
                // A session can fail without ever waiting (no file descriptor or
                // port left): then neither the cancel below nor the loop's other
                // tasks would get a turn.
                if stop.is_cancelled() || end.is_some_and(|end| Instant::now() >= end) {
                    break;
                }
                let Some(spec) = workload.session(drawn.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                run.session(spec, Instant::now(), None, &mut state).await;
                tokio::task::coop::consume_budget().await;
            }
        };
        tasks.spawn_on(
            async move {
                tokio::select! {
                    () = sessions => {}
                    () = cancel.cancelled() => {}
                }
            },
            loops.handle(lane),
        );
    }
}

/// The open loop: one dispatcher per event loop, starting each of its sessions at the
/// session's intended time, whatever the server's pace, within the cap on sessions in
/// flight.
fn spawn_open(
    tasks: &mut tokio::task::JoinSet<()>,
    lanes: Lanes<'_>,
    run: &Arc<Run>,
    workload: &Arc<Workload>,
) {
    let (loops, loop_cancel) = (lanes.loops, lanes.cancel);
    // One dispatcher per loop, for every `lanes`th session in order of intended
    // start: each session is started on the loop that runs it, so starting it
    // wakes no other thread. The cap on sessions in flight is shared.
    let slots = Arc::new(Semaphore::new(run.config.max_in_flight.max(1)));
    let lanes = loops.len();
    for (lane, cancel) in loop_cancel.iter().cloned().enumerate() {
        let (run, workload, slots) = (run.clone(), workload.clone(), slots.clone());
        let pool = WorkerPool::new(lane);
        tasks.spawn_on(
            async move {
                let mut sessions = tokio::task::JoinSet::new();
                // Not tokio's millisecond timer: it would start every session up
                // to a millisecond late (see precise_timer.rs).
                let mut timer = PreciseTimer::new();
                for i in (lane..workload.sessions.len()).step_by(lanes) {
                    let offset = workload.sessions[i].start_offset_us;
                    let intended = run.start + Duration::from_micros(offset);
                    tokio::select! {
                        () = timer.sleep_until(intended) => {}
                        () = cancel.cancelled() => break,
                    }
                    let permit = tokio::select! {
                        permit = slots.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        () = cancel.cancelled() => break,
                    };
                    let (run, workload, pool) = (run.clone(), workload.clone(), pool.clone());
                    sessions.spawn(async move {
                        let spec = &workload.sessions[i];
                        let lag = micros(Instant::now().saturating_duration_since(intended));
                        let mut worker = pool.take();
                        run.session(spec, intended, Some(lag), &mut worker).await;
                        pool.give_back(worker);
                        drop(permit);
                    });
                    // Reap finished sessions as we go so the set does not grow
                    // with the run.
                    while sessions.try_join_next().is_some() {}
                }
                tokio::select! {
                    () = async { while sessions.join_next().await.is_some() {} } => {}
                    () = cancel.cancelled() => {}
                }
                // Interrupted: the sessions still running end here, uncounted.
                sessions.shutdown().await;
            },
            loops.handle(lane),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooled_worker_keeps_its_buffers_unless_they_grew_too_large() {
        let pool = WorkerPool::new(3);
        let mut worker = pool.take();
        assert_eq!(worker.shard, 3);
        worker.buffers.write.reserve(4096);
        worker.buffers.read.reserve(POOLED_CAPACITY + 1);
        worker.log.samples.reserve(16);
        pool.give_back(worker);
        let mut again = pool.take();
        assert!(again.buffers.write.capacity() >= 4096, "reused");
        assert!(again.log.samples.capacity() >= 16, "reused");
        again.log.samples.reserve(POOLED_SAMPLES + 1);
        pool.give_back(again);
        let again = pool.take();
        assert_eq!(
            again.log.samples.capacity(),
            0,
            "a list past the cap is dropped"
        );
        assert_eq!(
            again.buffers.read.capacity(),
            0,
            "a buffer past the cap is dropped"
        );
        // An empty pool makes a new worker for its lane.
        let fresh = pool.take();
        assert_eq!((fresh.shard, fresh.buffers.write.capacity()), (3, 0));
    }
}
