//! A table file truncated and overwritten in place while it is served: the backend,
//! opened in its default mode ([`FstLoad::Read`]), keeps answering from what it read at
//! open; mapped ([`FstLoad::Map`], the opt-in), it dies of SIGBUS, as its documentation
//! warns.
//!
//! A mapped file that shrinks under its map makes the next access to a vanished page a
//! SIGBUS, which no test harness survives. So each case runs in a child process: the test
//! runs its own binary again, `--exact` on itself, with [`CHILD`] set; the child does the
//! damage and the lookups, and the parent only reads how it ended.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;

use bulk_policy::{AddressBatch, PolicyBackend, Population, Preference, Regime, Verdict};
use bulk_policy_fst::{FstBackend, FstLoad};

/// Set in the child: the name of the test it is to run for real.
const CHILD: &str = "BULK_POLICY_FST_TRUNCATED_CHILD";

/// Domains and mailboxes per domain: a table of a few hundred KiB, many pages, so that a
/// truncation to half takes pages that lookups walk through.
const DOMAINS: u64 = 20;
const MAILBOXES_PER_DOMAIN: u64 = 2_000;

/// A local part of its own for each mailbox (splitmix64 of its number, in hex): fst shares
/// the suffixes that domains have in common, and `user1`..`userN` in every domain would
/// be one subtree at the start of the file.
fn local_part(domain: u64, mailbox: u64) -> String {
    let mut z = (domain * MAILBOXES_PER_DOMAIN + mailbox).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:x}", z ^ (z >> 31))
}

fn population() -> Population {
    let mut p = Population::default();
    for d in 0..DOMAINS {
        let domain = format!("d{d}.example");
        let regime = if d % 2 == 0 {
            Regime::OptIn
        } else {
            Regime::OptOut
        };
        p.add_domain(domain.as_bytes(), regime).unwrap();
        for m in 0..MAILBOXES_PER_DOMAIN {
            let preference = [Preference::In, Preference::Out, Preference::Default][m as usize % 3];
            let address = format!("{}@{domain}", local_part(d, m));
            p.add_mailbox(address.as_bytes(), preference).unwrap();
        }
    }
    p
}

/// Every mailbox, an unknown mailbox per domain, and a foreign address, in batches of 100.
fn batches(p: &Population) -> Vec<AddressBatch> {
    let mut addresses: Vec<Vec<u8>> = p.mailboxes().map(|(m, _)| m.to_vec()).collect();
    addresses.sort();
    addresses.extend((0..DOMAINS).map(|d| format!("nobody@d{d}.example").into_bytes()));
    addresses.push(format!("{}@elsewhere.example", local_part(0, 0)).into_bytes());
    addresses
        .chunks(100)
        .map(|chunk| chunk.iter().map(Vec::as_slice).collect())
        .collect()
}

/// Truncates the file at `path` to half its length in place, then overwrites its first
/// 4 KiB with 0xff: the same inode, changed under whoever reads it.
fn damage_in_place(path: &Path) {
    use std::io::Write as _;
    truncate_in_place(path);
    let mut file = std::fs::File::options().write(true).open(path).unwrap();
    file.write_all(&[0xff; 4096]).unwrap();
    file.sync_all().unwrap();
}

/// Truncates the file at `path` to half its length in place.
fn truncate_in_place(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_len(len / 2).unwrap();
}

fn untouched(_: &Path) {}

/// The child's part: opens the table as `load` says, damages the file if `damage`, and
/// checks every verdict.
fn open_damage_and_look_up(load: FstLoad, damage: fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.fst");
    let p = population();
    bulk_policy_fst::build(&p, &path).unwrap();
    let backend = FstBackend::open_with(&path, load).unwrap();
    assert_eq!(backend.load(), load);
    damage(&path);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for batch in batches(&p) {
        runtime.block_on(backend.lookup(&batch, &mut out)).unwrap();
        expected.extend(batch.iter().map(|address| p.verdict_of(address)));
    }
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "verdicts changed with the file");
    assert!(out.contains(&Verdict::Accept) && out.contains(&Verdict::OptedOut));
    assert_eq!(out.last(), Some(&Verdict::NotLocal));
}

/// Runs test `name` of this binary in a child with [`CHILD`] set; returns its exit status
/// and its output.
fn run_child(name: &str) -> (std::process::ExitStatus, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// Whether this process is the child running test `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|n| n == name)
}

#[test]
fn a_table_damaged_in_place_is_still_served_whole() {
    const NAME: &str = "a_table_damaged_in_place_is_still_served_whole";
    if is_child(NAME) {
        return open_damage_and_look_up(FstLoad::Read, damage_in_place);
    }
    let (status, output) = run_child(NAME);
    assert!(
        status.success(),
        "the child ended with {status:?} (signal {:?}; SIGBUS is 7 on Linux):\n{output}",
        status.signal(),
    );
    assert!(output.contains("1 passed"), "{output}");
}

/// The opt-in's risk, as `FstLoad::Map` and `serve --fst-mmap` state it: a mapped table
/// whose file is truncated in place kills the process at the next lookup.
#[test]
fn a_mapped_table_truncated_in_place_dies_of_sigbus() {
    const NAME: &str = "a_mapped_table_truncated_in_place_dies_of_sigbus";
    if is_child(NAME) {
        return open_damage_and_look_up(FstLoad::Map, truncate_in_place);
    }
    let (status, output) = run_child(NAME);
    assert_eq!(
        status.signal(),
        Some(7),
        "SIGBUS expected: {status:?}\n{output}"
    );
}

/// Mapped and left alone, the table answers as read.
#[test]
fn a_mapped_table_left_alone_is_served_whole() {
    open_damage_and_look_up(FstLoad::Map, untouched);
}
