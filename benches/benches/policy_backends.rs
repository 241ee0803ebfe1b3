//! Lookup cost per RCPT of the three policy backends (`memory`, `fst`, `lmdb`) on one
//! population, through the real batched `PolicyBackend::lookup` path.
//!
//! Groups `policy_backends_1M` (always) and `policy_backends_10M` (only with
//! `BULKBENCH_BENCH_10M=1`, or `=only` for the 10M set alone: its setup takes about 90 s on
//! two cores, most of it the fst build, and the process peaks at about 2.6 GB resident).
//! Each group times, for every backend:
//!
//! - batches of 1 (one `lookup` call per RCPT) and of 100 (one call per 100 RCPTs),
//! - uniform and Zipf (s = 1.0) recipient popularity,
//!
//! as `BACKEND/batchB_POPULARITY`, `Throughput::Elements(1_000)`: one iteration looks up
//! 1,000 RCPTs, so criterion's time per iteration in µs reads as ns per RCPT. Two more,
//! `fill_only/batch1_uniform` and `fill_only/batch100_uniform`, time the loop's batch
//! refills alone (no lookup): the part of every figure that is not the backend's.
//!
//! Each popularity has a pool of 1,000,000 recipients drawn in advance (5% unknown mailboxes
//! of served domains, about 10% in mixed case and/or with a `+tag`, as in `rcpt_path`), back to
//! back in one arena. The timed loop walks through the pool, 1,000 RCPTs per iteration, so
//! the uniform case touches far more of each store than the caches hold, while Zipf keeps
//! its head warm. For each call it refills one reused `AddressBatch` with the next 1 or 100
//! addresses (`clear` + `push`, as a session fills its pending batch; a few ns per RCPT,
//! the same for every backend), then calls `lookup`. The lookup future is polled once with
//! `Waker::noop()` and must be `Ready` (every backend here resolves a batch within its
//! first poll).
//!
//! Setup, untimed, printed to stderr: the population (`bulkbench_benches::population`:
//! `bulk_population::PopulationModel`, 1,000 mailboxes per domain, built into a
//! `Population`; at 1,000,000 mailboxes it is exactly `rcpt_path`'s population, and the
//! first 10,000 uniform recipients are `rcpt_path`'s recipients), then per backend its
//! build time and bytes per mailbox:
//!
//! - memory: growth of the process's anonymous resident memory (`/proc/self/statm`,
//!   resident minus shared pages) across `MemoryBackend::new(population.clone())`, with
//!   glibc's `malloc_trim(0)` before each reading so that reused free heap shows as growth.
//!   Approximate: allocator slack and partial pages blur it by a few bytes per mailbox.
//! - fst: `bulk_policy_fst::build` into a temporary directory under `target/tmp`; the file's
//!   bytes.
//! - lmdb: `bulk_policy_lmdb::build` into the same directory; `data.mdb` plus `lock.mdb`.
//!
//! Before any timing, every backend resolves both whole pools, in batches of 1 and of 100,
//! and each verdict must equal `Population::verdict_of`'s: the three backends agree on every
//! recipient timed.
//!
//! Recipients come from `bulk_population::RecipientDraws` (`bulkbench_benches::recipients`):
//! every draw from an RNG seeded by (seed, index), so the workload is the same on every run
//! and every machine. Zipf ranks are scattered over the mailboxes by a seeded permutation,
//! so popularity is unrelated to domain, key order and hash.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend, Population, Verdict};
use bulk_policy_fst::FstBackend;
use bulk_policy_lmdb::LmdbBackend;
use bulkbench_benches::drive::lookup_now;
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};

use bulk_population::{Popularity, PopulationModel};

/// Recipients drawn per popularity; the timed loop cycles through them.
const POOL: usize = 1_000_000;
/// RCPTs looked up per criterion iteration.
const CHUNK: usize = 1_000;
/// Addresses per `lookup` call.
const BATCHES: [usize; 2] = [1, 100];
/// Set to `1` to add the 10,000,000-mailbox group, to `only` to run it alone.
const ENV_10M: &str = "BULKBENCH_BENCH_10M";

