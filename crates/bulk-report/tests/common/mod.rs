//! Runs built in memory for the rendering tests.

#![allow(dead_code)]

use std::time::Duration;

use bulk_loadgen::{
    ErrorKind, MismatchExample, Mismatches, Phase, Recorder, ReplyClass, RunResult, Totals,
};
use bulk_report::RunData;
use bulk_report::summary::{CpuTimes, Expected, PinnedCpuTimes, Summary, SummaryInput, Target};

/// What a synthetic run looks like.
#[derive(Clone)]
pub struct Spec {
    pub scenario: String,
    /// Multiplies every latency.
    pub latency_scale: u64,
    /// Sessions per second of the run.
    pub sessions_per_sec: u64,
    /// RCPTs per session.
    pub rcpts_per_session: u64,
    /// Seconds of the run, warm-up included.
    pub secs: u64,
    pub warmup_secs: u64,
    /// (CPU seconds, peak RSS, startup secs); None: external target.
    pub server: Option<(f64, u64, Option<f64>)>,
    pub mismatches: u64,
    pub failed_sessions: u64,
    /// Stretches the measurement window: 2.0 halves every rate, latencies unchanged.
    pub window_scale: f64,
    /// Every this many sessions one uses STARTTLS (0: none does).
    pub starttls_every: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            scenario: "quick".into(),
            latency_scale: 1,
            sessions_per_sec: 40,
            rcpts_per_session: 10,
            secs: 10,
            warmup_secs: 2,
            server: Some((1.5, 64 << 20, Some(0.4))),
            mismatches: 0,
            failed_sessions: 0,
            window_scale: 1.0,
            starttls_every: 0,
        }
    }
}

/// Latency steps of a session (µs, before scaling): connect, greeting, ... quit.
const STEPS: [(Phase, u64); 8] = [
    (Phase::Connect, 80),
    (Phase::Greeting, 150),
    (Phase::Ehlo, 120),
    (Phase::From, 300),
    (Phase::Rcpt, 400),
    (Phase::Data, 350),
    (Phase::EndOfData, 900),
    (Phase::Quit, 100),
];

/// The steps a STARTTLS session adds (µs, before scaling).
const TLS_STEPS: [(Phase, u64); 3] = [
    (Phase::Starttls, 110),
    (Phase::TlsHandshake, 1500),
    (Phase::Ehlo, 130),
];

pub fn run(spec: &Spec) -> RunData {
    let mut measured = Recorder::default();
    let mut warmup = Recorder::default();
    let mut totals = Totals::default();
    let mut warmup_totals = Totals::default();
    let mut session = 0u64;
    for second in 0..spec.secs {
        for _ in 0..spec.sessions_per_sec {
            session += 1;
            let in_warmup = second < spec.warmup_secs;
            let (rec, tot) = if in_warmup {
                (&mut warmup, &mut warmup_totals)
            } else {
                (&mut measured, &mut totals)
            };
            // A spread of latencies with a tail: every 100th session is 20x slower.
            let jitter = 1 + session % 7;
            let tail = if session.is_multiple_of(100) { 20 } else { 1 };
            let mut total = 0;
            if spec.starttls_every > 0 && session.is_multiple_of(spec.starttls_every) {
                // STARTTLS, the handshake, and the EHLO said again over TLS.
                for (phase, base) in TLS_STEPS {
                    let v = base * jitter * tail * spec.latency_scale;
                    rec.record(phase, v);
                    rec.record_interval(second * 1_000_000, phase, v);
                    total += v;
                }
                tot.starttls_sessions += 1;
            }
            for (phase, base) in STEPS {
                let count = if phase == Phase::Rcpt {
                    spec.rcpts_per_session
                } else {
                    1
                };
                // Pipelined RCPTs overlap: the step lasts as long as its slowest reply.
                let mut step = 0;
                for k in 0..count {
                    let v = (base + 13 * k) * jitter * tail * spec.latency_scale;
                    rec.record(phase, v);
                    rec.record_interval(second * 1_000_000, phase, v);
                    step = step.max(v);
                }
                total += step;
            }
            rec.record(Phase::Session, total);
            rec.record_interval(second * 1_000_000, Phase::Session, total);
            rec.record(Phase::ScheduleLag, 5 * jitter);
            rec.record_interval(second * 1_000_000, Phase::ScheduleLag, 5 * jitter);
            tot.sessions += 1;
            tot.sessions_completed += 1;
            tot.rcpts += spec.rcpts_per_session;
            tot.messages += 1;
            for k in 0..spec.rcpts_per_session {
                let class = match (session + k) % 10 {
                    0 => ReplyClass::OptedOut,
                    1 => ReplyClass::Unknown,
                    2 if k % 3 == 0 => ReplyClass::NotLocal,
                    _ => ReplyClass::Accepted,
                };
                *tot.by_class.entry(class).or_default() += 1;
            }
        }
    }
    if spec.failed_sessions > 0 {
        totals
            .errors
            .insert(ErrorKind::Timeout, spec.failed_sessions);
    }
    let mut mismatches = Mismatches::default();
    for i in 0..spec.mismatches {
        mismatches.record(ReplyClass::OptedOut, ReplyClass::Accepted, || {
            MismatchExample {
                session: i,
                recipient: format!("a{i}+<tag>@example.com"),
                expected: ReplyClass::OptedOut,
                reply: "250 2.1.5 <script>alert(1)</script> & ok".into(),
            }
        });
    }
    let measured_secs = (spec.secs - spec.warmup_secs.min(spec.secs)) as f64 * spec.window_scale;
    let result = RunResult {
        measured,
        warmup,
        totals,
        warmup_totals,
        mismatches,
        window: Duration::from_secs_f64(measured_secs),
        elapsed: Duration::from_secs(spec.secs),
        interrupted: false,
        drawn: 0,
        event_loops: 2,
    };
    summarize(spec, &result)
}

