//! Opening and building where there is no environment, someone else's, or a damaged one.

use std::path::Path;

use bulk_policy::{AddressBatch, NormalizeConfig, PolicyBackend, Population, Preference, Regime};
use bulk_policy_lmdb::{FORMAT, LmdbBackend, LmdbError, build};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvOpenOptions};

fn population() -> Population {
    let mut p = Population::default();
    p.add_domain(b"x.example", Regime::OptIn).unwrap();
    p.add_mailbox(b"ann@x.example", Preference::In).unwrap();
    p
}

/// File names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `f` on a named database of the environment in `dir`, opened with heed directly
/// (after which the environment is closed again).
fn with_raw_db(
    dir: &Path,
    name: &str,
    f: impl FnOnce(&heed::Env, Database<'static, Bytes, Bytes>),
) {
    // SAFETY: heed's open is unsafe because one environment must not be opened twice in a
    // process; each test uses its own folder, and no backend has it open here.
    let env = unsafe { EnvOpenOptions::new().max_dbs(8).open(dir).unwrap() };
    let wtxn = env.write_txn().unwrap();
    let db = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Bytes, Bytes>(wtxn, Some(name))
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit();
    f(&env, db);
    let closing = env.prepare_for_closing();
    closing.wait();
}

#[test]
fn open_refuses_missing_and_empty_directories_untouched() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("missing");
    let e = LmdbBackend::open(&missing).unwrap_err();
    assert!(matches!(e, LmdbError::NoEnvironment { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!missing.exists());

    let e = LmdbBackend::open(root.path()).unwrap_err();
    assert!(matches!(e, LmdbError::NoEnvironment { .. }), "{e}");
    assert!(listing(root.path()).is_empty(), "open created files");

    std::fs::write(root.path().join("population.tsv"), "@x.example\topt-in\n").unwrap();
    let e = LmdbBackend::open(root.path()).unwrap_err();
    assert!(matches!(e, LmdbError::NoEnvironment { .. }), "{e}");
    assert_eq!(listing(root.path()), ["population.tsv"]);

    // A file, not a directory.
    let e = LmdbBackend::open(&root.path().join("population.tsv")).unwrap_err();
    assert!(matches!(e, LmdbError::Io { .. }), "{e}");
}

#[test]
fn open_refuses_a_data_file_that_is_not_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    let junk = vec![0x5a_u8; 64 * 1024];
    std::fs::write(dir.path().join("data.mdb"), &junk).unwrap();
    let e = LmdbBackend::open(dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
    assert_eq!(std::fs::read(dir.path().join("data.mdb")).unwrap(), junk);
    // Nor does a build overwrite it.
    let e = build(&population(), dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
    assert_eq!(std::fs::read(dir.path().join("data.mdb")).unwrap(), junk);
}

#[test]
fn foreign_lmdb_environment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_raw_db(dir.path(), "accounts", |env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.put(&mut wtxn, b"alice", b"42").unwrap();
        wtxn.commit().unwrap();
    });
    let e = LmdbBackend::open(dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
    let e = build(&population(), dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
    // The foreign data is intact.
    with_raw_db(dir.path(), "accounts", |env, db| {
        let rtxn = env.read_txn().unwrap();
        assert_eq!(db.get(&rtxn, b"alice").unwrap(), Some(&b"42"[..]));
    });
}

#[test]
fn build_refuses_directories_with_other_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
    let e = build(&population(), dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
    assert!(e.to_string().contains("notes.txt"), "{e}");
    assert_eq!(listing(dir.path()), ["notes.txt"]);

    // Even beside an environment of ours.
    let env = tempfile::tempdir().unwrap();
    build(&population(), env.path()).unwrap();
    std::fs::write(env.path().join("notes.txt"), "keep me").unwrap();
    let e = build(&population(), env.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
    // Opening does not mind.
    LmdbBackend::open(env.path()).unwrap();

    // A path through a file.
    let e = build(&population(), &dir.path().join("notes.txt")).unwrap_err();
    assert!(matches!(e, LmdbError::Io { .. }), "{e}");
}

#[test]
fn other_format_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(&population(), dir.path()).unwrap();
    with_raw_db(dir.path(), "meta", |env, db| {
        let mut wtxn = env.write_txn().unwrap();
        assert_eq!(db.get(&wtxn, b"format").unwrap(), Some(FORMAT.as_bytes()));
        db.put(&mut wtxn, b"format", b"bulkbench-policy-lmdb/99")
            .unwrap();
        wtxn.commit().unwrap();
    });
    let e = LmdbBackend::open(dir.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} holds policy format `bulkbench-policy-lmdb/99`, this build reads `{FORMAT}`: \
             rebuild it into an empty directory",
            dir.path().canonicalize().unwrap().display()
        )
    );
    let e = build(&population(), dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Version { .. }), "{e}");

    with_raw_db(dir.path(), "meta", |env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.put(&mut wtxn, b"format", b"somebody-else/1").unwrap();
        wtxn.commit().unwrap();
    });
    let e = LmdbBackend::open(dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Foreign { .. }), "{e}");
}

