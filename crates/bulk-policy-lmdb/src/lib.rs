//! The `lmdb` policy backend: recipients' preferences in an LMDB environment on disk, read
//! by every server thread and updated in place while they serve, from this or another process.
//!
//! # Overview
//!
//! - [`build`] writes a [`Population`] into a directory with
//!   sorted appends and returns [`BuildStats`]. Building into an existing environment
//!   replaces its contents in one write transaction: readers see the old contents or the
//!   new, never a mix.
//! - [`LmdbBackend::open`] opens it; as a [`PolicyBackend`] it normalizes a whole batch,
//!   then resolves it in one read transaction on the calling thread
//!   ([`LmdbBackend::lookup_batch`]).
//! - [`LmdbBackend::set`], [`remove`](LmdbBackend::remove) and
//!   [`set_regime`](LmdbBackend::set_regime) change entries while lookups run. Each
//!   lookup batch sees the last commit before it began (LMDB's MVCC): no lookup waits for
//!   a writer or sees half a change. Another process (the CLI's `bulkbench policy set`)
//!   may open the same directory and write at the same time; LMDB's lock file coordinates
//!   them, and a process that finds the memory map grown by another adopts the new size.
//! - [`LmdbError`] says what went wrong, naming the directory or the address.
//!
//! A lookup is a B-tree descent through the memory map, several times the in-memory
//! backend's hash probe, and the environment takes about 38 bytes per mailbox; lookup
//! costs at 1M and 10M mailboxes, and what they cost a server end to end, are in
//! BENCHMARKS.md, section 3.
//!
//! # Layout
//!
//! One LMDB environment per directory (`data.mdb`, `lock.mdb`), three named databases:
//!
//! | database    | key                            | value                                        |
//! |-------------|--------------------------------|----------------------------------------------|
//! | `domains`   | lowercased domain              | regime: `i` opt-in, `o` opt-out              |
//! | `mailboxes` | normalized `local@domain`      | preference: `i` in, `o` out, `d` default     |
//! | `meta`      | `format`                       | [`FORMAT`]                                   |
//! |             | `normalize`                    | `[fold_local_case, has_delimiter, delimiter]` |
//! |             | `build` (only during a build)  | token of the build writing it                |
//!
//! Values are single ASCII bytes so `mdb_dump -p` output stays readable. Keys sort in
//! LMDB's default byte order, which is Rust's `[u8]` order, so a build can append sorted
//! keys.
//!
//! # Example
//!
//! ```
//! use bulk_policy::{AddressBatch, PolicyBackend, Population, Preference, Regime, Verdict};
//! use bulk_policy_lmdb::LmdbBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut population = Population::default();
//! population.add_domain(b"example.org", Regime::OptIn)?;
//! population.add_mailbox(b"ann@example.org", Preference::In)?;
//! population.add_mailbox(b"bob@example.org", Preference::Default)?;
//!
//! let dir = tempfile::tempdir()?;
//! let stats = bulk_policy_lmdb::build(&population, dir.path())?;
//! assert_eq!((stats.domains, stats.mailboxes), (1, 2));
//!
//! let backend = LmdbBackend::open(dir.path())?;
//! let batch: AddressBatch = ["Ann+news@Example.org", "bob@example.org", "zed@example.org",
//!     "x@y.net"].iter().map(|a| a.as_bytes()).collect();
//! let mut verdicts = Vec::new();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(
//!     verdicts,
//!     [Verdict::Accept, Verdict::OptedOut, Verdict::UnknownMailbox, Verdict::NotLocal]
//! );
//!
//! // Bob opts in while the backend serves; the next batch sees it.
//! backend.set("Bob@example.org", Preference::In)?;
//! verdicts.clear();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(verdicts[1], Verdict::Accept);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod build;
mod error;
mod store;

use std::path::Path;
use std::sync::Arc;

use bulk_policy::{
    AddressBatch, KeyBatch, MAX_ADDRESS_LEN, MAX_DOMAIN_LEN, NormalizeConfig, PolicyBackend,
    PolicyError, Population, Preference, Regime, Reload, ReloadError, Verdict,
};
use heed::RoTxn;

pub use build::{BuildStats, MIN_MAP_BYTES, build};
pub use error::LmdbError;
pub use store::{FORMAT, MAX_READERS};

use build::{DirState, inspect};
use store::{Dbs, Store};

/// [`PolicyBackend::name`] of this backend.
const NAME: &str = "lmdb";

/// A [`PolicyBackend`] reading an LMDB environment built by [`build`].
///
/// Cloning is cheap and clones share the environment; so do all handles opened on the
/// same directory in one process (LMDB allows one per process). Lookups run on the calling
/// thread: the data is memory-mapped, so a lookup of a page in the page cache costs no
/// system call, and one of a cold page costs a page fault (a disk read) on that thread.
#[derive(Clone)]
pub struct LmdbBackend {
    store: Arc<Store>,
    dbs: Dbs,
    /// Read from the environment at open; a rebuild in place refuses to change it.
    normalize: NormalizeConfig,
}

