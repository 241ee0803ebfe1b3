//! The backend: a table read into memory (or mapped, on request) behind an atomically
//! swappable pointer.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use bulk_policy::{
    AddressBatch, KeyBatch, NormalizeConfig, PolicyBackend, PolicyError, Reload, ReloadError,
    Verdict,
};
use fst::{IntoStreamer, Map, Streamer};
use memmap2::Mmap;
use rustc_hash::FxHashMap;

use crate::error::FstError;
use crate::format::{
    ACCEPT, DOMAIN_TAG, DOMAINS_KEY, FORMAT_VERSION, HEADER_KEYS, MAGIC_KEY, MAILBOX_TAG,
    MAILBOXES_KEY, OPTED_OUT, header_config, header_version, mailbox_prefix_into,
};
use crate::walk::{self, Start};

/// [`PolicyBackend::name`] of this backend.
const NAME: &str = "fst";

/// Keys walked per interleaved round of [`walk::get_many`]: a batch's keys are taken this
/// many at a time into arrays on the stack.
const CHUNK: usize = 64;

/// How [`FstBackend::open_with`] holds a table file: the same choice applies to every
/// [`reopen`](FstBackend::reopen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FstLoad {
    /// Read the whole file into memory of the process's own (the default). The table costs
    /// its file's size in private memory (about 8-9 bytes per mailbox), and nothing done
    /// to the file afterwards can reach lookups: a file truncated, rewritten or removed
    /// while served changes nothing until the next reload.
    #[default]
    Read,
    /// Map the file (memmap2): no copy, pages shared through the page cache with every
    /// process that maps the file, and a start that reads the file once (the checksum)
    /// instead of copying it. The risk: the map is the file, so a file truncated in
    /// place while served kills the process with SIGBUS at the next lookup that touches a
    /// vanished page, and one rewritten in place feeds lookups changing bytes. Replace the
    /// file only by renaming a new one over it, as [`build`](crate::build) does.
    Map,
}

/// A [`PolicyBackend`] answering from an fst table file written by [`build`](crate::build).
///
/// Lookups normalize with the config stored in the file, so a table always agrees with
/// the population it was built from. A known mailbox costs one normalization and one fst
/// walk; an unknown one a second, shorter walk for its `@domain` key.
///
/// [`reload`](PolicyBackend::reload) (or [`reopen`](Self::reopen)) reads (or maps) the
/// file at the same path again and swaps it in; see `current` below for how lookups stay
/// consistent.
pub struct FstBackend {
    /// The file [`reopen`](Self::reopen) opens again.
    path: PathBuf,
    /// Read or mapped, at open and at every reopen.
    load: FstLoad,
    /// The table in service.
    ///
    /// Swap protocol: a batch takes the read lock only long enough to clone the `Arc`, then
    /// resolves every address of the batch against that one table, so a batch never mixes
    /// two tables (nor a table with another table's normalization). A reload reads (or
    /// maps) and verifies the new file with no lock held, then takes the write lock just to replace
    /// the `Arc`; lookups in flight keep the old table alive through their clones, and the
    /// old table is freed (or unmapped) when the last of them drops it, outside the lock.
    /// A failed reload never touches the lock, so the old table stays in service.
    ///
    /// Neither critical section can panic, so the lock cannot be poisoned in practice; a
    /// poisoned lock is used anyway, since its content (an `Arc`) is always valid.
    current: RwLock<Arc<Table>>,
}

/// A table file's bytes, as [`FstLoad`] chose to hold them.
enum TableBytes {
    /// Read into a buffer of ours.
    Read(Box<[u8]>),
    /// Mapped.
    Mapped(Mmap),
}

impl AsRef<[u8]> for TableBytes {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        match self {
            TableBytes::Read(bytes) => bytes,
            TableBytes::Mapped(map) => map,
        }
    }
}

