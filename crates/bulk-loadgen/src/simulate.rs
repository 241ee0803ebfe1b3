//! `simulate`: the workload's client bytes fed through `bulk-proto` sessions and a policy
//! backend in process, across all cores, no sockets: the CPU that protocol plus policy
//! cost per RCPT, the ceiling a server on this machine could reach.
//!
//! Each session is driven by the load generator's own client script (`script.rs`), so it
//! sends the same bytes in the same groups and checks every reply (`parse_reply`, verified
//! against the population) as a session over TCP does: by construction, not by a copy.
//!
//! A STARTTLS session takes the same steps as over TCP, without the cryptography: EHLO,
//! STARTTLS and its 220, the handshake (done as soon as it is due: no bytes, no time,
//! the session told with `Session::tls_started`, as the server's connection tells it),
//! EHLO again, then its transactions.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bulk_policy::{PolicyBackend, Verdict};
use bulk_population::{RunLength, SessionSpec, Workload};
use bulk_proto::{QueueId, ServerIdentity, Session, SessionConfig, SessionHost};
use rayon::prelude::*;

use crate::record::Phase;
use crate::script::{Counts, Script};
use crate::verify::{Expectations, Mismatches, Verifier, VerifyMode};

/// What a simulation measured.
#[derive(Clone, Debug)]
pub struct SimulateResult {
    /// Sessions simulated.
    pub sessions: u64,
    /// RCPTs answered.
    pub rcpts: u64,
    /// Messages accepted.
    pub messages: u64,
    /// Sessions whose replies broke the protocol (an unexpected reply class).
    pub failed_sessions: u64,
    /// Replies that contradicted the population.
    pub mismatches: Mismatches,
    /// Wall-clock time of the parallel section.
    pub wall: Duration,
    /// Thread CPU time of the sessions, summed over threads: the server's protocol and
    /// policy, and the client script's encoding and checking of replies.
    pub cpu: Duration,
    /// Threads used.
    pub threads: usize,
}

impl SimulateResult {
    /// CPU nanoseconds per RCPT (thread CPU, summed over threads).
    pub fn cpu_ns_per_rcpt(&self) -> f64 {
        if self.rcpts == 0 {
            0.0
        } else {
            self.cpu.as_nanos() as f64 / self.rcpts as f64
        }
    }

    /// RCPTs per CPU-second: what one core sustains.
    pub fn rcpt_per_core_sec(&self) -> f64 {
        let secs = self.cpu.as_secs_f64();
        if secs > 0.0 {
            self.rcpts as f64 / secs
        } else {
            0.0
        }
    }

    /// RCPTs per wall-clock second on all threads (building the client's bytes included).
    pub fn rcpt_per_sec(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.rcpts as f64 / secs
        } else {
            0.0
        }
    }
}

/// CPU time of the calling thread, with nanosecond resolution (zero if the clock cannot be
/// read). `simulate`'s measured CPU is read with it; benchmarks comparing against it use it
/// too.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct we pass.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok {
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    } else {
        Duration::ZERO
    }
}

/// Polls a future that must be ready at once (an in-memory backend's lookup).
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Per-thread state, reused across sessions.
struct Driver<'a, P> {
    identity: &'a ServerIdentity,
    config: SessionConfig,
    verifier: Verifier,
    /// The client's current write, and the server's replies to it.
    write: Vec<u8>,
    replies: Vec<u8>,
    host: Host<'a, P>,
    counts: Counts,
}

/// What the session asks of `simulate` (`bulk_proto::SessionHost`): verdicts from a
/// backend that answers at once, and a sink that takes every message.
struct Host<'a, P> {
    policy: &'a P,
    verdicts: Vec<Verdict>,
    /// A lookup did not answer at once, or failed: the session is not simulated right.
    failed: bool,
}

impl<P: PolicyBackend> SessionHost for Host<'_, P> {
    async fn resolve(&mut self, session: &mut Session) {
        self.verdicts.clear();
        // An in-memory backend answers at once; a backend that would wait cannot be
        // simulated without a runtime, and is reported as a failure, not waited for.
        match ready(self.policy.lookup(session.pending(), &mut self.verdicts)) {
            Some(Ok(())) => {
                session.resolve(Ok(&self.verdicts));
            }
            _ => {
                self.failed = true;
                session.resolve(Err(()));
            }
        }
    }

    async fn deliver(&mut self, session: &mut Session) {
        session.delivered(Ok(QueueId(0)));
    }
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    rcpts: u64,
    messages: u64,
    failed: u64,
    mismatches: Mismatches,
    cpu: Duration,
}

