//! `simulate`: the workload's client bytes fed through `bulk-proto` sessions and a policy
//! backend in process, across all cores, no sockets: the CPU that protocol plus policy
//! cost per RCPT, the ceiling a server on this machine could reach.
//!
//! Each session is driven exactly as the load generator drives a real server: the same
//! commands (`Command::encode`), the same pipelining groups, the same message bytes, and
//! every reply parsed (`parse_reply`) and verified against the population.

use std::future::Future;
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
use crate::verify::{
    Expectations, MismatchExample, Mismatches, ReplyClass, VerifyMode, is_mismatch,
};

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
    /// CPU time of all threads in the parallel section.
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

    /// RCPTs per wall-clock second on all threads.
    pub fn rcpt_per_sec(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.rcpts as f64 / secs
        } else {
            0.0
        }
    }
}

/// CPU time of this whole process (every thread), with nanosecond resolution.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct we pass.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
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

/// One reply of an exchange: its code, its class, and its byte range in the replies.
type Parsed = (u16, ReplyClass, (usize, usize));

/// Per-thread state, reused across sessions.
struct Driver<'a, P> {
    policy: &'a P,
    identity: &'a ServerIdentity,
    config: SessionConfig,
    expectations: Expectations,
    verify: VerifyMode,
    write: Vec<u8>,
    replies: Vec<u8>,
    verdicts: Vec<Verdict>,
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    rcpts: u64,
    messages: u64,
    failed: u64,
    mismatches: Mismatches,
}

impl Tally {
    fn merge(mut self, other: Tally) -> Tally {
        self.sessions += other.sessions;
        self.rcpts += other.rcpts;
        self.messages += other.messages;
        self.failed += other.failed;
        self.mismatches.merge(&other.mismatches);
        self
    }
}