/// One read (or mapped), verified table file.
struct Table {
    map: Map<TableBytes>,
    /// Every served domain, with where its mailbox keys continue (`None`: the domain has no
    /// mailbox). Read from the domain keys at open: a few dozen bytes per domain, and one
    /// hash probe per lookup instead of walking the domain's bytes through the fst.
    domain_index: FxHashMap<Box<[u8]>, Option<Start>>,
    normalize: NormalizeConfig,
    mailboxes: usize,
    domains: usize,
    bytes: u64,
}

impl fmt::Debug for FstBackend {
    // The map is millions of keys; show what identifies the table instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table();
        f.debug_struct("FstBackend")
            .field("path", &self.path)
            .field("load", &self.load)
            .field("normalize", &table.normalize)
            .field("mailboxes", &table.mailboxes)
            .field("domains", &table.domains)
            .field("bytes", &table.bytes)
            .finish()
    }
}

impl FstBackend {
    /// Reads the table at `path` into memory, checks it, and serves it:
    /// [`open_with`](Self::open_with) and [`FstLoad::Read`], which nothing done to the
    /// file while it is served can disturb.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FstError> {
        Self::open_with(path, FstLoad::Read)
    }

    /// Reads or maps the table at `path`, as `load` says, checks it, and serves it.
    ///
    /// Checks, in order: the file opens and reads or maps ([`FstError::Open`]); the `fst`
    /// crate accepts it and its checksum matches ([`FstError::Format`]; this reads the
    /// whole file once: open times are in BENCHMARKS.md, section 3, "Size and build
    /// time"); it has the bulkbench header key ([`FstError::NotATable`]) of
    /// [`FORMAT_VERSION`](crate::FORMAT_VERSION) ([`FstError::Version`]); and the header is
    /// consistent ([`FstError::Header`]).
    ///
    /// With [`FstLoad::Map`], the file must only ever be replaced by renaming a new file
    /// over it, as [`build`](crate::build) does: truncating it in place while it is mapped
    /// kills the process with SIGBUS, and rewriting it makes lookups read changing bytes.
    pub fn open_with(path: impl AsRef<Path>, load: FstLoad) -> Result<Self, FstError> {
        let path = path.as_ref().to_path_buf();
        let table = Table::open(&path, load)?;
        Ok(FstBackend {
            path,
            load,
            current: RwLock::new(Arc::new(table)),
        })
    }

    /// Reads (or maps, as the backend was opened) the file at [`path`](Self::path) again
    /// and puts it in service. On error the table in service stays, and lookups go on
    /// undisturbed.
    pub fn reopen(&self) -> Result<(), FstError> {
        let table = Arc::new(Table::open(&self.path, self.load)?);
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            table,
        );
        // Freeing or unmapping a large table takes a while: not under the lock.
        drop(old);
        Ok(())
    }

    /// The table file this backend reads (or maps).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the table is read into memory or mapped.
    pub fn load(&self) -> FstLoad {
        self.load
    }

    /// Number of mailboxes in the table in service.
    pub fn len(&self) -> usize {
        self.table().mailboxes
    }

    /// Whether the table in service has no mailbox.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of served domains in the table in service.
    pub fn domain_count(&self) -> usize {
        self.table().domains
    }

    /// Size in bytes of the table file in service (all of it is read, or mapped).
    pub fn file_bytes(&self) -> u64 {
        self.table().bytes
    }

    /// The normalization the table in service was built with, which lookups use.
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.table().normalize
    }

    /// The table in service, held for as long as the caller keeps the `Arc`.
    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Table {
    fn open(path: &Path, load: FstLoad) -> Result<Table, FstError> {
        let open_error = |source| FstError::Open {
            path: path.to_path_buf(),
            source,
        };
        let format_error = |source| FstError::Format {
            path: path.to_path_buf(),
            source,
        };
        let header_error = |reason: String| FstError::Header {
            path: path.to_path_buf(),
            reason,
        };

        let data = match load {
            // One read of the whole file, sized by its length: a file that changes while
            // it is read yields bytes that fail the checksum below, never a fault.
            FstLoad::Read => {
                TableBytes::Read(std::fs::read(path).map_err(open_error)?.into_boxed_slice())
            }
            FstLoad::Map => {
                let file = File::open(path).map_err(open_error)?;
                // SAFETY: the map is only sound while nobody modifies the file, and this
                // mode is an opt-in whose risk is stated where it is chosen (`FstLoad::Map`,
                // `serve --fst-mmap`). The table's only writer, `build`, never writes to an
                // existing file: it renames a complete new one over the path, which leaves
                // this inode and its pages untouched. A file truncated in place while
                // mapped kills the process with SIGBUS at the next access to a page past its
                // new end; one rewritten in place changes the bytes lookups read (the
                // checksum is only verified here, at open).
                TableBytes::Mapped(unsafe { Mmap::map(&file) }.map_err(open_error)?)
            }
        };
        let bytes = data.as_ref().len() as u64;
        let map = Map::new(data).map_err(format_error)?;
        // `Map::new` only checks the first and last words; a truncated or damaged file can
        // pass it, and then a walk could index out of bounds. The checksum covers every
        // byte, so after it only a file crafted to match could make a lookup misbehave.
        map.as_fst().verify().map_err(format_error)?;

        let header = map.get(MAGIC_KEY).ok_or_else(|| FstError::NotATable {
            path: path.to_path_buf(),
        })?;
        let found = header_version(header);
        if found != FORMAT_VERSION {
            return Err(FstError::Version {
                path: path.to_path_buf(),
                found,
                expected: FORMAT_VERSION,
            });
        }
        let normalize = header_config(header).ok_or_else(|| {
            header_error(format!(
                "header value {header:#x} sets normalization bits this version does not define"
            ))
        })?;
        let count = |key: &[u8], what: &str| {
            map.get(key)
                .ok_or_else(|| header_error(format!("no {what} count")))
        };
        let domains = count(DOMAINS_KEY, "domain")?;
        let mailboxes = count(MAILBOXES_KEY, "mailbox")?;
        let keys = map.len() as u64;
        if mailboxes
            .checked_add(domains)
            .and_then(|n| n.checked_add(HEADER_KEYS))
            != Some(keys)
        {
            return Err(header_error(format!(
                "{mailboxes} mailboxes + {domains} domains + {HEADER_KEYS} header keys, but the \
                 file holds {keys} keys"
            )));
        }
        // Both are below the key count, which is a usize.
        let (mailboxes, domains) = (mailboxes as usize, domains as usize);
        let domain_index = index_domains(&map);
        if domain_index.len() != domains {
            return Err(header_error(format!(
                "{domains} domains in the header, but the file holds {} domain keys",
                domain_index.len()
            )));
        }
        Ok(Table {
            map,
            domain_index,
            normalize,
            mailboxes,
            domains,
            bytes,
        })
    }

    /// Two passes, as [`MemoryBackend`](bulk_policy::MemoryBackend) does: normalize every
    /// address of the batch into the arena, then look the keys up, [`CHUNK`] at a time. A
    /// key's domain is found in the domain index; the local parts of the chunk are then
    /// walked from their domains' nodes, interleaved ([`walk::get_many`]) so that their
    /// cache misses overlap.
    ///
    /// Appends one verdict per address; on a value no valid table holds, returns it and
    /// leaves `out` partly extended (the caller truncates).
    fn lookup_batch(
        &self,
        batch: &AddressBatch,
        keys: &mut KeyBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), u64> {
        keys.fill(self.normalize, batch);
        let fst = self.map.as_fst();
        let mut all = keys.iter();
        let root = Start::root(fst);
        loop {
            // The chunk's verdicts as far as the domain index tells them, and the walks
            // that finish the rest: walk j decides verdict `slots[j]`.
            let mut verdicts = [Verdict::NotLocal; CHUNK];
            let mut walks: [(Start, &[u8]); CHUNK] = [(root, &[]); CHUNK];
            let mut slots = [0; CHUNK];
            let (mut len, mut walking) = (0, 0);
            for key in all.by_ref().take(CHUNK) {
                // An address that does not normalize, or of a domain not served, stays
                // NotLocal; one of a served domain is an unknown mailbox unless its walk
                // finds it.
                if let Some((key, start)) =
                    key.and_then(|k| Some((k, self.domain_index.get(k.domain())?)))
                {
                    verdicts[len] = Verdict::UnknownMailbox;
                    if let Some(start) = start {
                        walks[walking] = (*start, key.local());
                        slots[walking] = len;
                        walking += 1;
                    }
                }
                len += 1;
            }
            if len == 0 {
                return Ok(());
            }
            let mut found = [None; CHUNK];
            walk::get_many(fst, &walks[..walking], &mut found);
            for (&slot, value) in slots[..walking].iter().zip(found) {
                match value {
                    Some(ACCEPT) => verdicts[slot] = Verdict::Accept,
                    Some(OPTED_OUT) => verdicts[slot] = Verdict::OptedOut,
                    Some(other) => return Err(other),
                    None => {}
                }
            }
            out.extend_from_slice(&verdicts[..len]);
        }
    }
}

