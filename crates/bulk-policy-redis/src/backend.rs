//! [`RedisBackend`]: lookups, reads and updates of a store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulk_policy::{
    AddressBatch, MAX_ADDRESS_LEN, NormalizeConfig, PolicyBackend, PolicyError, Population,
    Preference, Regime, Reload, ReloadError, Verdict,
};

use crate::conn::{Conn, within};
use crate::layout::{
    self, FORMAT, META_DELIMITER, META_FOLD, META_FORMAT, REGIME_FIELD, domain_key,
};
use crate::lookup::SlotOwners;
use crate::{RedisSpec, RedisStoreError};

/// How long a lookup, read or update waits for Redis by default before it fails, and how
/// long each connection attempt may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets a mailbox's field only if its domain's hash holds a regime (the domain is served),
/// atomically, in one round trip. Returns 1 if set, 0 if the domain is not served.
const SET_IF_SERVED: &str = r"
if redis.call('HEXISTS', KEYS[1], '') == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// A [`PolicyBackend`] reading a store that [`load`](crate::load) wrote.
///
/// Cloning is cheap; clones share the connection (one multiplexed TCP connection per
/// Redis node) and the round-trip counter.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Conn,
    /// The spec as displayed, for errors.
    pub(crate) target: String,
    pub(crate) prefix: String,
    /// Read from the store's meta at connect.
    pub(crate) normalize: NormalizeConfig,
    pub(crate) timeout: Duration,
    /// Requests sent by lookups ([`RedisBackend::round_trips`]).
    pub(crate) round_trips: AtomicU64,
    /// In a cluster, which node serves each slot, as last asked; `None` until a lookup
    /// asks, and again after a lookup by it failed (the cluster may have changed). A std
    /// lock: held only to clone or replace the `Arc`, never across an await.
    pub(crate) owners: RwLock<Option<Arc<SlotOwners>>>,
    set_if_served: redis::Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.inner.target)
            .field("normalize", &self.inner.normalize)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl RedisBackend {
    /// Connects to the store under `spec.prefix` with [`DEFAULT_TIMEOUT`].
    ///
    /// Refuses a prefix that holds no store (naming it), another format, or meta values
    /// this crate never writes.
    pub async fn connect(spec: &RedisSpec) -> Result<RedisBackend, RedisStoreError> {
        Self::connect_with_timeout(spec, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect), with lookups, reads and updates failing after `timeout`
    /// without an answer.
    pub async fn connect_with_timeout(
        spec: &RedisSpec,
        timeout: Duration,
    ) -> Result<RedisBackend, RedisStoreError> {
        let target = spec.to_string();
        crate::spec::check_prefix(&spec.prefix).map_err(|reason| RedisStoreError::Spec {
            spec: target.clone(),
            reason,
        })?;
        let conn = Conn::open(spec, timeout, "connect").await?;
        let meta: HashMap<String, Vec<u8>> = within(
            timeout,
            "connect",
            &target,
            conn.query(redis::cmd("HGETALL").arg(layout::meta_key(&spec.prefix))),
        )
        .await?
        .map_err(|source| RedisStoreError::Redis {
            operation: "read meta",
            target: target.clone(),
            source,
        })?;
        let normalize = read_meta(&meta, spec, &target)?;
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                conn,
                target,
                prefix: spec.prefix.clone(),
                normalize,
                timeout,
                round_trips: AtomicU64::new(0),
                owners: RwLock::new(None),
                set_if_served: redis::Script::new(SET_IF_SERVED),
            }),
        })
    }

    /// The normalization lookups use: the one the store was loaded with.
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.inner.normalize
    }

    /// Requests sent by lookups so far: one pipeline per lookup on a single server; in a
    /// cluster one per node the batch touches (sent at once), plus `CLUSTER SLOTS` when the
    /// slot map is read, plus one per slot when a lookup falls back (see the crate docs,
    /// [Round trips](crate#round-trips)). None for a batch with nothing to ask.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Whether the store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.conn, Conn::Cluster(_))
    }

    /// The stored preference of `address` (normalized as lookups do), or `None` if it has
    /// no entry.
    pub async fn get(&self, address: &str) -> Result<Option<Preference>, RedisStoreError> {
        let (key, at) = self.lookup_key(address)?;
        if key.len() > MAX_ADDRESS_LEN {
            return Ok(None);
        }
        let mut cmd = redis::cmd("HGET");
        cmd.arg(domain_key(&self.inner.prefix, &key[at + 1..]))
            .arg(&key[..at]);
        let value: Option<Vec<u8>> = self.run("get", self.inner.conn.query(&cmd)).await?;
        value
            .map(|value| {
                Preference::from_bytes(&value)
                    .ok_or_else(|| self.corrupt(format!("preference {value:?} of {address}")))
            })
            .transpose()
    }

    /// Sets the preference of `address`, adding the mailbox if it has no entry. The address
    /// must be acceptable in a population file (so a key the recipient delimiter would cut
    /// is refused) and its domain must be served (checked atomically with the write, by a
    /// script). Lookups sent after it returns see it.
    pub async fn set(&self, address: &str, preference: Preference) -> Result<(), RedisStoreError> {
        let (key, at) = self.lookup_key(address)?;
        let domain = &key[at + 1..];
        // A throwaway population validates the entry exactly as the parser would.
        let mut check = Population::new(self.inner.normalize);
        check.add_domain(domain, Regime::OptOut)?;
        check.add_mailbox(address.as_bytes(), preference)?;
        let hash = domain_key(&self.inner.prefix, domain);
        let value = [preference.as_byte()];
        let (keys, args) = ([hash.as_slice()], [&key[..at], &value[..]]);
        let set = self
            .inner
            .conn
            .script::<i64>(&self.inner.set_if_served, &keys, &args);
        match self.run("set", set).await? {
            1 => Ok(()),
            _ => Err(RedisStoreError::DomainNotServed {
                address: address.to_string(),
                domain: String::from_utf8_lossy(domain).into_owned(),
            }),
        }
    }

    /// The regime of `domain` (any case), or `None` if it is not served.
    pub async fn regime(&self, domain: &str) -> Result<Option<Regime>, RedisStoreError> {
        let domain = domain.to_ascii_lowercase();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(domain_key(&self.inner.prefix, domain.as_bytes()))
            .arg(REGIME_FIELD);
        let value: Option<Vec<u8>> = self.run("regime", self.inner.conn.query(&cmd)).await?;
        value
            .map(|value| {
                Regime::from_bytes(&value)
                    .ok_or_else(|| self.corrupt(format!("regime {value:?} of {domain}")))
            })
            .transpose()
    }

    /// Sets the regime of `domain` (any case), serving it from now on if it was not. The
    /// domain must be acceptable in a population file.
    pub async fn set_regime(&self, domain: &str, regime: Regime) -> Result<(), RedisStoreError> {
        let mut check = Population::new(self.inner.normalize);
        check.add_domain(domain.as_bytes(), regime)?;
        let domain = domain.to_ascii_lowercase();
        // Listed first, so the next load or `clear` finds the hash even if this stops
        // between the two writes.
        let mut listed = redis::cmd("SADD");
        listed
            .arg(layout::domains_key(&self.inner.prefix))
            .arg(&domain);
        self.run("set_regime", self.inner.conn.query::<()>(&listed))
            .await?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(domain_key(&self.inner.prefix, domain.as_bytes()))
            .arg(REGIME_FIELD)
            .arg(&[regime.as_byte()]);
        self.run("set_regime", self.inner.conn.query::<()>(&cmd))
            .await
    }

    /// Awaits `request` within the timeout, naming `operation` in errors.
    async fn run<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisStoreError> {
        within(self.inner.timeout, operation, &self.inner.target, request)
            .await?
            .map_err(|source| self.failed(operation, source))
    }

    /// The lookup key of an address given to the update API, and the index of its '@'.
    fn lookup_key(&self, address: &str) -> Result<(Vec<u8>, usize), RedisStoreError> {
        self.inner
            .normalize
            .key_of(address)
            .map_err(|source| RedisStoreError::Address {
                address: address.to_string(),
                source,
            })
    }

    pub(crate) fn failed(
        &self,
        operation: &'static str,
        source: redis::RedisError,
    ) -> RedisStoreError {
        RedisStoreError::Redis {
            operation,
            target: self.inner.target.clone(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, what: String) -> RedisStoreError {
        RedisStoreError::Corrupt {
            prefix: self.inner.prefix.clone(),
            target: self.inner.target.clone(),
            what,
        }
    }
}

/// The normalization of a store from its meta hash, or why the prefix holds no usable store.
fn read_meta(
    meta: &HashMap<String, Vec<u8>>,
    spec: &RedisSpec,
    target: &str,
) -> Result<NormalizeConfig, RedisStoreError> {
    if meta.is_empty() {
        return Err(RedisStoreError::NoStore {
            prefix: spec.prefix.clone(),
            target: target.to_string(),
        });
    }
    let format = meta.get(META_FORMAT).map(Vec::as_slice).unwrap_or_default();
    if format != FORMAT.as_bytes() {
        return Err(RedisStoreError::Version {
            prefix: spec.prefix.clone(),
            target: target.to_string(),
            found: String::from_utf8_lossy(format).into_owned(),
            expected: FORMAT,
        });
    }
    let field = |name| meta.get(name).map(Vec::as_slice).unwrap_or(b"missing");
    layout::normalize_of(field(META_FOLD), field(META_DELIMITER)).ok_or_else(|| {
        RedisStoreError::Corrupt {
            prefix: spec.prefix.clone(),
            target: target.to_string(),
            what: format!("meta {meta:?} holds no normalization this crate writes"),
        }
    })
}

impl PolicyBackend for RedisBackend {
    fn name(&self) -> &'static str {
        if self.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        self.lookup_batch(batch, out)
            .await
            .map_err(|e| e.into_policy(self.name()))
    }

    /// The Redis store changes in place (`bulkbench policy set`), and the next lookup sees a
    /// change: there is nothing to reload.
    fn reload(&self) -> Result<Reload, ReloadError> {
        Ok(Reload::InPlace)
    }
}
