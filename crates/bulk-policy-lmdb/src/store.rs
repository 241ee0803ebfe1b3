//! The LMDB environment: on-disk layout, one handle per directory per process, and
//! transactions that survive a change of the memory map's size.
//!
//! The layout is described in the crate documentation (`# Layout`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use bulk_policy::NormalizeConfig;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, MdbError, RoTxn, RwTxn};

use crate::error::LmdbError;

/// Format tag stored under `meta/format`; `open` refuses any other. Bump the number when
/// the layout changes.
pub const FORMAT: &str = "bulkbench-policy-lmdb/1";

/// Prefix of every format tag this crate ever wrote, to tell "ours, another version" from
/// "someone else's LMDB environment".
const FORMAT_PREFIX: &str = "bulkbench-policy-lmdb/";

/// Reader slots in the lock file. With thread-local read transactions (heed's default,
/// kept here because a slot is then claimed once per thread rather than once per
/// transaction), every thread that ever looked something up holds a slot until it exits:
/// tokio's workers plus up to 512 blocking-pool threads in the server, plus the threads of
/// other processes (the CLI) that open the same environment. A slot costs 64 bytes of lock
/// file; the writer scans only the slots in use. The first process to create the lock file
/// fixes the table size, so every opener uses this same value.
pub const MAX_READERS: u32 = 1024;

/// Named databases: `domains`, `mailboxes`, `meta`.
const MAX_DBS: u32 = 3;

pub(crate) const DATA_FILE: &str = "data.mdb";
pub(crate) const LOCK_FILE: &str = "lock.mdb";

const META_FORMAT: &[u8] = b"format";
const META_NORMALIZE: &[u8] = b"normalize";
/// Present only while a fresh build runs in several transactions: the build's token.
const META_BUILD: &[u8] = b"build";

/// Map sizes are rounded up to this; it is a multiple of every page size in use (4 KiB and
/// 64 KiB), which `mdb_env_set_mapsize` requires.
const MAP_GRANULE: u64 = 1 << 20;

/// Handles of the three databases (plain dbi numbers: copying them is free).
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub(crate) domains: Database<'static, Bytes, Bytes>,
    pub(crate) mailboxes: Database<'static, Bytes, Bytes>,
    pub(crate) meta: Database<'static, Bytes, Bytes>,
}

/// One open environment, shared by every handle on the same directory in this process.
///
/// LMDB must not be opened twice on the same files by one process: closing either handle
/// would drop the POSIX locks of both (heed refuses the second open with
/// `EnvAlreadyOpened`). So [`Store::open`] hands out the one live `Store` of a directory
/// from a registry; other processes open their own, and LMDB's lock file coordinates them.
pub(crate) struct Store {
    env: Env,
    /// The canonical directory, the registry's key and every error's context.
    pub(crate) dir: PathBuf,
    /// Protocol for resizing the memory map. `mdb_env_set_mapsize` may only run while this
    /// process has no transaction open on the environment, and transactions run on many
    /// threads at once. So every transaction, read or write, holds this lock shared for its
    /// whole life, and a resize holds it exclusively. A resize happens when this process
    /// needs a larger map (a write hit `MDB_MAP_FULL`, or a build needs room) or when
    /// another process grew the map (a transaction begin returned `MDB_MAP_RESIZED`); both
    /// are rare, so the shared acquire per transaction is all that lookups pay.
    ///
    /// No thread ever holds the lock twice (the std `RwLock` is writer-preferring, so a
    /// nested shared acquire could deadlock behind a waiting resize).
    gate: RwLock<()>,
}

/// Live stores by canonical directory. A `Vec`: a process opens a handful of directories.
static STORES: Mutex<Vec<(PathBuf, Weak<Store>)>> = Mutex::new(Vec::new());

