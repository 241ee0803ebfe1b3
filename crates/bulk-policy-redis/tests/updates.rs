//! Reads and updates while serving: a `set` is seen by the next lookup, on one server and
//! on a cluster; what `set`, `connect` and `load` refuse, and the errors' words.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where redis-server or
//! redis-cli is missing, a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use bulk_policy::{
    AddressBatch, NormalizeConfig, PolicyBackend, Population, Preference, Regime, Verdict,
};
use bulk_policy_redis::{FORMAT, RedisBackend, RedisSpec, RedisStoreError, clear, load};
use common::{Outcome, Runtime, Specs, local_cluster, local_redis, trial};

fn main() {
    let trials = vec![
        trial(
            "single_server_sets_are_seen_by_the_next_lookup",
            Runtime::CurrentThread,
            single_server_sets_are_seen_by_the_next_lookup,
        ),
        trial(
            "cluster_sets_are_seen_by_the_next_lookup",
            Runtime::CurrentThread,
            cluster_sets_are_seen_by_the_next_lookup,
        ),
        trial(
            "stores_are_refused_with_the_reason",
            Runtime::CurrentThread,
            stores_are_refused_with_the_reason,
        ),
        trial(
            "a_load_replaces_what_the_prefix_held",
            Runtime::CurrentThread,
            a_load_replaces_what_the_prefix_held,
        ),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

fn population() -> Population {
    let text = "@example.org\topt-in\n@example.net\topt-out\nann@example.org\tin\n\
                bob@example.org\tdefault\ncarol@example.net\tout\n";
    Population::parse(text.as_bytes(), NormalizeConfig::default()).unwrap()
}

async fn verdicts(backend: &RedisBackend, addresses: &[&str]) -> Vec<Verdict> {
    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let mut out = Vec::new();
    backend.lookup(&batch, &mut out).await.unwrap();
    out
}

/// Sets and gets against the store under `spec`, each checked by the next lookup.
async fn sets_are_seen_by_the_next_lookup(spec: &RedisSpec) {
    load(spec, &population(), |_| {}).await.unwrap();
    let backend = RedisBackend::connect(spec).await.unwrap();
    let batch = ["bob@example.org", "Dan+x@example.net", "carol@example.net"];
    assert_eq!(
        verdicts(&backend, &batch).await,
        [
            Verdict::OptedOut,
            Verdict::UnknownMailbox,
            Verdict::OptedOut
        ]
    );
    assert_eq!(
        backend.get("BOB@example.org").await.unwrap(),
        Some(Preference::Default)
    );
    assert_eq!(backend.get("dan@example.net").await.unwrap(), None);

    backend
        .set("Bob@Example.org", Preference::In)
        .await
        .unwrap();
    backend
        .set("dan@example.net", Preference::Out)
        .await
        .unwrap();
    backend
        .set("carol@example.net", Preference::Default)
        .await
        .unwrap();
    assert_eq!(
        verdicts(&backend, &batch).await,
        [Verdict::Accept, Verdict::OptedOut, Verdict::Accept]
    );
    assert_eq!(
        backend.get("dan+y@example.net").await.unwrap(),
        Some(Preference::Out)
    );

    // Another backend on the same prefix sees the changes too.
    let other = RedisBackend::connect(spec).await.unwrap();
    assert_eq!(
        verdicts(&other, &batch).await,
        [Verdict::Accept, Verdict::OptedOut, Verdict::Accept]
    );

    // A regime change applies to `default` mailboxes at the next lookup.
    backend
        .set_regime("EXAMPLE.net", Regime::OptIn)
        .await
        .unwrap();
    assert_eq!(
        verdicts(&other, &["carol@example.net"]).await,
        [Verdict::OptedOut]
    );
    backend
        .set_regime("new.example", Regime::OptOut)
        .await
        .unwrap();
    backend
        .set("eve@new.example", Preference::Default)
        .await
        .unwrap();
    assert_eq!(
        verdicts(&other, &["eve@new.example"]).await,
        [Verdict::Accept]
    );

    refusals(&backend).await;
}

async fn refusals(backend: &RedisBackend) {
    let e = backend
        .set("zed@foreign.example", Preference::In)
        .await
        .unwrap_err();
    assert!(matches!(e, RedisStoreError::DomainNotServed { .. }), "{e}");
    assert!(e.to_string().contains("foreign.example"), "{e}");
    assert_eq!(
        verdicts(backend, &["zed@foreign.example"]).await,
        [Verdict::NotLocal]
    );
    let e = backend.set("no-at-sign", Preference::In).await.unwrap_err();
    assert!(matches!(e, RedisStoreError::Address { .. }), "{e}");
    // Refused as a population file would refuse it: the delimiter cuts the local part.
    let e = backend
        .set("\"a+b\"@example.org", Preference::In)
        .await
        .unwrap_err();
    assert!(matches!(e, RedisStoreError::Entry(_)), "{e}");
    let e = backend
        .set_regime("bad domain", Regime::OptIn)
        .await
        .unwrap_err();
    assert!(matches!(e, RedisStoreError::Entry(_)), "{e}");
}

async fn single_server_sets_are_seen_by_the_next_lookup() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
    sets_are_seen_by_the_next_lookup(&Specs::single(&redis).next()).await;
    redis.stop().unwrap();
    Ok(())
}

async fn cluster_sets_are_seen_by_the_next_lookup() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(dir.path())?;
    sets_are_seen_by_the_next_lookup(&Specs::cluster(&cluster).next()).await;
    cluster.stop().unwrap();
    Ok(())
}

