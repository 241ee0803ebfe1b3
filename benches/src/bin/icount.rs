//! Instruction-count workloads: what `.ci/icount` runs under valgrind's callgrind and
//! compares with `benches/icount-baseline.json`, the CI gate that the machine's load cannot
//! move (BENCHMARKS.md, "Instruction counts").
//!
//! `icount WORKLOAD` runs one workload, `icount --list` names them all. A workload does its
//! setup first (population, recipients, stores, a warm-up pass checked against
//! `Population::verdict_of`), then calls one `#[inline(never)]` function named
//! `measured_<workload>` exactly once, then checks what that call produced. Callgrind counts
//! only that call: `valgrind --tool=callgrind --toggle-collect='*measured_rcpt_path*'
//! target/release/icount rcpt_path`. The last line on stdout is
//! `icount WORKLOAD UNITS UNIT`: the work done in the call (RCPTs, replies), so counts read
//! per unit.
//!
//! Everything measured is deterministic: fixed seeds, the same sizes on every run, no thread
//! pool and no randomly seeded hash map in a measured call (the backends and the population
//! use FxHash), and the setup's rayon pool has one thread (see `main`). The drivers are the
//! criterion benches' own (`bulkbench_benches::drive`) and `simulate`'s serial path
//! (`bulk_loadgen::simulate::simulate_serial`).

use std::hint::black_box;
use std::process::ExitCode;

use bulk_loadgen::simulate::{SimulateResult, session_config, simulate_serial};
use bulk_loadgen::{Expectations, VerifyMode};
use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend, Population, Verdict};
use bulk_policy_fst::FstBackend;
use bulk_policy_lmdb::LmdbBackend;
use bulk_population::{Popularity, SessionSpec};
use bulk_proto::SessionConfig;
use bulkbench_benches::drive::{FullPath, REOPEN, fill, lookup_now};

/// Mailboxes of the population `rcpt_path` and the lookups run on (100 domains).
const MAILBOXES: u64 = 100_000;
/// Recipients drawn (`bulkbench_benches::recipients`, uniform popularity: 5% unknown, about
/// 10% mixed case or `+tag`), the first of the pool on this population.
const RECIPIENTS: usize = 10_000;
/// RCPTs per transaction in `rcpt_path`, addresses per `lookup` call in the lookups.
const BATCH: usize = 100;
/// Sessions of `scenarios/quick.toml` that `simulate_quick` runs (those of the criterion
/// bench's `simulate_ratio/simulate_quick`).
const QUICK_SESSIONS: u64 = 1_000;
/// Passes of `reply_parser` over [`REPLIES`].
const REPLY_PASSES: usize = 2_000;

/// The work a measured call did: how many of what.
struct Units {
    count: u64,
    unit: &'static str,
}

/// A workload: its setup, its measured call and its checks.
type Workload = fn() -> Units;

/// The workloads, by name, in the order `.ci/icount` runs them.
const WORKLOADS: [(&str, Workload); 6] = [
    ("rcpt_path", rcpt_path),
    ("simulate_quick", simulate_quick),
    ("reply_parser", reply_parser),
    ("lookup_memory", lookup_memory),
    ("lookup_fst", lookup_fst),
    ("lookup_lmdb", lookup_lmdb),
];

fn main() -> ExitCode {
    // The setup's parallel parts (building the population, drawing sessions) on one
    // worker: with more, threads allocate in whatever order they run, the heap the measured
    // call starts from differs from run to run, and so do malloc's and memcpy's counts
    // (by up to 0.04% in `simulate_quick`, seen with two threads).
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("the global rayon pool, set once");
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--list" => {
            for (name, _) in WORKLOADS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        [name] => match WORKLOADS.iter().find(|(n, _)| n == name) {
            Some((name, workload)) => {
                let units = workload();
                println!("icount {name} {} {}", units.count, units.unit);
                ExitCode::SUCCESS
            }
            None => usage(&format!("no workload {name:?}")),
        },
        _ => usage("one argument expected"),
    }
}

fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = WORKLOADS.iter().map(|(n, _)| *n).collect();
    eprintln!(
        "icount: {problem}\nusage: icount WORKLOAD | icount --list\nworkloads: {}",
        names.join(", ")
    );
    ExitCode::from(2)
}

/// The population of `rcpt_path` and the lookups, and its first [`RECIPIENTS`] uniform
/// recipients with their verdicts (each checked against `Population::verdict_of`).
fn population_and_recipients() -> (Population, AddressBatch, Vec<Verdict>) {
    let model = bulkbench_benches::population(MAILBOXES);
    let population = model.build();
    let draws = bulkbench_benches::recipients(&model, Popularity::Uniform);
    let mut recipients = AddressBatch::new();
    let mut expected = Vec::with_capacity(RECIPIENTS);
    for index in 0..RECIPIENTS as u64 {
        let recipient = draws.recipient(index);
        let verdict = population.verdict_of(recipient.address.as_bytes());
        assert_eq!(verdict, recipient.verdict, "{}", recipient.address);
        recipients.push(recipient.address.as_bytes());
        expected.push(verdict);
    }
    (population, recipients, expected)
}

// --- rcpt_path ---------------------------------------------------------------------------

/// [`RECIPIENTS`] RCPTs in transactions of [`BATCH`]: for each, `RSET` + `BULK FROM:`, then
/// one pipelined read of its RCPT lines through `Session::feed` with the memory backend as
/// host, and the replies flushed (what a connection does with each read).
fn rcpt_path() -> Units {
    let (population, recipients, expected) = population_and_recipients();
    let backend = MemoryBackend::new(population);
    let reads: Vec<Vec<u8>> = (0..RECIPIENTS)
        .step_by(BATCH)
        .map(|start| {
            let mut read = Vec::new();
            for i in start..start + BATCH {
                read.extend_from_slice(b"RCPT TO:<");
                read.extend_from_slice(recipients.get(i).expect("drawn"));
                read.extend_from_slice(b">\r\n");
            }
            read
        })
        .collect();
    let mut path = FullPath::new(&backend, BATCH as u32);
    // Warm-up, every reply checked: the session's and the backend's buffers reach the size
    // the measured pass keeps.
    for (read, expected) in reads.iter().zip(expected.chunks(BATCH)) {
        path.feed(REOPEN);
        path.run(read);
        assert_eq!(path.verdicts, expected);
        let replies: Vec<Verdict> = path
            .out
            .split_inclusive(|&b| b == b'\n')
            .map(verdict_of_reply)
            .collect();
        assert_eq!(replies, expected);
    }
    let mut verdicts = Vec::with_capacity(RECIPIENTS);
    let reply_bytes = measured_rcpt_path(&mut path, &reads, &mut verdicts);
    assert_eq!(verdicts, expected);
    assert!(reply_bytes > RECIPIENTS * 20);
    Units {
        count: RECIPIENTS as u64,
        unit: "RCPT",
    }
}

#[inline(never)]
fn measured_rcpt_path(
    path: &mut FullPath<'_>,
    reads: &[Vec<u8>],
    verdicts: &mut Vec<Verdict>,
) -> usize {
    let mut reply_bytes = 0;
    for read in reads {
        path.feed(REOPEN);
        path.run(black_box(read));
        verdicts.extend_from_slice(&path.verdicts);
        reply_bytes += black_box(&path.out).len();
    }
    reply_bytes
}

/// The verdict a RCPT reply line of a BULK transaction stands for.
fn verdict_of_reply(line: &[u8]) -> Verdict {
    match line {
        b"250 2.1.5 Recipient ok\r\n" => Verdict::Accept,
        b"550 5.7.1 Recipient does not accept bulk mail\r\n" => Verdict::OptedOut,
        b"550 5.1.1 Mailbox unknown\r\n" => Verdict::UnknownMailbox,
        b"554 5.7.1 Relay access denied\r\n" => Verdict::NotLocal,
        other => panic!("unexpected RCPT reply {:?}", String::from_utf8_lossy(other)),
    }
}

