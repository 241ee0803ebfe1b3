//! [`load`] and [`clear`]: writing a population under a prefix, replacing what was there,
//! and removing a prefix's store.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bulk_policy::{NormalizeConfig, Population, Preference, Regime};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::{Cmd, Pipeline, RedisResult};
use rustc_hash::FxHashMap;

use crate::conn::{Conn, within};
use crate::layout::{
    self, FORMAT, META_DELIMITER, META_FOLD, META_FORMAT, REGIME_FIELD, domain_key, domain_slot,
    staging_key,
};
use crate::spec::check_prefix;
use crate::{RedisSpec, RedisStoreError};

/// How long a load waits for each answer (a pipeline of 50,000 fields takes
/// tens of milliseconds; a rename over a domain of millions of mailboxes frees its old hash).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Mailbox fields per `HSET` command.
const FIELDS_PER_COMMAND: usize = 1_000;
/// Fields (or keys) per pipeline: big enough that a round trip is amortized over tens of
/// milliseconds of server work, small enough that a reply never nears the timeout.
const FIELDS_PER_PIPELINE: usize = 50_000;
/// Pipelines in flight at once: the server parses one while the client encodes the next.
const IN_FLIGHT: usize = 4;
/// Members per `SADD`/`SREM` command.
const MEMBERS_PER_COMMAND: usize = 10_000;

/// What a [`load`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadStats {
    /// Domains written.
    pub domains: usize,
    /// Mailboxes written.
    pub mailboxes: usize,
    /// Domains of the previous content that the population no longer has, removed.
    pub removed_domains: usize,
    /// Whether the prefix held a store before (now replaced).
    pub replaced: bool,
    /// Requests sent: pipelines, and the commands that read and write the meta and the
    /// domain list.
    pub pipelines: u64,
    /// Wall-clock time of the whole load.
    pub elapsed: Duration,
}

/// Writes `population` under `spec.prefix`, replacing what was there, pipelined; calls
/// `progress` with the number of mailboxes written so far after each pipeline of them.
///
/// Refuses a prefix that holds another format or was loaded with another normalization
/// ([`clear`] it first, or use another prefix). How the content is replaced, and what a
/// server reading the prefix meanwhile sees: see the crate docs,
/// [Loading and replacing](crate#loading-and-replacing).
pub async fn load(
    spec: &RedisSpec,
    population: &Population,
    mut progress: impl FnMut(u64) + Send,
) -> Result<LoadStats, RedisStoreError> {
    let started = Instant::now();
    let store = Store::open(spec, "load").await?;
    let replaced = store.check_meta(population.normalize_config()).await?;
    let old = store.listed_domains().await?;

    let mut domains: Vec<(u16, &[u8], Regime)> = population
        .domains()
        .map(|(domain, regime)| (domain_slot(domain), domain, regime))
        .collect();
    domains.sort_unstable_by_key(|&(slot, domain, _)| (slot, domain));
    let mut mailboxes: FxHashMap<&[u8], Vec<(&[u8], Preference)>> = FxHashMap::default();
    for (key, preference) in population.mailboxes() {
        // Domains hold no '@': the last one separates.
        let at = key.iter().rposition(|&b| b == b'@').unwrap_or(0);
        mailboxes
            .entry(&key[at + 1..])
            .or_default()
            .push((&key[..at], preference));
    }

    let mut batch = store.batcher(None);
    // Listed before anything is written, so an interrupted load leaves nothing unlisted.
    for chunk in domains.chunks(MEMBERS_PER_COMMAND) {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(layout::domains_key(&spec.prefix));
        for (_, domain, _) in chunk {
            cmd.arg(*domain);
        }
        batch.push(0, cmd, chunk.len(), 0).await?;
    }
    batch.finish().await?;
    let mut pipelines = batch.sent;

    let mut batch = store.batcher(Some(&mut progress));
    for &(slot, domain, regime) in &domains {
        let staging = staging_key(&spec.prefix, domain);
        batch
            .push(slot, redis::cmd("UNLINK").arg(&staging).clone(), 1, 0)
            .await?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&staging).arg(REGIME_FIELD).arg(&[regime.as_byte()]);
        batch.push(slot, cmd, 1, 0).await?;
        for chunk in mailboxes
            .get(domain)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .chunks(FIELDS_PER_COMMAND)
        {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&staging);
            for &(local, preference) in chunk {
                cmd.arg(local).arg(&[preference.as_byte()]);
            }
            batch.push(slot, cmd, chunk.len(), chunk.len()).await?;
        }
    }
    batch.finish().await?;
    pipelines += batch.sent;

    let mut batch = store.batcher(None);
    for &(slot, domain, _) in &domains {
        let mut cmd = redis::cmd("RENAME");
        cmd.arg(staging_key(&spec.prefix, domain))
            .arg(domain_key(&spec.prefix, domain));
        batch.push(slot, cmd, 1, 0).await?;
    }
    batch.finish().await?;
    pipelines += batch.sent;

    store.write_meta(population.normalize_config()).await?;
    let kept: HashSet<&[u8]> = domains.iter().map(|&(_, domain, _)| domain).collect();
    let stale: Vec<&[u8]> = old
        .iter()
        .map(Vec::as_slice)
        .filter(|domain| !kept.contains(domain))
        .collect();
    // The meta read and write, the domain list read.
    pipelines += store.remove_domains(&stale).await? + 3;
    Ok(LoadStats {
        domains: domains.len(),
        mailboxes: population.mailbox_count(),
        removed_domains: stale.len(),
        replaced,
        pipelines,
        elapsed: started.elapsed(),
    })
}

