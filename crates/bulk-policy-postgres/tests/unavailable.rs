//! A database that went away: lookups fail with `PolicyError::Unavailable` (the server
//! replies 451), never a guessed verdict, and leave `out` as it was.

mod common;

use std::time::Duration;

use bulk_policy::{AddressBatch, PolicyBackend, PolicyError, Preference, Verdict};
use bulk_policy_postgres::{PostgresBackend, load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_makes_lookups_unavailable() {
    let Some(cluster) = common::cluster() else {
        return;
    };
    let spec = cluster.spec("gone");
    let population = common::population("@example.org\topt-out\nann@example.org\tout\n");
    load(&spec, &population, |_| {}).await.expect("load");
    let backend = PostgresBackend::connect(&spec, 2).await.expect("connect");
    let addresses = ["ann@example.org", "bob@example.org", "x@elsewhere.example"];
    assert_eq!(
        common::verdicts(&backend, &addresses).await,
        [
            Verdict::OptedOut,
            Verdict::UnknownMailbox,
            Verdict::NotLocal
        ]
    );

    cluster.server.stop().expect("stop");

    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    // Twice: first on the pooled connection the server closed, then on a new connect.
    for attempt in 0..2 {
        let mut out = vec![Verdict::Accept];
        let result =
            tokio::time::timeout(Duration::from_secs(60), backend.lookup(&batch, &mut out))
                .await
                .expect("the lookup gives up by itself");
        match result {
            Err(PolicyError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "postgres");
                eprintln!("attempt {attempt}: {reason}");
            }
            Ok(()) => panic!("attempt {attempt}: verdicts from a stopped server: {out:?}"),
        }
        assert_eq!(
            out,
            [Verdict::Accept],
            "attempt {attempt}: out is left as it was"
        );
    }
    assert!(backend.get("ann@example.org").await.is_err());
    assert!(
        backend
            .set("ann@example.org", Preference::In)
            .await
            .is_err()
    );
    assert!(PostgresBackend::connect(&spec, 1).await.is_err());
    assert!(load(&spec, &population, |_| {}).await.is_err());
}
