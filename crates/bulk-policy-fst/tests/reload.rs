//! Swapping tables while lookups run: every batch is answered from one table, old or new,
//! never from a partial one, and after the last reload from the newest
//! (`bulk_policy::conformance::reload`).

use std::sync::Arc;

use bulk_policy::conformance::reload::{population, reload_under_lookups};
use bulk_policy_fst::FstBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn reload_while_looking_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swap.fst");
    bulk_policy_fst::build(&population(0), &path).unwrap();
    let backend = Arc::new(FstBackend::open(&path).unwrap());
    let file = path.clone();
    reload_under_lookups(backend, move |generation| {
        bulk_policy_fst::build(&population(generation), &file).unwrap();
    })
    .await;
    // Every build renamed its file into place: no temporary file is left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