impl Tally {
    fn merge(mut self, other: Tally) -> Tally {
        self.sessions += other.sessions;
        self.rcpts += other.rcpts;
        self.messages += other.messages;
        self.failed += other.failed;
        self.mismatches.merge(&other.mismatches);
        self.cpu += other.cpu;
        self
    }
}

/// The EHLO name `simulate` sends, as the load generator's default.
const HELO: &[u8] = b"bulkbench.invalid";

impl<'a, P: PolicyBackend> Driver<'a, P> {
    fn new(
        policy: &'a P,
        identity: &'a ServerIdentity,
        config: SessionConfig,
        expectations: Expectations,
        verify: VerifyMode,
    ) -> Self {
        Driver {
            identity,
            config,
            verifier: Verifier {
                expectations,
                mode: verify,
            },
            write: Vec::new(),
            replies: Vec::new(),
            host: Host {
                policy,
                verdicts: Vec::new(),
                failed: false,
            },
            counts: Counts::default(),
        }
    }

    /// Feeds the client's write to the session, as the server's connection does (the same
    /// `Session::feed`: one batched lookup per command group), and leaves the replies in
    /// `self.replies`.
    fn exchange(&mut self, session: &mut Session) -> Result<(), ()> {
        self.replies.clear();
        self.host.failed = false;
        // The host never waits, so the feed is done at its first poll.
        ready(session.feed(&self.write, &mut self.host)).ok_or(())?;
        if self.host.failed {
            return Err(());
        }
        session.flush(self.identity, &mut self.replies);
        Ok(())
    }

    /// The measured part: every session of a chunk. Never inlined, so that a profiler can
    /// select it by name (`valgrind --tool=callgrind --toggle-collect='*run_all*'`).
    #[inline(never)]
    fn run_all(&mut self, specs: &[SessionSpec], tally: &mut Tally) {
        for spec in specs {
            tally.sessions += 1;
            self.counts.clear();
            if self.session(spec).is_err() {
                tally.failed += 1;
            }
            tally.rcpts += self.counts.rcpts;
            tally.messages += self.counts.messages;
            tally.mismatches.merge(&self.counts.mismatches);
        }
    }

    /// One session: the client script the load generator drives over TCP, driven against
    /// the server's state machine instead.
    fn session(&mut self, spec: &SessionSpec) -> Result<(), ()> {
        let mut session = Session::new(self.config);
        session.greet();
        let verifier = self.verifier;
        let mut script = Script::new(spec, &verifier, HELO);
        self.write.clear();
        self.exchange(&mut session)?;
        loop {
            let mut at = 0;
            while at < self.replies.len() {
                let (reply, used) = bulk_proto::parse_reply(&self.replies[at..])
                    .map_err(|_| ())?
                    .ok_or(())?;
                // A reply the script did not ask for is a failure too.
                script.expecting().ok_or(())?;
                script.on_reply(&reply, &mut self.counts).map_err(|_| ())?;
                at += used;
            }
            match script.expecting() {
                None => return Ok(()),
                // No cryptography in process: the handshake is done as soon as it is due.
                Some(Phase::TlsHandshake) => {
                    session.tls_started();
                    script.on_handshake();
                }
                Some(_) => {}
            }
            self.write.clear();
            // Waiting for a reply the server did not send.
            if !script.take_write(&mut self.write) {
                return Err(());
            }
            self.exchange(&mut session)?;
        }
    }
}

/// The session config of a server run with `scenario`'s server settings for `workload`,
/// as `bench` starts `bulkbench serve`: STARTTLS offered when a session asks for it.
pub fn session_config(scenario: &bulk_population::Scenario, workload: &Workload) -> SessionConfig {
    let server = &scenario.server;
    SessionConfig {
        max_recipients: server.max_recipients.get(),
        harvest: server
            .harvest_resistant
            .then(bulk_proto::HarvestConfig::default),
        preferences_for_mail: server.preferences_apply_to
            == bulk_population::PreferencesApplyTo::All,
        tls: match workload.uses_starttls() {
            true => bulk_proto::TlsPolicy::Offered,
            false => bulk_proto::TlsPolicy::Off,
        },
        ..SessionConfig::default()
    }
}

