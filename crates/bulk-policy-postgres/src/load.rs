//! Writing a population into a schema: [`load`] and its [`LoadStats`].

use std::pin::pin;
use std::time::{Duration, Instant};

use bulk_policy::Population;
use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::{NoTls, Transaction};

use crate::error::PostgresStoreError;
use crate::spec::{PostgresSpec, check_schema};
use crate::store::{self, Found, quoted};

/// Suffix of the schema a load fills before it takes the store's name.
pub(crate) const STAGING_SUFFIX: &str = "__loading";

/// Mailboxes per COPY message, and between two progress calls. About 400 KiB of COPY data:
/// large enough that per-message costs vanish, small enough for a lively progress bar.
const MAILBOXES_PER_CHUNK: usize = 10_000;

/// Signature of PostgreSQL's binary COPY format, then the flags and header-extension
/// length (both 0).
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// What [`load`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadStats {
    /// Mailboxes written.
    pub mailboxes: u64,
    /// Domains written.
    pub domains: u64,
    /// Size of the two tables with their indexes after the load
    /// (`pg_total_relation_size`).
    pub bytes: u64,
    /// Whether the load replaced a store that was in the schema.
    pub replaced: bool,
    /// Wall time of the whole load: COPY, indexes, statistics and commit.
    pub elapsed: Duration,
}

/// Writes `population` into the schema of `spec`, replacing the store there, and returns
/// what it wrote. `progress` is called with the number of mailboxes written so far after
/// each batch of COPY data, and once at the end.
///
/// The load runs in one transaction: it creates the tables in a staging schema
/// (`SCHEMA__loading`), writes them with binary COPY, adds their primary keys, analyzes
/// them, then drops the old schema and renames the staging one in its place. Backends
/// reading the schema keep answering from the old store until the commit and from the new
/// one after, never from a mix; their prepared statements are re-planned by PostgreSQL.
/// Concurrent loads into one schema run one after the other (an advisory lock). A `set`
/// made while a load runs goes to the old store, and is gone with it.
///
/// Refused, untouched: a schema holding tables that are not a store of this crate, and
/// one holding a store normalized differently from `population` (the servers reading it
/// would normalize with the old config).
pub async fn load(
    spec: &PostgresSpec,
    population: &Population,
    mut progress: impl FnMut(u64) + Send,
) -> Result<LoadStats, PostgresStoreError> {
    let started = Instant::now();
    let schema = spec.schema.as_str();
    check_schema(schema)?;
    let db = |operation| {
        move |source| PostgresStoreError::Database {
            operation,
            schema: schema.to_string(),
            source,
        }
    };
    let (mut client, connection) = spec.config()?.connect(NoTls).await.map_err(db("connect"))?;
    // The task ends when `client` is dropped, at the end of this function.
    let connection = tokio::spawn(connection);
    let tx = client.transaction().await.map_err(db("begin"))?;
    // No statement timeout from the URL's options may cut a large load short; the index
    // builds sort in memory up to this size.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL maintenance_work_mem = '256MB'")
        .await
        .map_err(db("configure the load"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("bulkbench-postgres load {schema}")],
    )
    .await
    .map_err(db("lock the schema"))?;
    let replaced = match store::inspect(&tx, schema).await? {
        Found::Nothing => false,
        Found::OtherVersion(_) => true,
        Found::Store(normalize) if normalize == population.normalize_config() => true,
        Found::Store(normalize) => {
            return Err(PostgresStoreError::NormalizeMismatch {
                schema: schema.to_string(),
                store: normalize,
                population: population.normalize_config(),
            });
        }
    };
    let staging = format!("{schema}{STAGING_SUFFIX}");
    let s = quoted(&staging);
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}; {}",
        store::create_tables(&staging)
    ))
    .await
    .map_err(db("create the tables"))?;
    let domains = copy_domains(&tx, &staging, population)
        .await
        .map_err(db("COPY domains"))?;
    let mailboxes = copy_mailboxes(&tx, &staging, population, &mut progress)
        .await
        .map_err(db("COPY mailboxes"))?;
    for (key, value) in store::meta_rows(population.normalize_config()) {
        tx.execute(
            &format!("INSERT INTO {s}.meta (key, value) VALUES ($1, $2)"),
            &[&key, &value],
        )
        .await
        .map_err(db("write meta"))?;
    }
    tx.batch_execute(&store::index_tables(&staging))
        .await
        .map_err(db("index"))?;
    let target = quoted(schema);
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {target} CASCADE; ALTER SCHEMA {s} RENAME TO {target}"
    ))
    .await
    .map_err(db("replace the schema"))?;
    tx.commit().await.map_err(db("commit"))?;
    let bytes: i64 = client
        .query_one(
            &format!(
                "SELECT pg_total_relation_size('{target}.domains') \
                 + pg_total_relation_size('{target}.mailboxes')"
            ),
            &[],
        )
        .await
        .map_err(db("measure"))?
        .get(0);
    drop(client);
    // The connection ends with the client; its outcome no longer matters.
    let _ = connection.await;
    progress(mailboxes);
    Ok(LoadStats {
        mailboxes,
        domains,
        bytes: u64::try_from(bytes).unwrap_or(0),
        replaced,
        elapsed: started.elapsed(),
    })
}

/// Appends one binary COPY tuple of two fields: a text and a `"char"`.
fn put_row(buf: &mut BytesMut, text: &[u8], char_value: i8) {
    buf.put_i16(2);
    // Keys are at most a line long: far below i32::MAX.
    buf.put_i32(i32::try_from(text.len()).unwrap_or(i32::MAX));
    buf.put_slice(text);
    buf.put_i32(1);
    buf.put_i8(char_value);
}

async fn copy_domains(
    tx: &Transaction<'_>,
    schema: &str,
    population: &Population,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {}.domains (domain, regime) FROM STDIN (FORMAT binary)",
            quoted(schema)
        ))
        .await?;
    let mut sink = pin!(sink);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    buf.put_slice(COPY_HEADER);
    for (domain, regime) in population.domains() {
        put_row(&mut buf, domain, regime.as_byte() as i8);
    }
    buf.put_i16(-1);
    sink.send(buf.freeze()).await?;
    sink.as_mut().finish().await
}

async fn copy_mailboxes(
    tx: &Transaction<'_>,
    schema: &str,
    population: &Population,
    progress: &mut (impl FnMut(u64) + Send),
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {}.mailboxes (address, preference) FROM STDIN (FORMAT binary)",
            quoted(schema)
        ))
        .await?;
    let mut sink = pin!(sink);
    let mut buf = BytesMut::with_capacity(512 * 1024);
    buf.put_slice(COPY_HEADER);
    let mut written = 0u64;
    let mut in_chunk = 0;
    for (address, preference) in population.mailboxes() {
        put_row(&mut buf, address, preference.as_byte() as i8);
        in_chunk += 1;
        if in_chunk == MAILBOXES_PER_CHUNK {
            sink.send(buf.split().freeze()).await?;
            written += in_chunk as u64;
            in_chunk = 0;
            progress(written);
        }
    }
    buf.put_i16(-1);
    sink.send(buf.freeze()).await?;
    sink.as_mut().finish().await
}
