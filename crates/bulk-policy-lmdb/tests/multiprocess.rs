//! A second process writes while this one serves, as `bulkbench policy set` does beside
//! `bulkbench serve`.
//!
//! The test binary runs itself as the second process: `parent_serves_while_child_writes`
//! spawns it with [`CHILD_DIR`] set and a filter selecting `child_process_writer`, which
//! does nothing when that variable is unset (so it passes trivially in a normal run).

use std::path::Path;
use std::process::Command;

use bulk_policy::{AddressBatch, NormalizeConfig, PolicyBackend, Population, Preference, Verdict};
use bulk_policy_lmdb::{LmdbBackend, build};
use heed::types::Bytes;
use heed::{CommitOrAbort, EnvOpenOptions};

/// Environment variable naming the directory the child writes to.
const CHILD_DIR: &str = "BULK_POLICY_LMDB_TEST_CHILD_DIR";

/// How often the child flips `carl`'s preference; it ends on `in`.
const FLIPS: usize = 100;

/// Bytes the child writes beside the policy data with a larger map than the parent's, so
/// the parent's next transaction meets `MDB_MAP_RESIZED` and must adopt the new size.
const PADDING: usize = 80 << 20;

fn population() -> Population {
    let text = "@in.example\topt-in\n@out.example\topt-out\n\
                ann@in.example\tin\ncarl@out.example\tout\n";
    Population::parse(text.as_bytes(), NormalizeConfig::default()).expect("population")
}

#[test]
fn child_process_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let backend = LmdbBackend::open(dir).expect("child: open while the parent has it open");
    assert_eq!(backend.verdict(b"ann@in.example").unwrap(), Verdict::Accept);
    for i in 0..FLIPS {
        let preference = if i % 2 == 0 {
            Preference::In
        } else {
            Preference::Out
        };
        backend
            .set("carl@out.example", preference)
            .expect("child: set");
    }
    backend
        .set("carl@out.example", Preference::In)
        .expect("child: set");
    backend
        .set("dora@in.example", Preference::In)
        .expect("child: add");
    assert!(backend.remove("ann@in.example").expect("child: remove"));
    drop(backend);

    // Grow the data file past the parent's map, as a large rebuild would.
    // SAFETY: heed's open is unsafe because one environment must not be opened twice in a
    // process; this child process opens this one only here, after dropping its backend.
    let env = unsafe {
        EnvOpenOptions::new()
            .max_dbs(3)
            .max_readers(bulk_policy_lmdb::MAX_READERS)
            .map_size(256 << 20)
            .open(dir)
            .expect("child: raw open")
    };
    let wtxn = env.write_txn().unwrap();
    let meta = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .open_database::<Bytes, Bytes>(wtxn, Some("meta"))
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .expect("meta database");
    let mut wtxn = env.write_txn().unwrap();
    meta.put(&mut wtxn, b"padding", &vec![0u8; PADDING])
        .unwrap();
    wtxn.commit().unwrap();
    println!("child done");
}

#[test]
fn parent_serves_while_child_writes() {
    let dir = tempfile::tempdir().unwrap();
    let stats = build(&population(), dir.path()).unwrap();
    assert!(
        stats.map_bytes < PADDING as u64,
        "padding would not outgrow the map"
    );
    let backend = LmdbBackend::open(dir.path()).unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_process_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the test binary");

    let addresses = ["carl@out.example", "zed@in.example", "x@y.net"];
    let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let mut lookups = 0usize;
    let status = loop {
        out.clear();
        runtime
            .block_on(backend.lookup(&batch, &mut out))
            .expect("lookup while the child writes");
        assert!(
            matches!(out[0], Verdict::Accept | Verdict::OptedOut),
            "{out:?}"
        );
        assert_eq!(out[1..], [Verdict::UnknownMailbox, Verdict::NotLocal]);
        lookups += 1;
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(status.success(), "child failed: {stdout}");
    assert!(
        stdout.contains("child done"),
        "the child did not run: {stdout}"
    );

    // The parent sees the child's writes without reopening, past the map growth.
    out.clear();
    let batch: AddressBatch = ["carl@out.example", "dora@in.example", "ann@in.example"]
        .iter()
        .map(|a| a.as_bytes())
        .collect();
    backend
        .lookup_batch(&batch, &mut out)
        .expect("lookup after the map grew");
    assert_eq!(
        out,
        [Verdict::Accept, Verdict::Accept, Verdict::UnknownMailbox]
    );
    assert_eq!(backend.len().unwrap(), 2);
    assert!(backend.disk_bytes().unwrap() > PADDING as u64);
    backend
        .set("erin@out.example", Preference::Out)
        .expect("write after the map grew");
    assert_eq!(
        backend.get("erin@out.example").unwrap(),
        Some(Preference::Out)
    );
    eprintln!("parent lookups while the child wrote: {lookups}");
}
