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
    // LMDB changes in place: SIGHUP reloads nothing, and says so (it empties the cache).
    signal(&server.child, libc::SIGHUP);
    let log = server.log.take().unwrap();
    log.wait_for("SIGHUP: nothing to reload", Duration::from_secs(60));
    signal(&server.child, libc::SIGTERM);
    let log = log.all();
    assert!(!log.contains("store reloaded"), "{log}");
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

/// Up to `n` mailboxes of the scenario's population file (written beside it by
/// [`opted_in_mailbox`]), with an unknown mailbox of each of their domains and a foreign
/// address.
fn some_addresses(scenario: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(scenario.with_extension("tsv")).unwrap();
    let mut addresses: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with('@'))
        .filter_map(|line| Some(line.split_once('\t')?.0.to_owned()))
        .step_by(7)
        .take(n)
        .collect();
    let unknown: Vec<String> = addresses
        .iter()
        .filter_map(|a| Some(format!("nobody-here@{}", a.rsplit_once('@')?.1)))
        .take(10)
        .collect();
    addresses.extend(unknown);
    addresses.push("ann@nowhere.test".to_owned());
    addresses
}

/// [`bulk_replies`] from a server that must stay up: if the transaction fails, says how
/// the server ended ("signal: 7 (SIGBUS)").
fn replies_from_live_server(server: &mut common::Server, rcpts: &[&str]) -> Vec<String> {
    let replies = std::panic::catch_unwind(|| bulk_replies(&server.addr, rcpts));
    let mut ended = None;
    if replies.is_err() {
        common::wait_until(Duration::from_secs(10), "the server's exit", || {
            ended = server.child.try_wait().unwrap();
            ended.is_some()
        });
    }
    match (replies, ended) {
        (Ok(replies), _) => replies,
        (Err(_), Some(status)) => panic!("the server died: {status}"),
        (Err(panic), None) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn fst_store_truncated_in_place_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let fst = dir.path().join("pop.fst");
    build_population(&scenario, Some("fst"), &fst);
    opted_in_mailbox(&scenario); // writes the population file the addresses come from
    let addresses = some_addresses(&scenario, 300);
    let rcpts: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let mut server = common::serve_logged(&["--backend", &format!("fst:{}", fst.display())]);
    let log = server.log.take().unwrap();
    log.wait_for("fst store read into memory", Duration::from_secs(10));
    let before = bulk_replies(&server.addr, &rcpts);
    assert!(before.iter().any(|r| r == "250 2.1.5"), "{before:?}");

    // Truncated to half in place, its first 4 KiB overwritten: the file served is the same
    // inode, changed under the server (on a mapped table, a SIGBUS at the next lookup).
    let len = std::fs::metadata(&fst).unwrap().len();
    let mut file = std::fs::File::options().write(true).open(&fst).unwrap();
    file.set_len(len / 2).unwrap();
    std::io::Write::write_all(&mut file, &[0xff; 4096]).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(replies_from_live_server(&mut server, &rcpts), before);

    // A reload reads the damaged file, refuses it, and keeps the table in service.
    signal(&server.child, libc::SIGHUP);
    let line = log.wait_for("reload failed", Duration::from_secs(10));
    assert!(line.contains("not a valid fst file"), "{line}");
    assert_eq!(replies_from_live_server(&mut server, &rcpts), before);

    // The opt-in map says what it risks.
    let help = ok(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--fst-mmap") && help.contains("SIGBUS"),
        "{help}"
    );
}

#[test]
fn memory_store_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let address = opted_in_mailbox(&scenario);
    let file = scenario.with_extension("tsv");
    let mut server = common::serve_logged(&["--backend", &format!("memory:{}", file.display())]);
    let log = server.log.take().unwrap();
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);

    // The mailbox opts out in the file: the old map serves until SIGHUP, the new one after.
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace(
        &format!("\n{address}\tin\n"),
        &format!("\n{address}\tout\n"),
    );
    assert_ne!(edited, text);
    std::fs::write(&file, &edited).unwrap();
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);
    signal(&server.child, libc::SIGHUP);
    log.wait_for("SIGHUP: store reloaded", Duration::from_secs(60));
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["550 5.7.1"]);

    // A broken file: the reload fails, naming the file and the line, and the map in service
    // stays (with the change above).
    let broken = format!("{edited}no-tab-on-this-line\n");
    let line = broken.lines().count();
    std::fs::write(&file, &broken).unwrap();
    signal(&server.child, libc::SIGHUP);
    let warning = log.wait_for("reload failed", Duration::from_secs(60));
    assert!(
        warning.contains(&file.display().to_string())
            && warning.contains(&format!("line {line}"))
            && warning.contains("no-tab-on-this-line"),
        "{warning}"
    );
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["550 5.7.1"]);
}
