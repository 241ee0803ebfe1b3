//! The `fst` policy backend for bulkbench: the population compiled into a finite state
//! transducer file, read into memory (or mapped, on request) at start and swapped
//! atomically on reload.
//!
//! # Overview
//!
//! - [`build`] compiles a [`Population`](bulk_policy::Population) into a table file, with
//!   every mailbox's verdict resolved at build time, and replaces the file atomically
//!   (temporary file, fsync, rename, directory fsync). It returns [`BuildStats`].
//! - [`FstBackend::open`] reads a table file into memory after checking it is a complete,
//!   current-version bulkbench table; [`FstBackend`] implements
//!   [`PolicyBackend`](bulk_policy::PolicyBackend) under the name `fst`. Lookups are
//!   batched: every address of a batch is normalized first, then looked up.
//!   [`FstBackend::open_with`] and [`FstLoad::Map`] map the file instead (memmap2): less
//!   memory and a quicker start, but a file truncated in place while served then kills
//!   the process with SIGBUS ([`FstLoad`] says when each fits).
//! - [`PolicyBackend::reload`](bulk_policy::PolicyBackend::reload) reads (or maps) the file
//!   at the same path again and swaps it in while lookups go on; a bad file leaves the old
//!   table in service. Rebuild with [`build`], then reload: no lookup ever sees a partial
//!   table.
//! - [`FstError`]: why a table could not be built or opened, naming the file.
//!
//! Compared with [`MemoryBackend`](bulk_policy::MemoryBackend), the table takes a few
//! bytes per mailbox instead of a hash map entry and a heap key, starts without parsing a
//! population file, and, mapped, is shared through the page cache by every process that
//! maps it; a lookup walks the automaton, byte by byte, instead of hashing once. Two
//! things keep the
//! walks short and their cache misses overlapped: a domain index in memory (each served
//! domain with the fst node its mailbox keys continue from, built at open), so a lookup
//! walks only the local part; and walks of a batch run eight at a time, each prefetching
//! its next node while the others step (`walk.rs`). The table takes about 8 bytes per
//! mailbox; its lookup cost against `MemoryBackend`'s, measured in the `policy_backends`
//! bench, is in BENCHMARKS.md, section 3.
//!
//! # File format
//!
//! One `fst::Map` (byte keys in lexicographic order, `u64` values), version
//! [`FORMAT_VERSION`], with three kinds of keys that sort apart by their first byte:
//!
//! | key | value |
//! |---|---|
//! | `\0bulkbench-fst` | `FORMAT_VERSION << 32`, then the normalization: bit 9 folds local parts, bit 8 says a delimiter is set, bits 0-7 are the delimiter |
//! | `\0domains`, `\0mailboxes` | number of domain and mailbox keys |
//! | `\x01domain`, lowercased | regime: 0 opt-in, 1 opt-out |
//! | `\x02domain\0local`, normalized as the population's keys | verdict: 0 Accept, 1 OptedOut |
//!
//! NUL ends the domain in a mailbox key: no domain or local part holds it, and it sorts
//! below every domain byte, so (domain, local part) order is the keys' byte order. A lookup
//! never walks an address's bytes from the root: its domain is looked up in the domain index
//! (absent: `NotLocal`), then its local part is walked from the node after
//! `\x02domain\0`; a local part the walk does not find is `UnknownMailbox`. An address can
//! therefore never reach a header or domain key. The fst's own checksum covers the whole
//! file and is verified at open.
//!
//! # Example
//!
//! ```
//! use bulk_policy::{AddressBatch, NormalizeConfig, PolicyBackend, Population, Verdict};
//! use bulk_policy_fst::FstBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let text = "@example.org\topt-in\nann@example.org\tin\nbob@example.org\tdefault\n";
//! let population = Population::parse(text.as_bytes(), NormalizeConfig::default())?;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("policy.fst");
//! let stats = bulk_policy_fst::build(&population, &path)?;
//! assert_eq!((stats.mailboxes, stats.domains), (2, 1));
//!
//! let backend = FstBackend::open(&path)?;
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
//!
//! // Bob opts in: rebuild over the same path, then swap the new table in.
//! let text = "@example.org\topt-in\nann@example.org\tin\nbob@example.org\tin\n";
//! let population = Population::parse(text.as_bytes(), NormalizeConfig::default())?;
//! bulk_policy_fst::build(&population, &path)?;
//! backend.reload()?;
//! verdicts.clear();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(verdicts[1], Verdict::Accept);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backend;
mod build;
mod error;
mod format;
mod walk;

pub use backend::{FstBackend, FstLoad};
pub use build::{BuildStats, build};
pub use error::FstError;
pub use format::FORMAT_VERSION;
