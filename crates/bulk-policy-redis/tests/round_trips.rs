//! One round trip per batch: `round_trips()` goes up by one per lookup on a server
//! whatever the batch holds, and a proxy between backend and Redis sees one request burst
//! per lookup, so a 100-RCPT batch costs one network delay, not 100. In a cluster, one
//! pipeline per slot of the batch, all sent at once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, NormalizeConfig, PolicyBackend, Population, Verdict};
use bulk_policy_redis::{RedisBackend, RedisSpec, load};
use common::{Proxy, Specs, local_cluster, local_redis};
use redis::cluster_routing::Slot;

/// Domains in the population, and in a batch.
const DOMAINS: usize = 50;

/// 50 domains, half opt-in, with mailboxes `m0` to `m3` of every preference.
fn population() -> Population {
    let mut text = String::new();
    for d in 0..DOMAINS {
        let regime = if d % 2 == 0 { "opt-in" } else { "opt-out" };
        text.push_str(&format!("@d{d}.example\t{regime}\n"));
        for (m, preference) in ["in", "out", "default"].iter().enumerate() {
            text.push_str(&format!("m{m}@d{d}.example\t{preference}\n"));
        }
    }
    Population::parse(text.as_bytes(), NormalizeConfig::default()).unwrap()
}

/// 100 RCPTs over every domain: known, unknown and foreign mailboxes, mixed case, tags.
fn batch() -> AddressBatch {
    let addresses: Vec<String> = (0..100)
        .map(|i| match i % 5 {
            0 => format!("m0@d{}.example", i % DOMAINS),
            1 => format!("M1+tag@D{}.example", i % DOMAINS),
            2 => format!("m2@d{}.example", i % DOMAINS),
            3 => format!("nobody@d{}.example", i % DOMAINS),
            _ => format!("m0@foreign{i}.example"),
        })
        .collect();
    addresses.iter().map(|a| a.as_bytes()).collect()
}

/// Looks `batch` up and checks every verdict against the reference.
async fn checked_lookup(backend: &RedisBackend, population: &Population, batch: &AddressBatch) {
    let mut out = Vec::new();
    backend.lookup(batch, &mut out).await.unwrap();
    let expected: Vec<Verdict> = batch.iter().map(|a| population.verdict_of(a)).collect();
    assert_eq!(out, expected);
}

#[tokio::test]
async fn a_batch_is_one_round_trip_on_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = local_redis(dir.path()) else {
        return;
    };
    let spec = Specs::single(&redis).next();
    let population = population();
    load(&spec, &population, |_| {}).await.unwrap();

    // A proxy that delays every chunk by 20 ms each way.
    let delay = Duration::from_millis(20);
    let proxy = Proxy::start(redis.port(), delay).await;
    let through = RedisSpec {
        nodes: vec![proxy.url()],
        ..spec
    };
    let backend = RedisBackend::connect(&through).await.unwrap();
    let batch = batch();
    for _ in 0..3 {
        let (trips, turns) = (backend.round_trips(), proxy.turns());
        let started = Instant::now();
        checked_lookup(&backend, &population, &batch).await;
        let elapsed = started.elapsed();
        assert_eq!(backend.round_trips() - trips, 1);
        assert_eq!(proxy.turns() - turns, 1, "requests seen by the proxy");
        // Printed, not asserted: about 2 delays (one each way), where one request per
        // RCPT would take 200.
        eprintln!(
            "100 RCPTs over {DOMAINS} domains through a {delay:?} proxy: {elapsed:?}, \
             one round trip"
        );
    }
    // Nothing to ask, nothing sent.
    let unaskable: AddressBatch = ["no-at-sign", "", "@x"]
        .iter()
        .map(|a| a.as_bytes())
        .collect();
    let mut out = Vec::new();
    let trips = backend.round_trips();
    backend.lookup(&unaskable, &mut out).await.unwrap();
    assert_eq!(out, [Verdict::NotLocal; 3]);
    assert_eq!(backend.round_trips(), trips);
    redis.stop().unwrap();
}

#[tokio::test]
async fn a_batch_is_one_pipeline_per_slot_in_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = local_cluster(dir.path()) else {
        return;
    };
    let spec = Specs::cluster(&cluster).next();
    let population = population();
    load(&spec, &population, |_| {}).await.unwrap();
    let backend = RedisBackend::connect(&spec).await.unwrap();

    let batch = batch();
    // The slots the batch's served domains hash to (foreign ones are asked too).
    let slots: HashSet<Slot> = batch
        .iter()
        .map(|a| {
            let address = std::str::from_utf8(a).unwrap().to_ascii_lowercase();
            let domain = address.rsplit_once('@').unwrap().1.to_string();
            Slot::for_key(format!("{}:{{{domain}}}", spec.prefix))
        })
        .collect();
    let trips = backend.round_trips();
    checked_lookup(&backend, &population, &batch).await;
    assert_eq!(backend.round_trips() - trips, slots.len() as u64);
    eprintln!(
        "100 RCPTs over {} domains in a cluster of 3: {} pipelines (one per slot), sent at once",
        DOMAINS + 20,
        slots.len()
    );
    cluster.stop().unwrap();
}
