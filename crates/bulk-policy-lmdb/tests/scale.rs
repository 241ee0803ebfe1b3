//! Sizes and speed at a million mailboxes and more.
//!
//! `map_size_sanity_at_one_million` runs with the other tests. The figures come from the
//! ignored test, in release:
//!
//! ```text
//! cargo test -p bulk-policy-lmdb --release --test scale -- --ignored --nocapture
//! ```
//!
//! (`BULK_POLICY_LMDB_SCALE=1000000,5000000` picks other sizes.)
//!
//! The population and the addresses looked up come from `bulk_population`
//! (`PopulationModel`, `RecipientDraws`), as in the fst scale test and the benches.

use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend, Verdict};
use bulk_policy_lmdb::{LmdbBackend, MIN_MAP_BYTES, build};
use bulk_population::{
    NonNegative, PopulationConfig, PopulationModel, RecipientDraws, Share, WorkloadConfig,
};

/// Seed of the population and of the lookups.
const SEED: u64 = 1;
/// Served domains.
const DOMAINS: u64 = 1_000;

/// The population of the fst and LMDB scale tests (declared alike in both, so their figures
/// compare): [`DOMAINS`] domains of equal size, about half opt-in; mailboxes about 40% `in`,
/// 30% `out` and 30% `default`.
fn population_model(mailboxes: usize) -> PopulationModel {
    let config = PopulationConfig {
        mailboxes: (mailboxes as u64).try_into().unwrap(),
        domains: DOMAINS.try_into().unwrap(),
        domain_size_zipf: NonNegative::new(0.0).unwrap(),
        opt_in_domain_share: Share::new(0.5).unwrap(),
        explicit_share: Share::new(0.7).unwrap(),
        explicit_opt_in_share: Share::new(4.0 / 7.0).unwrap(),
    };
    PopulationModel::new(&config, SEED)
}

/// The lookups: drawn uniformly, about 90% known mailboxes, 5% unknown mailboxes of served
/// domains, 5% of foreign domains; half in mixed case, half with a `+tag`.
fn draws(model: &PopulationModel) -> RecipientDraws {
    let mix = WorkloadConfig {
        unknown_share: Share::new(0.05).unwrap(),
        foreign_share: Share::new(0.05).unwrap(),
        subaddress_share: Share::new(0.5).unwrap(),
        mixed_case_share: Share::new(0.5).unwrap(),
        ..WorkloadConfig::default()
    };
    RecipientDraws::new(model, &mix, SEED)
}

/// Batch `n` of 100 addresses: recipients `100 n` to `100 n + 99`.
fn batch(n: u64, draws: &RecipientDraws) -> AddressBatch {
    let mut batch = AddressBatch::new();
    for k in 0..100u64 {
        batch.push(draws.recipient(n * 100 + k).address.as_bytes());
    }
    batch
}

#[test]
fn map_size_sanity_at_one_million() {
    const MAILBOXES: usize = 1_000_000;
    let model = population_model(MAILBOXES);
    let population = model.build();
    let dir = tempfile::tempdir().unwrap();
    let stats = build(&population, dir.path()).unwrap();
    assert_eq!(
        (stats.mailboxes, stats.domains),
        (MAILBOXES, DOMAINS as usize)
    );
    let per_mailbox = stats.bytes_on_disk as f64 / MAILBOXES as f64;
    // Keys average 28 bytes; appended B-tree pages are full: about 41 bytes a mailbox.
    assert!(
        (25.0..60.0).contains(&per_mailbox),
        "{per_mailbox} bytes per mailbox"
    );
    // Headroom: at least 64 MiB and three times the data, yet not absurd.
    assert!(stats.map_bytes >= MIN_MAP_BYTES);
    assert!(stats.map_bytes >= 3 * stats.bytes_on_disk, "{stats:?}");
    assert!(
        stats.map_bytes <= 8 * stats.bytes_on_disk.max(MIN_MAP_BYTES),
        "{stats:?}"
    );

    let backend = LmdbBackend::open(dir.path()).unwrap();
    assert_eq!(backend.len().unwrap(), MAILBOXES);
    let batch = batch(0, &draws(&model));
    let mut out = Vec::new();
    backend.lookup_batch(&batch, &mut out).unwrap();
    for (address, verdict) in batch.iter().zip(&out) {
        assert_eq!(
            *verdict,
            population.verdict_of(address),
            "{:?}",
            String::from_utf8_lossy(address)
        );
    }

    // A rebuild in place fits beside the old contents without growing the map.
    let again = build(&population, dir.path()).unwrap();
    assert!(again.replaced);
    assert_eq!(again.map_bytes, stats.map_bytes);
}