/// The server identity `simulate` answers with.
fn identity(config: SessionConfig) -> ServerIdentity {
    ServerIdentity {
        hostname: "bulkbench.simulate".to_owned(),
        max_message_size: config.max_message_size,
    }
}

/// [`simulate`] without rayon: each of `sessions` once, in order, on the calling thread,
/// through one driver (the same client script, session loop and checks). Its work depends
/// on nothing but its arguments (no thread pool, no splitting of the list), which is what
/// an instruction count needs (`.ci/icount`'s `simulate_quick`). `threads` is 1, and
/// `wall` and `cpu` are the calling thread's.
pub fn simulate_serial<P: PolicyBackend>(
    sessions: &[SessionSpec],
    policy: &P,
    config: SessionConfig,
    expectations: Expectations,
    verify: VerifyMode,
) -> SimulateResult {
    let identity = identity(config);
    let mut driver = Driver::new(policy, &identity, config, expectations, verify);
    let mut tally = Tally::default();
    let wall_start = Instant::now();
    let started = thread_cpu();
    driver.run_all(sessions, &mut tally);
    tally.cpu = thread_cpu().saturating_sub(started);
    SimulateResult {
        sessions: tally.sessions,
        rcpts: tally.rcpts,
        messages: tally.messages,
        failed_sessions: tally.failed,
        mismatches: tally.mismatches,
        wall: wall_start.elapsed(),
        cpu: tally.cpu,
        threads: 1,
    }
}

/// Sessions per unit of parallel work: the thread's CPU clock is read around each unit,
/// so reading it costs nothing next to the work.
const CHUNK: usize = 64;

/// Simulates every session of `workload` against `policy` on the current rayon pool, as a
/// run would start them: a list once, a cycled list to its count, and a workload sized in
/// time pass after pass over its pool until the time is up (its sessions were drawn
/// before, as a list's are, so `wall` holds no drawing either way).
pub fn simulate<P: PolicyBackend>(
    workload: &Workload,
    policy: &P,
    config: SessionConfig,
    expectations: Expectations,
    verify: VerifyMode,
) -> SimulateResult {
    let identity = identity(config);
    let threads = rayon::current_num_threads();
    let wall_start = Instant::now();
    let run = |sessions: &[SessionSpec]| {
        simulate_sessions(sessions, policy, &identity, config, expectations, verify)
    };
    let pool = &workload.sessions[..];
    let tally = match workload.run {
        RunLength::Once => run(pool),
        RunLength::Count(count) if !pool.is_empty() => {
            let len = pool.len() as u64;
            let mut tally = Tally::default();
            for _ in 0..count / len {
                tally = tally.merge(run(pool));
            }
            tally.merge(run(&pool[..(count % len) as usize]))
        }
        RunLength::Count(_) => Tally::default(),
        RunLength::Time(duration) => {
            let mut tally = run(pool);
            while wall_start.elapsed() < duration && !pool.is_empty() {
                tally = tally.merge(run(pool));
            }
            tally
        }
    };
    SimulateResult {
        sessions: tally.sessions,
        rcpts: tally.rcpts,
        messages: tally.messages,
        failed_sessions: tally.failed,
        mismatches: tally.mismatches,
        wall: wall_start.elapsed(),
        cpu: tally.cpu,
        threads,
    }
}

fn simulate_sessions<P: PolicyBackend>(
    sessions: &[SessionSpec],
    policy: &P,
    identity: &ServerIdentity,
    config: SessionConfig,
    expectations: Expectations,
    verify: VerifyMode,
) -> Tally {
    sessions
        .par_chunks(CHUNK)
        .fold(
            || {
                let driver = Driver::new(policy, identity, config, expectations, verify);
                (driver, Tally::default())
            },
            |(mut driver, mut tally), chunk| {
                let started = thread_cpu();
                driver.run_all(chunk, &mut tally);
                tally.cpu += thread_cpu().saturating_sub(started);
                (driver, tally)
            },
        )
        .map(|(_, tally)| tally)
        .reduce(Tally::default, Tally::merge)
}
