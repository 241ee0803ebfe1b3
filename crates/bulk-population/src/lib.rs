//! Deterministic synthetic populations and workloads for bulkbench: from a scenario and a
//! seed, the mailboxes a server serves and the sessions a load generator replays against it.
//!
//! # Overview
//!
//! - [`Scenario`]: a run described in TOML (`[population]`, `[workload]`, `[server]`),
//!   parsed with defaults and validated; errors name the key and the line.
//! - [`PopulationModel`]: the population as a pure function of (`[population]`, seed).
//!   Mailbox `i` ([`Mailbox`]: local part, domain, preference) and its expected
//!   [`Verdict`](bulk_policy::Verdict) are computed on demand from an RNG seeded by
//!   (seed, i); [`PopulationModel::build`] makes a [`bulk_policy::Population`] and
//!   [`PopulationModel::write_file`] streams the population file a server loads
//!   ([`PopulationModel::write_mailboxes_with`], any other per-mailbox format).
//! - [`Workload`]: the sessions of a scenario ([`SessionSpec`]: start offset, pipelining,
//!   and its [`Transaction`]s: [`Kind`] BULK or MAIL, sender, [`Recipient`]s with expected
//!   verdicts, message size), each drawn from an RNG seeded by (seed, session index);
//!   sharding, and a JSON Lines trace format to save and replay them.
//! - [`RecipientDraws`]: recipients drawn one by one with a workload's mix, each from an
//!   RNG seeded by (seed, index): the lookups of the benches and the backends' scale tests.
//! - [`seeding`]: the per-item RNGs and mixing every draw above comes from, the only
//!   SplitMix64 in the workspace.
//!
//! Nothing here draws from a shared or per-worker RNG: the same scenario gives the same
//! population file and the same trace, byte for byte, whatever the number of threads
//! (rayon) or shards.
//!
//! # Example
//!
//! ```
//! use bulk_population::{PopulationModel, Scenario, Workload};
//!
//! let scenario = Scenario::from_toml(
//!     r#"
//!     seed = 42
//!     [population]
//!     mailboxes = 1000
//!     domains = 12
//!     [workload]
//!     sessions = 20
//!     recipients_max = 10
//!     "#,
//!     "example",
//! )?;
//! let model = PopulationModel::from_scenario(&scenario);
//! let workload = Workload::generate(&scenario, &model);
//!
//! // The expected verdicts agree with the population a server would load.
//! let population = model.build();
//! for (_, recipient) in workload.sessions.iter().flat_map(|s| s.recipients()) {
//!     assert_eq!(population.verdict_of(recipient.address.as_bytes()), recipient.verdict);
//! }
//!
//! // A trace round-trips.
//! let mut trace = Vec::new();
//! workload.write_trace(&mut trace)?;
//! assert_eq!(Workload::read_trace(trace.as_slice())?, workload);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod checked;
mod names;
pub mod population;
pub mod scenario;
pub mod seeding;
pub mod workload;

pub use checked::{CountU32, CountU64, NonNegative, Positive, RangeError, RunSecs, Share};
pub use population::{Mailbox, MailboxEntry, PopulationModel};
pub use scenario::{
    Arrival, LoopMode, Popularity, PopulationConfig, PreferencesApplyTo, RecipientsDistribution,
    Scenario, ScenarioError, ServerConfig, WorkloadConfig,
};
pub use workload::{
    Kind, Recipient, RecipientDraws, RunLength, SessionSpec, TraceError, Transaction, Workload,
};
