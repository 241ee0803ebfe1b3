//! One round trip per batch: `round_trips()` goes up by one per lookup on a server
//! whatever the batch holds, and a proxy between backend and Redis sees one request burst
//! per lookup, so a 100-RCPT batch costs one network delay, not 100. In a cluster, one
//! pipeline per node, all sent at once; one per slot when a slot has moved.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where redis-server or
//! redis-cli is missing, a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, NormalizeConfig, PolicyBackend, Population, Verdict};
use bulk_policy_redis::{LocalRedisCluster, RedisBackend, RedisSpec, load};
use common::{Outcome, Proxy, Runtime, Specs, local_cluster, local_redis, trial};
use redis::cluster_routing::Slot;

fn main() {
    let trials = vec![
        trial(
            "a_batch_is_one_round_trip_on_a_server",
            Runtime::CurrentThread,
            a_batch_is_one_round_trip_on_a_server,
        ),
        trial(
            "a_batch_is_one_pipeline_per_node_in_a_cluster",
            Runtime::CurrentThread,
            a_batch_is_one_pipeline_per_node_in_a_cluster,
        ),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

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

async fn a_batch_is_one_round_trip_on_a_server() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
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
    Ok(())
}

async fn a_batch_is_one_pipeline_per_node_in_a_cluster() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(dir.path())?;
    let spec = Specs::cluster(&cluster).next();
    let population = population();
    load(&spec, &population, |_| {}).await.unwrap();
    let backend = RedisBackend::connect(&spec).await.unwrap();
    let batch = batch();

    // The first lookup reads the slot map (CLUSTER SLOTS), then sends one pipeline per
    // node: the batch's 70 domains span all three.
    let trips = backend.round_trips();
    checked_lookup(&backend, &population, &batch).await;
    assert_eq!(backend.round_trips() - trips, 1 + 3);
    for _ in 0..3 {
        let trips = backend.round_trips();
        checked_lookup(&backend, &population, &batch).await;
        assert_eq!(backend.round_trips() - trips, 3);
    }

    // A slot moves to another node behind the backend's back: its cached map is stale, the
    // old node answers MOVED for part of a pipeline, and the lookup falls back to one
    // pipeline per slot (which the client redirects), still right; the next lookup reads
    // the map again and is back to one pipeline per node.
    let moved = move_slot_of(&cluster, &format!("{}:{{d0.example}}", spec.prefix)).await;
    eprintln!("moved slot {moved}");
    let trips = backend.round_trips();
    checked_lookup(&backend, &population, &batch).await;
    let slots: HashSet<Slot> = batch
        .iter()
        .map(|a| {
            let address = std::str::from_utf8(a).unwrap().to_ascii_lowercase();
            let domain = address.rsplit_once('@').unwrap().1.to_string();
            Slot::for_key(format!("{}:{{{domain}}}", spec.prefix))
        })
        .collect();
    assert_eq!(backend.round_trips() - trips, 3 + slots.len() as u64);
    let trips = backend.round_trips();
    checked_lookup(&backend, &population, &batch).await;
    assert_eq!(backend.round_trips() - trips, 1 + 3);
    cluster.stop().unwrap();
    Ok(())
}

/// Moves the slot of `key` (and its keys) from its node to the next one, the way
/// `redis-cli --cluster reshard` does for each slot; returns the slot.
async fn move_slot_of(cluster: &LocalRedisCluster, key: &str) -> u16 {
    let mut nodes = Vec::new();
    for url in cluster.urls() {
        let client = redis::Client::open(url.as_str()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        nodes.push(conn);
    }
    let slot: u16 = query(&mut nodes[0], &["CLUSTER", "KEYSLOT", key]).await;
    let mut source = None;
    for (i, node) in nodes.iter_mut().enumerate() {
        let count: u64 = query(node, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]).await;
        if count > 0 {
            source = Some(i);
        }
    }
    let source = source.expect("a node holds the key");
    let target = (source + 1) % nodes.len();
    let source_id: String = query(&mut nodes[source], &["CLUSTER", "MYID"]).await;
    let target_id: String = query(&mut nodes[target], &["CLUSTER", "MYID"]).await;
    let slot_arg = slot.to_string();
    let () = query(
        &mut nodes[target],
        &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source_id],
    )
    .await;
    let () = query(
        &mut nodes[source],
        &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target_id],
    )
    .await;
    let keys: Vec<String> = query(
        &mut nodes[source],
        &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "1000"],
    )
    .await;
    let port = cluster.nodes()[target].port().to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    let _: redis::Value = query(&mut nodes[source], &migrate).await;
    for node in &mut nodes {
        let () = query(node, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target_id]).await;
    }
    slot
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}
