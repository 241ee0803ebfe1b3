//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use bulk_policy::{AddressError, NormalizeConfig, PolicyError, PopulationError};

/// Why parsing a spec, loading, connecting to, reading or updating a PostgreSQL policy
/// store, or running a throwaway cluster, failed.
///
/// Every variant names the schema, the address or the program concerned, so the CLI can
/// print it as it is. URLs are never part of a message: they may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum PostgresStoreError {
    /// A program of the PostgreSQL server is not installed (neither on `PATH` nor in
    /// `/usr/lib/postgresql/*/bin`).
    #[error("{program} is not installed (Debian package {package})")]
    NotInstalled {
        /// The program looked for (`initdb`).
        program: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A store spec that is not a PostgreSQL URL this crate accepts.
    #[error("bad PostgreSQL store spec: {reason}")]
    BadSpec {
        /// What is wrong with it.
        reason: String,
    },
    /// A schema name that is not a plain lowercase identifier (it goes into SQL).
    #[error("bad schema name {schema:?}: {reason}")]
    BadSchema {
        /// The name given.
        schema: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A pool of no connections was asked for.
    #[error("the connection pool needs at least one connection")]
    NoConnections,
    /// The database refused or failed an operation, or the connection to it failed.
    #[error("PostgreSQL {operation} (schema {schema}): {}", Chain(source))]
    Database {
        /// What was being done ("lookup", "COPY mailboxes").
        operation: &'static str,
        /// The schema concerned.
        schema: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be had from the pool (the database is down or every
    /// connection stayed busy).
    #[error("PostgreSQL {operation} (schema {schema}): no connection: {reason}")]
    Pool {
        /// What was being done.
        operation: &'static str,
        /// The schema concerned.
        schema: String,
        /// Why (the pool's error, which includes a failed connect).
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("PostgreSQL {operation} (schema {schema}) took longer than {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The schema concerned.
        schema: String,
        /// The time allowed.
        after: Duration,
    },
    /// The schema holds no store of this crate.
    #[error(
        "schema {schema} holds no bulkbench policy store (load one with \
         `bulk_policy_postgres::load`)"
    )]
    NoStore {
        /// The schema given.
        schema: String,
    },
    /// The schema holds tables that are not a store of this crate: a load would drop them,
    /// so it refuses.
    #[error(
        "schema {schema} holds tables that are not a bulkbench policy store ({found}): pick \
         a schema of its own, a load replaces the schema whole"
    )]
    Foreign {
        /// The schema given.
        schema: String,
        /// What was found there.
        found: String,
    },
    /// The store was written by another version of this crate's format.
    #[error(
        "schema {schema} holds policy format `{found}`, this build reads `{expected}`: load it \
         again"
    )]
    Version {
        /// The schema given.
        schema: String,
        /// The format tag found.
        found: String,
        /// The format tag this build writes and reads.
        expected: &'static str,
    },
    /// A load in place would change how addresses are normalized, under the feet of the
    /// servers reading the schema (they normalize with the config they read at connect).
    #[error(
        "schema {schema} was loaded with {store:?}, the population uses {population:?}: \
         load into another schema, or drop this one first"
    )]
    NormalizeMismatch {
        /// The schema given.
        schema: String,
        /// The config the store holds.
        store: NormalizeConfig,
        /// The population's config.
        population: NormalizeConfig,
    },
    /// The store holds a value this crate never writes.
    #[error("schema {schema} is corrupt: {what}")]
    Corrupt {
        /// The schema given.
        schema: String,
        /// What was found where.
        what: String,
    },
    /// An address given to `get` or `set` has no lookup key.
    #[error("address {address:?} has no lookup key: {source}")]
    Address {
        /// The address as given.
        address: String,
        /// Why it does not normalize.
        #[source]
        source: AddressError,
    },
    /// A mailbox given to `set` would not be accepted in a population file.
    #[error(transparent)]
    Entry(#[from] PopulationError),
    /// `set` names a mailbox of a domain that is not served.
    #[error("mailbox {address}: domain {domain} is not served in schema {schema}")]
    DomainNotServed {
        /// The address as given.
        address: String,
        /// Its normalized domain.
        domain: String,
        /// The schema concerned.
        schema: String,
    },
    /// A file-system operation or a program of the throwaway cluster failed to start.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot run").
        operation: &'static str,
        /// The file, folder or program concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A step of the throwaway cluster failed; `output` is the end of what it printed.
    #[error("local PostgreSQL: {step} failed: {output}")]
    LocalCluster {
        /// What failed ("initdb", "start", "stop").
        step: &'static str,
        /// The end of the program's output or of the server log.
        output: String,
    },
}

/// An error and its causes, `: `-separated. tokio-postgres's errors print only their kind
/// ("db error", "error connecting to server") and keep the server's message or the I/O
/// error as their source, which every message of this crate must show.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        // Bounded: a chain longer than this is cut rather than followed.
        for _ in 0..8 {
            let Some(cause) = source else {
                break;
            };
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl From<PostgresStoreError> for PolicyError {
    fn from(e: PostgresStoreError) -> Self {
        PolicyError::Unavailable {
            backend: crate::NAME,
            reason: e.to_string(),
        }
    }
}
