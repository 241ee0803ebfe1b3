//! [`RedisBackend`]: lookups, reads and updates of a store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bulk_policy::{
    AddressBatch, KeyBatch, MAX_ADDRESS_LEN, MAX_DOMAIN_LEN, NormalizeConfig, PolicyBackend,
    PolicyError, Population, Preference, Regime, Verdict,
};
use redis::{Cmd, Pipeline, Value};
use rustc_hash::FxHashMap;

use crate::conn::{Conn, within};
use crate::layout::{
    self, FORMAT, META_DELIMITER, META_FOLD, META_FORMAT, REGIME_FIELD, domain_key, domain_slot,
};
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
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    /// The spec as displayed, for errors.
    target: String,
    prefix: String,
    /// Read from the store's meta at connect.
    normalize: NormalizeConfig,
    timeout: Duration,
    /// Pipelines sent by lookups.
    round_trips: AtomicU64,
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

/// The requests of one batch, built before the first await: the thread's [`KeyBatch`] is
/// never held across one.
struct Plan {
    /// What to send: one pipeline on a single server, one per slot in a cluster.
    pipelines: Vec<Pipeline>,
    /// Per domain of the batch: its pipeline, its command's index there, and the number of
    /// fields it asks for (the regime's included).
    groups: Vec<(usize, usize, usize)>,
    /// Per address: its domain and the index of its field in that domain's reply, or
    /// `None` for an address answered `NotLocal` without asking.
    fields: Vec<Option<(usize, usize)>>,
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
                set_if_served: redis::Script::new(SET_IF_SERVED),
            }),
        })
    }

    /// The normalization lookups use: the one the store was loaded with.
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.inner.normalize
    }

    /// Pipelines sent by lookups so far: one per lookup on a single server, one per slot of
    /// the batch in a cluster (sent concurrently); none for a batch with nothing to ask.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Whether the store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.conn, Conn::Cluster(_))
    }

    /// Resolves `batch`, appending one verdict per address to `out` (left unchanged on
    /// error). This is what [`PolicyBackend::lookup`] runs.
    pub async fn lookup_batch(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), RedisStoreError> {
        let plan = self.plan(batch);
        let replies = if plan.pipelines.is_empty() {
            Vec::new()
        } else {
            self.inner
                .round_trips
                .fetch_add(plan.pipelines.len() as u64, Ordering::Relaxed);
            let conn = &self.inner.conn;
            let sent = futures_util::future::try_join_all(
                plan.pipelines
                    .iter()
                    .map(|pipeline| conn.pipeline(pipeline)),
            );
            within(self.inner.timeout, "lookup", &self.inner.target, sent)
                .await?
                .map_err(|source| self.failed("lookup", source))?
        };
        let start = out.len();
        out.reserve(plan.fields.len());
        let result = self.resolve(&plan, &replies, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Normalizes the batch and builds its pipelines: one `HMGET P:{DOMAIN} "" LOCAL...`
    /// per distinct domain.
    fn plan(&self, batch: &AddressBatch) -> Plan {
        KeyBatch::with_thread_local(|keys| {
            keys.fill(self.inner.normalize, batch);
            let mut by_domain: FxHashMap<&[u8], usize> = FxHashMap::default();
            // Per domain: its slot, its command, the fields asked so far.
            let mut commands: Vec<(u16, Cmd, usize)> = Vec::new();
            let mut fields = Vec::with_capacity(batch.len());
            for key in keys.iter() {
                let Some(key) = key.filter(|key| key.domain().len() <= MAX_DOMAIN_LEN) else {
                    fields.push(None);
                    continue;
                };
                let group = *by_domain.entry(key.domain()).or_insert_with(|| {
                    let mut cmd = redis::cmd("HMGET");
                    cmd.arg(domain_key(&self.inner.prefix, key.domain()))
                        .arg(REGIME_FIELD);
                    commands.push((domain_slot(key.domain()), cmd, 1));
                    commands.len() - 1
                });
                let (_, cmd, asked) = &mut commands[group];
                cmd.arg(key.local());
                fields.push(Some((group, *asked)));
                *asked += 1;
            }
            let mut groups = vec![(0, 0, 0); commands.len()];
            let mut pipelines: Vec<Pipeline> = Vec::new();
            let mut order: Vec<(u16, usize, Cmd, usize)> = commands
                .into_iter()
                .enumerate()
                .map(|(group, (slot, cmd, asked))| (slot, group, cmd, asked))
                .collect();
            let cluster = self.is_cluster();
            if cluster {
                order.sort_by_key(|&(slot, group, ..)| (slot, group));
            }
            // Commands per pipeline so far.
            let mut counts: Vec<usize> = Vec::new();
            let mut last_slot = None;
            for (slot, group, cmd, asked) in order {
                if pipelines.is_empty() || (cluster && last_slot != Some(slot)) {
                    pipelines.push(redis::pipe());
                    counts.push(0);
                }
                last_slot = Some(slot);
                let index = pipelines.len() - 1;
                groups[group] = (index, counts[index], asked);
                counts[index] += 1;
                pipelines[index].add_command(cmd);
            }
            Plan {
                pipelines,
                groups,
                fields,
            }
        })
    }

    /// Appends the verdicts of `plan` from the pipelines' replies.
    fn resolve(
        &self,
        plan: &Plan,
        replies: &[Vec<Value>],
        out: &mut Vec<Verdict>,
    ) -> Result<(), RedisStoreError> {
        // Per domain: its reply's values and its regime.
        let mut domains: Vec<(&[Value], Option<Regime>)> = Vec::with_capacity(plan.groups.len());
        for &(pipeline, index, asked) in &plan.groups {
            let reply = replies.get(pipeline).and_then(|values| values.get(index));
            let values = match reply {
                Some(Value::Array(values)) if values.len() == asked => values.as_slice(),
                other => return Err(self.corrupt(format!("HMGET answered {other:?}"))),
            };
            let regime = match &values[0] {
                Value::Nil => None,
                Value::BulkString(value) => Some(
                    layout::regime_of(value)
                        .ok_or_else(|| self.corrupt(format!("regime {value:?}")))?,
                ),
                other => return Err(self.corrupt(format!("regime {other:?}"))),
            };
            domains.push((values, regime));
        }
        for field in &plan.fields {
            let verdict = match *field {
                None => Verdict::NotLocal,
                Some((group, index)) => match domains[group] {
                    (_, None) => Verdict::NotLocal,
                    (values, Some(regime)) => match &values[index] {
                        Value::Nil => Verdict::UnknownMailbox,
                        Value::BulkString(value) => layout::preference_of(value)
                            .ok_or_else(|| self.corrupt(format!("preference {value:?}")))?
                            .verdict(regime),
                        other => return Err(self.corrupt(format!("preference {other:?}"))),
                    },
                },
            };
            out.push(verdict);
        }
        Ok(())
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
                layout::preference_of(&value)
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
        let value = [layout::preference_byte(preference)];
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
                layout::regime_of(&value)
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
            .arg(&[layout::regime_byte(regime)]);
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
        let mut key = Vec::new();
        let at = self
            .inner
            .normalize
            .normalize_into(address.as_bytes(), &mut key)
            .map_err(|source| RedisStoreError::Address {
                address: address.to_string(),
                source,
            })?;
        Ok((key, at))
    }

    fn failed(&self, operation: &'static str, source: redis::RedisError) -> RedisStoreError {
        RedisStoreError::Redis {
            operation,
            target: self.inner.target.clone(),
            source,
        }
    }

    fn corrupt(&self, what: String) -> RedisStoreError {
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
}