impl std::fmt::Debug for LmdbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbBackend")
            .field("dir", &self.store.dir)
            .field("normalize", &self.normalize)
            .finish()
    }
}

impl LmdbBackend {
    /// Opens the environment [`build`] wrote into `dir`.
    ///
    /// Refuses a missing or empty directory, a data file that is not LMDB, another
    /// program's LMDB environment, another version of this format and an interrupted
    /// build, without writing to any of them (LMDB may create its lock file beside a data
    /// file it then rejects). Files other than LMDB's in `dir` are ignored.
    pub fn open(dir: &Path) -> Result<Self, LmdbError> {
        let no_env = |reason| LmdbError::NoEnvironment {
            dir: dir.to_path_buf(),
            reason,
        };
        match inspect(dir) {
            Ok(DirState::Environment { .. }) => {}
            Ok(DirState::Missing) => return Err(no_env("the directory does not exist")),
            Ok(DirState::Empty) => return Err(no_env("it holds no data file")),
            // Foreign files but no data file.
            Err(LmdbError::Foreign { .. }) => return Err(no_env("it holds no data.mdb")),
            Err(e) => return Err(e),
        }
        let store = Store::open(dir)?;
        let dbs = store.open_dbs()?.ok_or_else(|| LmdbError::Foreign {
            dir: store.dir.clone(),
            reason: "an LMDB environment without the domains, mailboxes and meta databases".into(),
        })?;
        let normalize = store.read(|rtxn| store.read_meta(&dbs, rtxn))?;
        Ok(LmdbBackend {
            store,
            dbs,
            normalize,
        })
    }

