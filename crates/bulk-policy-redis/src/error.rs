//! The crate's error type.

use std::time::Duration;

use bulk_policy::{AddressError, NormalizeConfig, PolicyError, PopulationError};

/// Why parsing a spec, loading, connecting to, reading or updating a Redis policy store, or
/// running a throwaway Redis, failed.
///
/// Variants about a store name its server(s) and prefix, so the CLI can print them as they
/// are.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// A `redis://` spec that does not parse.
    #[error("bad Redis spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A program this crate runs is not installed.
    #[error("{program} is not installed (Debian package {package})")]
    NotInstalled {
        /// The program (`redis-server`, `redis-cli`).
        program: &'static str,
        /// The Debian package that brings it.
        package: &'static str,
    },
    /// A throwaway Redis ([`LocalRedis`](crate::LocalRedis),
    /// [`LocalRedisCluster`](crate::LocalRedisCluster)) did not start or stop.
    #[error("throwaway Redis: {what}")]
    Local {
        /// What went wrong, with the server's log excerpt when there is one.
        what: String,
    },
    /// Redis refused an operation, or the connection failed.
    #[error("Redis {operation} on {target}: {source}")]
    Redis {
        /// What was being done ("connect", "lookup").
        operation: &'static str,
        /// The server(s) and prefix (a spec, as displayed).
        target: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// An operation took longer than its timeout.
    #[error("Redis {operation} on {target}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The server(s) and prefix.
        target: String,
        /// The timeout.
        after: Duration,
    },
    /// The prefix holds no store (no meta key).
    #[error(
        "no bulkbench policy store under prefix `{prefix}` on {target} (load one with \
         `bulk_policy_redis::load`)"
    )]
    NoStore {
        /// The prefix.
        prefix: String,
        /// The server(s) and prefix.
        target: String,
    },
    /// The store under the prefix was written by another version of this crate's format,
    /// or by something else.
    #[error(
        "prefix `{prefix}` on {target} holds policy format `{found}`, this build reads \
         `{expected}`: clear the prefix (`bulk_policy_redis::clear`) or use another one"
    )]
    Version {
        /// The prefix.
        prefix: String,
        /// The server(s) and prefix.
        target: String,
        /// The format tag found.
        found: String,
        /// The format tag this build writes and reads.
        expected: &'static str,
    },
    /// A load would change how addresses are normalized under a prefix that servers may be
    /// reading with the old config.
    #[error(
        "prefix `{prefix}` was loaded with {store:?}, the population uses {population:?}: \
         clear the prefix first (`bulk_policy_redis::clear`) or use another one"
    )]
    NormalizeMismatch {
        /// The prefix.
        prefix: String,
        /// The config stored under the prefix.
        store: NormalizeConfig,
        /// The population's config.
        population: NormalizeConfig,
    },
    /// The store holds a value this crate never writes, or Redis answered with a reply of
    /// an unexpected shape.
    #[error("prefix `{prefix}` on {target}: {what}")]
    Corrupt {
        /// The prefix.
        prefix: String,
        /// The server(s) and prefix.
        target: String,
        /// What was found where.
        what: String,
    },
    /// An address given to [`get`](crate::RedisBackend::get) or
    /// [`set`](crate::RedisBackend::set) has no lookup key.
    #[error("address {address:?} has no lookup key: {source}")]
    Address {
        /// The address as given.
        address: String,
        /// Why it does not normalize.
        #[source]
        source: AddressError,
    },
    /// A mailbox or domain given to [`set`](crate::RedisBackend::set) or
    /// [`set_regime`](crate::RedisBackend::set_regime) would not be accepted in a
    /// population file.
    #[error(transparent)]
    Entry(#[from] PopulationError),
    /// [`set`](crate::RedisBackend::set) names a mailbox of a domain that is not served.
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

impl RedisStoreError {
    /// Whether this says a program is not installed (callers skip or explain).
    pub fn is_not_installed(&self) -> bool {
        matches!(self, RedisStoreError::NotInstalled { .. })
    }

    /// This error as the [`PolicyError`] a lookup returns, for backend `backend`.
    pub(crate) fn into_policy(self, backend: &'static str) -> PolicyError {
        PolicyError::Unavailable {
            backend,
            reason: self.to_string(),
        }
    }
}