impl<P: PolicyBackend> Driver<'_, P> {
    /// Feeds one client write to the session, as the server's connection does, and leaves
    /// the replies in `self.replies`.
    fn exchange(&mut self, session: &mut Session) -> Result<(), ()> {
        self.replies.clear();
        let mut pos = 0;
        loop {
            let (used, event) = session.advance(&self.write[pos..]);
            pos += used;
            match event {
                Event::NeedInput | Event::Close => break,
                Event::NeedVerdicts => self.resolve(session)?,
                Event::Message => session.delivered(Ok(QueueId(0))),
            }
        }
        self.resolve(session)?;
        session.flush(self.identity, &mut self.replies);
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

    /// The replies of the last exchange, parsed.
    fn parsed(&self) -> Result<Vec<Parsed>, ()> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < self.replies.len() {
            let (reply, used) = bulk_proto::parse_reply(&self.replies[pos..])
                .map_err(|_| ())?
                .ok_or(())?;
            out.push((
                reply.code,
                ReplyClass::of(reply.code, reply.enhanced),
                (pos, pos + used),
            ));
            pos += used;
        }
        Ok(out)
    }

    fn run(&mut self, spec: &SessionSpec, tally: &mut Tally) {
        tally.sessions += 1;
        if self.session(spec, tally).is_err() {
            tally.failed += 1;
        }
    }

    fn session(&mut self, spec: &SessionSpec, tally: &mut Tally) -> Result<(), ()> {
        let mut session = Session::new(self.config);
        session.greet();
        self.write.clear();
        Command::Ehlo {
            domain: b"bulkbench.invalid",
        }
        .encode(&mut self.write);
        self.exchange(&mut session)?;
        let replies = self.parsed()?;
        // Greeting and EHLO: both 2xx. Our server advertises BULK and PIPELINING.
        if replies.len() != 2 || replies.iter().any(|r| r.0 / 100 != 2) {
            return Err(());
        }
        let bulk = spec.kind == Kind::Bulk;
        let kind = if bulk {
            TransactionKind::Bulk
        } else {
            TransactionKind::Mail
        };
        let with_data = spec.message_size > 0;
        let mut from = Vec::new();
        Command::Mail {
            kind,
            from: ReversePath::Mailbox(spec.sender.as_bytes()),
            params: MailParams {
                size: with_data.then_some(u64::from(spec.message_size)),
                body: None,
            },
        }
        .encode(&mut from);
        if spec.pipelining {
            self.write.clear();
            self.write.extend_from_slice(&from);
            for r in &spec.recipients {
                Command::Rcpt {
                    to: ForwardPath::Mailbox(r.address.as_bytes()),
                }
                .encode(&mut self.write);
            }
            if with_data {
                Command::Data.encode(&mut self.write);
            }
            self.exchange(&mut session)?;
            let replies = self.parsed()?;
            let expected_len = 1 + spec.recipients.len() + usize::from(with_data);
            if replies.len() != expected_len || replies[0].0 / 100 != 2 {
                return Err(());
            }
            for (i, r) in spec.recipients.iter().enumerate() {
                self.check(spec, bulk, i, r, replies[1 + i], tally);
            }
            if with_data && replies[expected_len - 1].0 == 354 {
                self.message(spec, &mut session, tally)?;
            }
        } else {
            let mut accepted = 0;
            self.write.clear();
            self.write.extend_from_slice(&from);
            self.exchange(&mut session)?;
            if self.parsed()?.first().is_none_or(|r| r.0 / 100 != 2) {
                return Err(());
            }
            for (i, r) in spec.recipients.iter().enumerate() {
                self.write.clear();
                Command::Rcpt {
                    to: ForwardPath::Mailbox(r.address.as_bytes()),
                }
                .encode(&mut self.write);
                self.exchange(&mut session)?;
                let reply = *self.parsed()?.first().ok_or(())?;
                accepted += usize::from(self.check(spec, bulk, i, r, reply, tally));
            }
            if with_data && accepted > 0 {
                self.write.clear();
                Command::Data.encode(&mut self.write);
                self.exchange(&mut session)?;
                if self.parsed()?.first().is_none_or(|r| r.0 != 354) {
                    return Err(());
                }
                self.message(spec, &mut session, tally)?;
            }
        }
        self.write.clear();
        Command::Quit.encode(&mut self.write);
        self.exchange(&mut session)?;
        match self.parsed()?.first() {
            Some(r) if r.0 == 221 => Ok(()),
            _ => Err(()),
        }
    }

    fn message(
        &mut self,
        spec: &SessionSpec,
        session: &mut Session,
        tally: &mut Tally,
    ) -> Result<(), ()> {
        self.write.clear();
        write_message(spec, &mut self.write);
        self.exchange(session)?;
        match self.parsed()?.first() {
            Some(r) if r.0 / 100 == 2 => {
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
        recipient: &bulk_population::Recipient,
        reply: Parsed,
        tally: &mut Tally,
    ) -> bool {
        tally.rcpts += 1;
        let (_, actual, (start, end)) = reply;
        let position = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let expected = self
            .expectations
            .expected(bulk, recipient.verdict, position);
        if is_mismatch(self.verify, expected, actual) {
            tally
                .mismatches
                .record(expected, actual, || MismatchExample {
                    session: spec.index,
                    recipient: recipient.address.clone(),
                    expected,
                    reply: String::from_utf8_lossy(&self.replies[start..end])
                        .trim_end()
                        .to_owned(),
                });
        }
        actual == ReplyClass::Accepted
    }
}

/// Simulates every session of `workload` against `policy` on the current rayon pool.
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
    let cpu_start = process_cpu();
    let wall_start = Instant::now();
    let tally = workload
        .sessions
        .par_iter()
        .fold(
            || {
                (
                    Driver {
                        policy,
                        identity: &identity,
                        config,
                        expectations,
                        verify,
                        write: Vec::new(),
                        replies: Vec::new(),
                        verdicts: Vec::new(),
                    },
                    Tally::default(),
                )
            },
            |(mut driver, mut tally), spec| {
                driver.run(spec, &mut tally);
                (driver, tally)
            },
        )
        .map(|(_, tally)| tally)
        .reduce(Tally::default, Tally::merge);
    SimulateResult {
        sessions: tally.sessions,
        rcpts: tally.rcpts,
        messages: tally.messages,
        failed_sessions: tally.failed,
        mismatches: tally.mismatches,
        wall: wall_start.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_start),
        threads,
    }
}