impl Store {
    /// The store of `dir` (which must exist), opening the environment unless this process
    /// already has it open. A new environment gets LMDB's default 1 MiB map: the caller
    /// sizes it with [`Store::ensure_map_size`] before writing.
    pub(crate) fn open(dir: &Path) -> Result<Arc<Store>, LmdbError> {
        let canonical = dir.canonicalize().map_err(|source| LmdbError::Io {
            operation: "cannot resolve",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut stores = STORES.lock().unwrap_or_else(PoisonError::into_inner);
        stores.retain(|(_, store)| store.strong_count() > 0);
        if let Some(store) = stores
            .iter()
            .find(|(path, _)| *path == canonical)
            .and_then(|(_, store)| store.upgrade())
        {
            return Ok(store);
        }
        let env = match open_env(&canonical) {
            // The last handle of a previous store may still be closing on another thread
            // (its Weak is dead, heed's own registry not yet updated): wait for it once.
            Err(heed::Error::EnvAlreadyOpened) => {
                if let Some(closing) = heed::env_closing_event(&canonical) {
                    closing.wait_timeout(Duration::from_secs(5));
                }
                open_env(&canonical)
            }
            other => other,
        }
        .map_err(|source| match source {
            heed::Error::Mdb(MdbError::Invalid | MdbError::VersionMismatch) => LmdbError::Foreign {
                dir: canonical.clone(),
                reason: format!("{DATA_FILE} is not an LMDB data file of this version"),
            },
            source => LmdbError::Lmdb {
                operation: "open",
                dir: canonical.clone(),
                source,
            },
        })?;
        check_length(&env, &canonical)?;
        // Reader slots of processes that died (a killed CLI) would pin old snapshots, so
        // the file would only grow, and hold slots of the table.
        env.clear_stale_readers()
            .map_err(|source| LmdbError::Lmdb {
                operation: "clear stale readers",
                dir: canonical.clone(),
                source,
            })?;
        let store = Arc::new(Store {
            env,
            dir: canonical.clone(),
            gate: RwLock::new(()),
        });
        stores.push((canonical, Arc::downgrade(&store)));
        Ok(store)
    }

    /// Wraps a heed error with this store's directory.
    pub(crate) fn lmdb(&self, operation: &'static str) -> impl Fn(heed::Error) -> LmdbError + '_ {
        move |source| LmdbError::Lmdb {
            operation,
            dir: self.dir.clone(),
            source,
        }
    }

    /// Runs `f` in one read transaction. The transaction lives only inside this synchronous
    /// call: it is not `Send`, and holding one across an `.await` would pin a reader slot
    /// and an old snapshot for as long as the task sleeps.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&RoTxn<'_>) -> Result<R, LmdbError>,
    ) -> Result<R, LmdbError> {
        let mut adopted = false;
        loop {
            let shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
            match self.env.read_txn() {
                Ok(rtxn) => return f(&rtxn),
                Err(heed::Error::Mdb(MdbError::MapResized)) if !adopted => {
                    drop(shared);
                    self.adopt_map_size()?;
                    adopted = true;
                }
                Err(e) => return Err(self.lmdb("read transaction")(e)),
            }
        }
    }

    /// Runs `f` in one write transaction and commits it. If the map is full, grows it and
    /// runs `f` again in a new transaction (so `f` must be repeatable); if another process
    /// grew the map, adopts its size first.
    pub(crate) fn write<R>(
        &self,
        mut f: impl FnMut(&mut RwTxn<'_>) -> Result<R, LmdbError>,
    ) -> Result<R, LmdbError> {
        // Each growth at least doubles the map, so a handful of attempts covers any write
        // that fits in the address space at all.
        const ATTEMPTS: usize = 8;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let retry = attempt < ATTEMPTS;
            let shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
            let mut wtxn = match self.env.write_txn() {
                Ok(wtxn) => wtxn,
                Err(heed::Error::Mdb(MdbError::MapResized)) if retry => {
                    drop(shared);
                    self.adopt_map_size()?;
                    continue;
                }
                Err(e) => return Err(self.lmdb("write transaction")(e)),
            };
            let result = match f(&mut wtxn) {
                Ok(value) => wtxn.commit().map(|()| value).map_err(self.lmdb("commit")),
                Err(e) => {
                    // Abort now: a resize below needs every transaction closed.
                    drop(wtxn);
                    Err(e)
                }
            };
            match result {
                Err(e) if retry && e.is_map_full() => {
                    drop(shared);
                    self.ensure_map_size(self.map_size().saturating_mul(2))?;
                }
                result => return result,
            }
        }
    }

    /// Current size of this process's memory map, in bytes.
    pub(crate) fn map_size(&self) -> u64 {
        self.env.info().map_size as u64
    }

    /// Bytes of the data file in use (up to the last page written).
    pub(crate) fn used_bytes(&self) -> u64 {
        let info = self.env.info();
        let page = self.env.unnamed_database_stat().page_size;
        (info.last_page_number as u64 + 1) * u64::from(page)
    }

    /// Grows the memory map to at least `bytes` (rounded up to a MiB). The new size is
    /// written to the environment by the next commit, and other processes adopt it when
    /// their next transaction begins.
    pub(crate) fn ensure_map_size(&self, bytes: u64) -> Result<(), LmdbError> {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        if self.map_size() >= bytes {
            return Ok(());
        }
        let size = usize::try_from(round_map_size(bytes)).map_err(|_| LmdbError::Lmdb {
            operation: "map resize",
            dir: self.dir.clone(),
            source: heed::Error::Mdb(MdbError::MapFull),
        })?;
        // SAFETY: the exclusive gate guarantees no transaction of this process is open on
        // the environment, which is what `mdb_env_set_mapsize` requires.
        unsafe { self.env.resize(size) }.map_err(self.lmdb("map resize"))
    }

    /// Adopts the map size another process wrote (LMDB answered `MDB_MAP_RESIZED`).
    fn adopt_map_size(&self) -> Result<(), LmdbError> {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as in `ensure_map_size`. Size 0 means "the size recorded in the
        // environment", which is at least what the other process uses.
        unsafe { self.env.resize(0) }.map_err(self.lmdb("map resize"))
    }

    /// Opens the three databases, or `None` if the environment does not have them all.
    pub(crate) fn open_dbs(&self) -> Result<Option<Dbs>, LmdbError> {
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let rtxn = self.env.read_txn().map_err(self.lmdb("read transaction"))?;
        let opened = self
            .env
            .open_databases_and_commit(rtxn, |opener, rtxn| {
                let open = |name| opener.open_database::<Bytes, Bytes>(rtxn, Some(name));
                let dbs = (open("domains")?, open("mailboxes")?, open("meta")?);
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(dbs))
            })
            .map_err(|e| match e {
                // A foreign environment whose main database has keys that are not
                // sub-databases (or has incompatible flags).
                heed::Error::Mdb(MdbError::Incompatible) => LmdbError::Foreign {
                    dir: self.dir.clone(),
                    reason: "its main database holds other data".into(),
                },
                e => self.lmdb("open databases")(e),
            })?;
        Ok(match opened.commit() {
            Some((Some(domains), Some(mailboxes), Some(meta))) => Some(Dbs {
                domains,
                mailboxes,
                meta,
            }),
            _ => None,
        })
    }

    /// Creates the three databases (committing their creation), or opens them if they
    /// exist.
    pub(crate) fn create_dbs(&self) -> Result<Dbs, LmdbError> {
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let wtxn = self
            .env
            .write_txn()
            .map_err(self.lmdb("write transaction"))?;
        let created = self
            .env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                let domains = opener.create_database::<Bytes, Bytes>(wtxn, Some("domains"))?;
                let mailboxes = opener.create_database::<Bytes, Bytes>(wtxn, Some("mailboxes"))?;
                let meta = opener.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((domains, mailboxes, meta)))
            })
            .map_err(self.lmdb("create databases"))?;
        let (domains, mailboxes, meta) = created.commit().ok_or_else(|| LmdbError::Corrupt {
            dir: self.dir.clone(),
            what: "database creation aborted".into(),
        })?;
        Ok(Dbs {
            domains,
            mailboxes,
            meta,
        })
    }

    /// Reads and checks the format tag and the normalization config.
    pub(crate) fn read_meta(
        &self,
        dbs: &Dbs,
        rtxn: &RoTxn<'_>,
    ) -> Result<NormalizeConfig, LmdbError> {
        let get = |key| dbs.meta.get(rtxn, key).map_err(self.lmdb("read meta"));
        let Some(format) = get(META_FORMAT)? else {
            return Err(LmdbError::Incomplete {
                dir: self.dir.clone(),
            });
        };
        if format != FORMAT.as_bytes() {
            let found = String::from_utf8_lossy(format).into_owned();
            return Err(if found.starts_with(FORMAT_PREFIX) {
                LmdbError::Version {
                    dir: self.dir.clone(),
                    found,
                    expected: FORMAT,
                }
            } else {
                LmdbError::Foreign {
                    dir: self.dir.clone(),
                    reason: format!("its meta database holds format `{found}`"),
                }
            });
        }
        match get(META_NORMALIZE)? {
            Some(&[fold, has_delimiter, delimiter]) if fold <= 1 && has_delimiter <= 1 => {
                Ok(NormalizeConfig {
                    fold_local_case: fold == 1,
                    recipient_delimiter: (has_delimiter == 1).then_some(delimiter),
                })
            }
            other => Err(LmdbError::Corrupt {
                dir: self.dir.clone(),
                what: format!("meta/normalize holds {other:?}"),
            }),
        }
    }

    /// Writes the format tag and the normalization config.
    pub(crate) fn write_meta(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        normalize: NormalizeConfig,
    ) -> Result<(), LmdbError> {
        let config = [
            u8::from(normalize.fold_local_case),
            u8::from(normalize.recipient_delimiter.is_some()),
            normalize.recipient_delimiter.unwrap_or(0),
        ];
        dbs.meta
            .put(wtxn, META_NORMALIZE, &config)
            .and_then(|()| dbs.meta.put(wtxn, META_FORMAT, FORMAT.as_bytes()))
            .map_err(self.lmdb("write meta"))
    }

    /// Claims the environment for the build identified by `token` (first transaction of a
    /// fresh build in several transactions).
    pub(crate) fn claim_build(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        token: &[u8],
    ) -> Result<(), LmdbError> {
        dbs.meta
            .put(wtxn, META_BUILD, token)
            .map_err(self.lmdb("write meta"))
    }

    /// Checks that no other build claimed the environment since `token` did (every later
    /// transaction of a fresh build); with `release`, also removes the claim (the last).
    ///
    /// Two builds into one new directory, from two processes, would otherwise interleave
    /// their transactions: the second one's first transaction clears what the first one
    /// wrote, and the first one's appends would then resume after the second one's keys,
    /// leaving a complete-looking environment with a gap. With the claim, the build that
    /// started first fails at its next transaction and the later one wins.
    pub(crate) fn check_build(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        token: &[u8],
        release: bool,
    ) -> Result<(), LmdbError> {
        let claim = dbs
            .meta
            .get(wtxn, META_BUILD)
            .map_err(self.lmdb("read meta"))?;
        if claim != Some(token) {
            return Err(LmdbError::ConcurrentBuild {
                dir: self.dir.clone(),
            });
        }
        if release {
            dbs.meta
                .delete(wtxn, META_BUILD)
                .map_err(self.lmdb("write meta"))?;
        }
        Ok(())
    }

    /// Bytes of the environment's files on disk.
    pub(crate) fn disk_bytes(&self) -> Result<u64, LmdbError> {
        disk_bytes(&self.dir)
    }

    /// The error for a value byte this crate never writes.
    pub(crate) fn corrupt(&self, database: &str, key: &[u8], value: &[u8]) -> LmdbError {
        LmdbError::Corrupt {
            dir: self.dir.clone(),
            what: format!(
                "{database}/{} holds {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
        }
    }
}

