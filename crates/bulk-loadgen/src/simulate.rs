//! `simulate`: the workload's client bytes fed through `bulk-proto` sessions and a policy
//! backend in process, across all cores, no sockets: the CPU that protocol plus policy
//! cost per RCPT, the ceiling a server on this machine could reach.
//!
//! Each session is driven exactly as the load generator drives a real server: the same
//! commands (`Command::encode`), the same pipelining groups, the same message bytes, and
//! every reply parsed (`parse_reply`) and verified against the population.

use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bulk_policy::{PolicyBackend, Verdict};
use bulk_population::{Kind, SessionSpec, Workload};
use bulk_proto::{
    Command, Event, ForwardPath, MailParams, QueueId, ReversePath, ServerIdentity, Session,
    SessionConfig, TransactionKind,
};
use rayon::prelude::*;

use crate::message::write_message;
use crate::verify::{Expectations, Mismatches, ReplyClass, Verifier, VerifyMode};

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
    /// Thread CPU time spent feeding the sessions and checking their replies, summed over
    /// threads (building the client's bytes excluded).
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

/// The client's bytes of one session, built before the measured part: exactly what the
/// load generator writes (`Command::encode`, `write_message`), in one arena.
#[derive(Default)]
struct Script {
    bytes: Vec<u8>,
    ehlo: Range<usize>,
    from: Range<usize>,
    /// One range per RCPT; contiguous after `from`, then `data`, so that the pipelined
    /// group is `from.start..data.end`.
    rcpts: Vec<Range<usize>>,
    data: Range<usize>,
    message: Range<usize>,
    quit: Range<usize>,
}

impl Script {
    fn build(&mut self, spec: &SessionSpec) {
        let bytes = &mut self.bytes;
        bytes.clear();
        self.rcpts.clear();
        let span = |bytes: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
            let start = bytes.len();
            write(bytes);
            start..bytes.len()
        };
        self.ehlo = span(bytes, &|b| {
            Command::Ehlo {
                domain: b"bulkbench.invalid",
            }
            .encode(b)
        });
        let kind = match spec.kind {
            Kind::Bulk => TransactionKind::Bulk,
            Kind::Mail => TransactionKind::Mail,
        };
        let size = (spec.message_size > 0).then_some(u64::from(spec.message_size));
        self.from = span(bytes, &|b| {
            Command::Mail {
                kind,
                from: ReversePath::Mailbox(spec.sender.as_bytes()),
                params: MailParams { size, body: None },
            }
            .encode(b)
        });
        for r in &spec.recipients {
            let range = span(bytes, &|b| {
                Command::Rcpt {
                    to: ForwardPath::Mailbox(r.address.as_bytes()),
                }
                .encode(b)
            });
            self.rcpts.push(range);
        }
        self.data = span(bytes, &|b| Command::Data.encode(b));
        self.message = span(bytes, &|b| write_message(spec, b));
        self.quit = span(bytes, &|b| Command::Quit.encode(b));
    }
}

/// Per-thread state, reused across sessions.
struct Driver<'a, P> {
    policy: &'a P,
    identity: &'a ServerIdentity,
    config: SessionConfig,
    verifier: Verifier,
    replies: Vec<u8>,
    parsed: Vec<Parsed>,
    verdicts: Vec<Verdict>,
}

/// One reply of an exchange: its code, its class, and its byte range in the replies.
type Parsed = (u16, ReplyClass, (usize, usize));

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

