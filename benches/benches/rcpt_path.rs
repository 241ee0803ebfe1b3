//! The server's RCPT hot path without sockets: a pipelined read of 10,000 `RCPT TO:` lines
//! through parser, session state machine, memory backend and reply encoder, with naive
//! baselines in the same group.
//!
//! Group `rcpt_path`, throughput 10,000 elements (RCPTs) per iteration:
//!
//! - `full_path`: `Session::advance` over the 10,000 lines, the memory backend's batched
//!   `lookup` of `Session::pending`, `Session::resolve`, `Session::flush` into a reused
//!   buffer: what a connection does with one read, minus the socket calls.
//! - `bare_hashmap_lookup`: the floor for the lookup: one `FxHashMap<Box<[u8]>, u8>` probe
//!   per recipient, keys normalized beforehand (the hasher the memory backend uses).
//! - `bare_std_hashmap_lookup`: the same with std's `HashMap` and its default SipHash.
//! - `parse_only`: `bulk_proto::parse_command` on each line (CRLF already stripped).
//! - `smtp_proto_parse`: the same lines, CRLF included, through `smtp-proto` (Stalwart's
//!   parser), a reference for what a fast SMTP parser costs.
//!
//! `full_path` reuses one session, as a long-lived connection does: between iterations,
//! untimed, `RSET` and `BULK FROM:` reopen the transaction (criterion's `iter_custom`).
//!
//! Group `rcpt_lookup` splits the lookup to show where `full_path` spends its time:
//! `session_without_lookup` (the same run with verdicts given), `memory_backend_lookup`
//! (the batched lookup alone), `memory_backend_lookup_by_100` (the same in batches of
//! 100, as pipelined reads of one transaction give), `normalize_only`, and the
//! normalize-then-probe pattern done
//! interleaved (one address at a time, as the memory backend does) or in two phases (every
//! key first, then every probe).
//!
//! Group `simulate_ratio` sets `bulkbench simulate`'s cost per RCPT beside the hot path's,
//! both in thread CPU time, measured back to back (see `simulate_ratio` below).
//!
//! The population (1,000,000 mailboxes in 1,000 domains) and the recipients are built in
//! process, deterministically, by `bulkbench_benches` with `bulk_population`'s
//! `PopulationModel` and `RecipientDraws`: every draw comes from an RNG seeded by (seed,
//! index of the thing drawn), so the workload is the same on every run and machine.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend, Population, Verdict};
use bulk_proto::{Command, ForwardPath};
use bulkbench_benches::drive::{FullPath, REOPEN, lookup_now};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rustc_hash::FxHashMap;

/// RCPT lines per iteration: one pipelined read.
const RCPTS: usize = 10_000;
/// Mailboxes, in 1,000 domains (`bulkbench_benches::population`).
const MAILBOXES: u64 = 1_000_000;

use bulk_population::Popularity;

/// The population, and the recipients drawn.
struct Workload {
    population: Population,
    recipients: Vec<String>,
    /// The pipelined read: one `RCPT TO:<...>\r\n` per recipient.
    stream: Vec<u8>,
}

impl Workload {
    fn build() -> Self {
        let model = bulkbench_benches::population(MAILBOXES);
        let population = model.build();
        let draws = bulkbench_benches::recipients(&model, Popularity::Uniform);
        let recipients: Vec<String> = (0..RCPTS as u64)
            .map(|index| {
                let recipient = draws.recipient(index);
                assert_eq!(
                    population.verdict_of(recipient.address.as_bytes()),
                    recipient.verdict,
                    "{}",
                    recipient.address
                );
                recipient.address
            })
            .collect();
        let mut stream = Vec::new();
        for address in &recipients {
            stream.extend_from_slice(b"RCPT TO:<");
            stream.extend_from_slice(address.as_bytes());
            stream.extend_from_slice(b">\r\n");
        }
        Workload {
            population,
            recipients,
            stream,
        }
    }
}