/// Opens the environment in `dir` (canonical) with this crate's limits; the map size is
/// the one recorded in the environment (LMDB's 1 MiB default for a new one).
fn open_env(dir: &Path) -> Result<Env, heed::Error> {
    let mut options = EnvOpenOptions::new();
    options.max_readers(MAX_READERS).max_dbs(MAX_DBS);
    // SAFETY: heed marks opening unsafe because the files are memory-mapped: they must not
    // change except through LMDB. This crate writes them only through LMDB transactions,
    // other processes (the CLI) do the same and coordinate through LMDB's lock file, and
    // the `STORES` registry keeps this process to one handle per directory. No unsafe
    // environment flag (NO_LOCK, NO_SYNC, WRITE_MAP) is set.
    unsafe { options.open(dir) }
}

/// Refuses a data file shorter than the pages its last committed transaction uses. Opening
/// read the two meta pages with plain reads (a file without them is refused as not LMDB),
/// so the metas this reads from the map are in the file; every other page may not be.
fn check_length(env: &Env, dir: &Path) -> Result<(), LmdbError> {
    let file = dir.join(DATA_FILE);
    let len = std::fs::metadata(&file)
        .map_err(|source| LmdbError::Io {
            operation: "cannot read the length of",
            path: file.clone(),
            source,
        })?
        .len();
    let pages = env.info().last_page_number as u64 + 1;
    let needed = pages * u64::from(env.unnamed_database_stat().page_size);
    if len < needed {
        return Err(LmdbError::Truncated { file, len, needed });
    }
    Ok(())
}

