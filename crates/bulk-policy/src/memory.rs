//! The in-memory backend: every verdict resolved at build time, one hash probe per lookup;
//! loaded from a population file, it reloads the file on request.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashSet;

use crate::AddressBatch;
use crate::address::NormalizeConfig;
use crate::keys::KeyBatch;
use crate::population::{Population, PopulationError};
use crate::table::KeyTable;
use crate::{PolicyBackend, PolicyError, Reload, ReloadError, Verdict};

/// [`PolicyBackend::name`] of this backend.
const NAME: &str = "memory";

/// How long a reload waits for the lookups still on the table it replaced, so that it
/// frees that table itself rather than leave the work (a free per key, a million of them
/// for a million mailboxes) to the lookup that finishes last. A lookup never waits, so
/// they finish in microseconds; past this, the last holder frees it.
const RELEASE_WAIT: Duration = Duration::from_millis(100);

/// A [`PolicyBackend`] holding the whole population in memory.
///
/// Preferences and regimes are folded into one verdict per mailbox when the backend is
/// built, so looking up a known mailbox costs one normalization and one probe of a table
/// of its own (`table.rs`: open addressing, at most half full, each probe's cache lines
/// requested a few keys ahead, so the misses of a batch overlap); only an unknown key
/// costs a second probe, in the set of served domains.
///
/// Built by [`load`](Self::load), it remembers the population file and the normalization,
/// and [`reload`](PolicyBackend::reload) reads the file again: the new tables are built
/// beside the ones in service while lookups go on, then swapped in atomically. Built by
/// [`new`](Self::new) from a population in code, it has nothing to reload.
///
/// FxHash is not collision-resistant, and that is fine here: the tables are built once
/// from the population file and never grow afterwards. Lookups never insert, so an
/// attacker choosing RCPT addresses cannot build up colliding keys; a probe walks at most
/// the run of occupied slots its hash lands in, whose lengths depend on the stored keys
/// and the load factor (at most one half), not on the key probed, so a crafted address
/// costs one hash of at most a line's length plus an ordinary probe. The stored keys come
/// from the operator, not from the network.
pub struct MemoryBackend {
    /// The table in service.
    ///
    /// Swap protocol: a batch loads the pointer once and resolves every address against
    /// that one table, so a batch never mixes two. A reload parses the file and builds
    /// the new table with nothing held, then swaps the pointer; lookups in flight finish
    /// on the old table, which their guards keep alive. A failed reload swaps nothing.
    ///
    /// Why `ArcSwap` rather than `RwLock<Arc<Table>>` (the fst backend's): `load` marks
    /// the pointer in a slot of the calling thread's own and writes no cache line that
    /// other threads use, where a read lock and an `Arc` clone each write a shared counter
    /// twice per batch, and that line bounces between cores that look up at once. Measured
    /// on this project's 2-vCPU machine (release, a throwaway loop of 20M loads per thread,
    /// 3 runs): `load` and its drop 14-16 ns with 1 thread or 2 at once; read lock, clone
    /// and drops 18 ns alone, 270-295 ns with 2 threads at it back to back. One load per
    /// batch, against about 200 ns per address looked up in a table of 1M mailboxes.
    current: ArcSwap<Table>,
    /// The population file and the normalization it was loaded with, which a reload uses
    /// again; `None` when built from a population in code.
    source: Option<Source>,
}

/// Where a [`MemoryBackend`] loaded from a file reloads it from.
#[derive(Clone, Debug)]
struct Source {
    path: PathBuf,
    normalize: NormalizeConfig,
}

/// One version of the population, folded into verdicts.
struct Table {
    normalize: NormalizeConfig,
    /// Normalized `local@domain` -> final verdict (never `NotLocal` or `UnknownMailbox`).
    verdicts: KeyTable,
    /// Served domains, lowercased: tells an unknown mailbox from a foreign domain.
    served: FxHashSet<Box<[u8]>>,
}

impl fmt::Debug for MemoryBackend {
    // The maps are millions of keys; show what identifies the table instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.current.load();
        f.debug_struct("MemoryBackend")
            .field("path", &self.path())
            .field("normalize", &table.normalize)
            .field("mailboxes", &table.verdicts.len())
            .field("domains", &table.served.len())
            .finish()
    }
}

impl Clone for MemoryBackend {
    /// A backend sharing the table in service (no copy) and the file it reloads from;
    /// each reloads on its own from then on.
    fn clone(&self) -> Self {
        MemoryBackend {
            current: ArcSwap::new(self.current.load_full()),
            source: self.source.clone(),
        }
    }
}