/// The verdict a RCPT reply of a BULK transaction stands for (harvest-resistant mode off).
fn verdict_of_reply(line: &[u8]) -> Verdict {
    match line {
        b"250 2.1.5 Recipient ok" => Verdict::Accept,
        b"550 5.7.1 Recipient does not accept bulk mail" => Verdict::OptedOut,
        b"550 5.1.1 Mailbox unknown" => Verdict::UnknownMailbox,
        b"554 5.7.1 Relay access denied" => Verdict::NotLocal,
        other => panic!("unexpected RCPT reply {:?}", String::from_utf8_lossy(other)),
    }
}

/// Checks, outside timing, that one run answers every RCPT with its reference verdict.
fn check_full_path(path: &mut FullPath<'_>, work: &Workload) {
    path.run(&work.stream);
    let expected: Vec<Verdict> = work
        .recipients
        .iter()
        .map(|a| work.population.verdict_of(a.as_bytes()))
        .collect();
    assert_eq!(
        path.verdicts, expected,
        "backend verdicts differ from verdict_of"
    );
    let text = &path.out;
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), RCPTS, "one reply line per RCPT");
    for (i, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r\n").expect("CRLF line ends");
        assert_eq!(
            verdict_of_reply(line),
            expected[i],
            "reply {i} for {}",
            work.recipients[i]
        );
    }
    let count = |v: Verdict| expected.iter().filter(|&&e| e == v).count();
    let variants = work
        .recipients
        .iter()
        .filter(|a| a.contains('+') || a.bytes().any(|b| b.is_ascii_uppercase()))
        .count();
    eprintln!(
        "rcpt_path: {} domains, {} mailboxes; {} RCPTs ({} bytes): {} accept, {} opted out, \
         {} unknown, {} not local; {} mixed case or +tag",
        work.population.domain_count(),
        work.population.mailbox_count(),
        work.recipients.len(),
        work.stream.len(),
        count(Verdict::Accept),
        count(Verdict::OptedOut),
        count(Verdict::UnknownMailbox),
        count(Verdict::NotLocal),
        variants,
    );
    path.feed(REOPEN);
}

/// The baseline map: normalized key -> verdict as a byte, as the memory backend folds it.
fn bare_map(population: &Population) -> FxHashMap<Box<[u8]>, u8> {
    let mut map = FxHashMap::default();
    map.reserve(population.mailbox_count());
    for (key, preference) in population.mailboxes() {
        let at = last_at(key);
        let regime = population.regime(&key[at + 1..]).expect("served domain");
        map.insert(Box::from(key), preference.verdict(regime) as u8);
    }
    map
}

fn last_at(key: &[u8]) -> usize {
    key.iter()
        .rposition(|&b| b == b'@')
        .expect("a key has an '@'")
}