impl<P: PolicyBackend> Driver<'_, P> {
    /// Feeds one client write to the session, as the server's connection does, and leaves
    /// the replies, parsed, in `self.parsed`.
    fn exchange(&mut self, session: &mut Session, write: &[u8]) -> Result<(), ()> {
        self.replies.clear();
        let mut pos = 0;
        loop {
            let (used, event) = session.advance(&write[pos..]);
            pos += used;
            match event {
                Event::NeedInput | Event::Close => break,
                Event::NeedVerdicts => self.resolve(session)?,
                Event::Message => session.delivered(Ok(QueueId(0))),
            }
        }
        self.resolve(session)?;
        session.flush(self.identity, &mut self.replies);
        self.parsed.clear();
        let mut at = 0;
        while at < self.replies.len() {
            let (reply, used) = bulk_proto::parse_reply(&self.replies[at..])
                .map_err(|_| ())?
                .ok_or(())?;
            self.parsed.push((
                reply.code,
                ReplyClass::of(reply.code, reply.enhanced),
                (at, at + used),
            ));
            at += used;
        }
        Ok(())
    }

    fn resolve(&mut self, session: &mut Session) -> Result<(), ()> {
        if session.pending().is_empty() {
            return Ok(());
        }
        self.verdicts.clear();
        // An in-memory backend answers at once; a backend that would wait cannot be
        // simulated without a runtime, and is reported as a failure, not waited for.
        match ready(self.policy.lookup(session.pending(), &mut self.verdicts)) {
            Some(Ok(())) => {
                session.resolve(Ok(&self.verdicts));
                Ok(())
            }
            _ => Err(()),
        }
    }

    fn first_code(&self) -> Option<u16> {
        self.parsed.first().map(|r| r.0)
    }

    /// The measured part: every session of a chunk, from its prepared script. Never
    /// inlined, so that a profiler can select it by name (`valgrind --tool=callgrind
    /// --toggle-collect='*run_all*'`).
    #[inline(never)]
    fn run_all(&mut self, specs: &[SessionSpec], scripts: &[Script], tally: &mut Tally) {
        for (script, spec) in scripts.iter().zip(specs) {
            self.run(spec, script, tally);
        }
    }

    fn run(&mut self, spec: &SessionSpec, script: &Script, tally: &mut Tally) {
        tally.sessions += 1;
        if self.session(spec, script, tally).is_err() {
            tally.failed += 1;
        }
    }

    fn session(
        &mut self,
        spec: &SessionSpec,
        script: &Script,
        tally: &mut Tally,
    ) -> Result<(), ()> {
        let bytes = &script.bytes;
        let mut session = Session::new(self.config);
        session.greet();
        self.exchange(&mut session, &bytes[script.ehlo.clone()])?;
        // Greeting and EHLO: both 2xx. Our server advertises BULK and PIPELINING.
        if self.parsed.len() != 2 || self.parsed.iter().any(|r| r.0 / 100 != 2) {
            return Err(());
        }
        let bulk = spec.kind == Kind::Bulk;
        let with_data = spec.message_size > 0;
        if spec.pipelining {
            let end = if with_data {
                script.data.end
            } else {
                script.data.start
            };
            self.exchange(&mut session, &bytes[script.from.start..end])?;
            let expected_len = 1 + spec.recipients.len() + usize::from(with_data);
            if self.parsed.len() != expected_len || self.parsed[0].0 / 100 != 2 {
                return Err(());
            }
            let mut accepted = 0;
            for i in 0..spec.recipients.len() {
                accepted += usize::from(self.check(spec, bulk, i, self.parsed[1 + i], tally));
            }
            // DATA must get 354 when a recipient was accepted, and only then.
            if with_data {
                match (self.parsed[expected_len - 1].0 == 354, accepted > 0) {
                    (true, true) => {
                        self.message(&mut session, &bytes[script.message.clone()], tally)?
                    }
                    (false, false) => {}
                    _ => return Err(()),
                }
            }
        } else {
            let mut accepted = 0;
            self.exchange(&mut session, &bytes[script.from.clone()])?;
            if self.first_code().is_none_or(|c| c / 100 != 2) {
                return Err(());
            }
            for i in 0..spec.recipients.len() {
                self.exchange(&mut session, &bytes[script.rcpts[i].clone()])?;
                let reply = *self.parsed.first().ok_or(())?;
                accepted += usize::from(self.check(spec, bulk, i, reply, tally));
            }
            if with_data && accepted > 0 {
                self.exchange(&mut session, &bytes[script.data.clone()])?;
                if self.first_code() != Some(354) {
                    return Err(());
                }
                self.message(&mut session, &bytes[script.message.clone()], tally)?;
            }
        }
        self.exchange(&mut session, &bytes[script.quit.clone()])?;
        match self.first_code() {
            Some(221) => Ok(()),
            _ => Err(()),
        }
    }

    fn message(
        &mut self,
        session: &mut Session,
        message: &[u8],
        tally: &mut Tally,
    ) -> Result<(), ()> {
        self.exchange(session, message)?;
        match self.first_code() {
            Some(code) if code / 100 == 2 => {
                tally.messages += 1;
                Ok(())
            }
            _ => Err(()),
        }
    }

    fn check(
        &self,
        spec: &SessionSpec,
        bulk: bool,
        index: usize,
        reply: Parsed,
        tally: &mut Tally,
    ) -> bool {
        tally.rcpts += 1;
        let (_, actual, (start, end)) = reply;
        let text = || {
            String::from_utf8_lossy(&self.replies[start..end])
                .trim_end()
                .to_owned()
        };
        self.verifier
            .check_rcpt(spec, bulk, index, actual, text, &mut tally.mismatches)
    }
}

