//! The shared conformance suite against the fst backend: each population is built into a
//! table file, which the backend then reads into memory (the default) or maps.

use std::sync::atomic::{AtomicUsize, Ordering};

use bulk_policy::conformance;
use bulk_policy_fst::{FstBackend, FstLoad};

async fn conforms(load: FstLoad) {
    let dir = tempfile::tempdir().unwrap();
    let tables = AtomicUsize::new(0);
    conformance::run(|population| {
        // One file per config, so a backend keeps its own path for as long as it lives.
        let n = tables.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("conformance-{n}.fst"));
        bulk_policy_fst::build(&population, &path).unwrap();
        FstBackend::open_with(&path, load).unwrap()
    })
    .await;
    assert_eq!(tables.load(Ordering::Relaxed), 3, "one table per config");
}

#[tokio::test]
async fn fst_backend_conforms() {
    conforms(FstLoad::Read).await;
}

#[tokio::test]
async fn fst_backend_conforms_mapped() {
    conforms(FstLoad::Map).await;
}