fn popularity_name(popularity: Popularity) -> &'static str {
    match popularity {
        Popularity::Uniform => "uniform",
        Popularity::Zipf => "zipf",
    }
}

/// One popularity's pool of recipients, back to back in one arena.
struct Pool {
    popularity: Popularity,
    /// Every recipient, as written in its RCPT.
    addresses: AddressBatch,
    /// `Population::verdict_of` for every recipient, in order.
    expected: Vec<Verdict>,
}

impl Pool {
    /// The first [`POOL`] recipients of `popularity`, each checked against
    /// `Population::verdict_of`.
    fn build(popularity: Popularity, model: &PopulationModel, population: &Population) -> Self {
        let draws = bulkbench_benches::recipients(model, popularity);
        let mut addresses = AddressBatch::with_capacity(POOL, POOL * 40);
        let mut expected = Vec::with_capacity(POOL);
        for index in 0..POOL as u64 {
            let recipient = draws.recipient(index);
            let verdict = population.verdict_of(recipient.address.as_bytes());
            assert_eq!(verdict, recipient.verdict, "{}", recipient.address);
            addresses.push(recipient.address.as_bytes());
            expected.push(verdict);
        }
        Pool {
            popularity,
            addresses,
            expected,
        }
    }

    /// Refills `batch` with the `size` recipients from `start` (the pool is a whole number
    /// of batches of every size timed), as a session fills its pending batch from a read.
    #[inline]
    fn fill(&self, batch: &mut AddressBatch, start: usize, size: usize) {
        bulkbench_benches::drive::fill(batch, &self.addresses, start, size);
    }

    /// The split of verdicts over the first `n` recipients, and the number of distinct
    /// keys drawn (a Zipf pool repeats its head).
    fn describe(&self, n: usize) -> String {
        let count = |v: Verdict| self.expected[..n].iter().filter(|&&e| e == v).count();
        format!(
            "{} accept, {} opted out, {} unknown, {} not local",
            count(Verdict::Accept),
            count(Verdict::OptedOut),
            count(Verdict::UnknownMailbox),
            count(Verdict::NotLocal),
        )
    }

    fn distinct(&self) -> usize {
        let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for address in self.addresses.iter() {
            seen.insert(address);
        }
        seen.len()
    }
}

/// Checks, untimed, that `backend` gives every recipient of `pool` its reference verdict,
/// in batches of every size timed. Returns the time the batches of 100 took (a first,
/// rough figure printed with the setup; this pass also warms the page cache).
fn verify<B: PolicyBackend>(backend: &B, pool: &Pool) -> Duration {
    let mut took = Duration::ZERO;
    for size in BATCHES {
        let mut verdicts = Vec::with_capacity(POOL);
        let mut batch = AddressBatch::new();
        let started = Instant::now();
        for start in (0..POOL).step_by(size) {
            pool.fill(&mut batch, start, size);
            lookup_now(backend, &batch, &mut verdicts);
        }
        if size == 100 {
            took = started.elapsed();
        }
        assert_eq!(verdicts.len(), pool.expected.len());
        if let Some(i) = (0..verdicts.len()).find(|&i| verdicts[i] != pool.expected[i]) {
            panic!(
                "{} (batches of {size}, {}) answers {:?} for recipient {i} {:?}, verdict_of \
                 says {:?}",
                backend.name(),
                popularity_name(pool.popularity),
                verdicts[i],
                String::from_utf8_lossy(pool.addresses.get(i).unwrap_or_default()),
                pool.expected[i],
            );
        }
    }
    took
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn malloc_trim(pad: usize) -> std::ffi::c_int;
    fn getpagesize() -> std::ffi::c_int;
}

/// The process's anonymous resident memory in bytes (`/proc/self/statm`: resident minus
/// shared pages, so memory-mapped files such as the fst and LMDB stores do not count),
/// after returning free heap pages to the kernel, so that memory the allocator reuses
/// shows as growth.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn anon_rss() -> Option<u64> {
    // SAFETY: glibc functions without preconditions.
    let page = unsafe {
        malloc_trim(0);
        getpagesize()
    };
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (_size, resident, shared) = (fields.next()??, fields.next()??, fields.next()??);
    Some(resident.saturating_sub(shared) * u64::try_from(page).ok()?)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn anon_rss() -> Option<u64> {
    None
}

