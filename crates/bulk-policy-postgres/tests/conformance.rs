//! The shared conformance suite, run against stores filled two ways: by a load, and by
//! `set` calls on a load of the domains alone. One cluster serves both, each store in a
//! schema of its own.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where PostgreSQL is missing,
//! a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use bulk_policy::{Population, conformance};
use bulk_policy_postgres::{PostgresBackend, PostgresSpec, load};
use common::{Outcome, trial};

fn main() {
    let trials = vec![trial(
        "loaded_stores_and_stores_filled_by_set_conform",
        loaded_stores_and_stores_filled_by_set_conform,
    )];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

/// Connections per backend: fewer than the suite's 16 concurrent lookups, so they queue
/// for connections as a busy server's would.
const POOL_SIZE: usize = 4;

/// Runs async set-up from the suite's synchronous `make` closure, on this runtime (whose
/// workers drive the pool's connections).
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

async fn loaded(spec: &PostgresSpec, population: &Population) -> PostgresBackend {
    let stats = load(spec, population, |_| {}).await.expect("load");
    assert_eq!(stats.mailboxes as usize, population.mailbox_count());
    assert_eq!(stats.domains as usize, population.domain_count());
    let backend = PostgresBackend::connect(spec, POOL_SIZE)
        .await
        .expect("connect");
    assert_eq!(backend.normalize_config(), population.normalize_config());
    backend
}

async fn filled_by_set(spec: &PostgresSpec, population: &Population) -> PostgresBackend {
    let mut domains_only = Population::new(population.normalize_config());
    for (domain, regime) in population.domains() {
        domains_only
            .add_domain(domain, regime)
            .expect("valid domain");
    }
    let backend = loaded(spec, &domains_only).await;
    for (key, preference) in population.mailboxes() {
        let address = common::spelled(key);
        backend.set(&address, preference).await.expect("set");
        assert_eq!(backend.get(&address).await.expect("get"), Some(preference));
    }
    backend
}

async fn loaded_stores_and_stores_filled_by_set_conform() -> Outcome {
    let cluster = common::cluster()?;
    let next = AtomicUsize::new(0);
    let spec = || {
        cluster.spec(&format!(
            "conformance_{}",
            next.fetch_add(1, Ordering::Relaxed)
        ))
    };
    conformance::run(|population| block_on(loaded(&spec(), &population))).await;
    conformance::run(|population| block_on(filled_by_set(&spec(), &population))).await;
    cluster.server.stop().expect("stop");
    Ok(())
}
