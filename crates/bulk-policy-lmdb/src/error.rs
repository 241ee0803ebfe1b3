//! The crate's error type.

use std::path::PathBuf;

use bulk_policy::{AddressError, NormalizeConfig, PolicyError, PopulationError};

/// Why building, opening, reading or updating an LMDB policy environment failed.
///
/// Every variant names the directory or the address concerned, so the CLI can print it as
/// it is.
#[derive(Debug, thiserror::Error)]
pub enum LmdbError {
    /// A file-system operation on the environment's directory failed.
    #[error("{operation} {path}")]
    Io {
        /// What was being done ("cannot create directory").
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory does not exist or holds no LMDB data file.
    #[error("no policy environment in {dir}: {reason} (build one with `bulk_policy_lmdb::build`)")]
    NoEnvironment {
        /// The directory given.
        dir: PathBuf,
        /// What is missing.
        reason: &'static str,
    },
    /// The directory holds something that is not a policy environment of this crate: other
    /// files, an LMDB environment of another program, or a data file that is not LMDB.
    #[error("{dir} is not a bulkbench LMDB policy environment: {reason}")]
    Foreign {
        /// The directory given.
        dir: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The data file is shorter than the pages the environment says it holds: it was
    /// truncated (a full disk, a partial copy). Mapping it would kill the process with
    /// SIGBUS at the first read past its end, so it is refused before any read.
    #[error(
        "{file} is truncated: it holds {len} bytes, but the environment's last committed \
         transaction uses {needed}; restore it from a whole copy, or rebuild it with \
         `bulkbench population --backend lmdb -o DIR`"
    )]
    Truncated {
        /// The data file.
        file: PathBuf,
        /// Its length.
        len: u64,
        /// The bytes its pages take.
        needed: u64,
    },
    /// The environment was written by another version of this crate's format.
    #[error(
        "{dir} holds policy format `{found}`, this build reads `{expected}`: rebuild it into \
         an empty directory"
    )]
    Version {
        /// The directory given.
        dir: PathBuf,
        /// The format tag found in the environment.
        found: String,
        /// The format tag this build writes and reads.
        expected: &'static str,
    },
    /// A build into the directory was interrupted (or is still running): the data is
    /// there but the format tag, written last, is not.
    #[error("{dir} holds an incomplete policy environment (interrupted build?): build it again")]
    Incomplete {
        /// The directory given.
        dir: PathBuf,
    },
    /// Another build into the same new directory started while this one ran; that one
    /// carries on, this one stopped.
    #[error("another build into {dir} started while this one ran: it carries on, this one stopped")]
    ConcurrentBuild {
        /// The directory given.
        dir: PathBuf,
    },
    /// A rebuild in place would change how addresses are normalized. Servers that have the
    /// environment open normalize with the config they read at open time, so the keys
    /// would stop matching under their feet.
    #[error(
        "{dir} was built with {env:?}, the population uses {population:?}: build into a new \
         directory instead"
    )]
    NormalizeMismatch {
        /// The directory given.
        dir: PathBuf,
        /// The config stored in the environment.
        env: NormalizeConfig,
        /// The population's config.
        population: NormalizeConfig,
    },
    /// The environment holds a value this crate never writes.
    #[error("{dir} is corrupt: {what}")]
    Corrupt {
        /// The directory given.
        dir: PathBuf,
        /// What was found where.
        what: String,
    },
    /// LMDB refused an operation.
    #[error("LMDB {operation} in {dir}")]
    Lmdb {
        /// What was being done ("read transaction").
        operation: &'static str,
        /// The environment's directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: heed::Error,
    },
    /// An address given to [`get`](crate::LmdbBackend::get) or
    /// [`remove`](crate::LmdbBackend::remove) has no lookup key.
    #[error("address {address:?} has no lookup key")]
    Address {
        /// The address as given.
        address: String,
        /// Why it does not normalize.
        #[source]
        source: AddressError,
    },
    /// A mailbox or domain given to [`set`](crate::LmdbBackend::set) or
    /// [`set_regime`](crate::LmdbBackend::set_regime) would not be accepted in a
    /// population file.
    #[error(transparent)]
    Entry(#[from] PopulationError),
    /// [`set`](crate::LmdbBackend::set) names a mailbox of a domain that is not served.
    #[error(
        "mailbox {address}: domain {domain} is not served here (add it with `set_regime` first)"
    )]
    DomainNotServed {
        /// The address as given.
        address: String,
        /// Its normalized domain.
        domain: String,
    },
}

impl LmdbError {
    /// Whether this is LMDB's "map full": the write needs a larger memory map.
    pub(crate) fn is_map_full(&self) -> bool {
        matches!(
            self,
            LmdbError::Lmdb {
                source: heed::Error::Mdb(heed::MdbError::MapFull),
                ..
            }
        )
    }
}

impl From<LmdbError> for PolicyError {
    fn from(e: LmdbError) -> Self {
        PolicyError::Unavailable {
            backend: crate::NAME,
            reason: e.to_string(),
        }
    }
}
