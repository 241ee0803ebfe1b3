//! The shared conformance suite, run against environments filled three ways: by a build,
//! by `set` calls on a build of the domains alone, and by a build that replaces an
//! environment holding another population.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bulk_policy::{Population, Preference, Regime, conformance};
use bulk_policy_lmdb::{LmdbBackend, build};

/// Fresh directory names under one temporary root, so `make` can stay a plain `Fn`.
struct Dirs {
    root: tempfile::TempDir,
    next: AtomicUsize,
}

impl Dirs {
    fn new() -> Self {
        Dirs {
            root: tempfile::tempdir().expect("temporary directory"),
            next: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.root.path().join(format!("env-{n}"))
    }
}

#[tokio::test]
async fn built_environment_conforms() {
    let dirs = Dirs::new();
    conformance::run(|population| {
        let dir = dirs.next();
        build(&population, &dir).expect("build");
        LmdbBackend::open(&dir).expect("open")
    })
    .await;
}

/// `local@domain` as a population file would spell the key: quoted when the local part
/// holds a space or starts with `#` or `@` (as `Population::write_to` does).
fn spelled(key: &[u8]) -> String {
    let key = std::str::from_utf8(key).expect("conformance keys are ASCII");
    let (local, domain) = key.rsplit_once('@').expect("keys have an '@'");
    if local.contains(' ') || local.starts_with(['#', '@']) {
        let escaped = local.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"@{domain}")
    } else {
        key.to_string()
    }
}

#[tokio::test]
async fn environment_filled_by_updates_conforms() {
    let dirs = Dirs::new();
    conformance::run(|population| {
        let dir = dirs.next();
        let mut domains_only = Population::new(population.normalize_config());
        for (domain, regime) in population.domains() {
            // Declared with the other regime, then corrected by `set_regime`.
            let other = match regime {
                Regime::OptIn => Regime::OptOut,
                Regime::OptOut => Regime::OptIn,
            };
            domains_only
                .add_domain(domain, other)
                .expect("valid domain");
        }
        build(&domains_only, &dir).expect("build");
        let backend = LmdbBackend::open(&dir).expect("open");
        for (domain, regime) in population.domains() {
            let domain = std::str::from_utf8(domain).expect("ASCII domain");
            backend.set_regime(domain, regime).expect("set_regime");
        }
        for (key, preference) in population.mailboxes() {
            let address = spelled(key);
            backend.set(&address, preference).expect("set");
            assert_eq!(backend.get(&address).expect("get"), Some(preference));
        }
        assert_eq!(backend.len().expect("len"), population.mailbox_count());
        backend
    })
    .await;
}

#[tokio::test]
async fn replaced_environment_conforms() {
    let dirs = Dirs::new();
    conformance::run(|population| {
        let dir = dirs.next();
        // First a population that contradicts the real one everywhere it can.
        let mut other = Population::new(population.normalize_config());
        other
            .add_domain(b"stale.example", Regime::OptOut)
            .expect("domain");
        other
            .add_mailbox(b"gone@stale.example", Preference::In)
            .expect("mailbox");
        for (domain, _) in population.domains() {
            other.add_domain(domain, Regime::OptOut).expect("domain");
        }
        for (key, preference) in population.mailboxes() {
            let flipped = match preference {
                Preference::In => Preference::Out,
                Preference::Out | Preference::Default => Preference::In,
            };
            other
                .add_mailbox(spelled(key).as_bytes(), flipped)
                .expect("mailbox");
        }
        let first = build(&other, &dir).expect("first build");
        assert!(!first.replaced);
        let backend = LmdbBackend::open(&dir).expect("open");
        let second = build(&population, &dir).expect("second build");
        assert!(second.replaced);
        // The handle opened before the rebuild serves the new contents.
        assert_eq!(backend.regime("stale.example").expect("regime"), None);
        backend
    })
    .await;
}