pub fn summarize(spec: &Spec, result: &RunResult) -> RunData {
    let sessions = spec.secs * spec.sessions_per_sec;
    let summary = Summary::new(
        SummaryInput {
            command: "bench".into(),
            // A fixed start, so reports of the same data are the same text.
            started_at: std::time::UNIX_EPOCH + Duration::from_secs(1_795_811_045),
            // A real scenario, serialized as the binary does: a full copy, every default
            // filled in, as the schema requires.
            scenario: {
                let text = format!(
                    "seed = 7\n\
                     [population]\nmailboxes = 100000\ndomains = 200\n\
                     [workload]\nsessions = {sessions}\nconcurrency = 64\nrecipients_max = 50\n\
                     message_size_min = 500\nmessage_size_max = 5000\nwarmup_secs = {}\n",
                    spec.warmup_secs,
                    // An empty run still had a scenario of at least one session.
                    sessions = sessions.max(1),
                );
                let mut scenario = bulk_population::Scenario::from_toml(&text, "fixture")
                    .expect("the fixture scenario is valid");
                // Any name, even one TOML would need quoting for.
                scenario.name = spec.scenario.clone();
                serde_json::to_value(&scenario).unwrap()
            },
            seed: 7,
            scenario_fingerprint: 0x0123_4567_89ab_cdef,
            trace: None,
            shard: None,
            target: Target {
                address: "127.0.0.1:2525".into(),
                external: spec.server.is_none(),
                backend: spec.server.map(|_| "memory".into()),
                server_cpus: spec.server.map(|_| vec![0]),
                generator_cpus: spec.server.map(|_| vec![1]),
                processes: Vec::new(),
            },
            expected: Expected {
                sessions,
                rcpts: sessions * spec.rcpts_per_session,
            },
            warmup_secs: spec.warmup_secs as f64,
            server: spec.server,
            store: None,
            generator_cpu_seconds: 0.8,
            generator_event_loops: 2,
            listen_queue: None,
            cpu_sets: spec.server.map(|_| PinnedCpuTimes {
                server: (
                    vec![0],
                    CpuTimes {
                        span: 2.0,
                        user: 0.2,
                        system: 0.4,
                        irq: 0.0,
                        softirq: 0.2,
                        idle: 1.0,
                        steal: 0.0,
                    },
                ),
                generator: (
                    vec![1],
                    CpuTimes {
                        span: 2.0,
                        user: 0.2,
                        system: 0.4,
                        irq: 0.0,
                        softirq: 0.3,
                        idle: 1.1,
                        steal: 0.0,
                    },
                ),
            }),
        },
        result,
    );
    RunData::new(summary, result)
}

/// A run that recorded nothing at all.
pub fn empty_run() -> RunData {
    let result = RunResult {
        interrupted: true,
        ..RunResult::default()
    };
    summarize(
        &Spec {
            secs: 0,
            warmup_secs: 0,
            server: None,
            ..Spec::default()
        },
        &result,
    )
}