fn rcpt_path(c: &mut Criterion) {
    let started = Instant::now();
    let work = Workload::build();
    let backend = MemoryBackend::new(work.population.clone());
    let map = bare_map(&work.population);
    let normalize = work.population.normalize_config();
    let keys: Vec<Box<[u8]>> = work
        .recipients
        .iter()
        .map(|a| {
            let mut key = Vec::new();
            normalize
                .normalize_into(a.as_bytes(), &mut key)
                .expect("a key");
            key.into_boxed_slice()
        })
        .collect();
    let mut path = FullPath::new(&backend, RCPTS as u32);
    check_full_path(&mut path, &work);

    // The population is only needed for checks: free it before measuring.
    let mut work = work;
    let stream = std::mem::take(&mut work.stream);
    let recipients = std::mem::take(&mut work.recipients);
    drop(work);
    // The command lines of the stream, CRLF included.
    let lines: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
    let bare_lines: Vec<&[u8]> = lines.iter().map(|l| &l[..l.len() - 2]).collect();
    // Both parsers must read the same recipient from every line.
    for (line, bare) in lines.iter().zip(&bare_lines) {
        let ours = match bulk_proto::parse_command(bare) {
            Ok(Command::Rcpt {
                to: ForwardPath::Mailbox(mailbox),
            }) => mailbox,
            other => panic!(
                "parse_command({:?}) = {other:?}",
                String::from_utf8_lossy(bare)
            ),
        };
        match smtp_proto::Request::parse(&mut line.iter()) {
            Ok(smtp_proto::Request::Rcpt { to }) => assert_eq!(to.address.as_bytes(), ours),
            other => panic!(
                "smtp-proto on {:?}: {other:?}",
                String::from_utf8_lossy(line)
            ),
        }
    }
    // Known-key hits of the baseline agree with the backend's verdicts.
    for (key, verdict) in keys.iter().zip(&path.verdicts) {
        if let Some(&v) = map.get(key) {
            assert_eq!(v, *verdict as u8);
        } else {
            assert_eq!(*verdict, Verdict::UnknownMailbox);
        }
    }
    eprintln!(
        "rcpt_path: workload built and checked in {:.1?}",
        started.elapsed()
    );

    let mut group = c.benchmark_group("rcpt_path");
    group.throughput(Throughput::Elements(RCPTS as u64));

    group.bench_function("full_path", |b| {
        let base = Instant::now();
        b.iter_custom(|iters| path.time_runs(&stream, iters, || base.elapsed()))
    });

    group.bench_function("bare_hashmap_lookup", |b| {
        b.iter(|| {
            let mut sum = 0u32;
            for key in &keys {
                sum += u32::from(map.get(black_box(&**key)).copied().unwrap_or(0xff));
            }
            sum
        })
    });

    // The same probe through std's `HashMap` and its default SipHash: what "a bare HashMap
    // lookup" costs without the fast hasher the memory backend uses.
    let std_map: std::collections::HashMap<Box<[u8]>, u8> =
        map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    group.bench_function("bare_std_hashmap_lookup", |b| {
        b.iter(|| {
            let mut sum = 0u32;
            for key in &keys {
                sum += u32::from(std_map.get(black_box(&**key)).copied().unwrap_or(0xff));
            }
            sum
        })
    });

    group.bench_function("parse_only", |b| {
        b.iter(|| {
            for line in &bare_lines {
                let _ = black_box(bulk_proto::parse_command(black_box(line)));
            }
        })
    });

    group.bench_function("smtp_proto_parse", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(smtp_proto::Request::parse(&mut black_box(line).iter()));
            }
        })
    });

    group.finish();

    // Where the lookup's time goes (see benches/README.md): the same 10,000 recipients,
    // raw addresses in one batch as `Session::pending` holds them.
    let batch: AddressBatch = recipients.iter().map(|a| a.as_bytes()).collect();
    let verdict_map: FxHashMap<Box<[u8]>, Verdict> = map
        .iter()
        .map(|(k, &v)| (k.clone(), VERDICTS[usize::from(v)]))
        .collect();
    let mut group = c.benchmark_group("rcpt_lookup");
    group.throughput(Throughput::Elements(RCPTS as u64));

    group.bench_function("session_without_lookup", |b| {
        let verdicts = path.verdicts.clone();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                path.feed(REOPEN);
                let start = Instant::now();
                path.run_without_lookup(black_box(&stream), &verdicts);
                total += start.elapsed();
                black_box(&path.out);
            }
            total
        })
    });

    group.bench_function("memory_backend_lookup", |b| {
        let mut verdicts = Vec::with_capacity(RCPTS);
        b.iter(|| {
            verdicts.clear();
            let mut cx = Context::from_waker(Waker::noop());
            let mut lookup = pin!(backend.lookup(black_box(&batch), &mut verdicts));
            let Poll::Ready(result) = lookup.as_mut().poll(&mut cx) else {
                panic!("not ready");
            };
            result.expect("no failure");
        })
    });

    // The same lookups in batches of 100, the size of a pipelined read of one transaction
    // (`rejection.toml`'s 100 recipients): where the prefetch pipeline's start and end are a
    // sixth of every batch rather than a hundredth of a percent.
    let batches: Vec<AddressBatch> = recipients
        .chunks(100)
        .map(|chunk| chunk.iter().map(|a| a.as_bytes()).collect())
        .collect();
    group.bench_function("memory_backend_lookup_by_100", |b| {
        let mut verdicts = Vec::with_capacity(100);
        b.iter(|| {
            for batch in &batches {
                verdicts.clear();
                lookup_now(&backend, black_box(batch), &mut verdicts);
                black_box(&verdicts);
            }
        })
    });

    group.bench_function("normalize_only", |b| {
        let mut scratch = Vec::with_capacity(256);
        b.iter(|| {
            for address in batch.iter() {
                let _ = black_box(normalize.normalize_into(black_box(address), &mut scratch));
            }
        })
    });

    group.bench_function("normalize_probe_interleaved", |b| {
        let mut scratch = Vec::with_capacity(256);
        let mut verdicts = Vec::with_capacity(RCPTS);
        b.iter(|| {
            verdicts.clear();
            for address in batch.iter() {
                let verdict = match normalize.normalize_into(address, &mut scratch) {
                    Ok(_) => verdict_map.get(scratch.as_slice()).copied(),
                    Err(_) => None,
                };
                verdicts.push(verdict.unwrap_or(Verdict::UnknownMailbox));
            }
            black_box(&verdicts);
        })
    });

    group.bench_function("normalize_then_probe", |b| {
        let mut scratch = Vec::with_capacity(256);
        let mut keys = AddressBatch::with_capacity(RCPTS, stream.len());
        let mut verdicts = Vec::with_capacity(RCPTS);
        b.iter(|| {
            keys.clear();
            for address in batch.iter() {
                match normalize.normalize_into(address, &mut scratch) {
                    Ok(_) => keys.push(&scratch),
                    Err(_) => keys.push(b""),
                }
            }
            verdicts.clear();
            verdicts.extend(keys.iter().map(|key| {
                verdict_map
                    .get(key)
                    .copied()
                    .unwrap_or(Verdict::UnknownMailbox)
            }));
            black_box(&verdicts);
        })
    });

    group.finish();

    simulate_ratio(c, &mut path, &stream);
}