/// Removes the store under `spec.prefix`: its meta first (so no new backend connects to
/// it), then every listed domain's hashes, then the list. Returns the number of domains
/// removed. A server still reading the prefix then answers `NotLocal` to everything: clear
/// only a prefix that no server reads.
pub async fn clear(spec: &RedisSpec) -> Result<usize, RedisStoreError> {
    let store = Store::open(spec, "clear").await?;
    store
        .command::<()>(
            "clear",
            redis::cmd("UNLINK").arg(layout::meta_key(&spec.prefix)),
        )
        .await?;
    let old = store.listed_domains().await?;
    let old: Vec<&[u8]> = old.iter().map(Vec::as_slice).collect();
    store.remove_domains(&old).await?;
    store
        .command::<()>(
            "clear",
            redis::cmd("UNLINK").arg(layout::domains_key(&spec.prefix)),
        )
        .await?;
    Ok(old.len())
}

/// A connection used to write a store.
struct Store<'a> {
    conn: Conn,
    spec: &'a RedisSpec,
    target: String,
    operation: &'static str,
}

impl<'a> Store<'a> {
    async fn open(spec: &'a RedisSpec, operation: &'static str) -> Result<Self, RedisStoreError> {
        let target = spec.to_string();
        check_prefix(&spec.prefix).map_err(|reason| RedisStoreError::Spec {
            spec: target.clone(),
            reason,
        })?;
        Ok(Store {
            conn: Conn::open(spec, LOAD_TIMEOUT, operation).await?,
            spec,
            target,
            operation,
        })
    }

    async fn command<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: &Cmd,
    ) -> Result<T, RedisStoreError> {
        within(LOAD_TIMEOUT, operation, &self.target, self.conn.query(cmd))
            .await?
            .map_err(|source| RedisStoreError::Redis {
                operation,
                target: self.target.clone(),
                source,
            })
    }

    /// Whether the prefix holds a store this load may replace; an error if it holds one it
    /// may not.
    async fn check_meta(&self, normalize: NormalizeConfig) -> Result<bool, RedisStoreError> {
        let meta: HashMap<String, Vec<u8>> = self
            .command(
                "read meta",
                redis::cmd("HGETALL").arg(layout::meta_key(&self.spec.prefix)),
            )
            .await?;
        if meta.is_empty() {
            return Ok(false);
        }
        let format = meta.get(META_FORMAT).map(Vec::as_slice).unwrap_or_default();
        if format != FORMAT.as_bytes() {
            return Err(RedisStoreError::Version {
                prefix: self.spec.prefix.clone(),
                target: self.target.clone(),
                found: String::from_utf8_lossy(format).into_owned(),
                expected: FORMAT,
            });
        }
        let field = |name| meta.get(name).map(Vec::as_slice).unwrap_or(b"missing");
        match layout::normalize_of(field(META_FOLD), field(META_DELIMITER)) {
            Some(store) if store == normalize => Ok(true),
            Some(store) => Err(RedisStoreError::NormalizeMismatch {
                prefix: self.spec.prefix.clone(),
                store,
                population: normalize,
            }),
            None => Err(RedisStoreError::Corrupt {
                prefix: self.spec.prefix.clone(),
                target: self.target.clone(),
                what: format!("meta {meta:?} holds no normalization this crate writes"),
            }),
        }
    }

    async fn listed_domains(&self) -> Result<Vec<Vec<u8>>, RedisStoreError> {
        self.command(
            "read domains",
            redis::cmd("SMEMBERS").arg(layout::domains_key(&self.spec.prefix)),
        )
        .await
    }

    async fn write_meta(&self, normalize: NormalizeConfig) -> Result<(), RedisStoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(layout::meta_key(&self.spec.prefix));
        for (field, value) in layout::meta_fields(normalize) {
            cmd.arg(field).arg(value);
        }
        self.command("write meta", &cmd).await
    }

    /// Unlinks the live and staging hashes of `domains`, then takes them off the list.
    /// Returns the pipelines sent.
    async fn remove_domains(&self, domains: &[&[u8]]) -> Result<u64, RedisStoreError> {
        let mut sorted: Vec<(u16, &[u8])> = domains
            .iter()
            .map(|&domain| (domain_slot(domain), domain))
            .collect();
        sorted.sort_unstable();
        let mut batch = self.batcher(None);
        for (slot, domain) in sorted {
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(domain_key(&self.spec.prefix, domain))
                .arg(staging_key(&self.spec.prefix, domain));
            batch.push(slot, cmd, 1, 0).await?;
        }
        for chunk in domains.chunks(MEMBERS_PER_COMMAND) {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(layout::domains_key(&self.spec.prefix));
            for domain in chunk {
                cmd.arg(*domain);
            }
            // Another slot than the hashes: the batcher starts a pipeline for it.
            batch.push(u16::MAX, cmd, chunk.len(), 0).await?;
        }
        batch.finish().await?;
        Ok(batch.sent)
    }

    fn batcher<'p>(&self, progress: Option<&'p mut (dyn FnMut(u64) + Send)>) -> Batcher<'p> {
        Batcher {
            conn: self.conn.clone(),
            cluster: matches!(self.conn, Conn::Cluster(_)),
            target: self.target.clone(),
            operation: self.operation,
            current: redis::pipe(),
            current_slot: None,
            current_fields: 0,
            current_mailboxes: 0,
            in_flight: FuturesUnordered::new(),
            sent: 0,
            mailboxes_done: 0,
            progress,
        }
    }
}

