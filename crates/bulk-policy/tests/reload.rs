//! Reloading the memory backend's population file while lookups run: every batch is
//! answered from one table, old or new, never from a partial one, and after the last
//! reload from the newest (`bulk_policy::conformance::reload`, which the fst backend's
//! tests run too).

use std::sync::Arc;

use bulk_policy::conformance::reload::{population, reload_under_lookups};
use bulk_policy::{MemoryBackend, NormalizeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn reload_while_looking_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swap.tsv");
    // In place: the backend reads the file only when told to reload.
    let write = |path: &std::path::Path, generation: u32| {
        let mut text = Vec::new();
        population(generation).write_to(&mut text).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(&path, 0);
    let backend = Arc::new(MemoryBackend::load(&path, NormalizeConfig::default()).unwrap());
    let file = path.clone();
    reload_under_lookups(backend, move |generation| write(&file, generation)).await;
}
