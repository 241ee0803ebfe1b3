//! Replays the committed seed corpus of every cargo-fuzz target through its fuzz body, so
//! the bodies run on every `cargo test` and the targets in `fuzz/` never rot.
//!
//! A missing or empty corpus folder, or a folder with no body here, fails the test: it must
//! not pass on nothing.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bulk_proto::fuzzing;

/// A fuzz body: panics when an invariant breaks.
type FuzzBody = fn(&[u8]);

/// Every fuzz target, by its corpus folder name (= its `[[bin]]` name in fuzz/Cargo.toml).
const TARGETS: [(&str, FuzzBody); 4] = [
    ("command_line", fuzzing::command_line),
    ("data_receiver", fuzzing::data_receiver),
    ("session", fuzzing::session),
    ("server_reply", fuzzing::server_reply),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

/// Runs `body` on every file of `target`'s corpus; returns how many files it ran and the
/// names of those that panicked (each panic message is printed by the panic hook).
fn replay(target: &str, body: FuzzBody) -> (usize, Vec<String>) {
    let dir = corpus_root().join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable corpus folder").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus folder {} is empty",
        dir.display()
    );
    let mut failed = Vec::new();
    for path in &files {
        let data = fs::read(path).expect("readable corpus file");
        if panic::catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    (files.len(), failed)
}

fn check(target: &str) {
    let (_, body) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let (ran, failed) = replay(target, *body);
    assert!(
        failed.is_empty(),
        "{target}: {} of {ran} corpus files failed: {failed:?}",
        failed.len()
    );
}

#[test]
fn command_line_corpus() {
    check("command_line");
}

#[test]
fn data_receiver_corpus() {
    check("data_receiver");
}

#[test]
fn server_reply_corpus() {
    check("server_reply");
}

#[test]
fn session_corpus() {
    check("session");
}

/// A corpus folder without a body here (a new fuzz target) would otherwise never be replayed.
#[test]
fn every_corpus_folder_has_a_body() {
    let mut folders: Vec<String> = fs::read_dir(corpus_root())
        .expect("fuzz/corpus exists")
        .map(|entry| entry.expect("readable fuzz/corpus").path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    known.sort();
    assert_eq!(folders, known);
}

/// The targets in fuzz/Cargo.toml are the ones replayed here.
#[test]
fn every_fuzz_target_has_a_corpus() {
    let manifest = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join("Cargo.toml"),
    )
    .expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no target {name}"
        );
    }
    let targets = manifest.matches("[[bin]]").count();
    assert_eq!(
        targets,
        TARGETS.len(),
        "fuzz/Cargo.toml has a target not replayed here"
    );
}
