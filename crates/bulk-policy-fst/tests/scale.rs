//! Build and lookup figures at 1,000,000 and 10,000,000 mailboxes. Ignored by default; run
//! with `cargo test --release -p bulk-policy-fst --test scale -- --ignored --nocapture`.
//!
//! MemoryBackend's resident memory is not measured here (a test shares its process with
//! the harness, so RSS would not isolate it); only its lookup speed on the same
//! addresses is printed, for comparison.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bulk_policy::conformance::{SCALE_DOMAINS, scale_population, splitmix, write_scale_address};
use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend};
use bulk_policy_fst::FstBackend;

/// Addresses looked up per measurement, and per batch.
const LOOKUPS: usize = 1_000_000;
const BATCH: usize = 100;

/// Batches of addresses: 70% known (some subaddressed and upper-cased), 20% unknown in a
/// served domain, 10% foreign.
fn batches(mailboxes: usize) -> Vec<AddressBatch> {
    let mut address = String::new();
    (0..LOOKUPS / BATCH)
        .map(|b| {
            let mut batch = AddressBatch::with_capacity(BATCH, BATCH * 32);
            for j in 0..BATCH {
                let r = splitmix((b * BATCH + j) as u64 ^ 0xabcd);
                let i = (r >> 8) as usize % mailboxes;
                match r % 10 {
                    0..=5 => write_scale_address(&mut address, i),
                    6 => {
                        write_scale_address(&mut address, i);
                        address = address.replace('@', "+news@").to_uppercase();
                    }
                    7 | 8 => write_scale_address(&mut address, mailboxes + i),
                    _ => {
                        address.clear();
                        write!(address, "user{i}.x@elsewhere.example").unwrap();
                    }
                }
                batch.push(address.as_bytes());
            }
            batch
        })
        .collect()
}

async fn time_lookups(
    backend: &impl PolicyBackend,
    batches: &[AddressBatch],
) -> (Duration, Vec<bulk_policy::Verdict>) {
    let mut out = Vec::with_capacity(LOOKUPS);
    let started = Instant::now();
    for batch in batches {
        backend.lookup(batch, &mut out).await.unwrap();
    }
    (started.elapsed(), out)
}

fn ns_per_lookup(elapsed: Duration) -> f64 {
    elapsed.as_nanos() as f64 / LOOKUPS as f64
}

async fn measure(mailboxes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.fst");

    let started = Instant::now();
    let p = scale_population(mailboxes);
    let generated = started.elapsed();

    let stats = bulk_policy_fst::build(&p, &path).unwrap();
    assert_eq!((stats.mailboxes, stats.domains), (mailboxes, SCALE_DOMAINS));

    let started = Instant::now();
    let backend = FstBackend::open(&path).unwrap();
    let opened = started.elapsed();
    assert_eq!(backend.len(), mailboxes);

    let batches = batches(mailboxes);
    let (fst_elapsed, fst_verdicts) = time_lookups(&backend, &batches).await;
    let memory = MemoryBackend::new(p);
    let (memory_elapsed, memory_verdicts) = time_lookups(&memory, &batches).await;
    assert!(fst_verdicts == memory_verdicts, "fst and memory disagree");

    println!(
        "{mailboxes} mailboxes, {SCALE_DOMAINS} domains: population generated in {generated:.2?}; \
         fst build {:.2?}, {} bytes = {:.2} bytes/mailbox; open (incl. checksum) {opened:.2?}; \
         lookup {:.0} ns/address (memory backend {:.0} ns/address, batches of {BATCH}; its \
         RSS is not measured here)",
        stats.elapsed,
        stats.bytes,
        stats.bytes as f64 / mailboxes as f64,
        ns_per_lookup(fst_elapsed),
        ns_per_lookup(memory_elapsed),
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "builds 1M mailboxes; run in release with --ignored --nocapture"]
async fn build_one_million() {
    measure(1_000_000).await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "builds 10M mailboxes (several GB of memory); run in release with --ignored --nocapture"]
async fn build_ten_million() {
    measure(10_000_000).await;
}