/// The blocks a directory's or a file's data take on disk (`st_blocks` x 512).
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat");
    if meta.is_dir() {
        std::fs::read_dir(path)
            .expect("list")
            .map(|e| allocated_bytes(&e.expect("entry").path()))
            .sum()
    } else {
        meta.blocks() * 512
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn bench_backend<B: PolicyBackend>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    backend: &B,
    pool: &Pool,
    size: usize,
) {
    assert!(POOL.is_multiple_of(CHUNK) && CHUNK.is_multiple_of(size));
    let calls = CHUNK / size;
    let id = BenchmarkId::new(
        backend.name(),
        format!("batch{size}_{}", popularity_name(pool.popularity)),
    );
    group.bench_function(id, |b| {
        let mut next = 0;
        let mut batch = AddressBatch::with_capacity(size, size * 64);
        let mut verdicts = Vec::with_capacity(size);
        b.iter(|| {
            for _ in 0..calls {
                pool.fill(&mut batch, next, size);
                verdicts.clear();
                lookup_now(backend, black_box(&batch), &mut verdicts);
                next += size;
                if next == POOL {
                    next = 0;
                }
            }
            black_box(&verdicts);
        })
    });
}

/// Builds, measures, checks and times everything for one population size.
fn run_size(c: &mut Criterion, mailboxes: usize, label: &str) {
    let started = Instant::now();
    let model = bulkbench_benches::population(mailboxes as u64);
    let population = model.build();
    let key_bytes: usize = population.mailboxes().map(|(key, _)| key.len()).sum();
    eprintln!(
        "policy_backends {label}: {} domains, {} mailboxes (keys {:.1} bytes on average) built \
         in {:.1?}",
        population.domain_count(),
        population.mailbox_count(),
        key_bytes as f64 / mailboxes as f64,
        started.elapsed(),
    );

    // The memory backend first, while the heap holds nothing freed but the population's own
    // build garbage (which `malloc_trim` returns).
    let rss_before = anon_rss();
    let copy_started = Instant::now();
    let copy = population.clone();
    let copy_took = copy_started.elapsed();
    let memory_started = Instant::now();
    let memory = MemoryBackend::new(copy);
    let memory_took = memory_started.elapsed();
    let rss_after = anon_rss();
    let memory_bytes = rss_before
        .zip(rss_after)
        .map(|(before, after)| after.saturating_sub(before));

    let pool_started = Instant::now();
    let pools: Vec<Pool> = [Popularity::Uniform, Popularity::Zipf]
        .into_iter()
        .map(|p| Pool::build(p, &model, &population))
        .collect();
    eprintln!(
        "policy_backends {label}: 2 pools of {POOL} recipients drawn in {:.1?}",
        pool_started.elapsed()
    );
    for pool in &pools {
        eprintln!(
            "  {:7}: {}; {} distinct addresses; first 10,000: {}",
            popularity_name(pool.popularity),
            pool.describe(POOL),
            pool.distinct(),
            pool.describe(10_000),
        );
    }

    let dir = tempfile::Builder::new()
        .prefix("policy_backends-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary directory under target/tmp");
    let fst_path = dir.path().join("policy.fst");
    let fst_stats = bulk_policy_fst::build(&population, &fst_path).expect("fst build");
    let fst_open_started = Instant::now();
    let fst = FstBackend::open(&fst_path).expect("fst open");
    let fst_open = fst_open_started.elapsed();
    let lmdb_dir = dir.path().join("lmdb");
    let lmdb_stats = bulk_policy_lmdb::build(&population, &lmdb_dir).expect("lmdb build");
    let lmdb_open_started = Instant::now();
    let lmdb = LmdbBackend::open(&lmdb_dir).expect("lmdb open");
    let lmdb_open = lmdb_open_started.elapsed();
    assert_eq!(fst_stats.mailboxes, mailboxes);
    assert_eq!(lmdb_stats.mailboxes, mailboxes);
    drop(population);

    let per_mailbox = |bytes: u64| bytes as f64 / mailboxes as f64;
    eprintln!("policy_backends {label}: build (untimed by criterion)");
    eprintln!(
        "  memory: MemoryBackend::new {:.2?} (plus {:.2?} to clone the population for it); \
         anonymous RSS growth {}",
        memory_took,
        copy_took,
        match memory_bytes {
            Some(b) => format!(
                "{:.1} MiB = {:.1} bytes/mailbox (approximate)",
                mib(b),
                per_mailbox(b)
            ),
            None => "not measured on this platform".to_string(),
        },
    );
    eprintln!(
        "  fst:    build {:.2?}, open {:.2?}; file {} bytes = {:.2} bytes/mailbox ({} bytes \
         allocated)",
        fst_stats.elapsed,
        fst_open,
        fst_stats.bytes,
        per_mailbox(fst_stats.bytes),
        allocated_bytes(&fst_path),
    );
    eprintln!(
        "  lmdb:   build {:.2?}, open {:.2?}; data.mdb + lock.mdb {} bytes = {:.2} bytes/mailbox \
         ({} bytes allocated; map {} MiB)",
        lmdb_stats.elapsed,
        lmdb_open,
        lmdb_stats.bytes_on_disk,
        per_mailbox(lmdb_stats.bytes_on_disk),
        allocated_bytes(&lmdb_dir),
        lmdb_stats.map_bytes >> 20,
    );

    let verify_started = Instant::now();
    for pool in &pools {
        let took = [
            verify(&memory, pool),
            verify(&fst, pool),
            verify(&lmdb, pool),
        ];
        eprintln!(
            "  {:7}: all 3 backends agree with verdict_of on {POOL} recipients, in batches of 1 \
             and of 100 (first pass, batches of 100: memory {:.0} ns, fst {:.0} ns, lmdb {:.0} \
             ns per RCPT)",
            popularity_name(pool.popularity),
            took[0].as_nanos() as f64 / POOL as f64,
            took[1].as_nanos() as f64 / POOL as f64,
            took[2].as_nanos() as f64 / POOL as f64,
        );
    }
    eprintln!(
        "policy_backends {label}: checked in {:.1?}; setup took {:.1?} in all",
        verify_started.elapsed(),
        started.elapsed()
    );

    let mut group = c.benchmark_group(format!("policy_backends_{label}"));
    group.throughput(Throughput::Elements(CHUNK as u64));
    // What the timed loop costs without any lookup: refilling the batch from the pool.
    for size in BATCHES {
        let pool = &pools[0];
        group.bench_function(
            BenchmarkId::new(
                "fill_only",
                format!("batch{size}_{}", popularity_name(pool.popularity)),
            ),
            |b| {
                let mut next = 0;
                let mut batch = AddressBatch::with_capacity(size, size * 64);
                b.iter(|| {
                    for _ in 0..CHUNK / size {
                        pool.fill(&mut batch, next, size);
                        black_box(&batch);
                        next += size;
                        if next == POOL {
                            next = 0;
                        }
                    }
                })
            },
        );
    }
    for pool in &pools {
        for size in BATCHES {
            bench_backend(&mut group, &memory, pool, size);
            bench_backend(&mut group, &fst, pool, size);
            bench_backend(&mut group, &lmdb, pool, size);
        }
    }
    group.finish();
    // Backends, pools and the temporary directory go here, before the next size.
}

fn policy_backends(c: &mut Criterion) {
    let ten_million = std::env::var(ENV_10M).unwrap_or_default();
    let (small, large) = match ten_million.as_str() {
        "" | "0" => (true, false),
        "1" => (true, true),
        "only" => (false, true),
        other => panic!("{ENV_10M}={other:?}: expected 0, 1 or only"),
    };
    if small {
        run_size(c, 1_000_000, "1M");
    } else {
        eprintln!("policy_backends: 1M skipped ({ENV_10M}=only)");
    }
    if large {
        run_size(c, 10_000_000, "10M");
    } else {
        eprintln!("policy_backends: 10M skipped (set {ENV_10M}=1 to run it)");
    }
}

criterion_group! {
    name = benches;
    // Short by default (two shared cores); command-line flags override these.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = policy_backends
}
criterion_main!(benches);
