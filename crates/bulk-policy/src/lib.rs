//! Recipient policy for the BULK extension: decides, for each RCPT of a bulk transaction,
//! whether the recipient accepts bulk mail, refused it, does not exist, or is not served here.
//!
//! # Overview
//!
//! - [`PolicyBackend`]: the trait the server calls, once per pipelined read, with every RCPT
//!   address of that read in an [`AddressBatch`]; it answers one [`Verdict`] per address.
//! - [`NormalizeConfig`]: turns an address into its lookup key (domain and, by default, local
//!   part case-folded; `+tag` subaddresses stripped; quoted local parts unquoted).
//! - [`Population`]: served domains with their [`Regime`] (opt-in or opt-out) and mailboxes
//!   with their [`Preference`], built in code or parsed from a population file
//!   (format in [`population`]). [`Population::verdict_of`] is the reference semantics.
//! - [`MemoryBackend`]: the in-memory backend, every verdict resolved at build time;
//!   loaded from a population file ([`MemoryBackend::load`]), it reloads the file on
//!   [`PolicyBackend::reload`].
//! - [`CannedBackend`]: no store and no lookup, every RCPT answered by a fixed
//!   [`AcceptShare`] rule: the cheapest backend, for measuring a machine's ceiling.
//! - `cache` (feature `cache`): `CachedBackend`, a read-through cache in front of any
//!   backend, for stores across the network.
//! - `conformance` (feature `conformance`, for tests): the suite every backend passes;
//!   backends with heavy dependencies live in their own `bulk-policy-<name>` crates and
//!   run it from their tests.
//!
//! # Example
//!
//! ```
//! use bulk_policy::{AddressBatch, MemoryBackend, NormalizeConfig, PolicyBackend, Population,
//!     Verdict};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let text = "@example.org\topt-in\nann@example.org\tin\nbob@example.org\tdefault\n";
//! let population = Population::parse(text.as_bytes(), NormalizeConfig::default())?;
//! let backend = MemoryBackend::new(population);
//!
//! let mut batch = AddressBatch::new();
//! for rcpt in ["Ann+news@Example.org", "bob@example.org", "zed@example.org", "x@y.net"] {
//!     batch.push(rcpt.as_bytes());
//! }
//! let mut verdicts = Vec::new();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(
//!     verdicts,
//!     [Verdict::Accept, Verdict::OptedOut, Verdict::UnknownMailbox, Verdict::NotLocal]
//! );
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// No unsafe code but one cache hint (`table::prefetch`), which says why it is sound.
#![deny(unsafe_code)]

pub mod address;
#[cfg(feature = "cache")]
pub mod cache;
pub mod canned;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod keys;
pub mod memory;
pub mod population;
mod table;

pub use address::{AddressError, MAX_ADDRESS_LEN, NormalizeConfig};
pub use bulk_types::{AddressBatch, Verdict};
pub use canned::{AcceptShare, CannedBackend, ShareError};
pub use keys::{Key, KeyBatch};
pub use memory::MemoryBackend;
pub use population::{EntryError, MAX_DOMAIN_LEN, Population, PopulationError, Preference, Regime};

/// A backend could not answer. The server then replies `451 4.3.0` to the RCPTs of the
/// batch: a temporary failure, never a guessed verdict.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The backend (a remote store, typically) is down, timed out or answered nonsense.
    #[error("policy backend {backend} unavailable: {reason}")]
    Unavailable {
        /// [`PolicyBackend::name`] of the backend.
        backend: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Why [`PolicyBackend::reload`] could not put a new version of the store in service
/// (missing, unreadable, invalid): the version in service stays, and lookups go on.
#[derive(Debug, thiserror::Error)]
#[error("policy backend {backend} cannot reload its store: {reason}")]
pub struct ReloadError {
    /// [`PolicyBackend::name`] of the backend.
    pub backend: &'static str,
    /// What is wrong with the new version, naming its file (and line, where it has lines).
    pub reason: String,
}

/// What [`PolicyBackend::reload`] did, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// A new version of the store was read and is in service.
    Swapped,
    /// The store changes in place and lookups see a change at once (LMDB, the store
    /// servers): there is nothing to reload.
    InPlace,
    /// The backend has no store it could reload: it was built in code, or serves none
    /// (canned). Nothing changed.
    Unsupported,
}

/// Where recipients' preferences live. Implementations must agree with
/// [`Population::verdict_of`] for the population they were built from; `conformance::run`
/// (feature `conformance`) checks that. The one exception is [`CannedBackend`], built from no population: it
/// answers by a fixed rule, and runs against it are not verified.
pub trait PolicyBackend: Send + Sync + 'static {
    /// Short name for logs and reports ("memory").
    fn name(&self) -> &'static str;

    /// Resolves every address of `batch`; on Ok, has appended exactly batch.len() verdicts
    /// to `out`, in batch order (out is NOT cleared by the callee). One call serves every
    /// RCPT of one pipelined read; later backends are remote stores, hence async.
    ///
    /// On error, `out` is left at its original length, so a caller can answer the whole
    /// batch with a temporary failure without cleaning up.
    fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> impl std::future::Future<Output = Result<(), PolicyError>> + Send;

    /// Picks up a new version of the backend's store, if it has one that is replaced as a
    /// whole (the server calls this on SIGHUP), and says what it did. Lookups in flight
    /// finish on the old version; later ones see the new one; none fails or sees a
    /// half-built table. On error ([`ReloadError`]) the old version stays in service.
    ///
    /// Backends whose store changes in place return [`Reload::InPlace`]. The default, for
    /// backends with nothing to reload, does nothing and says so: [`Reload::Unsupported`].
    fn reload(&self) -> Result<Reload, ReloadError> {
        Ok(Reload::Unsupported)
    }

    /// Counters worth reporting beside the server's own, as (name, value) pairs: a cache's
    /// hits and misses, a remote store's round trips. The server logs them when it stops.
    /// None by default.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