/// Sum of the sizes of `data.mdb` and `lock.mdb` in `dir`.
pub(crate) fn disk_bytes(dir: &Path) -> Result<u64, LmdbError> {
    let mut total = 0;
    for name in [DATA_FILE, LOCK_FILE] {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(metadata) => total += metadata.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LmdbError::Io {
                    operation: "cannot stat",
                    path,
                    source,
                });
            }
        }
    }
    Ok(total)
}

/// `bytes` rounded up to a whole number of [`MAP_GRANULE`]s (saturating).
pub(crate) fn round_map_size(bytes: u64) -> u64 {
    bytes.div_ceil(MAP_GRANULE).saturating_mul(MAP_GRANULE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that does not fit grows the map and runs again, as often as needed.
    #[test]
    fn full_map_grows_and_the_write_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A new environment starts with LMDB's 1 MiB default map.
        assert_eq!(store.map_size(), MAP_GRANULE);
        let dbs = store.create_dbs().unwrap();
        let value = vec![b'v'; 1000];
        let mut attempts = 0;
        store
            .write(|wtxn| {
                attempts += 1;
                for i in 0..5_000u32 {
                    dbs.meta
                        .put(wtxn, &i.to_be_bytes(), &value)
                        .map_err(store.lmdb("test put"))?;
                }
                Ok(())
            })
            .unwrap();
        assert!(attempts > 1, "the map never filled");
        assert!(store.map_size() >= 5 * MAP_GRANULE, "{}", store.map_size());
        let count = store
            .read(|rtxn| dbs.meta.len(rtxn).map_err(store.lmdb("count")))
            .unwrap();
        assert_eq!(count, 5_000);
        assert!(store.used_bytes() <= store.map_size());
    }

    #[test]
    fn one_store_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let second = Store::open(&dir.path().join(".")).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        drop((first, second));
        // Closed with its last handle: a new open gets a new store.
        let third = Store::open(dir.path()).unwrap();
        assert_eq!(Arc::strong_count(&third), 1);
    }

    #[test]
    fn map_sizes_round_to_mebibytes() {
        assert_eq!(round_map_size(0), 0);
        assert_eq!(round_map_size(1), MAP_GRANULE);
        assert_eq!(round_map_size(MAP_GRANULE), MAP_GRANULE);
        assert_eq!(round_map_size(MAP_GRANULE + 1), 2 * MAP_GRANULE);
        assert_eq!(round_map_size(u64::MAX), u64::MAX);
    }
}