// --- simulate_quick ----------------------------------------------------------------------

/// `simulate` on the first [`QUICK_SESSIONS`] sessions of `scenarios/quick.toml` against
/// the memory backend, strict verification, on this thread (`simulate_serial`).
fn simulate_quick() -> Units {
    let (scenario, model, workload) = bulkbench_benches::quick_sessions(QUICK_SESSIONS);
    let backend = MemoryBackend::new(model.build());
    let config = session_config(&scenario, &workload);
    let expectations = Expectations::of(&scenario.server);
    // Warm-up: the backend's per-thread key arena grows here, not in the measured call.
    simulate_serial(
        &workload.sessions[..10],
        &backend,
        config,
        expectations,
        VerifyMode::Strict,
    );
    let result = measured_simulate_quick(&workload.sessions, &backend, config, expectations);
    assert_eq!(
        (result.sessions, result.rcpts),
        (QUICK_SESSIONS, workload.rcpt_count())
    );
    assert_eq!((result.failed_sessions, result.mismatches.total), (0, 0));
    Units {
        count: result.rcpts,
        unit: "RCPT",
    }
}

#[inline(never)]
fn measured_simulate_quick(
    sessions: &[SessionSpec],
    backend: &MemoryBackend,
    config: SessionConfig,
    expectations: Expectations,
) -> SimulateResult {
    simulate_serial(
        black_box(sessions),
        backend,
        config,
        expectations,
        VerifyMode::Strict,
    )
}

// --- reply_parser ------------------------------------------------------------------------

/// What a bulk session's client reads, reply by reply: greeting, EHLO (multiline), the
/// sender, RCPT replies of every verdict and a temporary failure, DATA, the queue id, RSET,
/// QUIT. Fixed here rather than taken from the server, so that a change to a reply's text
/// does not move the parser's count.
const REPLIES: &[u8] = b"220 mx.example.org ESMTP bulkbench\r\n\
250-mx.example.org\r\n\
250-PIPELINING\r\n\
250-SIZE 10485760\r\n\
250-8BITMIME\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250 BULK\r\n\
250 2.1.0 Sender ok\r\n\
250 2.1.5 Recipient ok\r\n\
550 5.7.1 Recipient does not accept bulk mail\r\n\
250 2.1.5 Recipient ok\r\n\
550 5.1.1 Mailbox unknown\r\n\
250 2.1.5 Recipient ok\r\n\
550 5.7.1 Recipient does not accept bulk mail\r\n\
554 5.7.1 Relay access denied\r\n\
451 4.3.0 Policy lookup failed, try again later\r\n\
250 2.1.5 Recipient ok\r\n\
354 End data with <CR><LF>.<CR><LF>\r\n\
250 2.0.0 Ok: queued as 000000000000002A\r\n\
250 2.0.0 Ok\r\n\
221 2.0.0 Bye\r\n";
/// Replies in [`REPLIES`].
const REPLIES_PER_PASS: usize = 16;

/// `bulk_proto::parse_reply` over [`REPLIES`], reply after reply as the load generator's
/// client reads them, [`REPLY_PASSES`] times.
fn reply_parser() -> Units {
    let (replies, sum) = measured_reply_parser(REPLIES, REPLY_PASSES);
    // Each pass read every reply whole: the same count, and the same sum of codes and
    // enhanced classes, as one pass outside the measured call.
    let (pass_replies, pass_sum) = parse_all(REPLIES);
    assert_eq!(pass_replies, REPLIES_PER_PASS);
    assert_eq!(
        (replies, sum),
        (
            REPLY_PASSES * REPLIES_PER_PASS,
            pass_sum * REPLY_PASSES as u64
        )
    );
    Units {
        count: replies as u64,
        unit: "reply",
    }
}

#[inline(never)]
fn measured_reply_parser(input: &[u8], passes: usize) -> (usize, u64) {
    let mut replies = 0;
    let mut sum = 0;
    for _ in 0..passes {
        let (n, s) = parse_all(black_box(input));
        replies += n;
        sum += s;
    }
    (replies, sum)
}

