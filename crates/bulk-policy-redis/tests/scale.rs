//! Load time and lookup cost at a million mailboxes, on a throwaway server and cluster.
//!
//! Ignored by default (it times things); run in release, figures on stderr:
//!
//! ```text
//! cargo test -p bulk-policy-redis --release --test scale -- --ignored --nocapture
//! ```
//!
//! (`BULK_POLICY_REDIS_SCALE=1000000,5000000` picks other sizes; `BULK_POLICY_REDIS_CLUSTER=0`
//! skips the cluster.) The population and the lookups are those of the fst and LMDB scale
//! tests: `bulk_population`'s `PopulationModel` and `RecipientDraws`.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where redis-server or
//! redis-cli is missing, a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, PolicyBackend, Population, Verdict};
use bulk_policy_redis::{RedisBackend, RedisSpec, load};
use bulk_population::{
    NonNegative, PopulationConfig, PopulationModel, RecipientDraws, Share, WorkloadConfig,
};
use common::{Outcome, Runtime, Specs, local_cluster, local_redis, trial};

fn main() {
    let trials = vec![
        // Ignored unless asked for (`--ignored`, `--include-ignored`): it loads a million
        // mailboxes; run it in release, figures on stderr.
        trial("scale_figures", Runtime::MultiThread, scale_figures).with_ignored_flag(true),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

/// Seed of the population and of the lookups.
const SEED: u64 = 1;
/// Served domains.
const DOMAINS: u64 = 1_000;
/// Lookups in flight at once in the concurrent measurement, as a server's connections
/// make them.
const CONCURRENT: usize = 32;

/// The population of the fst and LMDB scale tests.
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

/// About 90% known mailboxes, 5% unknown, 5% foreign; half mixed case, half `+tag`.
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

/// Batch `n` of 100 addresses.
fn batch(n: u64, draws: &RecipientDraws) -> AddressBatch {
    let mut batch = AddressBatch::new();
    for k in 0..100u64 {
        batch.push(draws.recipient(n * 100 + k).address.as_bytes());
    }
    batch
}

fn sizes() -> Vec<usize> {
    match std::env::var("BULK_POLICY_REDIS_SCALE") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("a size"))
            .collect(),
        Err(_) => vec![1_000_000],
    }
}

/// Loads, checks, and times lookups of one size against `spec`.
async fn measure(label: &str, spec: &RedisSpec, mailboxes: usize) {
    let model = population_model(mailboxes);
    let population: Population = model.build();
    let draws = draws(&model);
    let mut reports = 0u32;
    let stats = load(spec, &population, |_| reports += 1).await.unwrap();
    eprintln!(
        "{label}, {mailboxes} mailboxes: load {:.2?} ({:.0} mailboxes/s), {} pipelines, {} \
         progress reports",
        stats.elapsed,
        mailboxes as f64 / stats.elapsed.as_secs_f64(),
        stats.pipelines,
        reports
    );
    let again = load(spec, &population, |_| {}).await.unwrap();
    assert!(again.replaced);
    eprintln!(
        "{label}, {mailboxes} mailboxes: reload over itself {:.2?}",
        again.elapsed
    );

    let backend = RedisBackend::connect(spec).await.unwrap();
    let batches: Vec<AddressBatch> = (0..1_000).map(|n| batch(n, &draws)).collect();
    for batch in &batches[..20] {
        let mut out = Vec::new();
        backend.lookup(batch, &mut out).await.unwrap();
        let expected: Vec<Verdict> = batch.iter().map(|a| population.verdict_of(a)).collect();
        assert_eq!(out, expected);
    }

    // One lookup at a time: the latency of a batch.
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < Duration::from_secs(3) && done < 100_000 {
        let mut out = Vec::new();
        backend
            .lookup(&batches[done % batches.len()], &mut out)
            .await
            .unwrap();
        done += 1;
    }
    let per_batch = started.elapsed() / done as u32;
    eprintln!(
        "{label}, {mailboxes} mailboxes: one at a time, {done} batches of 100: {per_batch:.2?} \
         per batch = {:.0} addresses/s",
        100.0 / per_batch.as_secs_f64()
    );

    // Many in flight, on one multiplexed connection, as a server's sessions make them.
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < Duration::from_secs(3) && done < 1_000_000 {
        let mut outs: Vec<Vec<Verdict>> = vec![Vec::new(); CONCURRENT];
        let lookups = outs.iter_mut().enumerate().map(|(i, out)| {
            let batch = &batches[(done + i) % batches.len()];
            backend.lookup(batch, out)
        });
        for result in futures_util::future::join_all(lookups).await {
            result.unwrap();
        }
        done += CONCURRENT;
    }
    let rate = done as f64 * 100.0 / started.elapsed().as_secs_f64();
    eprintln!(
        "{label}, {mailboxes} mailboxes: {CONCURRENT} in flight, {done} batches of 100: {rate:.0} \
         addresses/s = {:.0} ns/address",
        1e9 / rate
    );
}

async fn scale_figures() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(&dir.path().join("single"))?;
    let specs = Specs::single(&redis);
    for mailboxes in sizes() {
        measure("redis", &specs.next(), mailboxes).await;
    }
    eprintln!(
        "redis: {}",
        common::block_on(info_memory(&redis.url())).unwrap_or_default()
    );
    redis.stop().unwrap();

    if std::env::var("BULK_POLICY_REDIS_CLUSTER").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    let cluster = local_cluster(&dir.path().join("cluster"))?;
    let specs = Specs::cluster(&cluster);
    for mailboxes in sizes() {
        measure("redis-cluster (3 nodes)", &specs.next(), mailboxes).await;
    }
    cluster.stop().unwrap();
    Ok(())
}

/// `used_memory_human` and `used_memory` from INFO memory.
async fn info_memory(url: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(
        info.lines()
            .filter(|l| l.starts_with("used_memory:") || l.starts_with("used_memory_human:"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}