/// The session config of a server run with `server`'s settings, as `bulkbench serve` and
/// `bench` start it.
pub fn session_config(server: &bulk_population::ServerConfig) -> SessionConfig {
    SessionConfig {
        max_recipients: server.max_recipients,
        harvest: server
            .harvest_resistant
            .then(bulk_proto::HarvestConfig::default),
        ..SessionConfig::default()
    }
}

/// Sessions per unit of parallel work: their client bytes are built, then the thread's CPU
/// clock is read around feeding them, so building the bytes (the client's work) is not
/// counted as protocol and policy.
const CHUNK: usize = 64;

/// Sessions drawn at a time when simulating a workload sized in time.
const TIMED_BATCH: u64 = 16 * 1024;

/// Simulates every session of `workload` against `policy` on the current rayon pool; a
/// workload sized in time is drawn and simulated batch by batch until its time is up.
pub fn simulate<P: PolicyBackend>(
    workload: &Workload,
    policy: &P,
    config: SessionConfig,
    expectations: Expectations,
    verify: VerifyMode,
) -> SimulateResult {
    let identity = ServerIdentity {
        hostname: "bulkbench.simulate".to_owned(),
        max_message_size: config.max_message_size,
    };
    let threads = rayon::current_num_threads();
    let wall_start = Instant::now();
    let run = |sessions: &[SessionSpec]| {
        simulate_sessions(sessions, policy, &identity, config, expectations, verify)
    };
    let tally = match workload.duration() {
        None => run(&workload.sessions),
        Some(duration) => {
            let mut tally = Tally::default();
            let mut next = 0u64;
            while wall_start.elapsed() < duration {
                let batch: Vec<SessionSpec> = (next..next + TIMED_BATCH)
                    .into_par_iter()
                    .filter_map(|k| workload.session(k).map(std::borrow::Cow::into_owned))
                    .collect();
                next += TIMED_BATCH;
                tally = tally.merge(run(&batch));
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
                let driver = Driver {
                    policy,
                    identity,
                    config,
                    verifier: Verifier {
                        expectations,
                        mode: verify,
                    },
                    replies: Vec::new(),
                    parsed: Vec::new(),
                    verdicts: Vec::new(),
                };
                let scripts: Vec<Script> = (0..CHUNK).map(|_| Script::default()).collect();
                (driver, scripts, Tally::default())
            },
            |(mut driver, mut scripts, mut tally), chunk| {
                for (script, spec) in scripts.iter_mut().zip(chunk) {
                    script.build(spec);
                }
                let started = thread_cpu();
                driver.run_all(chunk, &scripts, &mut tally);
                tally.cpu += thread_cpu().saturating_sub(started);
                (driver, scripts, tally)
            },
        )
        .map(|(_, _, tally)| tally)
        .reduce(Tally::default, Tally::merge)
}