impl MemoryBackend {
    /// Builds the backend, taking the population's keys without copying them. It has no
    /// file to reload: [`reload`](PolicyBackend::reload) says [`Reload::Unsupported`].
    pub fn new(population: Population) -> Self {
        MemoryBackend {
            current: ArcSwap::from_pointee(Table::new(population)),
            source: None,
        }
    }

    /// Reads and parses the population file at `path` ([`Population::load`]) and builds
    /// the backend from it, remembering the file and `normalize`:
    /// [`reload`](PolicyBackend::reload) reads the file again.
    pub fn load(
        path: impl AsRef<Path>,
        normalize: NormalizeConfig,
    ) -> Result<Self, PopulationError> {
        let path = path.as_ref().to_path_buf();
        let population = Population::load(&path, normalize)?;
        Ok(MemoryBackend {
            current: ArcSwap::from_pointee(Table::new(population)),
            source: Some(Source { path, normalize }),
        })
    }

    /// The population file the backend was loaded from and reloads, if any.
    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(|source| source.path.as_path())
    }

    /// The verdict for one address; `scratch` holds its key, and is reused across calls so a
    /// lookup allocates nothing.
    pub fn lookup_one(&self, address: &[u8], scratch: &mut Vec<u8>) -> Verdict {
        self.current.load().lookup_one(address, scratch)
    }

    /// The normalization lookups use (the population's).
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.current.load().normalize
    }

    /// Number of known mailboxes.
    pub fn len(&self) -> usize {
        self.current.load().verdicts.len()
    }

    /// Whether no mailbox is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of served domains.
    pub fn domain_count(&self) -> usize {
        self.current.load().served.len()
    }
}

impl Table {
    fn new(population: Population) -> Table {
        let (normalize, domains, mailboxes) = population.into_parts();
        let verdicts = KeyTable::build(mailboxes.into_iter().map(|(key, preference)| {
            let domain = memchr::memrchr(b'@', &key).and_then(|at| key.get(at + 1..));
            // A population guarantees every mailbox's domain is served; were it not,
            // the mailbox would be as unreachable as any address of a foreign domain.
            let verdict = domain
                .and_then(|d| domains.get(d))
                .map_or(Verdict::NotLocal, |regime| preference.verdict(*regime));
            (key, verdict)
        }));
        Table {
            normalize,
            verdicts,
            served: domains.into_keys().collect(),
        }
    }

    fn lookup_one(&self, address: &[u8], scratch: &mut Vec<u8>) -> Verdict {
        let Ok(at) = self.normalize.normalize_into(address, scratch) else {
            return Verdict::NotLocal;
        };
        if let Some(verdict) = self.verdicts.get(scratch) {
            return verdict;
        }
        match scratch.get(at + 1..) {
            Some(domain) if self.served.contains(domain) => Verdict::UnknownMailbox,
            _ => Verdict::NotLocal,
        }
    }

    /// Normalizes every address of the batch first ([`KeyBatch`]), then probes the keys
    /// with each probe's cache lines requested a few keys ahead ([`KeyTable::get_batch`]),
    /// so the cache misses of a batch overlap.
    fn lookup_batch(&self, batch: &AddressBatch, keys: &mut KeyBatch, out: &mut Vec<Verdict>) {
        keys.fill(self.normalize, batch);
        HASHES.with_borrow_mut(|hashes| {
            self.verdicts.get_batch(keys, hashes, |i, verdict| {
                out.push(match verdict {
                    Some(verdict) => verdict,
                    None => match keys.get(i) {
                        Some(key) if self.served.contains(key.domain()) => Verdict::UnknownMailbox,
                        _ => Verdict::NotLocal,
                    },
                });
            });
        });
    }
}

