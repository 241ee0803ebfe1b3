//! Updates while serving: the update API, concurrent lookups during updates, and several
//! handles on one directory.

use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use bulk_policy::{
    AddressBatch, NormalizeConfig, PolicyBackend, Population, Preference, Regime, Reload, Verdict,
};
use bulk_policy_lmdb::{LmdbBackend, LmdbError, build};

fn population() -> Population {
    let text = "@in.example\topt-in\n@out.example\topt-out\n\
                ann@in.example\tin\nbob@in.example\tdefault\n\
                carl@out.example\tdefault\ndora@out.example\tout\n";
    Population::parse(text.as_bytes(), NormalizeConfig::default()).expect("population")
}

fn built(dir: &Path) -> LmdbBackend {
    build(&population(), dir).expect("build");
    LmdbBackend::open(dir).expect("open")
}

fn verdicts(backend: &LmdbBackend, addresses: &[&str]) -> Vec<Verdict> {
    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let mut out = Vec::new();
    backend.lookup_batch(&batch, &mut out).expect("lookup");
    out
}

#[test]
fn update_api_table() {
    let dir = tempfile::tempdir().unwrap();
    let backend = built(dir.path());
    assert_eq!(backend.name(), "lmdb");
    // Changes are seen at once: nothing to reload.
    assert_eq!(backend.reload().unwrap(), Reload::InPlace);
    assert_eq!(backend.normalize_config(), NormalizeConfig::default());
    assert_eq!(backend.len().unwrap(), 4);
    assert!(!backend.is_empty().unwrap());
    assert_eq!(backend.domain_count().unwrap(), 2);

    // get normalizes like a lookup.
    assert_eq!(
        backend.get("ANN+x@In.Example").unwrap(),
        Some(Preference::In)
    );
    assert_eq!(
        backend.get("bob@in.example").unwrap(),
        Some(Preference::Default)
    );
    assert_eq!(backend.get("zed@in.example").unwrap(), None);
    assert_eq!(backend.get("zed@elsewhere.example").unwrap(), None);

    // set: change, add; both visible to the next lookup.
    backend.set("Bob@IN.example", Preference::In).unwrap();
    backend.set("erin@out.example", Preference::Out).unwrap();
    backend
        .set("\"Fay Lee\"@out.example", Preference::In)
        .unwrap();
    assert_eq!(backend.len().unwrap(), 6);
    assert_eq!(
        verdicts(
            &backend,
            &[
                "bob@in.example",
                "erin@out.example",
                "\"fay lee\"@out.example"
            ]
        ),
        [Verdict::Accept, Verdict::OptedOut, Verdict::Accept]
    );

    // remove.
    assert!(backend.remove("ERIN+tag@out.example").unwrap());
    assert!(!backend.remove("erin@out.example").unwrap());
    assert_eq!(
        verdicts(&backend, &["erin@out.example"]),
        [Verdict::UnknownMailbox]
    );
    assert_eq!(backend.len().unwrap(), 5);

    // set_regime flips a domain's default and adds a domain.
    assert_eq!(verdicts(&backend, &["carl@out.example"]), [Verdict::Accept]);
    backend.set_regime("OUT.example", Regime::OptIn).unwrap();
    assert_eq!(backend.regime("out.example").unwrap(), Some(Regime::OptIn));
    assert_eq!(
        verdicts(&backend, &["carl@out.example"]),
        [Verdict::OptedOut]
    );
    assert_eq!(verdicts(&backend, &["x@new.example"]), [Verdict::NotLocal]);
    backend.set_regime("new.example", Regime::OptOut).unwrap();
    assert_eq!(backend.domain_count().unwrap(), 3);
    assert_eq!(
        verdicts(&backend, &["x@new.example"]),
        [Verdict::UnknownMailbox]
    );
    backend.set("x@new.example", Preference::Default).unwrap();
    assert_eq!(verdicts(&backend, &["x@new.example"]), [Verdict::Accept]);

    assert!(backend.disk_bytes().unwrap() > 0);
    assert_eq!(backend.verdict(b"Ann@in.example").unwrap(), Verdict::Accept);
    assert_eq!(backend.verdict(b"no-at-sign").unwrap(), Verdict::NotLocal);
}