    /// The normalization lookups use: the one the environment was built with.
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.normalize
    }

    /// The environment's directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// Resolves `batch` synchronously, appending one verdict per address to `out` (left
    /// unchanged on error). This is what [`PolicyBackend::lookup`] runs; callers on a
    /// blocking thread may call it directly.
    ///
    /// Every address is normalized first, then one read transaction does every `get`: the
    /// mailbox; for a `default` preference its domain's regime; for an unknown mailbox
    /// whether its domain is served.
    pub fn lookup_batch(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), LmdbError> {
        KeyBatch::with_thread_local(|keys| {
            keys.fill(self.normalize, batch);
            let start = out.len();
            out.reserve(batch.len());
            let result = self.store.read(|rtxn| {
                for key in keys.iter() {
                    let verdict = match key {
                        Some(key) => self.verdict_in(rtxn, key.key, key.at)?,
                        None => Verdict::NotLocal,
                    };
                    out.push(verdict);
                }
                Ok(())
            });
            if result.is_err() {
                out.truncate(start);
            }
            result
        })
    }

    /// The verdict for one address, in its own read transaction.
    pub fn verdict(&self, address: &[u8]) -> Result<Verdict, LmdbError> {
        let mut key = Vec::new();
        let Ok(at) = self.normalize.normalize_into(address, &mut key) else {
            return Ok(Verdict::NotLocal);
        };
        self.store.read(|rtxn| self.verdict_in(rtxn, &key, at))
    }

    /// The stored preference of `address` (normalized as lookups do), or `None` if it has
    /// no entry.
    pub fn get(&self, address: &str) -> Result<Option<Preference>, LmdbError> {
        let (key, _) = self.lookup_key(address)?;
        if key.len() > MAX_ADDRESS_LEN {
            return Ok(None);
        }
        self.store.read(|rtxn| self.preference_in(rtxn, &key))
    }

    /// Sets the preference of `address`, adding the mailbox if it has no entry. The
    /// address must be acceptable in a population file (so a key the recipient delimiter
    /// would cut is refused) and its domain must be served.
    ///
    /// Durable when it returns (the commit is synced); lookups that begin afterwards, in
    /// any process, see it.
    pub fn set(&self, address: &str, preference: Preference) -> Result<(), LmdbError> {
        let (key, at) = self.lookup_key(address)?;
        // A throwaway population validates the entry exactly as the parser would.
        let mut check = Population::new(self.normalize);
        check.add_domain(&key[at + 1..], Regime::OptOut)?;
        check.add_mailbox(address.as_bytes(), preference)?;
        let domain = &key[at + 1..];
        let value = [preference.as_byte()];
        self.store.write(|wtxn| {
            // Checked in the writing transaction, so no concurrent change slips between.
            if self.regime_in(wtxn, domain)?.is_none() {
                return Err(LmdbError::DomainNotServed {
                    address: address.to_string(),
                    domain: String::from_utf8_lossy(domain).into_owned(),
                });
            }
            self.dbs
                .mailboxes
                .put(wtxn, &key, &value)
                .map_err(self.store.lmdb("put mailbox"))
        })
    }

    /// Removes the entry of `address` (normalized as lookups do); returns whether it had
    /// one. Lookups then answer "unknown mailbox".
    pub fn remove(&self, address: &str) -> Result<bool, LmdbError> {
        let (key, _) = self.lookup_key(address)?;
        if key.len() > MAX_ADDRESS_LEN {
            return Ok(false);
        }
        self.store.write(|wtxn| {
            self.dbs
                .mailboxes
                .delete(wtxn, &key)
                .map_err(self.store.lmdb("delete mailbox"))
        })
    }

    /// The regime of `domain` (any case), or `None` if it is not served.
    pub fn regime(&self, domain: &str) -> Result<Option<Regime>, LmdbError> {
        let key = domain.to_ascii_lowercase();
        self.store.read(|rtxn| self.regime_in(rtxn, key.as_bytes()))
    }

    /// Sets the regime of `domain` (any case), serving it from now on if it was not.
    /// The domain must be acceptable in a population file.
    pub fn set_regime(&self, domain: &str, regime: Regime) -> Result<(), LmdbError> {
        let mut check = Population::new(self.normalize);
        check.add_domain(domain.as_bytes(), regime)?;
        let key = domain.to_ascii_lowercase();
        let value = [regime.as_byte()];
        self.store.write(|wtxn| {
            self.dbs
                .domains
                .put(wtxn, key.as_bytes(), &value)
                .map_err(self.store.lmdb("put domain"))
        })
    }

    /// Number of mailboxes with an entry.
    pub fn len(&self) -> Result<usize, LmdbError> {
        self.count(self.dbs.mailboxes)
    }

    /// Whether no mailbox has an entry.
    pub fn is_empty(&self) -> Result<bool, LmdbError> {
        self.len().map(|n| n == 0)
    }

    /// Number of served domains.
    pub fn domain_count(&self) -> Result<usize, LmdbError> {
        self.count(self.dbs.domains)
    }

    /// Size of the environment's files (`data.mdb`, `lock.mdb`) on disk. The data file
    /// never shrinks: pages freed by updates are reused, not returned.
    pub fn disk_bytes(&self) -> Result<u64, LmdbError> {
        self.store.disk_bytes()
    }

    fn count(
        &self,
        db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
    ) -> Result<usize, LmdbError> {
        self.store.read(|rtxn| {
            let n = db.len(rtxn).map_err(self.store.lmdb("count"))?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// The lookup key of an address given to the update API, and the index of its '@'.
    fn lookup_key(&self, address: &str) -> Result<(Vec<u8>, usize), LmdbError> {
        self.normalize
            .key_of(address)
            .map_err(|source| LmdbError::Address {
                address: address.to_string(),
                source,
            })
    }

    /// The verdict for a normalized key whose '@' is at `at`.
    ///
    /// An `in` or `out` entry answers without reading the domain: every mailbox's domain is
    /// served (a build writes only populations, which guarantee it; `set` checks it; no
    /// call removes a domain), which is what [`Population::verdict_of`] would check.
    fn verdict_in(&self, rtxn: &RoTxn<'_>, key: &[u8], at: usize) -> Result<Verdict, LmdbError> {
        let domain = &key[at + 1..];
        if key.len() <= MAX_ADDRESS_LEN
            && let Some(preference) = self.preference_in(rtxn, key)?
        {
            return Ok(match preference {
                Preference::In => Verdict::Accept,
                Preference::Out => Verdict::OptedOut,
                Preference::Default => self
                    .regime_in(rtxn, domain)?
                    .map_or(Verdict::NotLocal, Regime::default_verdict),
            });
        }
        Ok(match self.regime_in(rtxn, domain)? {
            Some(_) => Verdict::UnknownMailbox,
            None => Verdict::NotLocal,
        })
    }

    /// The stored preference of a normalized key (at most [`MAX_ADDRESS_LEN`] bytes: LMDB
    /// refuses keys over 511 bytes with an error, which must not fail a whole batch).
    fn preference_in(&self, rtxn: &RoTxn<'_>, key: &[u8]) -> Result<Option<Preference>, LmdbError> {
        match self
            .dbs
            .mailboxes
            .get(rtxn, key)
            .map_err(self.store.lmdb("get mailbox"))?
        {
            None => Ok(None),
            Some(value) => Preference::from_bytes(value)
                .map(Some)
                .ok_or_else(|| self.store.corrupt("mailboxes", key, value)),
        }
    }

    /// The regime of a lowercased domain; a domain too long to be served is not.
    fn regime_in(&self, rtxn: &RoTxn<'_>, domain: &[u8]) -> Result<Option<Regime>, LmdbError> {
        if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
            return Ok(None);
        }
        match self
            .dbs
            .domains
            .get(rtxn, domain)
            .map_err(self.store.lmdb("get domain"))?
        {
            None => Ok(None),
            Some(value) => Regime::from_bytes(value)
                .map(Some)
                .ok_or_else(|| self.store.corrupt("domains", domain, value)),
        }
    }
}

impl PolicyBackend for LmdbBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        // Resolved within the first poll, on this thread: the read transaction lives and
        // dies inside `lookup_batch`, never across an await.
        self.lookup_batch(batch, out).map_err(PolicyError::from)
    }

    /// The environment changes in place (`bulkbench policy set`), and the next lookup sees a
    /// change: there is nothing to reload.
    fn reload(&self) -> Result<Reload, ReloadError> {
        Ok(Reload::InPlace)
    }
}