thread_local! {
    /// The hashes of a batch's keys ([`KeyTable::get_batch`]), reused per thread.
    static HASHES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// A population file's error as a reload reports it: naming the file, and the line for an
/// error in its content.
fn describe(path: &Path, error: &PopulationError) -> String {
    let mut text = match error {
        // Names the file already.
        PopulationError::Io { .. } => error.to_string(),
        // Names only the line.
        _ => format!("invalid population file {}: {error}", path.display()),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Frees the table a reload replaced once the lookups still on it are done, on the
/// reloading thread (see [`RELEASE_WAIT`]).
fn release(mut old: Arc<Table>) {
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        match Arc::try_unwrap(old) {
            Ok(table) => return drop(table),
            Err(shared) if Instant::now() < deadline => {
                old = shared;
                std::thread::sleep(Duration::from_micros(50));
            }
            // Still shared: a clone of the backend holds it, or a lookup is unusually
            // slow. Whoever drops it last frees it.
            Err(_) => return,
        }
    }
}

impl PolicyBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        // Nothing here waits: the whole batch is resolved within the first poll, on one
        // table (see `current` for what its load costs).
        let table = self.current.load();
        out.reserve(batch.len());
        KeyBatch::with_thread_local(|keys| table.lookup_batch(batch, keys, out));
        Ok(())
    }

    /// Reads the population file again and swaps the new table in; a file that cannot be
    /// read or parsed leaves the table in service, and the error names the file and the
    /// line. Memory peaks at both tables (and the file's text) for the while.
    fn reload(&self) -> Result<Reload, ReloadError> {
        let Some(source) = &self.source else {
            return Ok(Reload::Unsupported);
        };
        let population =
            Population::load(&source.path, source.normalize).map_err(|error| ReloadError {
                backend: NAME,
                reason: describe(&source.path, &error),
            })?;
        let old = self.current.swap(Arc::new(Table::new(population)));
        release(old);
        Ok(Reload::Swapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::{Preference, Regime};

    #[test]
    fn lookup_one_table() {
        let mut population = Population::default();
        population.add_domain(b"In.Example", Regime::OptIn).unwrap();
        population
            .add_domain(b"out.example", Regime::OptOut)
            .unwrap();
        for (address, preference) in [
            (&b"ann@in.example"[..], Preference::In),
            (b"bob@in.example", Preference::Out),
            (b"carol@in.example", Preference::Default),
            (b"Dave@out.example", Preference::Default),
            (b"erin@out.example", Preference::Out),
        ] {
            population.add_mailbox(address, preference).unwrap();
        }
        let backend = MemoryBackend::new(population.clone());
        assert_eq!(
            (backend.len(), backend.is_empty(), backend.domain_count()),
            (5, false, 2)
        );
        assert_eq!(backend.name(), "memory");

        let cases: &[(&str, Verdict)] = &[
            ("ann@in.example", Verdict::Accept),
            ("ANN+x@IN.example", Verdict::Accept),
            ("bob@in.example", Verdict::OptedOut),
            ("carol@in.example", Verdict::OptedOut),
            ("dave@out.example", Verdict::Accept),
            ("\"Dave\"@out.example", Verdict::Accept),
            ("erin@out.example", Verdict::OptedOut),
            ("zed@in.example", Verdict::UnknownMailbox),
            ("ann@elsewhere.example", Verdict::NotLocal),
            ("ann@", Verdict::NotLocal),
            ("in.example", Verdict::NotLocal),
            ("\"\"@in.example", Verdict::NotLocal),
            ("", Verdict::NotLocal),
        ];
        let mut scratch = Vec::new();
        for (address, expected) in cases {
            assert_eq!(
                backend.lookup_one(address.as_bytes(), &mut scratch),
                *expected,
                "{address}"
            );
            assert_eq!(
                population.verdict_of(address.as_bytes()),
                *expected,
                "{address}"
            );
        }
    }

    fn verdicts(backend: &MemoryBackend, addresses: &[&str]) -> Vec<Verdict> {
        let mut scratch = Vec::new();
        addresses
            .iter()
            .map(|a| backend.lookup_one(a.as_bytes(), &mut scratch))
            .collect()
    }

    const ADDRESSES: [&str; 4] = [
        "ann@in.example",
        "bob@in.example",
        "zed@in.example",
        "ann@new.example",
    ];

    #[test]
    fn reload_reads_the_file_again_and_keeps_the_table_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pop.tsv");
        std::fs::write(&path, "@in.example\topt-in\nann@in.example\tin\n").unwrap();
        let normalize = NormalizeConfig {
            fold_local_case: false,
            recipient_delimiter: Some(b'-'),
        };
        let backend = MemoryBackend::load(&path, normalize).unwrap();
        assert_eq!(backend.path(), Some(path.as_path()));
        let first = [
            Verdict::Accept,
            Verdict::UnknownMailbox,
            Verdict::UnknownMailbox,
            Verdict::NotLocal,
        ];
        assert_eq!(verdicts(&backend, &ADDRESSES), first);

        // Ann opts out, Bob appears, a domain is added: all seen after the reload, with the
        // normalization the backend was loaded with (case kept, `-` cut).
        let second_text = "@in.example\topt-in\nann@in.example\tout\nbob@in.example\tin\n\
                           @new.example\topt-out\n";
        std::fs::write(&path, second_text).unwrap();
        assert_eq!(
            verdicts(&backend, &ADDRESSES),
            first,
            "not before the reload"
        );
        assert_eq!(backend.reload().unwrap(), Reload::Swapped);
        let second = [
            Verdict::OptedOut,
            Verdict::Accept,
            Verdict::UnknownMailbox,
            Verdict::UnknownMailbox,
        ];
        assert_eq!(verdicts(&backend, &ADDRESSES), second);
        assert_eq!((backend.len(), backend.domain_count()), (2, 2));
        assert_eq!(
            verdicts(&backend, &["Bob@in.example", "bob-x@in.example"]),
            [Verdict::UnknownMailbox, Verdict::Accept]
        );

        // A broken file: an error naming the file and the line; the table stays.
        std::fs::write(&path, format!("{second_text}carol@in.example in\n")).unwrap();
        let error = backend.reload().unwrap_err();
        assert_eq!(error.backend, "memory");
        let text = error.to_string();
        assert!(
            text.contains(&format!(
                "invalid population file {}: line 5:",
                path.display()
            )) && text.contains("carol@in.example"),
            "{text}"
        );
        assert_eq!(verdicts(&backend, &ADDRESSES), second);

        // No file at all: the I/O error and its cause; the table stays.
        std::fs::remove_file(&path).unwrap();
        let text = backend.reload().unwrap_err().to_string();
        assert!(
            text.contains(&format!("cannot read population file {}: ", path.display())),
            "{text}"
        );
        assert_eq!(verdicts(&backend, &ADDRESSES), second);
        assert_eq!(backend.len(), 2);
    }

    #[test]
    fn a_backend_built_in_code_has_nothing_to_reload() {
        let mut population = Population::default();
        population.add_domain(b"in.example", Regime::OptIn).unwrap();
        population
            .add_mailbox(b"ann@in.example", Preference::In)
            .unwrap();
        let backend = MemoryBackend::new(population);
        assert_eq!(backend.path(), None);
        assert_eq!(backend.reload().unwrap(), Reload::Unsupported);
        assert_eq!(verdicts(&backend, &ADDRESSES[..1]), [Verdict::Accept]);
        // A clone shares the table; Debug shows its size, not its keys.
        let shown = format!("{:?}", backend.clone());
        assert!(shown.contains("mailboxes: 1, domains: 1"), "{shown}");
        assert!(!shown.contains("ann"), "{shown}");
    }

    /// The batched lookup (keys fetched ahead of their probes) answers as
    /// `Population::verdict_of` does, in every batch size around the prefetch distance:
    /// duplicates, mixed case, `+tags`, quoted local parts, foreign domains, addresses
    /// without a key, and enough mailboxes that probes share runs of slots.
    #[test]
    fn batched_lookup_agrees_with_verdict_of() {
        let mut population = Population::default();
        population.add_domain(b"in.example", Regime::OptIn).unwrap();
        population
            .add_domain(b"Out.Example", Regime::OptOut)
            .unwrap();
        let preferences = [Preference::In, Preference::Out, Preference::Default];
        for i in 0..500 {
            let domain = if i % 3 == 0 {
                "in.example"
            } else {
                "out.example"
            };
            let address = format!("user{i}@{domain}");
            population
                .add_mailbox(address.as_bytes(), preferences[i % 3])
                .unwrap();
        }
        let backend = MemoryBackend::new(population.clone());
        let mut pool: Vec<String> = Vec::new();
        for i in (0..600).step_by(7) {
            let domain = if i % 3 == 0 {
                "in.example"
            } else {
                "out.example"
            };
            pool.push(format!("user{i}@{domain}"));
            pool.push(format!("User{i}+News@{}", domain.to_uppercase()));
            pool.push(format!("\"user{i}\"@{domain}"));
            pool.push(format!("user{i}@elsewhere.example"));
            pool.push(format!("user{i}"));
            pool.push("user0@in.example".to_owned());
        }
        pool.extend(["", "@", "a@", "\"\"@in.example", "+x@out.example"].map(String::from));
        for size in [0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 101, pool.len()] {
            let addresses = &pool[pool.len() - size..];
            let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
            let mut got = Vec::new();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            {
                let lookup = std::pin::pin!(backend.lookup(&batch, &mut got));
                assert!(lookup.poll(&mut cx).is_ready());
            }
            let want: Vec<Verdict> = addresses
                .iter()
                .map(|a| population.verdict_of(a.as_bytes()))
                .collect();
            assert_eq!(got, want, "batch of {size}");
        }
    }

    #[test]
    fn empty_backend_knows_nothing() {
        let backend = MemoryBackend::new(Population::default());
        assert!(backend.is_empty());
        assert_eq!(
            backend.lookup_one(b"ann@x.org", &mut Vec::new()),
            Verdict::NotLocal
        );
    }
}
