//! Why a table could not be built or opened.

use std::path::PathBuf;

/// Why [`build`](crate::build) or [`FstBackend::open`](crate::FstBackend::open) failed.
///
/// Every variant names the table file. Underlying causes are the error's `source`, not part
/// of its message, so error chains (anyhow's `{:#}`) do not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum FstError {
    /// The table file could not be opened, read or mapped (missing, unreadable).
    #[error("cannot open fst table {}", path.display())]
    Open {
        /// The table file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not an fst the `fst` crate can read: empty, truncated, corrupt (checksum
    /// mismatch), or something else entirely.
    #[error("{} is not a valid fst file (empty, truncated or corrupt)", path.display())]
    Format {
        /// The table file.
        path: PathBuf,
        /// What the `fst` crate found.
        source: fst::Error,
    },
    /// The file is a sound fst, but not a bulkbench policy table: it lacks the header key.
    #[error("{} is an fst file but not a bulkbench policy table (no header key)", path.display())]
    NotATable {
        /// The table file.
        path: PathBuf,
    },
    /// The table was written in another format version (by an older or newer bulkbench).
    #[error(
        "{} is a policy table of format version {found}, this build reads version {expected}: \
         rebuild it from the population",
        path.display()
    )]
    Version {
        /// The table file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// [`FORMAT_VERSION`](crate::FORMAT_VERSION).
        expected: u32,
    },
    /// The header keys are present but inconsistent with each other or with the keys.
    #[error("{} has an inconsistent table header: {reason}", path.display())]
    Header {
        /// The table file.
        path: PathBuf,
        /// What does not add up.
        reason: String,
    },
    /// Writing the table failed: temporary file, fsync, rename, or the directory's fsync.
    #[error("cannot write fst table {}", path.display())]
    Write {
        /// The table file (not the temporary one).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `fst` builder refused a key (out of order or duplicate: a bug in this crate or a
    /// population that broke its invariants).
    #[error("cannot build fst table {}", path.display())]
    Build {
        /// The table file.
        path: PathBuf,
        /// What the `fst` builder said.
        source: fst::Error,
    },
}

impl FstError {
    /// The message with every cause appended (`a: b: c`), for callers that can only carry a
    /// string, such as [`ReloadError`](bulk_policy::ReloadError).
    pub fn chain(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }
}
