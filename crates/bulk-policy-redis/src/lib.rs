//! The `redis` policy backend: recipients' preferences in Redis or a Redis Cluster, shared
//! by any number of servers and updated in place, one pipelined round trip per batch.
//!
//! # Overview
//!
//! - [`RedisSpec`] says where the store lives: one server or a cluster's seed nodes
//!   (`redis://` URLs), and the key prefix, so several populations share one server.
//! - [`load`] writes a [`Population`] under the prefix, pipelined, replacing what was
//!   there, and returns [`LoadStats`]; [`clear`] removes a prefix's store.
//! - [`RedisBackend::connect`] reads the store's meta (format, [`NormalizeConfig`]); as a
//!   [`PolicyBackend`] it normalizes a whole batch, then asks for every address of it in
//!   one pipeline ([`RedisBackend::lookup_batch`]).
//! - [`RedisBackend::get`], [`set`](RedisBackend::set) and
//!   [`set_regime`](RedisBackend::set_regime) read and change entries while lookups run;
//!   the next lookup sees a change.
//! - [`LocalRedis`] and [`LocalRedisCluster`] run throwaway servers on loopback for tests
//!   and benchmarks.
//! - [`RedisStoreError`] says what went wrong, naming the server and the prefix.
//!
//! # Layout
//!
//! Under a prefix `P` (default `bulkbench`):
//!
//! | key              | type | content                                                        |
//! |------------------|------|----------------------------------------------------------------|
//! | `P:{DOMAIN}`     | hash | field `""` (empty): the regime, `i` opt-in, `o` opt-out;       |
//! |                  |      | one field per normalized local part: `i` in, `o` out, `d` default |
//! | `P:{DOMAIN}:next`| hash | the same, while a [`load`] writes it (renamed over `P:{DOMAIN}`) |
//! | `P:domains`      | set  | every domain a load or `set_regime` may have written           |
//! | `P:meta`         | hash | `format`: [`FORMAT`]; `fold_local_case`: `1` or `0`;           |
//! |                  |      | `recipient_delimiter`: the byte, or empty for none             |
//!
//! `DOMAIN` is lowercased, with `%`, `{` and `}` percent-escaped so that the braces enclose
//! exactly the domain. Values are single ASCII bytes, as in the LMDB backend, so
//! `redis-cli hgetall 'bulkbench:{example.org}'` stays readable.
//!
//! **Why one hash per domain.** A batch then costs one `HMGET P:{DOMAIN} "" LOCAL...` per
//! distinct domain, all in one pipeline: the regime and every mailbox of the domain come back
//! in the same reply, so an unknown mailbox is told from a foreign domain, and a `default`
//! preference is resolved, without a second round trip. A key per mailbox would need the
//! regime from another key, and in a cluster `MGET` across slots is refused. The empty field
//! name cannot collide with a mailbox: no local part is empty. In a cluster, the whole domain
//! is one key, so one slot, and its staging key shares the hash tag `{DOMAIN}`, so a load can
//! `RENAME` one over the other (which Redis Cluster allows only within a slot). A hash of up
//! to 128 fields is stored compactly (listpack); larger domains become hash tables.
//!
//! # The client
//!
//! The [`redis`](https://docs.rs/redis) crate (redis-rs), version 1, with features
//! `tokio-comp`, `cluster-async`, `connection-manager` and `script` and no default ones:
//! it is the maintained, widely used Rust client, speaks to both a single server and
//! Redis Cluster (following MOVED and ASK redirections itself), and multiplexes concurrent
//! requests on one connection per node, so the server's many sessions share a few sockets
//! and their lookups are pipelined on the wire. A single server is reached through its
//! `ConnectionManager`, which reconnects after a failure; a cluster through its
//! `ClusterConnection`.
//!
//! # Round trips
//!
//! One [`lookup`](PolicyBackend::lookup) is one pipeline on a single server, whatever the
//! batch holds ([`RedisBackend::round_trips`] counts pipelines). In a cluster, the client
//! routes a pipeline by its keys and refuses one whose keys span slots, and it keeps its
//! slot map to itself. So the backend reads the map once with `CLUSTER SLOTS`, groups the
//! batch's domains by the node serving their slot, and sends one pipeline per node,
//! routed by one of its slots, all at once: a lookup waits about one round trip, the
//! nodes' in parallel. Redis itself accepts a pipeline spanning slots as long as one node
//! serves them all. If the map has gone stale (a slot moved: that node answers MOVED for
//! part of the pipeline, and the client's redirection of the whole pipeline fails) or a
//! node fails, the backend forgets the map and sends that batch again as one pipeline per
//! slot, which the client routes and redirects (MOVED, ASK) itself; the next lookup reads
//! the map again. One pipeline per slot is also the fallback when `CLUSTER SLOTS` fails.
//! With 1,000 domains, a batch of 100 addresses spans about 95 slots: per node instead of
//! per slot, that is 3 requests instead of 95 on a three-node cluster.
//!
//! # Loading and replacing
//!
//! [`load`] refuses a prefix holding another format, or one loaded with another
//! normalization (servers reading it would stop matching: [`clear`] it first, or use another
//! prefix). It adds the new domains to `P:domains`, writes every domain's hash under its
//! staging key (multi-field `HSET`s, pipelines of about 50,000 fields, a few in flight),
//! renames each over the live key, writes the meta, then unlinks the domains the new
//! population no longer has. Each rename is atomic, so a server reading the prefix during a
//! load sees each domain whole, old or new, never half-written; a batch that spans domains
//! may see some old and some new during the renames. A `set` made during a load may be lost
//! (the rename replaces the hash it went into). The old and new content coexist in memory
//! until the renames. An interrupted load leaves the old content served and its staging
//! keys listed in `P:domains`, so the next load or `clear` removes them. Run one load at a
//! time per prefix. A `RENAME` frees the hash it replaces synchronously unless the server
//! runs with `lazyfree-lazy-server-del yes` ([`LocalRedis`] does): a domain of a million
//! mailboxes then holds Redis for a fraction of a second.
//!
//! # Failures
//!
//! A lookup that fails (connection refused or lost, a reply of the wrong shape, no answer
//! within the timeout, [`DEFAULT_TIMEOUT`] unless set by
//! [`RedisBackend::connect_with_timeout`]) returns [`PolicyError::Unavailable`]: the server
//! answers `451 4.3.0`, never a guessed verdict. A single server's connection reconnects in
//! the background, so lookups succeed again once Redis is back.
//!
//! # Example
//!
//! ```
//! use bulk_policy::{AddressBatch, PolicyBackend, Population, Preference, Regime, Verdict};
//! use bulk_policy_redis::{LocalRedis, RedisBackend, RedisSpec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut population = Population::default();
//! population.add_domain(b"example.org", Regime::OptIn)?;
//! population.add_mailbox(b"ann@example.org", Preference::In)?;
//! population.add_mailbox(b"bob@example.org", Preference::Default)?;
//!
//! let dir = tempfile::tempdir()?;
//! let redis = match LocalRedis::start(dir.path()) {
//!     Ok(redis) => redis,
//!     // Without redis-server there is nothing to show.
//!     Err(e) if e.is_not_installed() => return Ok(()),
//!     Err(e) => return Err(e.into()),
//! };
//! let spec = RedisSpec::parse_single(&format!("{}?prefix=example", redis.url()))?;
//! let stats = bulk_policy_redis::load(&spec, &population, |_| {}).await?;
//! assert_eq!((stats.domains, stats.mailboxes), (1, 2));
//!
//! let backend = RedisBackend::connect(&spec).await?;
//! let batch: AddressBatch = ["Ann+news@Example.org", "bob@example.org", "zed@example.org",
//!     "x@y.net"].iter().map(|a| a.as_bytes()).collect();
//! let mut verdicts = Vec::new();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(
//!     verdicts,
//!     [Verdict::Accept, Verdict::OptedOut, Verdict::UnknownMailbox, Verdict::NotLocal]
//! );
//! assert_eq!(backend.round_trips(), 1);
//!
//! // Bob opts in while the backend serves; the next batch sees it.
//! backend.set("Bob@example.org", Preference::In).await?;
//! verdicts.clear();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(verdicts[1], Verdict::Accept);
//! redis.stop()?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod conn;
mod error;
mod layout;
mod load;
mod local;
mod lookup;
mod spec;

pub use backend::{DEFAULT_TIMEOUT, RedisBackend};
pub use error::RedisStoreError;
pub use layout::FORMAT;
pub use load::{LOAD_TIMEOUT, LoadStats, clear, load};
pub use local::{LocalRedis, LocalRedisCluster};
pub use spec::{DEFAULT_PREFIX, MAX_PREFIX_LEN, RedisSpec};

#[cfg(doc)]
use bulk_policy::{NormalizeConfig, PolicyBackend, PolicyError, Population};