/// Batches of 100 addresses resolved per second by `lookup` on one thread, over about
/// `duration`, cycling through 1,000 different batches; and how many batches ran.
fn lookup_rate(
    draws: &RecipientDraws,
    duration: Duration,
    mut lookup: impl FnMut(&AddressBatch, &mut Vec<Verdict>),
) -> (f64, u64) {
    let batches: Vec<AddressBatch> = (0..1_000).map(|n| batch(n, draws)).collect();
    let mut out = Vec::with_capacity(100);
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < duration {
        for batch in &batches {
            out.clear();
            lookup(batch, &mut out);
        }
        done += batches.len() as u64;
    }
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

#[test]
#[ignore = "builds 1M and 10M mailboxes: run in release, figures on stderr"]
fn scale_figures() {
    // BULK_POLICY_LMDB_SCALE=1000000,5000000 picks other sizes.
    let sizes: Vec<usize> = match std::env::var("BULK_POLICY_LMDB_SCALE") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("a size"))
            .collect(),
        Err(_) => vec![1_000_000, 10_000_000],
    };
    for mailboxes in sizes {
        let started = Instant::now();
        let model = population_model(mailboxes);
        let population = model.build();
        let populate = started.elapsed();
        let draws = draws(&model);
        let dir = tempfile::tempdir().unwrap();
        let stats = build(&population, dir.path()).unwrap();
        let backend = LmdbBackend::open(dir.path()).unwrap();
        // Check a few batches against the reference before timing.
        for n in 0..10 {
            let batch = batch(n, &draws);
            let mut out = Vec::new();
            backend.lookup_batch(&batch, &mut out).unwrap();
            let expected: Vec<Verdict> = batch.iter().map(|a| population.verdict_of(a)).collect();
            assert_eq!(out, expected);
        }
        // Replacing the contents while the backend is open: one transaction.
        let rebuilt = build(&population, dir.path()).unwrap();
        assert!(rebuilt.replaced);
        eprintln!(
            "{mailboxes} mailboxes: rebuild in place {:.2?}, {} bytes on disk after",
            rebuilt.elapsed, rebuilt.bytes_on_disk
        );
        let (batches_per_sec, batches) =
            lookup_rate(&draws, Duration::from_secs(3), |batch, out| {
                backend.lookup_batch(batch, out).unwrap()
            });
        eprintln!(
            "{mailboxes} mailboxes: population {populate:.2?}, build {:.2?}, {} bytes on disk \
             ({:.1} per mailbox), map {} MiB; lmdb lookups: {batches} batches of 100, \
             {batches_per_sec:.0} batches/s = {:.0} addresses/s = {:.0} ns/address",
            stats.elapsed,
            stats.bytes_on_disk,
            stats.bytes_on_disk as f64 / mailboxes as f64,
            stats.map_bytes >> 20,
            batches_per_sec * 100.0,
            1e9 / (batches_per_sec * 100.0),
        );

        // Baseline: the in-memory backend on the same population and batches.
        let memory = MemoryBackend::new(population);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (batches_per_sec, _) = lookup_rate(&draws, Duration::from_secs(2), |batch, out| {
            runtime.block_on(memory.lookup(batch, out)).unwrap()
        });
        eprintln!(
            "{mailboxes} mailboxes: memory baseline {:.0} addresses/s = {:.0} ns/address",
            batches_per_sec * 100.0,
            1e9 / (batches_per_sec * 100.0),
        );
    }
}
