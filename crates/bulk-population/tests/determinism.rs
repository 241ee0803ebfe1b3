//! Same scenario and seed, same bytes: whatever the thread count or sharding.

use bulk_population::{PopulationModel, Scenario, SessionSpec, Workload};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

const CLOSED: &str = r#"
seed = 2024
[population]
mailboxes = 30000
domains = 80
[workload]
sessions = 700
recipients_max = 60
recipient_popularity = "zipf"
subaddress_share = 0.2
mixed_case_share = 0.2
"#;

const OPEN: &str = r#"
seed = 5
[population]
mailboxes = 5000
domains = 10
[workload]
mode = "open"
rate_per_sec = 400.0
duration_secs = 3.0
recipients_distribution = "geometric"
recipients_mean = 5.0
"#;

fn trace_bytes(text: &str) -> Vec<u8> {
    let scenario = Scenario::from_toml(text, "det").unwrap();
    let model = PopulationModel::from_scenario(&scenario);
    let mut out = Vec::new();
    Workload::generate(&scenario, &model)
        .write_trace(&mut out)
        .unwrap();
    out
}

fn population_bytes(text: &str) -> Vec<u8> {
    let scenario = Scenario::from_toml(text, "det").unwrap();
    let mut out = Vec::new();
    PopulationModel::from_scenario(&scenario)
        .write_file(&mut out)
        .unwrap();
    out
}

#[test]
fn trace_bytes_do_not_depend_on_thread_count() {
    for text in [CLOSED, OPEN] {
        let one = in_pool(1, || trace_bytes(text));
        let four = in_pool(4, || trace_bytes(text));
        assert!(one == four, "traces differ between 1 and 4 threads");
        assert!(one.len() > 10_000);
    }
}

#[test]
fn population_bytes_do_not_depend_on_thread_count() {
    let one = in_pool(1, || population_bytes(CLOSED));
    let four = in_pool(4, || population_bytes(CLOSED));
    assert!(
        one == four,
        "population files differ between 1 and 4 threads"
    );
    let scenario = Scenario::from_toml(CLOSED, "det").unwrap();
    let model = PopulationModel::from_scenario(&scenario);
    assert_eq!(in_pool(1, || model.build()), in_pool(4, || model.build()));
}

#[test]
fn shards_partition_the_workload() {
    let scenario = Scenario::from_toml(OPEN, "det").unwrap();
    let whole = Workload::generate(&scenario, &PopulationModel::from_scenario(&scenario));
    for n in [1u32, 2, 3, 7] {
        let mut union: Vec<SessionSpec> = Vec::new();
        for i in 0..n {
            let shard = whole.shard(i, n);
            assert_eq!(
                (shard.scenario.as_str(), shard.seed),
                (whole.scenario.as_str(), whole.seed)
            );
            assert!(
                shard
                    .sessions
                    .iter()
                    .all(|s| s.index % u64::from(n) == u64::from(i))
            );
            union.extend(shard.sessions);
        }
        union.sort_by_key(|s| s.index);
        assert_eq!(union, whole.sessions, "n = {n}");
    }
    assert!(whole.shard(0, 0).sessions.is_empty());
    assert!(whole.shard(3, 3).sessions.is_empty());
}

#[test]
fn trace_round_trips_for_whole_and_shards() {
    let scenario = Scenario::from_toml(CLOSED, "det").unwrap();
    let whole = Workload::generate(&scenario, &PopulationModel::from_scenario(&scenario));
    for workload in [whole.clone(), whole.shard(1, 3)] {
        let mut bytes = Vec::new();
        workload.write_trace(&mut bytes).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(
            header,
            format!(
                r#"{{"bulkbench_trace":2,"scenario":"det","seed":2024,"population":{},"sessions":{}}}"#,
                scenario.population.fingerprint(),
                workload.sessions.len()
            )
        );
        let read = Workload::read_trace(bytes.as_slice()).unwrap();
        assert_eq!(read, workload);
        assert_eq!(read.rcpt_count(), workload.rcpt_count());
    }
}

#[test]
fn the_population_fingerprint_is_pinned_and_sees_every_parameter() {
    // Saved traces carry it: a change here makes every saved trace unreplayable.
    let scenario = Scenario::from_toml(CLOSED, "det").unwrap();
    let population = &scenario.population;
    assert_eq!(population.fingerprint(), 12_588_427_969_619_453_085);
    let mut other = population.clone();
    other.mailboxes = (population.mailboxes.get() + 1).try_into().unwrap();
    assert_ne!(other.fingerprint(), population.fingerprint());
    let mut other = population.clone();
    other.explicit_opt_in_share = ((population.explicit_opt_in_share.get() + 0.25) % 1.0)
        .try_into()
        .unwrap();
    assert_ne!(other.fingerprint(), population.fingerprint());
}

#[test]
fn workload_is_pinned() {
    // A change here changes every workload of every seed (saved traces, published runs).
    let scenario = Scenario::from_toml(CLOSED, "det").unwrap();
    let w = Workload::generate(&scenario, &PopulationModel::from_scenario(&scenario));
    // Sessions of one transaction are what they were before sessions could hold several.
    let first = &w.sessions[0].transactions[0];
    assert_eq!(w.sessions[0].transactions.len(), 1);
    let pinned = (
        first.sender.as_str(),
        first.recipients.len(),
        first.recipients[0].address.as_str(),
        first.message_size,
    );
    assert_eq!(pinned, PINNED, "workload generator output changed");
}

const PINNED: (&str, usize, &str, u32) =
    ("digest@media26.test", 35, "gsnyder@institute.example", 2314);

/// 64-bit FNV-1a, as the fingerprints use.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn traces_are_pinned_byte_for_byte() {
    // Every session of both scenarios, as a trace writes it: a change here changes saved
    // traces and what a seed replays.
    assert_eq!(fnv1a(&trace_bytes(CLOSED)), 314_722_545_418_229_598);
    assert_eq!(fnv1a(&trace_bytes(OPEN)), 15_753_380_545_500_836_250);
}