#[test]
fn update_errors_table() {
    let dir = tempfile::tempdir().unwrap();
    let backend = built(dir.path());
    let cases: &[(&str, &str)] = &[
        (
            "ann@elsewhere.example",
            "mailbox ann@elsewhere.example: domain elsewhere.example is not served here (add it \
             with `set_regime` first)",
        ),
        (
            "ann+news@in.example",
            "mailbox ann+news@in.example can never be reached: its local part contains the \
             recipient delimiter '+', which lookups cut off",
        ),
        (
            "no-at-sign",
            "address \"no-at-sign\" has no lookup key: address has no '@'",
        ),
        (
            "ann@",
            "address \"ann@\" has no lookup key: address has an empty domain",
        ),
        (
            "ann smith@in.example",
            "malformed entry `ann smith@in.example`: character ' ' is not allowed here \
             (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in \
             a domain)",
        ),
    ];
    for (address, expected) in cases {
        // As the CLI prints it: the error, then each cause.
        let got = backend.set(address, Preference::In).map_err(|e| {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text = format!("{text}: {c}");
                cause = c.source();
            }
            text
        });
        assert_eq!(got.err().as_deref(), Some(*expected), "{address}");
    }
    assert!(matches!(
        backend.set("ann@elsewhere.example", Preference::In),
        Err(LmdbError::DomainNotServed { .. })
    ));
    assert!(matches!(
        backend.get("nope"),
        Err(LmdbError::Address { .. })
    ));
    assert!(matches!(
        backend.remove("nope@"),
        Err(LmdbError::Address { .. })
    ));
    assert!(matches!(
        backend.set_regime("bad domain", Regime::OptIn),
        Err(LmdbError::Entry(_))
    ));
    assert!(matches!(
        backend.set_regime("", Regime::OptIn),
        Err(LmdbError::Entry(_))
    ));
    // Nothing was written.
    assert_eq!(
        (backend.len().unwrap(), backend.domain_count().unwrap()),
        (4, 2)
    );
}

#[test]
fn oversized_keys_are_misses_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let backend = built(dir.path());
    // LMDB refuses keys over 511 bytes; such a key must not fail the batch.
    let long_local = format!("{}@in.example", "a".repeat(600));
    let long_domain = format!("ann@{}", "d".repeat(600));
    assert_eq!(
        verdicts(&backend, &[&long_local, &long_domain, "ann@in.example"]),
        [Verdict::UnknownMailbox, Verdict::NotLocal, Verdict::Accept]
    );
    assert_eq!(backend.get(&long_local).unwrap(), None);
    assert!(!backend.remove(&long_local).unwrap());
}

/// Several threads look up a batch in a loop while another flips one address's preference
/// 200 times: no lookup fails, every verdict is the old or the new one, the other
/// addresses never change, and the final state is the last value set.
#[test]
fn lookups_during_updates_see_old_or_new() {
    const FLIPS: usize = 200;
    const READERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let backend = built(dir.path());
    let addresses = [
        "carl@out.example",
        "ann@in.example",
        "zed@in.example",
        "x@y.net",
    ];
    let fixed = [Verdict::Accept, Verdict::UnknownMailbox, Verdict::NotLocal];
    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let done = AtomicBool::new(false);
    let start = Barrier::new(READERS + 1);

    let lookups = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                scope.spawn(|| {
                    // Through the async trait method, as the server calls it.
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    let mut out = Vec::new();
                    let mut lookups = 0usize;
                    let mut seen = [false; 2];
                    start.wait();
                    while !done.load(Ordering::Acquire) || lookups == 0 {
                        out.clear();
                        runtime
                            .block_on(backend.lookup(&batch, &mut out))
                            .expect("lookup during updates");
                        assert_eq!(out.len(), addresses.len());
                        match out[0] {
                            Verdict::Accept => seen[0] = true,
                            Verdict::OptedOut => seen[1] = true,
                            other => panic!("flipped address answered {other:?}"),
                        }
                        assert_eq!(out[1..], fixed);
                        lookups += 1;
                    }
                    (lookups, seen)
                })
            })
            .collect();
        start.wait();
        for i in 0..FLIPS {
            let preference = if i % 2 == 0 {
                Preference::Out
            } else {
                Preference::In
            };
            backend.set("Carl@out.example", preference).expect("set");
        }
        done.store(true, Ordering::Release);
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader thread"))
            .collect::<Vec<_>>()
    });
    for (lookups, _) in &lookups {
        assert!(*lookups > 0);
    }
    // The last flip (i = 199) set `in`.
    assert_eq!(
        backend.get("carl@out.example").unwrap(),
        Some(Preference::In)
    );
    assert_eq!(verdicts(&backend, &addresses)[0], Verdict::Accept);
    eprintln!("lookups per reader during {FLIPS} flips: {lookups:?}");
}

#[test]
fn handles_on_one_directory_share_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let first = built(dir.path());
    // LMDB allows one environment handle per process and heed refuses a second open:
    // a second `open` shares the first one's environment.
    let second = LmdbBackend::open(dir.path()).expect("second open");
    second.set("bob@in.example", Preference::In).unwrap();
    assert_eq!(verdicts(&first, &["bob@in.example"]), [Verdict::Accept]);
    first.remove("bob@in.example").unwrap();
    assert_eq!(
        verdicts(&second, &["bob@in.example"]),
        [Verdict::UnknownMailbox]
    );

    // A rebuild while both are open replaces what both see.
    let mut next = Population::default();
    next.add_domain(b"in.example", Regime::OptOut).unwrap();
    next.add_mailbox(b"bob@in.example", Preference::Default)
        .unwrap();
    let stats = build(&next, dir.path()).expect("rebuild while open");
    assert!(stats.replaced);
    assert_eq!(
        verdicts(&first, &["bob@in.example", "ann@in.example"]),
        [Verdict::Accept, Verdict::UnknownMailbox]
    );
    assert_eq!(second.len().unwrap(), 1);

    // Dropping every handle closes the environment; it opens again.
    drop((first, second));
    let again = LmdbBackend::open(dir.path()).expect("reopen");
    assert_eq!(again.len().unwrap(), 1);
}