/// The domain index of a table: each domain key's domain, with the node its mailbox keys
/// continue from.
fn index_domains(map: &Map<TableBytes>) -> FxHashMap<Box<[u8]>, Option<Start>> {
    let fst = map.as_fst();
    let root = Start::root(fst);
    let mut index = FxHashMap::default();
    let mut prefix = Vec::new();
    let mut domains = map.range().ge([DOMAIN_TAG]).lt([MAILBOX_TAG]).into_stream();
    while let Some((key, _regime)) = domains.next() {
        let domain = &key[1..];
        mailbox_prefix_into(domain, &mut prefix);
        index.insert(domain.into(), walk::descend(fst, root, &prefix));
    }
    index
}

impl PolicyBackend for FstBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        // One table for the whole batch (see `current`). Nothing here waits: the batch is
        // resolved within the first poll. A mapped table's pages come from the page cache,
        // which `open` filled; under memory pressure a lookup can fault on a page on this
        // thread.
        let table = self.table();
        let len = out.len();
        out.reserve(batch.len());
        let result = KeyBatch::with_thread_local(|keys| table.lookup_batch(batch, keys, out));
        result.map_err(|value| {
            out.truncate(len);
            PolicyError::Unavailable {
                backend: NAME,
                reason: format!(
                    "fst table {} holds mailbox value {value}, which no valid table holds",
                    self.path.display()
                ),
            }
        })
    }

    fn reload(&self) -> Result<Reload, ReloadError> {
        self.reopen().map_err(|e| ReloadError {
            backend: NAME,
            reason: e.chain(),
        })?;
        Ok(Reload::Swapped)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use bulk_policy::{Population, Preference, Regime};

    use super::*;
    use crate::format::pack_header;

    fn population() -> Population {
        let mut p = Population::default();
        p.add_domain(b"in.example", Regime::OptIn).unwrap();
        p.add_domain(b"Out.Example", Regime::OptOut).unwrap();
        for (address, preference) in [
            (&b"ann@in.example"[..], Preference::In),
            (b"bob@in.example", Preference::Default),
            (b"carol@out.example", Preference::Default),
            (b"dave@out.example", Preference::Out),
            // Local parts that start with '@' once unquoted: their keys start like domain
            // keys, and must not be mistaken for one (nor one for them).
            (b"\"@in.example\"@in.example", Preference::In),
            (b"\"@x\"@out.example", Preference::Out),
        ] {
            p.add_mailbox(address, preference).unwrap();
        }
        p
    }

    fn built(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("policy.fst");
        crate::build(&population(), &path).unwrap();
        path
    }

    /// A key and its value, as written to a hand-made table.
    type Entry<'a> = (&'a [u8], u64);

    /// Writes an fst map of `entries` (any order) at `path`, bypassing `build`.
    fn write_map(path: &Path, entries: &[Entry]) {
        let mut entries = entries.to_vec();
        entries.sort();
        let mut builder = fst::MapBuilder::new(File::create(path).unwrap()).unwrap();
        for (key, value) in entries {
            builder.insert(key, value).unwrap();
        }
        builder.finish().unwrap();
    }

    fn open_err(path: &Path) -> FstError {
        match FstBackend::open(path) {
            Ok(backend) => panic!("{} opened: {backend:?}", path.display()),
            Err(e) => e,
        }
    }

    async fn verdicts(backend: &FstBackend, addresses: &[&str]) -> Vec<Verdict> {
        let batch: AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
        let mut out = Vec::new();
        backend.lookup(&batch, &mut out).await.unwrap();
        out
    }

    /// The backend's verdicts on `addresses`, checked against `Population::verdict_of`.
    async fn verdicts_as_reference(
        backend: &FstBackend,
        p: &Population,
        addresses: &[&str],
    ) -> Vec<Verdict> {
        let got = verdicts(backend, addresses).await;
        let expected: Vec<Verdict> = addresses
            .iter()
            .map(|a| p.verdict_of(a.as_bytes()))
            .collect();
        assert_eq!(got, expected);
        got
    }

    #[tokio::test]
    async fn opens_what_build_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = built(&dir);
        let backend = FstBackend::open(&path).unwrap();
        assert_eq!(backend.name(), "fst");
        assert_eq!((backend.len(), backend.domain_count()), (6, 2));
        assert!(!backend.is_empty());
        assert_eq!(
            backend.file_bytes(),
            std::fs::metadata(&path).unwrap().len()
        );
        assert_eq!(backend.normalize_config(), NormalizeConfig::default());
        assert_eq!(backend.path(), path);

        let p = population();
        let addresses = [
            "ann@in.example",
            "bob@in.example",
            "carol@out.example",
            "Dave+x@OUT.example",
            "zed@in.example",
            "zed@else.example",
            "\"@in.example\"@in.example",
            "\"@x\"@out.example",
            "\"@y\"@out.example",
            "\"@out.example\"@in.example",
            "@in.example",
            "in.example",
            "",
        ];
        let got = verdicts_as_reference(&backend, &p, &addresses).await;
        assert_eq!(&got[..6], {
            use Verdict::*;
            &[Accept, OptedOut, Accept, OptedOut, UnknownMailbox, NotLocal]
        });
    }

    #[tokio::test]
    async fn domains_that_prefix_each_other() {
        // Keys of `a.org` and of `a.org.uk` share bytes up to where the shorter domain
        // ends; the build must still write them in order, and lookups keep them apart.
        let domains = ["a.org", "a.org.uk", "a.org-x.net", "a.or", "b.org"];
        let mut p = Population::default();
        for (i, domain) in domains.iter().enumerate() {
            let regime = [Regime::OptIn, Regime::OptOut][i % 2];
            p.add_domain(domain.as_bytes(), regime).unwrap();
            for (local, preference) in [("ann", Preference::In), ("zed", Preference::Out)] {
                let address = format!("{local}{i}@{domain}");
                p.add_mailbox(address.as_bytes(), preference).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefixes.fst");
        crate::build(&p, &path).unwrap();
        let backend = FstBackend::open(&path).unwrap();
        let mut addresses = Vec::new();
        for i in 0..domains.len() {
            for domain in domains.iter().chain(&["a.org.u", "org", "c.org"]) {
                for local in ["ann", "zed", "bob"] {
                    addresses.push(format!("{local}{i}@{domain}"));
                }
            }
        }
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let got = verdicts_as_reference(&backend, &p, &addresses).await;
        for verdict in [
            Verdict::Accept,
            Verdict::OptedOut,
            Verdict::UnknownMailbox,
            Verdict::NotLocal,
        ] {
            assert!(got.contains(&verdict), "{verdict:?} is among the cases");
        }
    }

    #[test]
    fn build_leaves_only_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = built(&dir);
        // A second build replaces the first.
        let stats = crate::build(&population(), &path).unwrap();
        assert_eq!((stats.mailboxes, stats.domains), (6, 2));
        assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["policy.fst"]);
    }

    #[test]
    fn build_errors_name_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no/such/dir/policy.fst");
        let e = crate::build(&population(), &missing_dir).unwrap_err();
        assert!(matches!(e, FstError::Write { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("cannot write fst table {}", missing_dir.display())
        );
        let e = crate::build(&population(), Path::new("/")).unwrap_err();
        assert!(e.chain().contains("names no file"), "{}", e.chain());
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.fst");
        let e = open_err(&path);
        assert!(
            matches!(&e, FstError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("cannot open fst table {}", path.display())
        );
    }

    #[test]
    fn a_directory_is_not_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_err(dir.path());
        assert!(matches!(e, FstError::Open { .. }), "{e:?}");
    }

    #[test]
    fn empty_truncated_and_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(built(&dir)).unwrap();
        let path = dir.path().join("bad.fst");
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("10 bytes", good[..10].to_vec()),
            ("35 bytes", good[..35].to_vec()),
            ("half", good[..good.len() / 2].to_vec()),
            ("all but one byte", good[..good.len() - 1].to_vec()),
            ("one byte appended", [&good[..], b"\0"].concat()),
            ("a flipped bit", flipped),
            (
                "text",
                b"@in.example\topt-in\nann@in.example\tin\n".repeat(4),
            ),
            ("zeros", vec![0; 4096]),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = open_err(&path);
            assert!(matches!(e, FstError::Format { .. }), "{what}: {e:?}");
            assert_eq!(
                e.to_string(),
                format!(
                    "{} is not a valid fst file (empty, truncated or corrupt)",
                    path.display()
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn foreign_fst() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.fst");
        write_map(&path, &[(b"ann@in.example", 0), (b"@in.example", 1)]);
        let e = open_err(&path);
        assert!(matches!(e, FstError::NotATable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .ends_with("is an fst file but not a bulkbench policy table (no header key)")
        );
    }

    #[test]
    fn other_format_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.fst");
        let config = pack_header(NormalizeConfig::default()) & 0xffff_ffff;
        for found in [0, FORMAT_VERSION + 1, u32::MAX] {
            let header = u64::from(found) << 32 | config;
            write_map(
                &path,
                &[(MAGIC_KEY, header), (DOMAINS_KEY, 0), (MAILBOXES_KEY, 0)],
            );
            let e = open_err(&path);
            assert!(
                matches!(e, FstError::Version { found: f, expected: FORMAT_VERSION, .. } if f == found),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "{} is a policy table of format version {found}, this build reads version \
                     {FORMAT_VERSION}: rebuild it from the population",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn inconsistent_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.fst");
        let header = pack_header(NormalizeConfig::default());
        let cases: &[(&[Entry], &str)] = &[
            (
                &[
                    (MAGIC_KEY, header | 1 << 20),
                    (DOMAINS_KEY, 0),
                    (MAILBOXES_KEY, 0),
                ],
                "sets normalization bits",
            ),
            (
                &[(MAGIC_KEY, header), (MAILBOXES_KEY, 0)],
                "no domain count",
            ),
            (&[(MAGIC_KEY, header), (DOMAINS_KEY, 0)], "no mailbox count"),
            (
                &[
                    (MAGIC_KEY, header),
                    (DOMAINS_KEY, 1),
                    (MAILBOXES_KEY, 1),
                    (b"@x.org", 0),
                ],
                "1 mailboxes + 1 domains + 3 header keys, but the file holds 4 keys",
            ),
            (
                // The count adds up, but the key it counts as a domain is a mailbox key.
                &[
                    (MAGIC_KEY, header),
                    (DOMAINS_KEY, 1),
                    (MAILBOXES_KEY, 0),
                    (b"\x02x.org\0ann", 0),
                ],
                "1 domains in the header, but the file holds 0 domain keys",
            ),
            (
                &[
                    (MAGIC_KEY, header),
                    (DOMAINS_KEY, u64::MAX),
                    (MAILBOXES_KEY, 2),
                ],
                "but the file holds 3 keys",
            ),
        ];
        for (entries, reason) in cases {
            write_map(&path, entries);
            let e = open_err(&path);
            assert!(matches!(e, FstError::Header { .. }), "{e:?}");
            assert!(e.to_string().contains(reason), "{e} lacks {reason:?}");
        }
    }

    #[tokio::test]
    async fn a_value_no_table_holds_fails_the_batch_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.fst");
        write_map(
            &path,
            &[
                (MAGIC_KEY, pack_header(NormalizeConfig::default())),
                (DOMAINS_KEY, 1),
                (MAILBOXES_KEY, 2),
                (b"\x01x.org", 0),
                (b"\x02x.org\0ann", ACCEPT),
                (b"\x02x.org\0bob", 7),
            ],
        );
        let backend = FstBackend::open(&path).unwrap();
        let batch: AddressBatch = [&b"ann@x.org"[..], b"bob@x.org"].into_iter().collect();
        let mut out = vec![Verdict::NotLocal];
        let e = backend.lookup(&batch, &mut out).await.unwrap_err();
        assert_eq!(
            out,
            [Verdict::NotLocal],
            "out is left at its original length"
        );
        assert!(e.to_string().contains("holds mailbox value 7"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_table_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let path = built(&dir);
        let backend = FstBackend::open(&path).unwrap();
        let before = verdicts(&backend, &["ann@in.example", "zed@in.example"]).await;

        // Replaced by garbage (renamed over, as a careless deploy might), then removed.
        let garbage = dir.path().join("garbage");
        std::fs::File::create(&garbage)
            .unwrap()
            .write_all(b"not a table")
            .unwrap();
        std::fs::rename(&garbage, &path).unwrap();
        let e = backend.reload().unwrap_err();
        assert_eq!(e.backend, "fst");
        assert!(
            e.to_string()
                .contains("is not a valid fst file (empty, truncated or corrupt): "),
            "the reason carries the cause: {e}"
        );
        std::fs::remove_file(&path).unwrap();
        let e = backend.reopen().unwrap_err();
        assert!(matches!(e, FstError::Open { .. }), "{e:?}");

        assert_eq!(
            verdicts(&backend, &["ann@in.example", "zed@in.example"]).await,
            before
        );
        assert_eq!(backend.len(), 6);

        // A good file again: reload picks it up, with its own normalization.
        let mut p = Population::new(NormalizeConfig {
            fold_local_case: false,
            recipient_delimiter: None,
        });
        p.add_domain(b"in.example", Regime::OptOut).unwrap();
        p.add_mailbox(b"Ann+x@in.example", Preference::Out).unwrap();
        crate::build(&p, &path).unwrap();
        assert_eq!(backend.reload().unwrap(), Reload::Swapped);
        assert_eq!(backend.len(), 1);
        assert_eq!(backend.normalize_config(), p.normalize_config());
        assert_eq!(
            verdicts(
                &backend,
                &["Ann+x@in.example", "ann+x@in.example", "ann@in.example"]
            )
            .await,
            [
                Verdict::OptedOut,
                Verdict::UnknownMailbox,
                Verdict::UnknownMailbox
            ]
        );
    }

    #[test]
    fn debug_shows_the_table_not_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FstBackend::open(built(&dir)).unwrap();
        let shown = format!("{backend:?}");
        assert!(shown.contains("mailboxes: 6, domains: 2"), "{shown}");
        assert!(!shown.contains("ann"), "{shown}");
    }
}
