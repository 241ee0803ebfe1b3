//! Build and lookup figures at 1,000,000 and 10,000,000 mailboxes. Ignored by default; run
//! with `cargo test --release -p bulk-policy-fst --test scale -- --ignored --nocapture`.
//!
//! MemoryBackend's resident memory is not measured here (a test shares its process with
//! the harness, so RSS would not isolate it); only its lookup speed on the same
//! addresses is printed, for comparison.
//!
//! The population and the addresses looked up come from `bulk_population`
//! (`PopulationModel`, `RecipientDraws`), as in the LMDB scale test and the benches.

use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend};
use bulk_policy_fst::{FstBackend, FstLoad};
use bulk_population::{
    NonNegative, PopulationConfig, PopulationModel, RecipientDraws, Share, WorkloadConfig,
};

/// Addresses looked up per measurement, and per batch.
const LOOKUPS: usize = 1_000_000;
const BATCH: usize = 100;
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

/// Batches of addresses drawn uniformly: about 70% known, 20% unknown in a served domain,
/// 10% foreign; 10% of them with a `+tag`, 10% in mixed case.
fn batches(model: &PopulationModel) -> Vec<AddressBatch> {
    let mix = WorkloadConfig {
        unknown_share: Share::new(0.2).unwrap(),
        foreign_share: Share::new(0.1).unwrap(),
        subaddress_share: Share::new(0.1).unwrap(),
        mixed_case_share: Share::new(0.1).unwrap(),
        ..WorkloadConfig::default()
    };
    let draws = RecipientDraws::new(model, &mix, SEED);
    (0..LOOKUPS / BATCH)
        .map(|b| {
            let mut batch = AddressBatch::with_capacity(BATCH, BATCH * 40);
            for j in 0..BATCH {
                let recipient = draws.recipient((b * BATCH + j) as u64);
                batch.push(recipient.address.as_bytes());
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
    let model = population_model(mailboxes);
    let p = model.build();
    let generated = started.elapsed();

    let stats = bulk_policy_fst::build(&p, &path).unwrap();
    assert_eq!(
        (stats.mailboxes, stats.domains),
        (mailboxes, DOMAINS as usize)
    );

    let started = Instant::now();
    let backend = FstBackend::open(&path).unwrap();
    let opened = started.elapsed();
    assert_eq!(backend.len(), mailboxes);

    let started = Instant::now();
    let mapped = FstBackend::open_with(&path, FstLoad::Map).unwrap();
    let opened_mapped = started.elapsed();

    let batches = batches(&model);
    let (fst_elapsed, fst_verdicts) = time_lookups(&backend, &batches).await;
    let (mapped_elapsed, mapped_verdicts) = time_lookups(&mapped, &batches).await;
    assert!(
        fst_verdicts == mapped_verdicts,
        "read and mapped tables disagree"
    );
    let memory = MemoryBackend::new(p);
    let (memory_elapsed, memory_verdicts) = time_lookups(&memory, &batches).await;
    assert!(fst_verdicts == memory_verdicts, "fst and memory disagree");

    println!(
        "{mailboxes} mailboxes, {DOMAINS} domains: population generated in {generated:.2?}; \
         fst build {:.2?}, {} bytes = {:.2} bytes/mailbox; open (incl. checksum) read \
         {opened:.2?}, mapped {opened_mapped:.2?}; lookup read {:.0} ns/address, mapped {:.0} \
         ns/address (memory backend {:.0} ns/address, batches of {BATCH}; its RSS is not \
         measured here)",
        stats.elapsed,
        stats.bytes,
        stats.bytes as f64 / mailboxes as f64,
        ns_per_lookup(fst_elapsed),
        ns_per_lookup(mapped_elapsed),
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