/// Sessions of `quick` that `simulate_quick` replays per iteration (about 25,000 RCPTs).
const SIMULATE_SESSIONS: u64 = 1_000;

/// Group `simulate_ratio`: `simulate`'s cost per RCPT against the hot path's, both in
/// thread CPU time and measured one after the other in the same process, so that their
/// ratio (issue: simulate at most 1.5x the hot path) is taken on one machine state.
///
/// - `hot_path`: `full_path` again, timed with the thread's CPU clock instead of the wall
///   clock; 10,000 RCPTs per iteration.
/// - `simulate_quick`: `bulk_loadgen::simulate::simulate` on the first 1,000 sessions of
///   `scenarios/quick.toml` (its population and workload, strict verification, one rayon
///   thread); the time is the thread CPU simulate itself reports, which includes the
///   client script's encoding, as `bulkbench simulate` does. Its RCPTs per iteration are the
///   group's throughput for this function (criterion stores it in `benchmark.json`).
fn simulate_ratio(c: &mut Criterion, path: &mut FullPath<'_>, stream: &[u8]) {
    use bulk_loadgen::simulate::{session_config, simulate, thread_cpu};
    use bulk_loadgen::{Expectations, VerifyMode};

    // quick is sized in time: the first sessions of its pool, run once.
    let (scenario, model, replay) = bulkbench_benches::quick_sessions(SIMULATE_SESSIONS);
    let backend = MemoryBackend::new(model.build());
    let rcpts = replay.rcpt_count();
    let config = session_config(&scenario, &replay);
    let expectations = Expectations::of(&scenario.server);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let run =
        || pool.install(|| simulate(&replay, &backend, config, expectations, VerifyMode::Strict));
    let check = run();
    assert_eq!(
        (check.rcpts, check.mismatches.total, check.failed_sessions),
        (rcpts, 0, 0),
        "simulate answers every RCPT as the population says"
    );

    let mut group = c.benchmark_group("simulate_ratio");
    group.throughput(Throughput::Elements(RCPTS as u64));
    group.bench_function("hot_path", |b| {
        b.iter_custom(|iters| path.time_runs(stream, iters, thread_cpu))
    });
    group.throughput(Throughput::Elements(rcpts));
    group.bench_function("simulate_quick", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run().cpu).sum())
    });
    group.finish();
}

/// `Verdict as u8` back to the verdict (declaration order).
const VERDICTS: [Verdict; 4] = [
    Verdict::Accept,
    Verdict::OptedOut,
    Verdict::UnknownMailbox,
    Verdict::NotLocal,
];

criterion_group!(benches, rcpt_path);
criterion_main!(benches);
