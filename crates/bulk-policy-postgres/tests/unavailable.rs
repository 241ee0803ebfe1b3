//! A database that went away or stopped answering: lookups fail with
//! `PolicyError::Unavailable` (the server replies 451), never a guessed verdict, and leave
//! `out` as it was.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where PostgreSQL is missing,
//! a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bulk_policy::{AddressBatch, PolicyBackend, PolicyError, Preference, Verdict};
use bulk_policy_postgres::{PostgresBackend, PostgresSpec, load};
use common::{Outcome, trial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

fn main() {
    let trials = vec![
        trial(
            "a_stopped_server_makes_lookups_unavailable",
            a_stopped_server_makes_lookups_unavailable,
        ),
        trial(
            "a_database_that_stops_answering_makes_lookups_unavailable",
            a_database_that_stops_answering_makes_lookups_unavailable,
        ),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

async fn a_stopped_server_makes_lookups_unavailable() -> Outcome {
    let cluster = common::cluster()?;
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
    Ok(())
}

/// How long a relay runs at most; the tests are done well before.
const RELAY_LIFETIME: Duration = Duration::from_secs(120);

/// Passes bytes from `from` to `to`, holding them while `frozen` is set.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let deadline = Instant::now() + RELAY_LIFETIME;
    let mut buf = vec![0; 16 * 1024];
    while Instant::now() < deadline {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP relay on 127.0.0.1 to the server on `port`, for at most 16 connections. Set the
/// flag it returns and it holds what it reads instead of passing it on: a database that
/// stops answering while its connections stay open (a hung host, a network partition).
async fn relay(port: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let relay_port = listener.local_addr().expect("address").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&frozen);
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let (from_client, to_client) = inbound.into_split();
            let (from_server, to_server) = outbound.into_split();
            tokio::spawn(pipe(from_client, to_server, Arc::clone(&flag)));
            tokio::spawn(pipe(from_server, to_client, Arc::clone(&flag)));
        }
    });
    (relay_port, frozen)
}

async fn a_database_that_stops_answering_makes_lookups_unavailable() -> Outcome {
    let cluster = common::cluster()?;
    let population = common::population("@example.org\topt-in\nann@example.org\tin\n");
    load(&cluster.spec("frozen"), &population, |_| {})
        .await
        .expect("load");
    let (port, frozen) = relay(cluster.server.port()).await;
    let spec = PostgresSpec::parse(&format!(
        "postgresql://bulk@127.0.0.1:{port}/postgres?schema=frozen"
    ))
    .expect("spec");
    let backend = PostgresBackend::connect_with_timeout(&spec, 1, Duration::from_millis(500))
        .await
        .expect("connect through the relay");
    let addresses = ["ann@example.org", "bob@example.org"];
    let expected = [Verdict::Accept, Verdict::UnknownMailbox];
    assert_eq!(common::verdicts(&backend, &addresses).await, expected);

    // The query reaches no server, so no statement_timeout fires: the client's deadline
    // has to.
    frozen.store(true, Ordering::Relaxed);
    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let mut out = vec![Verdict::NotLocal];
    let result = tokio::time::timeout(Duration::from_secs(60), backend.lookup(&batch, &mut out))
        .await
        .expect("the lookup gives up by itself");
    match result {
        Err(PolicyError::Unavailable { reason, .. }) => {
            assert!(reason.contains("took longer than"), "{reason}");
        }
        Ok(()) => panic!("verdicts from a database that does not answer: {out:?}"),
    }
    assert_eq!(out, [Verdict::NotLocal], "out is left as it was");

    // Answering again: the hung connection was dropped, a new one serves.
    frozen.store(false, Ordering::Relaxed);
    assert_eq!(common::verdicts(&backend, &addresses).await, expected);
    cluster.server.stop().expect("stop");
    Ok(())
}