#[test]
fn interrupted_build_is_refused_then_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    build(&population(), dir.path()).unwrap();
    with_raw_db(dir.path(), "meta", |env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.clear(&mut wtxn).unwrap();
        wtxn.commit().unwrap();
    });
    let e = LmdbBackend::open(dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Incomplete { .. }), "{e}");
    let stats = build(&population(), dir.path()).unwrap();
    assert!(!stats.replaced);
    assert_eq!(LmdbBackend::open(dir.path()).unwrap().len().unwrap(), 1);
}

#[test]
fn rebuild_keeps_the_normalization() {
    let dir = tempfile::tempdir().unwrap();
    build(&population(), dir.path()).unwrap();
    let case_sensitive = NormalizeConfig {
        fold_local_case: false,
        recipient_delimiter: Some(b'+'),
    };
    let mut other = Population::new(case_sensitive);
    other.add_domain(b"x.example", Regime::OptIn).unwrap();
    let e = build(&other, dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::NormalizeMismatch { .. }), "{e}");
    assert_eq!(LmdbBackend::open(dir.path()).unwrap().len().unwrap(), 1);
}

#[tokio::test]
async fn corrupt_values_fail_the_batch_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    build(&population(), dir.path()).unwrap();
    with_raw_db(dir.path(), "mailboxes", |env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.put(&mut wtxn, b"bad@x.example", b"?").unwrap();
        wtxn.commit().unwrap();
    });
    let backend = LmdbBackend::open(dir.path()).unwrap();
    let batch: AddressBatch = ["ann@x.example", "bad@x.example"]
        .iter()
        .map(|a| a.as_bytes())
        .collect();
    let mut out = vec![bulk_policy::Verdict::NotLocal];
    let e = backend.lookup(&batch, &mut out).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("mailboxes/bad@x.example holds \"?\""),
        "{e}"
    );
    assert_eq!(out, [bulk_policy::Verdict::NotLocal], "out was changed");
    let e = backend.get("bad@x.example").unwrap_err();
    assert!(matches!(e, LmdbError::Corrupt { .. }), "{e}");
}

#[test]
fn corrupt_normalize_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(&population(), dir.path()).unwrap();
    with_raw_db(dir.path(), "meta", |env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.put(&mut wtxn, b"normalize", b"yes").unwrap();
        wtxn.commit().unwrap();
    });
    let e = LmdbBackend::open(dir.path()).unwrap_err();
    assert!(matches!(e, LmdbError::Corrupt { .. }), "{e}");
}

#[test]
fn a_truncated_data_file_is_refused_before_any_read() {
    // Enough mailboxes for the data to span many pages past the two meta pages.
    let mut p = population();
    for i in 0..5_000 {
        p.add_mailbox(format!("m{i}@x.example").as_bytes(), Preference::Out)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    build(&p, dir.path()).unwrap();
    let data = dir.path().join("data.mdb");
    let whole = std::fs::read(&data).unwrap();
    assert!(whole.len() > 16 * 4096, "{} bytes", whole.len());
    // Cut in half, and cut to the two meta pages: either way, mapping it would fault on
    // the first read of a page past the end (SIGBUS, which used to kill the process).
    for len in [whole.len() / 2, 2 * 4096] {
        std::fs::write(&data, &whole[..len]).unwrap();
        let e = LmdbBackend::open(dir.path()).unwrap_err();
        match &e {
            LmdbError::Truncated {
                file,
                len: found,
                needed,
            } => {
                assert_eq!(file, &dir.path().canonicalize().unwrap().join("data.mdb"));
                assert_eq!(*found, len as u64);
                assert!(*needed > *found, "{e}");
            }
            other => panic!("{other}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("truncated") && text.contains("rebuild"),
            "{text}"
        );
    }
    // The whole file opens again, with its verdicts.
    std::fs::write(&data, &whole).unwrap();
    let backend = LmdbBackend::open(dir.path()).unwrap();
    assert_eq!(backend.len().unwrap(), 5_001);
}
