//! Compiling a population into a table file, atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bulk_policy::Population;
use fst::MapBuilder;

use crate::error::FstError;
use crate::format::{
    DOMAINS_KEY, MAGIC_KEY, MAILBOXES_KEY, domain_key, mailbox_prefix_into, pack_header,
    regime_value, verdict_value,
};

/// What [`build`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildStats {
    /// Mailbox keys written.
    pub mailboxes: usize,
    /// Domain keys written.
    pub domains: usize,
    /// Size of the table file in bytes.
    pub bytes: u64,
    /// Wall time of the whole build: collecting and sorting keys, writing, fsyncs, rename.
    pub elapsed: Duration,
}

/// Writer buffer: the builder emits small writes, one node at a time.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Compiles `population` into an fst table at `path`, replacing any file there atomically.
///
/// Each mailbox is stored with its final verdict (preference and regime resolved here, as
/// [`MemoryBackend`](bulk_policy::MemoryBackend) does), each served domain with its regime, and
/// the header keys with the population's [`NormalizeConfig`](bulk_policy::NormalizeConfig)
/// (see the crate docs, "File format").
///
/// The table is written to a temporary file in the same directory
/// (`.NAME.tmp.PID.N`), fsynced, renamed over `path`, and the directory is fsynced. A
/// reader therefore sees the old file or the complete new one, never a partial table, and a
/// [`FstBackend`](crate::FstBackend) that maps the old file
/// ([`FstLoad::Map`](crate::FstLoad::Map)) keeps reading it untouched (the rename unlinks
/// the old inode; its pages live until the last map of it goes). On error the temporary file is removed, except after a crash, which leaves it
/// behind under that name. If only the final directory fsync fails, the new table is
/// already in place but may not survive a power loss; the error says so by its source.
///
/// Cost: keys are collected and sorted on one thread (the fst builder needs them in order),
/// then streamed to the builder. With the release profile on this project's two shared
/// cores (`policy_backends` bench, BENCHMARKS.md): about 2 s for 1,000,000 mailboxes and
/// 31 s for 10,000,000, for 8.2 bytes per mailbox. Memory: 40 bytes per mailbox for the
/// sort, on top of the population; the builder itself needs little.
pub fn build(population: &Population, path: &Path) -> Result<BuildStats, FstError> {
    let started = Instant::now();

    let mut header = vec![(MAGIC_KEY, pack_header(population.normalize_config()))];
    let mut domain_keys: Vec<(Vec<u8>, u64)> = population
        .domains()
        .map(|(domain, regime)| (domain_key(domain), regime_value(regime)))
        .collect();

    // (domain, local part, value), borrowed from the population's `local@domain` keys; the
    // mailbox key `\x02domain\0local` is put together only as it is written.
    let mut mailboxes: Vec<(&[u8], &[u8], u64)> = Vec::with_capacity(population.mailbox_count());
    for (key, preference) in population.mailboxes() {
        let Some(at) = key.iter().rposition(|&b| b == b'@') else {
            continue;
        };
        let (local, domain) = (&key[..at], &key[at + 1..]);
        // A population guarantees every mailbox's domain is served. Were it not, the mailbox
        // is left out, which answers NotLocal, as MemoryBackend does.
        let Some(regime) = population.regime(domain) else {
            continue;
        };
        if let Some(value) = verdict_value(preference.verdict(regime)) {
            mailboxes.push((domain, local, value));
        }
    }
    header.push((DOMAINS_KEY, domain_keys.len() as u64));
    header.push((MAILBOXES_KEY, mailboxes.len() as u64));
    // Each kind is one key range (header < domains < mailboxes), so sorting each kind on
    // its own sorts them all. Unstable is fine: keys within a kind are unique.
    header.sort_unstable();
    domain_keys.sort_unstable();
    // Ordering by (domain, local) is the byte order of the keys (see `mailbox_prefix_into`).
    mailboxes.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));

    let bytes = write_atomically(path, |writer| {
        let mut builder = MapBuilder::new(writer)?;
        for &(key, value) in &header {
            builder.insert(key, value)?;
        }
        for (key, value) in &domain_keys {
            builder.insert(key, *value)?;
        }
        let mut key = Vec::new();
        for &(domain, local, value) in &mailboxes {
            mailbox_prefix_into(domain, &mut key);
            key.extend_from_slice(local);
            builder.insert(&key, value)?;
        }
        builder.into_inner()
    })?;

    Ok(BuildStats {
        mailboxes: mailboxes.len(),
        domains: domain_keys.len(),
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Distinguishes temporary files of concurrent builds within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temporary names to try before giving up (a name is taken only if a crashed
/// process of the same pid left its file behind).
const TEMP_ATTEMPTS: u32 = 16;

/// A temporary file removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Runs `write` on a buffered temporary file next to `path`, then fsyncs, renames it over
/// `path` and fsyncs the directory. Returns the file's size.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(BufWriter<File>) -> Result<BufWriter<File>, fst::Error>,
) -> Result<u64, FstError> {
    let write_error = |source| FstError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the table path names no file",
        ))
    })?;
    // `Path::parent` of a bare file name is "", which means the current directory.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };

    let (mut temp, file) = create_temp(dir, name).map_err(write_error)?;
    let writer =
        write(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)).map_err(|e| match e {
            fst::Error::Io(source) => write_error(source),
            other => FstError::Build {
                path: path.to_path_buf(),
                source: other,
            },
        })?;
    let file = writer
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    // Data first, then the rename: otherwise a crash could leave the new name pointing at
    // a file whose blocks never reached the disk.
    file.sync_all().map_err(write_error)?;
    let bytes = file.metadata().map_err(write_error)?.len();
    drop(file);
    fs::rename(&temp.path, path).map_err(write_error)?;
    temp.renamed = true;
    // The rename itself is durable only once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)?;
    Ok(bytes)
}

/// Creates a fresh temporary file in `dir` for the table named `name`.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(TempFile, File)> {
    let mut last_error = None;
    for _ in 0..TEMP_ATTEMPTS {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp.{}.{n}", std::process::id()));
        let temp_path = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
        {
            Ok(file) => {
                let temp = TempFile {
                    path: temp_path,
                    renamed: false,
                };
                return Ok((temp, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}
