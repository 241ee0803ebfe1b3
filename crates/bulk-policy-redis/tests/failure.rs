//! A down, stalled or missing Redis gives `PolicyError::Unavailable`, within the timeout,
//! never a guessed verdict; `out` is left as it was.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where redis-server or
//! redis-cli is missing, a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, NormalizeConfig, PolicyBackend, PolicyError, Population, Verdict};
use bulk_policy_redis::{RedisBackend, RedisSpec, RedisStoreError, load};
use common::{Outcome, Proxy, Runtime, Specs, local_cluster, local_redis, trial};

fn main() {
    let trials = vec![
        trial(
            "a_stopped_server_gives_unavailable",
            Runtime::CurrentThread,
            a_stopped_server_gives_unavailable,
        ),
        trial(
            "a_stalled_server_times_out",
            Runtime::CurrentThread,
            a_stalled_server_times_out,
        ),
        // Needs no program: a port with nothing behind it.
        trial(
            "nothing_listening_is_an_error_not_a_hang",
            Runtime::CurrentThread,
            nothing_listening_is_an_error_not_a_hang,
        ),
        trial(
            "a_stopped_cluster_node_gives_unavailable",
            Runtime::CurrentThread,
            a_stopped_cluster_node_gives_unavailable,
        ),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

/// The timeout of the backends under test: short, so the tests are quick.
const TIMEOUT: Duration = Duration::from_millis(500);

fn population() -> Population {
    let mut text = String::new();
    for d in 0..20 {
        text.push_str(&format!("@d{d}.example\topt-out\nann@d{d}.example\tin\n"));
    }
    Population::parse(text.as_bytes(), NormalizeConfig::default()).unwrap()
}

fn batch() -> AddressBatch {
    (0..20)
        .map(|d| format!("ann@d{d}.example"))
        .collect::<Vec<_>>()
        .iter()
        .map(|a| a.as_bytes())
        .collect()
}

/// Looks `batch()` up and expects `Unavailable` from `name`, with `out` untouched.
async fn expect_unavailable(backend: &RedisBackend, name: &str) {
    let mut out = vec![Verdict::NotLocal];
    let started = Instant::now();
    let result = backend.lookup(&batch(), &mut out).await;
    eprintln!("failed lookup returned after {:?}", started.elapsed());
    match result {
        Err(PolicyError::Unavailable { backend, reason }) => {
            assert_eq!(backend, name);
            assert!(!reason.is_empty());
        }
        Ok(()) => panic!("a lookup succeeded: {out:?}"),
    }
    assert_eq!(out, [Verdict::NotLocal]);
}

async fn a_stopped_server_gives_unavailable() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
    let spec = Specs::single(&redis).next();
    load(&spec, &population(), |_| {}).await.unwrap();
    let backend = RedisBackend::connect_with_timeout(&spec, TIMEOUT)
        .await
        .unwrap();
    let mut out = Vec::new();
    backend.lookup(&batch(), &mut out).await.unwrap();
    assert_eq!(out, vec![Verdict::Accept; 20]);

    redis.stop().unwrap();
    // Twice: the first sees the connection drop, the second a failed reconnection.
    expect_unavailable(&backend, "redis").await;
    expect_unavailable(&backend, "redis").await;
    let e = backend.get("ann@d0.example").await.unwrap_err();
    assert!(
        matches!(
            e,
            RedisStoreError::Redis { .. } | RedisStoreError::Timeout { .. }
        ),
        "{e}"
    );
    Ok(())
}

async fn a_stalled_server_times_out() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
    let spec = Specs::single(&redis).next();
    load(&spec, &population(), |_| {}).await.unwrap();
    let proxy = Proxy::start(redis.port(), Duration::ZERO).await;
    let through = RedisSpec {
        nodes: vec![proxy.url()],
        ..spec
    };
    let backend = RedisBackend::connect_with_timeout(&through, TIMEOUT)
        .await
        .unwrap();
    let mut out = Vec::new();
    backend.lookup(&batch(), &mut out).await.unwrap();
    assert_eq!(out.len(), 20);

    proxy.set_stall(true);
    expect_unavailable(&backend, "redis").await;
    // Once Redis answers again, so does the backend (the late reply to the timed-out
    // lookup is dropped, not mistaken for the next one's).
    proxy.set_stall(false);
    let mut out = Vec::new();
    backend.lookup(&batch(), &mut out).await.unwrap();
    assert_eq!(out, vec![Verdict::Accept; 20]);
    redis.stop().unwrap();
    Ok(())
}

async fn nothing_listening_is_an_error_not_a_hang() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = RedisSpec::parse_single(&format!("redis://127.0.0.1:{port}")).unwrap();
    let e = RedisBackend::connect_with_timeout(&spec, TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RedisStoreError::Redis { .. } | RedisStoreError::Timeout { .. }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}

async fn a_stopped_cluster_node_gives_unavailable() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(dir.path())?;
    let spec = Specs::cluster(&cluster).next();
    load(&spec, &population(), |_| {}).await.unwrap();
    let backend = RedisBackend::connect_with_timeout(&spec, TIMEOUT)
        .await
        .unwrap();
    let mut out = Vec::new();
    backend.lookup(&batch(), &mut out).await.unwrap();
    assert_eq!(out, vec![Verdict::Accept; 20]);

    // Twenty domains cover every node's slots; the first node goes away, without failover
    // (no replicas), so its slots have no server.
    let mut nodes = cluster.nodes().iter();
    let first = nodes.next().unwrap();
    let port = first.port();
    std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "shutdown", "nosave"])
        .status()
        .unwrap();
    expect_unavailable(&backend, "redis-cluster").await;
    expect_unavailable(&backend, "redis-cluster").await;
    cluster.stop().unwrap();
    Ok(())
}