type InFlight = Pin<Box<dyn Future<Output = RedisResult<u64>> + Send>>;

/// Cuts a stream of commands into pipelines (in a cluster, one slot per pipeline) and keeps
/// up to [`IN_FLIGHT`] of them in flight.
struct Batcher<'p> {
    conn: Conn,
    cluster: bool,
    target: String,
    operation: &'static str,
    current: Pipeline,
    current_slot: Option<u16>,
    current_fields: usize,
    current_mailboxes: u64,
    /// Each resolves to the number of mailboxes its pipeline wrote.
    in_flight: FuturesUnordered<InFlight>,
    sent: u64,
    mailboxes_done: u64,
    progress: Option<&'p mut (dyn FnMut(u64) + Send)>,
}

impl Batcher<'_> {
    /// Adds `cmd`, for keys of `slot`, writing `fields` fields (or keys) of which
    /// `mailboxes` are mailboxes.
    async fn push(
        &mut self,
        slot: u16,
        cmd: Cmd,
        fields: usize,
        mailboxes: usize,
    ) -> Result<(), RedisStoreError> {
        if self.cluster && self.current_slot.is_some_and(|s| s != slot) {
            self.flush().await?;
        }
        self.current_slot = Some(slot);
        self.current.add_command(cmd);
        self.current_fields += fields;
        self.current_mailboxes += mailboxes as u64;
        if self.current_fields >= FIELDS_PER_PIPELINE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the current pipeline, first waiting for room in flight.
    async fn flush(&mut self) -> Result<(), RedisStoreError> {
        if self.current.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_one().await?;
        }
        let pipeline = std::mem::replace(&mut self.current, redis::pipe());
        let mailboxes = std::mem::take(&mut self.current_mailboxes);
        self.current_fields = 0;
        self.current_slot = None;
        let conn = self.conn.clone();
        self.in_flight.push(Box::pin(async move {
            conn.pipeline(&pipeline).await.map(|_| mailboxes)
        }));
        self.sent += 1;
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), RedisStoreError> {
        let Some(done) = within(
            LOAD_TIMEOUT * 2,
            self.operation,
            &self.target,
            self.in_flight.next(),
        )
        .await?
        else {
            return Ok(());
        };
        let mailboxes = done.map_err(|source| RedisStoreError::Redis {
            operation: self.operation,
            target: self.target.clone(),
            source,
        })?;
        if mailboxes > 0 {
            self.mailboxes_done += mailboxes;
            if let Some(progress) = self.progress.as_mut() {
                progress(self.mailboxes_done);
            }
        }
        Ok(())
    }

    /// Sends what is left and waits for every pipeline.
    async fn finish(&mut self) -> Result<(), RedisStoreError> {
        self.flush().await?;
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }
}
