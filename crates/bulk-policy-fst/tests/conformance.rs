//! The shared conformance suite against the fst backend: each population is built into a
//! table file, which the backend then maps.

use std::sync::atomic::{AtomicUsize, Ordering};

use bulk_policy::conformance;
use bulk_policy_fst::FstBackend;

#[tokio::test]
async fn fst_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let tables = AtomicUsize::new(0);
    conformance::run(|population| {
        // One file per config, so a backend keeps its own path for as long as it lives.
        let n = tables.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("conformance-{n}.fst"));
        bulk_policy_fst::build(&population, &path).unwrap();
        FstBackend::open(&path).unwrap()
    })
    .await;
    assert_eq!(tables.load(Ordering::Relaxed), 3, "one table per config");
}
