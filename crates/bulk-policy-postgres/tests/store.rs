//! The store through the public API, each test on a throwaway cluster of its own (initdb
//! takes about a second here): updates, the one-query contract, reloads, schemas side by
//! side, refusals and a database too slow to answer.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where PostgreSQL is missing,
//! a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::time::Duration;

use bulk_policy::{
    AddressBatch, NormalizeConfig, PolicyBackend, PolicyError, Population, Preference, Regime,
    Verdict,
};
use bulk_policy_postgres::{PostgresBackend, PostgresStoreError, load};
use common::{Outcome, population, raw_client, trial, verdicts};

use Verdict::{Accept, NotLocal, OptedOut, UnknownMailbox};

fn main() {
    let trials = vec![
        trial(
            "get_and_set_are_seen_by_the_next_lookup",
            get_and_set_are_seen_by_the_next_lookup,
        ),
        trial("each_batch_is_one_query", each_batch_is_one_query),
        trial(
            "a_second_load_replaces_the_first",
            a_second_load_replaces_the_first,
        ),
        trial(
            "two_schemas_in_one_database_stay_apart",
            two_schemas_in_one_database_stay_apart,
        ),
        trial(
            "schemas_that_hold_no_store_are_refused",
            schemas_that_hold_no_store_are_refused,
        ),
        trial(
            "a_slow_database_makes_lookups_unavailable",
            a_slow_database_makes_lookups_unavailable,
        ),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

const FIRST: &str = "\
@example.org\topt-in
ann@example.org\tin
bob@example.org\tdefault
@example.net\topt-out
carl@example.net\tout
";

/// Contradicts FIRST: ann out, bob gone, example.net no longer served, example.com new.
const SECOND: &str = "\
@example.org\topt-out
ann@example.org\tout
dora@example.org\tdefault
@example.com\topt-in
carl@example.com\tin
";

const PROBES: &[&str] = &[
    "ann@example.org",
    "bob@example.org",
    "dora@example.org",
    "carl@example.net",
    "carl@example.com",
    "zed@example.net",
];

/// The reference verdicts of PROBES in `text`'s population.
fn expected(text: &str) -> Vec<Verdict> {
    let population = population(text);
    PROBES
        .iter()
        .map(|a| population.verdict_of(a.as_bytes()))
        .collect()
}

async fn get_and_set_are_seen_by_the_next_lookup() -> Outcome {
    let cluster = common::cluster()?;
    let spec = cluster.spec("updates");
    load(&spec, &population(FIRST), |_| {}).await.expect("load");
    let backend = PostgresBackend::connect(&spec, 2).await.expect("connect");
    // A second pool: a change made through one is seen through the other.
    let writer = PostgresBackend::connect(&spec, 1).await.expect("connect");
    let probes = ["bob@example.org", "dan+news@example.org", "Ann@Example.org"];
    assert_eq!(
        verdicts(&backend, &probes).await,
        [OptedOut, UnknownMailbox, Accept]
    );

    assert_eq!(
        backend.get("Bob+x@EXAMPLE.org").await.unwrap(),
        Some(Preference::Default)
    );
    assert_eq!(backend.get("dan@example.org").await.unwrap(), None);
    assert_eq!(backend.get("ann@elsewhere.example").await.unwrap(), None);
    assert!(matches!(
        backend.get("no-at-sign").await,
        Err(PostgresStoreError::Address { .. })
    ));

    writer
        .set("BOB@example.org", Preference::In)
        .await
        .expect("set bob");
    writer
        .set("dan@example.org", Preference::Out)
        .await
        .expect("set dan");
    writer
        .set("ann@example.org", Preference::Default)
        .await
        .expect("set ann");
    assert_eq!(
        verdicts(&backend, &probes).await,
        [Accept, OptedOut, OptedOut]
    );
    assert_eq!(
        backend.get("dan@example.org").await.unwrap(),
        Some(Preference::Out)
    );

    match writer.set("eve@nowhere.example", Preference::In).await {
        Err(e @ PostgresStoreError::DomainNotServed { .. }) => {
            assert!(e.to_string().contains("nowhere.example"), "{e}");
        }
        other => panic!("expected DomainNotServed, got {other:?}"),
    }
    // A local part the delimiter would cut could never be looked up.
    assert!(matches!(
        writer.set("eve+x@example.org", Preference::In).await,
        Err(PostgresStoreError::Entry(_))
    ));
    assert_eq!(backend.get("eve@example.org").await.unwrap(), None);
    cluster.server.stop().expect("stop");
    Ok(())
}

/// A population of `n` mailboxes over ten domains, every preference in both regimes.
fn numbered(n: usize) -> Population {
    let mut population = Population::default();
    for d in 0..10 {
        let regime = if d % 2 == 0 {
            Regime::OptIn
        } else {
            Regime::OptOut
        };
        population
            .add_domain(format!("d{d}.example").as_bytes(), regime)
            .unwrap();
    }
    let preferences = [Preference::In, Preference::Out, Preference::Default];
    for i in 0..n {
        let address = format!("user{i}@d{}.example", i % 10);
        population
            .add_mailbox(address.as_bytes(), preferences[i % 3])
            .unwrap();
    }
    population
}

async fn each_batch_is_one_query() -> Outcome {
    let cluster = common::cluster()?;
    let spec = cluster.spec("batches");
    let population = numbered(1_000);
    load(&spec, &population, |_| {}).await.expect("load");
    let backend = PostgresBackend::connect(&spec, 4).await.expect("connect");
    assert_eq!(backend.queries(), 0);

    // Known, unknown, foreign, mixed-case, tagged, and addresses with no key.
    let addresses: Vec<String> = (0..500)
        .map(|i| match i % 6 {
            0 => format!("user{i}@d{}.example", i % 10),
            1 => format!("USER{i}+tag@D{}.example", i % 10),
            2 => format!("nobody{i}@d{}.example", i % 10),
            3 => format!("user{i}@elsewhere.example"),
            4 => format!("no-at-sign-{i}"),
            _ => format!("\"user{i}\"@d{}.example", i % 10),
        })
        .collect();
    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let mut out = vec![NotLocal];
    backend.lookup(&batch, &mut out).await.expect("lookup");
    assert_eq!(backend.queries(), 1, "one query for a batch of 500");
    assert_eq!(out.len(), 501);
    for (address, got) in addresses.iter().zip(&out[1..]) {
        assert_eq!(*got, population.verdict_of(address.as_bytes()), "{address}");
    }

    // Nothing to ask: no query.
    let batch: AddressBatch = ["no-at-sign", "", "x@\u{e9}.example"]
        .iter()
        .map(|a| a.as_bytes())
        .collect();
    out.clear();
    backend.lookup(&batch, &mut out).await.expect("lookup");
    assert_eq!(out, [NotLocal; 3]);
    backend
        .lookup(&AddressBatch::new(), &mut out)
        .await
        .expect("lookup");
    assert_eq!(
        backend.queries(),
        1,
        "batches with nothing to ask send no query"
    );

    // A non-ASCII local part in a served domain is an unknown mailbox, asked with the rest.
    let odd = ["us\u{e9}r@d0.example", "user0@d0.example"];
    assert_eq!(verdicts(&backend, &odd).await, [UnknownMailbox, Accept]);
    assert_eq!(backend.queries(), 2);
    cluster.server.stop().expect("stop");
    Ok(())
}

async fn a_second_load_replaces_the_first() -> Outcome {
    let cluster = common::cluster()?;
    let spec = cluster.spec("reloaded");
    let first = load(&spec, &population(FIRST), |_| {})
        .await
        .expect("first load");
    assert!(!first.replaced);
    assert!(first.bytes > 0);
    // One connection: its prepared lookup outlives the tables it was prepared against.
    let backend = PostgresBackend::connect(&spec, 1).await.expect("connect");
    assert_eq!(verdicts(&backend, PROBES).await, expected(FIRST));

    let mut calls = Vec::new();
    let second = load(&spec, &population(SECOND), |n| calls.push(n))
        .await
        .expect("second load");
    assert!(second.replaced);
    assert_eq!((second.domains, second.mailboxes), (2, 3));
    assert_eq!(calls.last(), Some(&3), "progress ends at the total");
    assert_eq!(verdicts(&backend, PROBES).await, expected(SECOND));
    let fresh = PostgresBackend::connect(&spec, 1).await.expect("connect");
    assert_eq!(verdicts(&fresh, PROBES).await, expected(SECOND));

    // No staging schema is left behind.
    let client = raw_client(&cluster).await;
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'reloaded%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(schemas, ["reloaded"]);

    // A load that would change the normalization under the servers' feet is refused.
    let case_sensitive = NormalizeConfig {
        fold_local_case: false,
        ..NormalizeConfig::default()
    };
    let other = Population::parse(FIRST.as_bytes(), case_sensitive).unwrap();
    match load(&spec, &other, |_| {}).await {
        Err(PostgresStoreError::NormalizeMismatch { schema, .. }) => assert_eq!(schema, "reloaded"),
        other => panic!("expected NormalizeMismatch, got {other:?}"),
    }
    assert_eq!(verdicts(&backend, PROBES).await, expected(SECOND));
    cluster.server.stop().expect("stop");
    Ok(())
}

async fn two_schemas_in_one_database_stay_apart() -> Outcome {
    let cluster = common::cluster()?;
    let (spec_a, spec_b) = (cluster.spec("pop_a"), cluster.spec("pop_b"));
    load(&spec_a, &population(FIRST), |_| {})
        .await
        .expect("load a");
    load(&spec_b, &population(SECOND), |_| {})
        .await
        .expect("load b");
    let a = PostgresBackend::connect(&spec_a, 1)
        .await
        .expect("connect a");
    let b = PostgresBackend::connect(&spec_b, 1)
        .await
        .expect("connect b");
    assert_eq!(verdicts(&a, PROBES).await, expected(FIRST));
    assert_eq!(verdicts(&b, PROBES).await, expected(SECOND));

    a.set("ann@example.org", Preference::Out)
        .await
        .expect("set");
    assert_eq!(
        b.get("ann@example.org").await.unwrap(),
        Some(Preference::Out)
    );
    b.set("ann@example.org", Preference::In).await.expect("set");
    assert_eq!(
        a.get("ann@example.org").await.unwrap(),
        Some(Preference::Out)
    );
    assert_eq!(
        b.get("ann@example.org").await.unwrap(),
        Some(Preference::In)
    );
    // A mailbox of a domain only `a` serves cannot be set in `b`.
    assert!(matches!(
        b.set("zed@example.net", Preference::In).await,
        Err(PostgresStoreError::DomainNotServed { .. })
    ));
    cluster.server.stop().expect("stop");
    Ok(())
}

async fn schemas_that_hold_no_store_are_refused() -> Outcome {
    let cluster = common::cluster()?;
    match PostgresBackend::connect(&cluster.spec("nothing_here"), 1).await {
        Err(e @ PostgresStoreError::NoStore { .. }) => {
            assert!(e.to_string().contains("nothing_here"), "{e}");
        }
        other => panic!("expected NoStore, got {other:?}"),
    }
    assert!(matches!(
        PostgresBackend::connect(&cluster.spec("x"), 0).await,
        Err(PostgresStoreError::NoConnections)
    ));

    // Another application's schema: neither read nor replaced.
    let client = raw_client(&cluster).await;
    client
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.users (id int); INSERT INTO app.users VALUES (7)",
        )
        .await
        .unwrap();
    let app = cluster.spec("app");
    match load(&app, &population(FIRST), |_| {}).await {
        Err(e @ PostgresStoreError::Foreign { .. }) => {
            assert!(e.to_string().contains("users"), "{e}");
        }
        other => panic!("expected Foreign, got {other:?}"),
    }
    assert!(PostgresBackend::connect(&app, 1).await.is_err());
    let kept: i32 = client
        .query_one("SELECT id FROM app.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 7);

    // A store of another format version: refused by connect, replaced by a load.
    let old = cluster.spec("old");
    load(&old, &population(FIRST), |_| {}).await.expect("load");
    client
        .execute(
            "UPDATE old.meta SET value = 'bulkbench-postgres-0' WHERE key = 'format'",
            &[],
        )
        .await
        .unwrap();
    match PostgresBackend::connect(&old, 1).await {
        Err(PostgresStoreError::Version { found, .. }) => {
            assert_eq!(found, "bulkbench-postgres-0");
        }
        other => panic!("expected Version, got {other:?}"),
    }
    assert!(
        load(&old, &population(FIRST), |_| {})
            .await
            .expect("reload")
            .replaced
    );
    PostgresBackend::connect(&old, 1)
        .await
        .expect("connect after the reload");
    cluster.server.stop().expect("stop");
    Ok(())
}

async fn a_slow_database_makes_lookups_unavailable() -> Outcome {
    let cluster = common::cluster()?;
    let spec = cluster.spec("slow");
    load(&spec, &population(FIRST), |_| {}).await.expect("load");
    let backend = PostgresBackend::connect_with_timeout(&spec, 1, Duration::from_millis(300))
        .await
        .expect("connect");
    assert_eq!(verdicts(&backend, PROBES).await, expected(FIRST));

    // Another session holds the table: the lookup waits on its lock until the timeout.
    let mut client = raw_client(&cluster).await;
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE slow.mailboxes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let batch: AddressBatch = PROBES.iter().map(|a| a.as_bytes()).collect();
    let mut out = vec![Accept, OptedOut];
    let result = tokio::time::timeout(Duration::from_secs(60), backend.lookup(&batch, &mut out))
        .await
        .expect("the lookup gives up by itself");
    match result {
        Err(PolicyError::Unavailable { backend, reason }) => {
            assert_eq!(backend, "postgres");
            assert!(reason.contains("slow"), "{reason}");
            eprintln!("locked table: {reason}");
        }
        Ok(()) => panic!("a lookup answered while the table was locked: {out:?}"),
    }
    assert_eq!(out, [Accept, OptedOut], "out is left as it was");
    assert!(backend.get("ann@example.org").await.is_err());
    tx.rollback().await.unwrap();

    // The lock gone, the pool has a working connection again.
    assert_eq!(verdicts(&backend, PROBES).await, expected(FIRST));
    cluster.server.stop().expect("stop");
    Ok(())
}