async fn stores_are_refused_with_the_reason() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
    let specs = Specs::single(&redis);

    // No store under the prefix: the error names it.
    let empty = specs.next();
    let e = RedisBackend::connect(&empty).await.unwrap_err();
    assert!(matches!(e, RedisStoreError::NoStore { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("`{}`", empty.prefix)),
        "{e}"
    );

    // Another format.
    let foreign = specs.next();
    raw(
        &redis.url(),
        &["HSET", &format!("{}:meta", foreign.prefix), "format", "x/9"],
    )
    .await;
    let e = RedisBackend::connect(&foreign).await.unwrap_err();
    assert!(matches!(e, RedisStoreError::Version { .. }), "{e}");
    assert!(
        e.to_string().contains("x/9") && e.to_string().contains(FORMAT),
        "{e}"
    );
    let e = load(&foreign, &population(), |_| {}).await.unwrap_err();
    assert!(matches!(e, RedisStoreError::Version { .. }), "{e}");

    // A load with another normalization is refused until the prefix is cleared.
    let spec = specs.next();
    load(&spec, &population(), |_| {}).await.unwrap();
    let case_sensitive = NormalizeConfig {
        fold_local_case: false,
        ..NormalizeConfig::default()
    };
    let other = Population::parse(b"@x.org\topt-in\nAnn@x.org\tin\n", case_sensitive).unwrap();
    let e = load(&spec, &other, |_| {}).await.unwrap_err();
    assert!(
        matches!(e, RedisStoreError::NormalizeMismatch { .. }),
        "{e}"
    );
    assert_eq!(clear(&spec).await.unwrap(), 2);
    let e = RedisBackend::connect(&spec).await.unwrap_err();
    assert!(matches!(e, RedisStoreError::NoStore { .. }), "{e}");
    let stats = load(&spec, &other, |_| {}).await.unwrap();
    assert!(!stats.replaced);
    let backend = RedisBackend::connect(&spec).await.unwrap();
    assert_eq!(backend.normalize_config(), case_sensitive);
    assert_eq!(
        verdicts(&backend, &["Ann@x.org", "ann@x.org", "ann@example.org"]).await,
        [Verdict::Accept, Verdict::UnknownMailbox, Verdict::NotLocal]
    );
    // Nothing but the new store's keys is left under the prefix.
    let keys = raw(&redis.url(), &["KEYS", &format!("{}:*", spec.prefix)]).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    redis.stop().unwrap();
    Ok(())
}

async fn a_load_replaces_what_the_prefix_held() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
    let specs = Specs::single(&redis);
    let spec = specs.next();
    let neighbour = specs.next();
    load(&neighbour, &population(), |_| {}).await.unwrap();
    let first = load(&spec, &population(), |_| {}).await.unwrap();
    assert!(!first.replaced);
    let backend = RedisBackend::connect(&spec).await.unwrap();
    backend
        .set("dan@example.net", Preference::In)
        .await
        .unwrap();

    let text = "@example.org\topt-out\n@example.com\topt-in\nzoe@example.org\tout\n\
                amy@example.com\tin\n";
    let second = Population::parse(text.as_bytes(), NormalizeConfig::default()).unwrap();
    let mut reports = Vec::new();
    let stats = load(&spec, &second, |n| reports.push(n)).await.unwrap();
    assert!(stats.replaced);
    assert_eq!(
        (stats.domains, stats.mailboxes, stats.removed_domains),
        (2, 2, 1)
    );
    assert_eq!(reports.last(), Some(&2));
    // The backend connected before sees only the new content.
    assert_eq!(
        verdicts(
            &backend,
            &[
                "ann@example.org",
                "zoe@example.org",
                "amy@example.com",
                "dan@example.net"
            ]
        )
        .await,
        [
            Verdict::UnknownMailbox,
            Verdict::OptedOut,
            Verdict::Accept,
            Verdict::NotLocal
        ]
    );
    // Two domain hashes, the meta and the domain list: no staging key, nothing stale.
    let mut keys = raw(&redis.url(), &["KEYS", &format!("{}:*", spec.prefix)]).await;
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{}:domains", spec.prefix),
            format!("{}:meta", spec.prefix),
            format!("{}:{{example.com}}", spec.prefix),
            format!("{}:{{example.org}}", spec.prefix),
        ]
    );
    // Another prefix on the same server is left alone.
    let other = RedisBackend::connect(&neighbour).await.unwrap();
    assert_eq!(
        verdicts(&other, &["ann@example.org"]).await,
        [Verdict::Accept]
    );
    redis.stop().unwrap();
    Ok(())
}

/// Sends one command with the Redis client directly and returns its reply's strings.
async fn raw(url: &str, args: &[&str]) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let value: redis::Value = cmd.query_async(&mut conn).await.unwrap();
    match value {
        redis::Value::Array(items) => items
            .into_iter()
            .map(|v| redis::from_redis_value::<String>(v).unwrap())
            .collect(),
        other => vec![format!("{other:?}")],
    }
}