/// Every reply of `input`: how many, and the sum of their codes and enhanced classes.
fn parse_all(input: &[u8]) -> (usize, u64) {
    let mut at = 0;
    let mut replies = 0;
    let mut sum = 0u64;
    while at < input.len() {
        let (reply, used) = bulk_proto::parse_reply(&input[at..])
            .expect("a well-formed reply")
            .expect("a whole reply");
        sum += u64::from(reply.code) + reply.enhanced.map_or(0, |e| u64::from(e.class));
        replies += 1;
        at += used;
    }
    (replies, sum)
}

// --- lookups -----------------------------------------------------------------------------

/// [`RECIPIENTS`] recipients looked up in batches of [`BATCH`] (`lookup_now`, each batch
/// refilled as a session fills its pending batch), after a warm-up pass checked against
/// `Population::verdict_of`. `measured` is the backend's own `measured_lookup_*`.
fn lookups<B: PolicyBackend>(
    backend: &B,
    recipients: &AddressBatch,
    expected: &[Verdict],
    measured: fn(&B, &AddressBatch, &mut Vec<Verdict>),
) -> Units {
    let mut verdicts = Vec::with_capacity(RECIPIENTS);
    lookup_all(backend, recipients, &mut verdicts);
    assert_eq!(verdicts, expected, "{} verdicts", backend.name());
    verdicts.clear();
    measured(backend, recipients, &mut verdicts);
    assert_eq!(verdicts, expected, "{} verdicts", backend.name());
    Units {
        count: RECIPIENTS as u64,
        unit: "RCPT",
    }
}

fn lookup_all<B: PolicyBackend>(backend: &B, recipients: &AddressBatch, out: &mut Vec<Verdict>) {
    let mut batch = AddressBatch::with_capacity(BATCH, BATCH * 64);
    for start in (0..recipients.len()).step_by(BATCH) {
        fill(&mut batch, recipients, start, BATCH);
        lookup_now(backend, black_box(&batch), out);
    }
}

fn lookup_memory() -> Units {
    let (population, recipients, expected) = population_and_recipients();
    let backend = MemoryBackend::new(population);
    lookups(&backend, &recipients, &expected, measured_lookup_memory)
}

#[inline(never)]
fn measured_lookup_memory(
    backend: &MemoryBackend,
    recipients: &AddressBatch,
    out: &mut Vec<Verdict>,
) {
    lookup_all(backend, recipients, out);
}

fn lookup_fst() -> Units {
    let (population, recipients, expected) = population_and_recipients();
    let dir = tempfile::Builder::new()
        .prefix("bulkbench-icount-")
        .tempdir()
        .expect("a temporary directory");
    let path = dir.path().join("policy.fst");
    bulk_policy_fst::build(&population, &path).expect("fst build");
    drop(population);
    let backend = FstBackend::open(&path).expect("fst open");
    lookups(&backend, &recipients, &expected, measured_lookup_fst)
}

#[inline(never)]
fn measured_lookup_fst(backend: &FstBackend, recipients: &AddressBatch, out: &mut Vec<Verdict>) {
    lookup_all(backend, recipients, out);
}

fn lookup_lmdb() -> Units {
    let (population, recipients, expected) = population_and_recipients();
    let dir = tempfile::Builder::new()
        .prefix("bulkbench-icount-")
        .tempdir()
        .expect("a temporary directory");
    let path = dir.path().join("lmdb");
    bulk_policy_lmdb::build(&population, &path).expect("lmdb build");
    drop(population);
    let backend = LmdbBackend::open(&path).expect("lmdb open");
    lookups(&backend, &recipients, &expected, measured_lookup_lmdb)
}

#[inline(never)]
fn measured_lookup_lmdb(backend: &LmdbBackend, recipients: &AddressBatch, out: &mut Vec<Verdict>) {
    lookup_all(backend, recipients, out);
}
