//! The fst and LMDB backends through the CLI: built by `population`, served by `serve`,
//! changed by `policy set` while serving, and compared by `compare` with no mismatch.

use std::time::{Duration, Instant};

mod common;

use common::{
    build_population, bulk_replies, ok, opted_in_mailbox, run, serve, signal, small_scenario,
};

#[test]
fn every_backend_benches_with_no_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    for backend in ["fst", "lmdb"] {
        let out = dir.path().join(format!("run-{backend}"));
        ok(&[
            "bench",
            scenario.to_str().unwrap(),
            "--backend",
            backend,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let summary = common::summary(&out);
        assert_eq!(summary["mismatches"]["total"], 0, "{backend}");
        assert_eq!(summary["target"]["backend"], backend);
        assert_eq!(summary["totals"]["sessions_completed"], 300, "{backend}");
    }
}

#[test]
fn compare_runs_memory_fst_and_lmdb_on_one_workload() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let out = dir.path().join("cmp");
    ok(&[
        "compare",
        scenario.to_str().unwrap(),
        "--backend",
        "memory",
        "--backend",
        "fst",
        "--backend",
        "lmdb",
        "--repeat",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(common::check_compare_runs(&out), 3, "one run per backend");
    let text = std::fs::read_to_string(out.join("comparison.json")).unwrap();
    let comparison: bulk_report::compare::Comparison = serde_json::from_str(&text).unwrap();
    assert_eq!(comparison.arms.len(), 3);
    for arm in &comparison.arms {
        assert!(arm.error.is_none(), "{}: {:?}", arm.name, arm.error);
        assert_eq!(arm.repeats, 1, "{}", arm.name);
        assert_eq!(
            arm.metric("mismatches").map(|m| m.max),
            Some(0.0),
            "{}: {text}",
            arm.name
        );
        assert!(
            arm.metric("server_cpu_us_per_rcpt").is_some(),
            "{}",
            arm.name
        );
    }
}

#[test]
fn lmdb_preferences_change_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let store = dir.path().join("pop.lmdb");
    build_population(&scenario, Some("lmdb"), &store);
    let spec = format!("lmdb:{}", store.display());
    let address = opted_in_mailbox(&scenario);
    let server = serve(&["--backend", &spec]);
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);
    let got = ok(&["policy", "get", "--store", &spec, &address]);
    assert!(String::from_utf8_lossy(&got.stdout).contains("\tin"));
    ok(&["policy", "set", "--store", &spec, &address, "out"]);
    // The next lookup of the running server sees the change.
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["550 5.7.1"]);
    let got = ok(&[
        "policy",
        "get",
        "--store",
        &spec,
        &address,
        "nobody@nowhere.test",
    ]);
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(
        text.contains("\tout") && text.contains("nobody@nowhere.test\tunknown"),
        "{text}"
    );
    // fst stores are immutable: `policy set` says what to do instead.
    let fst = dir.path().join("pop.fst");
    build_population(&scenario, Some("fst"), &fst);
    let refused = run(&[
        "policy",
        "set",
        "--store",
        &format!("fst:{}", fst.display()),
        &address,
        "out",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("SIGHUP"));
}

#[test]
fn a_cached_server_sees_a_change_within_the_ttl_and_reports_its_hit_rate() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let store = dir.path().join("pop.lmdb");
    build_population(&scenario, Some("lmdb"), &store);
    let spec = format!("lmdb:{}", store.display());
    let address = opted_in_mailbox(&scenario);
    let mut server = common::serve_logged(&[
        "--backend",
        &spec,
        "--cache-entries",
        "1000",
        "--cache-ttl-ms",
        "1500",
    ]);
    // The verdict is cached at this lookup, no earlier than `fetched`.
    let fetched = Instant::now();
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);
    ok(&["policy", "set", "--store", &spec, &address, "out"]);
    // Within the TTL the cached verdict still answers (when this lookup is in time on a
    // busy machine); then the change shows.
    let early = bulk_replies(&server.addr, &[&address]);
    if fetched.elapsed() < Duration::from_millis(1000) {
        assert_eq!(early, ["250 2.1.5"], "served from the cache within its TTL");
    }
    while bulk_replies(&server.addr, &[&address]) != ["550 5.7.1"] {
        assert!(
            fetched.elapsed() < Duration::from_secs(60),
            "the change never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&server.child, libc::SIGTERM);
    let log = server.log.take().unwrap().all();
    assert!(
        log.contains("cache_hits=") && log.contains("cache_hit_rate="),
        "{log}"
    );
}

#[test]
fn fst_store_is_swapped_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let fst = dir.path().join("pop.fst");
    build_population(&scenario, Some("fst"), &fst);
    let address = opted_in_mailbox(&scenario);
    let spec = format!("fst:{}", fst.display());
    let server = serve(&["--backend", &spec]);
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);
    // Rebuild from another seed: a different population, where this mailbox is unknown.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        common::SMALL_SCENARIO.replace("seed = 21", "seed = 22"),
    )
    .unwrap();
    build_population(&other, Some("fst"), &fst);
    // Until SIGHUP the old map serves; after it, the new one.
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);
    signal(&server.child, 1); // SIGHUP
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = bulk_replies(&server.addr, &[&address]);
        if reply != ["250 2.1.5"] {
            assert!(
                reply[0].starts_with("550 5.1.1") || reply[0].starts_with("554 5.7.1"),
                "{reply:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not swap the store");
        std::thread::sleep(Duration::from_millis(50));
    }
}
