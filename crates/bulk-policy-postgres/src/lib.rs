//! The `postgres` policy backend: recipients' preferences in PostgreSQL tables, one query
//! per pipelined read, updated in place while servers read them.
//!
//! # Overview
//!
//! - [`PostgresSpec`]: where a store lives, `postgresql://USER@HOST:PORT/DB?schema=S`. One
//!   database holds many stores, one per schema.
//! - [`load`] writes a [`Population`] into a schema with binary COPY, in one transaction
//!   that replaces the store there, and returns [`LoadStats`].
//! - [`PostgresBackend::connect`] opens a pool of connections to it; as a [`PolicyBackend`]
//!   it normalizes a whole batch and resolves it with **one query**. A slow or unreachable
//!   database makes the lookup fail with [`PolicyError::Unavailable`] within the backend's
//!   timeout (the server replies 451), never a guessed verdict.
//! - [`PostgresBackend::get`] and [`set`](PostgresBackend::set) read and change one
//!   mailbox while lookups run; the next lookup sees a `set`.
//! - [`LocalPostgres`] runs a throwaway cluster (initdb in a folder, a server on a free
//!   loopback port), for tests and benchmarks.
//! - [`PostgresStoreError`] says what went wrong, naming the schema, address or program.
//!
//! # Schema
//!
//! A store is a schema (default `bulkbench`) holding three tables, created by [`load`]:
//!
//! | table       | columns (key first)                              | values |
//! |-------------|--------------------------------------------------|--------|
//! | `domains`   | `domain text COLLATE "C"` primary key, `regime "char"` | lowercased domain; `i` opt-in, `o` opt-out |
//! | `mailboxes` | `address text COLLATE "C"` primary key, `preference "char"` | normalized `local@domain`; `i` in, `o` out, `d` default |
//! | `meta`      | `key text` primary key, `value text`              | `format` = [`FORMAT`]; `fold_local_case` = `true`/`false`; `recipient_delimiter` = the byte in decimal (`43` for `+`) or `none` |
//!
//! The primary keys are the only indexes (B-trees, built after COPY). Keys use the `"C"`
//! collation, byte order, whatever the database's default: comparisons are `memcmp`s,
//! cheaper than a locale's, and the index does not depend on how the database was set up. Single-byte `"char"` values keep rows small and
//! `psql` output readable, like the LMDB store's bytes. Every mailbox's domain is in
//! `domains` ([`load`] writes only populations, which guarantee it; `set` checks it in
//! the same statement).
//!
//! # The lookup query
//!
//! The backend normalizes every address of the batch ([`KeyBatch`]) and sends the keys as
//! two arrays to one prepared statement:
//!
//! ```sql
//! SELECT k.n, d.regime, m.preference
//! FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(address, domain, n)
//! LEFT JOIN "S".domains AS d ON d.domain = k.domain
//! LEFT JOIN "S".mailboxes AS m ON m.address = k.address
//! ORDER BY k.n
//! ```
//!
//! One row per key, in batch order, with the domain's regime and the mailbox's preference
//! (NULL when there is none); [`Preference::verdict`] turns them into verdicts, as
//! [`Population::verdict_of`] does. Addresses that do not normalize, or whose domain
//! could not be served (not printable ASCII, too long), are answered `NotLocal` without
//! being sent; a batch with nothing to send sends no query.
//!
//! The plan PostgreSQL 15 picks at 1M mailboxes and 1,000 domains, both as a custom plan
//! and as the generic plan a prepared statement settles on: a hash join of the
//! batch's keys with one scan of `domains`, then a nested loop probing `mailboxes`'
//! primary key once per key, then a sort of the 100 rows by position.
//!
//! **Why this query, with figures** (the comparison it won; the figures of record go to
//! BENCHMARKS.md). The alternative sends the same arrays to `SELECT .. FROM mailboxes
//! WHERE address = ANY($1) UNION ALL SELECT .. FROM domains WHERE domain = ANY($2)` and
//! joins the answers to the batch in Rust. At 1M mailboxes, batches of 100 on one
//! connection, 2,000 batches per plan in alternating rounds, release build, 6 runs on the
//! project's 2-vCPU machine at load average 2.3 to 4.2 (other builds running): the unnest
//! join took 598 to 1,458 µs per batch (median 800), `= ANY` 1,570 to 2,528 µs (median
//! 1,884), 1.7 to 2.8 times as long in every run. EXPLAIN ANALYZE says why: as custom
//! plans both execute in 0.3 to 0.7 ms, but a prepared statement switches to the generic
//! plan after five runs, and there `domain = ANY($2)` compares each of the 1,000 domains
//! with the whole array, unhashed (1.0 of 1.27 ms), where the unnest join hashes the
//! batch once (0.17 of 0.53 ms). Command, which prints both plans:
//! `cargo test -p bulk-policy-postgres --release --test scale -- --ignored --nocapture`.
//!
//! # Loading
//!
//! [`load`] sends binary COPY data (hand-encoded, no per-row parameter binding) in
//! messages of 10,000 mailboxes, then builds each primary key in one sort
//! (`maintenance_work_mem` 256 MB for the load). 1,000,000 mailboxes load in 0.81 to
//! 1.35 s (6 runs, median 0.97 s; same machine, command and load as above) into a
//! [`LocalPostgres`] cluster, whose `fsync` is off, and take 113 bytes per mailbox in
//! tables and indexes. A load into a schema that holds a store takes as long; lookups
//! wait only while the old schema is dropped and the new one renamed, at its end.
//!
//! # Connections and timeouts
//!
//! Each backend owns a pool of at most `pool_size` connections (deadpool-postgres), each
//! with its own cache of prepared statements. Every operation (a lookup, `get`, `set`) is
//! bounded by the backend's timeout ([`DEFAULT_TIMEOUT`], or
//! [`PostgresBackend::connect_with_timeout`]), from waiting for a connection (and
//! connecting) to the last row, as a client-side deadline: so a database that stops
//! answering, its connections still open, fails the lookup too. The query is also bounded
//! by the server's `statement_timeout`, so the server stops work nobody awaits. A
//! connection whose query failed or timed out is dropped from the pool, not reused.
//!
//! # Why these crates
//!
//! tokio-postgres is the maintained pure-Rust async client: no libpq to link, and it runs
//! on the tokio runtime the server already uses. It pipelines concurrent queries on one
//! connection and speaks binary COPY, which the loader needs. deadpool-postgres is the
//! small, widely used pool built for tokio-postgres: it bounds waiting, connecting and
//! recycling with timeouts, and replaces connections that closed (a restarted database)
//! when they are checked out. It also caches prepared statements per connection, which a
//! hand-written pool would have had to redo along with the rest.
//!
//! # Example
//!
//! ```no_run
//! use bulk_policy::{AddressBatch, PolicyBackend, Population, Preference, Regime, Verdict};
//! use bulk_policy_postgres::{PostgresBackend, PostgresSpec, load};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut population = Population::default();
//! population.add_domain(b"example.org", Regime::OptIn)?;
//! population.add_mailbox(b"ann@example.org", Preference::In)?;
//! population.add_mailbox(b"bob@example.org", Preference::Default)?;
//!
//! let spec = PostgresSpec::parse("postgresql://bulk@127.0.0.1:5432/postgres?schema=demo")?;
//! let stats = load(&spec, &population, |_mailboxes_written| {}).await?;
//! assert_eq!((stats.domains, stats.mailboxes), (1, 2));
//!
//! let backend = PostgresBackend::connect(&spec, 4).await?;
//! let batch: AddressBatch = ["Ann+news@Example.org", "bob@example.org", "zed@example.org",
//!     "x@y.net"].iter().map(|a| a.as_bytes()).collect();
//! let mut verdicts = Vec::new();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(
//!     verdicts,
//!     [Verdict::Accept, Verdict::OptedOut, Verdict::UnknownMailbox, Verdict::NotLocal]
//! );
//! assert_eq!(backend.queries(), 1);
//!
//! // Bob opts in while the backend serves; the next batch sees it.
//! backend.set("Bob@example.org", Preference::In).await?;
//! verdicts.clear();
//! backend.lookup(&batch, &mut verdicts).await?;
//! assert_eq!(verdicts[1], Verdict::Accept);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod load;
mod local;
mod spec;
mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bulk_policy::{
    AddressBatch, KeyBatch, MAX_ADDRESS_LEN, MAX_DOMAIN_LEN, NormalizeConfig, PolicyBackend,
    PolicyError, Population, Preference, Regime, Reload, ReloadError, Verdict,
};
use deadpool_postgres::{
    ClientWrapper, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;

pub use error::PostgresStoreError;
pub use load::{LoadStats, load};
pub use local::{LocalPostgres, postgres_installed};
pub use spec::{DEFAULT_SCHEMA, MAX_SCHEMA_LEN, PostgresSpec, check_schema};
pub use store::FORMAT;

use store::Found;

/// [`PolicyBackend::name`] of this backend.
const NAME: &str = "postgres";

/// How long an operation may take by default: waiting for a connection, connecting, and
/// one query. A lookup that takes longer fails (the server replies 451).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`PolicyBackend`] reading a store that [`load`] wrote into a PostgreSQL schema.
pub struct PostgresBackend {
    pool: Pool,
    schema: String,
    /// Read from the store's meta at connect; a load in place refuses to change it.
    normalize: NormalizeConfig,
    timeout: Duration,
    lookup_sql: String,
    get_sql: String,
    set_sql: String,
    /// Lookup queries sent.
    queries: AtomicU64,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("schema", &self.schema)
            .field("normalize", &self.normalize)
            .field("timeout", &self.timeout)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// Which side of the one-query contract a key of a batch falls on.
enum Slot<'a> {
    /// Answered without the database.
    NotLocal,
    /// Sent: the address (`None` if it can be no mailbox) and its domain.
    Ask(Option<&'a str>, &'a str),
}

/// What a key of a batch needs: printable ASCII is all a population holds.
fn slot(key: Option<bulk_policy::Key<'_>>) -> Slot<'_> {
    let Some(key) = key else {
        return Slot::NotLocal;
    };
    let domain = key.domain();
    if domain.len() > MAX_DOMAIN_LEN || !domain.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Slot::NotLocal;
    }
    let address = (key.key.len() <= MAX_ADDRESS_LEN
        && key.key.iter().all(|b| (0x20..=0x7e).contains(b)))
    .then(|| std::str::from_utf8(key.key).ok())
    .flatten();
    match std::str::from_utf8(domain) {
        Ok(domain) => Slot::Ask(address, domain),
        Err(_) => Slot::NotLocal,
    }
}

impl PostgresBackend {
    /// Connects to the store in `spec`'s schema with a pool of at most `pool_size`
    /// connections and the [`DEFAULT_TIMEOUT`].
    ///
    /// Opens one connection at once to read the store's meta (format version and
    /// normalization config) and prepare the lookup; refuses a schema with no store, or a
    /// store of another format, naming the schema. Further connections open as lookups
    /// need them.
    pub async fn connect(
        spec: &PostgresSpec,
        pool_size: usize,
    ) -> Result<PostgresBackend, PostgresStoreError> {
        Self::connect_with_timeout(spec, pool_size, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](PostgresBackend::connect) with another bound on each operation.
    pub async fn connect_with_timeout(
        spec: &PostgresSpec,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<PostgresBackend, PostgresStoreError> {
        check_schema(&spec.schema)?;
        if pool_size == 0 {
            return Err(PostgresStoreError::NoConnections);
        }
        let mut config = spec.config()?;
        let statement_timeout = format!("-c statement_timeout={}", timeout.as_millis().max(1));
        let options = match config.get_options() {
            Some(options) => format!("{options} {statement_timeout}"),
            None => statement_timeout,
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("bulkbench");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| PostgresStoreError::Pool {
                operation: "build the pool",
                schema: spec.schema.clone(),
                reason: e.to_string(),
            })?;
        let schema = spec.schema.as_str();
        let mut backend = PostgresBackend {
            pool,
            schema: schema.to_string(),
            normalize: NormalizeConfig::default(),
            timeout,
            lookup_sql: store::lookup_sql(schema),
            get_sql: store::get_sql(schema),
            set_sql: store::set_sql(schema),
            queries: AtomicU64::new(0),
        };
        let lookup_sql = backend.lookup_sql.clone();
        let found = backend
            .with_client("read meta", async |client| {
                let found = store::inspect(&**client, schema).await?;
                if let Found::Store(_) = found {
                    client
                        .prepare_cached(&lookup_sql)
                        .await
                        .map_err(database("prepare the lookup", schema))?;
                }
                Ok(found)
            })
            .await?;
        backend.normalize = match found {
            Found::Store(normalize) => normalize,
            Found::Nothing => {
                return Err(PostgresStoreError::NoStore {
                    schema: schema.to_string(),
                });
            }
            Found::OtherVersion(found) => {
                return Err(PostgresStoreError::Version {
                    schema: schema.to_string(),
                    found,
                    expected: FORMAT,
                });
            }
        };
        Ok(backend)
    }

    /// The normalization lookups use: the one the store was loaded with.
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.normalize
    }

    /// The schema of the store.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Lookup queries sent so far (one per batch that had a key to send).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Runs `f` on a pooled connection, getting the connection and running `f` within one
    /// timeout. A connection on which `f` failed or timed out is dropped from the pool:
    /// after a timeout it may still be busy (or hung), after an error it may be broken.
    async fn with_client<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&ClientWrapper) -> Result<T, PostgresStoreError>,
    ) -> Result<T, PostgresStoreError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || PostgresStoreError::Timeout {
            operation,
            schema: self.schema.clone(),
            after: self.timeout,
        };
        // The pool bounds its own steps too (waiting, recycling, connecting), each by the
        // timeout; the deadline bounds them together.
        let client = tokio::time::timeout_at(deadline, self.pool.get())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| self.pool_error(operation, e))?;
        match tokio::time::timeout_at(deadline, f(&client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                drop(Object::take(client));
                Err(e)
            }
            Err(_) => {
                drop(Object::take(client));
                Err(timed_out())
            }
        }
    }

    fn pool_error(&self, operation: &'static str, e: PoolError) -> PostgresStoreError {
        match e {
            PoolError::Timeout(_) => PostgresStoreError::Timeout {
                operation,
                schema: self.schema.clone(),
                after: self.timeout,
            },
            PoolError::Backend(source) => PostgresStoreError::Database {
                operation,
                schema: self.schema.clone(),
                source,
            },
            other => PostgresStoreError::Pool {
                operation,
                schema: self.schema.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Resolves `batch` with one query, appending one verdict per address to `out` (left
    /// unchanged on error). This is what [`PolicyBackend::lookup`] runs.
    pub async fn lookup_batch(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PostgresStoreError> {
        let start = out.len();
        let result = self.lookup_into(batch, out).await;
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    async fn lookup_into(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PostgresStoreError> {
        let mut keys = KeyBatch::default();
        keys.fill(self.normalize, batch);
        out.reserve(batch.len());
        let mut addresses = Vec::new();
        let mut domains = Vec::new();
        // Where in `out` each sent key's verdict goes.
        let mut positions = Vec::new();
        for key in keys.iter() {
            if let Slot::Ask(address, domain) = slot(key) {
                positions.push(out.len());
                addresses.push(address);
                domains.push(domain);
            }
            out.push(Verdict::NotLocal);
        }
        if positions.is_empty() {
            return Ok(());
        }
        let schema = self.schema.as_str();
        let rows = self
            .with_client("lookup", async |client| {
                let statement = client
                    .prepare_cached(&self.lookup_sql)
                    .await
                    .map_err(database("prepare the lookup", schema))?;
                self.queries.fetch_add(1, Ordering::Relaxed);
                client
                    .query(&statement, &[&addresses, &domains])
                    .await
                    .map_err(database("lookup", schema))
            })
            .await?;
        if rows.len() != positions.len() {
            return Err(self.corrupt(format!(
                "the lookup answered {} rows for {} keys",
                rows.len(),
                positions.len()
            )));
        }
        for (i, (row, &position)) in rows.iter().zip(&positions).enumerate() {
            let fields: Result<(i64, Option<i8>, Option<i8>), _> =
                (|| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))();
            let (n, regime, preference) = fields.map_err(database("read the lookup", schema))?;
            if usize::try_from(n).ok() != Some(i + 1) {
                return Err(self.corrupt(format!("the lookup answered row {n} at {}", i + 1)));
            }
            out[position] = self.verdict(regime, preference)?;
        }
        Ok(())
    }

    /// The verdict for a key whose domain has `regime` and whose mailbox has `preference`.
    fn verdict(
        &self,
        regime: Option<i8>,
        preference: Option<i8>,
    ) -> Result<Verdict, PostgresStoreError> {
        let Some(regime) = regime else {
            return Ok(Verdict::NotLocal);
        };
        let regime = Regime::from_byte(regime as u8)
            .ok_or_else(|| self.corrupt(format!("a domain has regime {regime}")))?;
        let Some(preference) = preference else {
            return Ok(Verdict::UnknownMailbox);
        };
        let preference = Preference::from_byte(preference as u8)
            .ok_or_else(|| self.corrupt(format!("a mailbox has preference {preference}")))?;
        Ok(preference.verdict(regime))
    }

    fn corrupt(&self, what: String) -> PostgresStoreError {
        PostgresStoreError::Corrupt {
            schema: self.schema.clone(),
            what,
        }
    }

    /// The lookup key of an address given to `get` or `set`, and the index of its '@'.
    fn lookup_key(&self, address: &str) -> Result<(Vec<u8>, usize), PostgresStoreError> {
        self.normalize
            .key_of(address)
            .map_err(|source| PostgresStoreError::Address {
                address: address.to_string(),
                source,
            })
    }

    /// The stored preference of `address` (normalized as lookups do), or `None` if it has
    /// no entry.
    pub async fn get(&self, address: &str) -> Result<Option<Preference>, PostgresStoreError> {
        let (key, at) = self.lookup_key(address)?;
        let key = bulk_policy::Key { key: &key, at };
        let Slot::Ask(Some(address), _) = slot(Some(key)) else {
            return Ok(None);
        };
        let schema = self.schema.as_str();
        let row = self
            .with_client("get", async |client| {
                let statement = client
                    .prepare_cached(&self.get_sql)
                    .await
                    .map_err(database("prepare get", schema))?;
                client
                    .query_opt(&statement, &[&address])
                    .await
                    .map_err(database("get", schema))
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let value: i8 = row.try_get(0).map_err(database("get", schema))?;
        Preference::from_byte(value as u8)
            .map(Some)
            .ok_or_else(|| self.corrupt(format!("mailbox {address} has preference {value}")))
    }

    /// Sets the preference of `address`, adding the mailbox if it has no entry. The
    /// address must be acceptable in a population file (so a key the recipient delimiter
    /// would cut is refused) and its domain must be served.
    ///
    /// Committed when it returns: the next lookup, on any connection, sees it.
    pub async fn set(
        &self,
        address: &str,
        preference: Preference,
    ) -> Result<(), PostgresStoreError> {
        let (key, at) = self.lookup_key(address)?;
        // A throwaway population validates the entry exactly as the parser would.
        let mut check = Population::new(self.normalize);
        check.add_domain(&key[at + 1..], Regime::OptOut)?;
        check.add_mailbox(address.as_bytes(), preference)?;
        // Validated: printable ASCII.
        let key = String::from_utf8_lossy(&key).into_owned();
        let domain = &key[at + 1..];
        let value = preference.as_byte() as i8;
        let schema = self.schema.as_str();
        let written = self
            .with_client("set", async |client| {
                let statement = client
                    .prepare_cached(&self.set_sql)
                    .await
                    .map_err(database("prepare set", schema))?;
                client
                    .execute(&statement, &[&key, &value, &domain])
                    .await
                    .map_err(database("set", schema))
            })
            .await?;
        if written == 0 {
            return Err(PostgresStoreError::DomainNotServed {
                address: address.to_string(),
                domain: domain.to_string(),
                schema: self.schema.clone(),
            });
        }
        Ok(())
    }
}

/// Maps a tokio-postgres error of `operation` on `schema`.
fn database<'a>(
    operation: &'static str,
    schema: &'a str,
) -> impl FnOnce(tokio_postgres::Error) -> PostgresStoreError + 'a {
    move |source| PostgresStoreError::Database {
        operation,
        schema: schema.to_string(),
        source,
    }
}

impl PolicyBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        self.lookup_batch(batch, out)
            .await
            .map_err(PolicyError::from)
    }

    /// The database changes in place (`bulkbench policy set`), and the next lookup sees a
    /// change: there is nothing to reload.
    fn reload(&self) -> Result<Reload, ReloadError> {
        Ok(Reload::InPlace)
    }
}
