//! Timing of a 1,000,000-mailbox population; run with
//! `cargo test --release -p bulk-population --test generation_speed -- --ignored --nocapture`.

use std::time::Instant;

use bulk_population::{PopulationConfig, PopulationModel};

#[test]
#[ignore = "timing: run in release with --ignored --nocapture"]
fn one_million_mailboxes() {
    let config = PopulationConfig {
        mailboxes: 1_000_000.try_into().unwrap(),
        domains: 1000.try_into().unwrap(),
        ..PopulationConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("population.tsv");

    let start = Instant::now();
    let model = PopulationModel::new(&config, 1);
    let file = std::fs::File::create(&path).unwrap();
    model.write_file(file).unwrap();
    let write = start.elapsed();
    let bytes = std::fs::metadata(&path).unwrap().len();

    let start = Instant::now();
    let population = model.build();
    let build = start.elapsed();
    assert_eq!(population.mailbox_count(), 1_000_000);

    println!(
        "1M mailboxes on {} threads: generate+write {:.2} s ({:.1} MB), build {:.2} s",
        rayon::current_num_threads(),
        write.as_secs_f64(),
        bytes as f64 / 1e6,
        build.as_secs_f64()
    );
}
