//! The shared conformance suite, against one server and a three-node cluster, on stores
//! filled three ways: by a load, by `set_regime` and `set` calls on a load of the domains
//! alone, and by a load that replaces a prefix holding another population.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where redis-server or
//! redis-cli is missing, a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use bulk_policy::{Population, Preference, Regime, conformance};
use bulk_policy_redis::{RedisBackend, load};
use common::{Outcome, Runtime, Specs, block_on, local_cluster, local_redis, trial};

fn main() {
    let trials = vec![
        trial(
            "single_server_conforms",
            Runtime::MultiThread,
            single_server_conforms,
        ),
        trial("cluster_conforms", Runtime::MultiThread, cluster_conforms),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

fn loaded(specs: &Specs, population: &Population) -> RedisBackend {
    let spec = specs.next();
    let stats = block_on(load(&spec, population, |_| {})).expect("load");
    assert_eq!(stats.mailboxes, population.mailbox_count());
    assert!(!stats.replaced);
    block_on(RedisBackend::connect(&spec)).expect("connect")
}

/// `local@domain` as a population file would spell the key: quoted when the local part
/// holds a space or starts with `#` or `@` (as `Population::write_to` does).
fn spelled(key: &[u8]) -> String {
    let key = std::str::from_utf8(key).expect("conformance keys are ASCII");
    let (local, domain) = key.rsplit_once('@').expect("keys have an '@'");
    if local.contains(' ') || local.starts_with(['#', '@']) {
        let escaped = local.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"@{domain}")
    } else {
        key.to_string()
    }
}

fn flipped(regime: Regime) -> Regime {
    match regime {
        Regime::OptIn => Regime::OptOut,
        Regime::OptOut => Regime::OptIn,
    }
}

fn filled_by_updates(specs: &Specs, population: &Population) -> RedisBackend {
    let spec = specs.next();
    let mut domains_only = Population::new(population.normalize_config());
    for (domain, regime) in population.domains() {
        // Declared with the other regime, then corrected by `set_regime`.
        domains_only.add_domain(domain, flipped(regime)).unwrap();
    }
    block_on(load(&spec, &domains_only, |_| {})).expect("load");
    let backend = block_on(RedisBackend::connect(&spec)).expect("connect");
    block_on(async {
        for (domain, regime) in population.domains() {
            let domain = std::str::from_utf8(domain).unwrap();
            backend
                .set_regime(domain, regime)
                .await
                .expect("set_regime");
            assert_eq!(backend.regime(domain).await.unwrap(), Some(regime));
        }
        for (key, preference) in population.mailboxes() {
            let address = spelled(key);
            backend.set(&address, preference).await.expect("set");
            assert_eq!(backend.get(&address).await.expect("get"), Some(preference));
        }
    });
    backend
}

fn replaced(specs: &Specs, population: &Population) -> RedisBackend {
    let spec = specs.next();
    // First a population that contradicts the real one everywhere it can.
    let mut other = Population::new(population.normalize_config());
    other.add_domain(b"stale.example", Regime::OptOut).unwrap();
    other
        .add_mailbox(b"gone@stale.example", Preference::In)
        .unwrap();
    for (domain, regime) in population.domains() {
        other.add_domain(domain, flipped(regime)).unwrap();
    }
    for (key, preference) in population.mailboxes() {
        let flipped = match preference {
            Preference::In => Preference::Out,
            Preference::Out | Preference::Default => Preference::In,
        };
        other.add_mailbox(spelled(key).as_bytes(), flipped).unwrap();
    }
    other
        .add_mailbox(b"extra@in.example", Preference::In)
        .unwrap();
    let first = block_on(load(&spec, &other, |_| {})).expect("first load");
    assert!(!first.replaced);
    let backend = block_on(RedisBackend::connect(&spec)).expect("connect");
    let second = block_on(load(&spec, population, |_| {})).expect("second load");
    assert!(second.replaced);
    assert_eq!(second.removed_domains, 1);
    // The backend connected before the second load serves the new content.
    block_on(async {
        assert_eq!(backend.regime("stale.example").await.unwrap(), None);
        assert_eq!(backend.get("gone@stale.example").await.unwrap(), None);
        assert_eq!(backend.get("extra@in.example").await.unwrap(), None);
    });
    backend
}

async fn single_server_conforms() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let redis = local_redis(dir.path())?;
    let specs = Specs::single(&redis);
    conformance::run(|population| loaded(&specs, &population)).await;
    conformance::run(|population| filled_by_updates(&specs, &population)).await;
    conformance::run(|population| replaced(&specs, &population)).await;
    redis.stop().unwrap();
    Ok(())
}

async fn cluster_conforms() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(dir.path())?;
    let specs = Specs::cluster(&cluster);
    conformance::run(|population| loaded(&specs, &population)).await;
    conformance::run(|population| filled_by_updates(&specs, &population)).await;
    conformance::run(|population| replaced(&specs, &population)).await;
    cluster.stop().unwrap();
    Ok(())
}
