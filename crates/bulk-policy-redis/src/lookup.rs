//! The lookup path: a batch normalized, grouped into pipelines (one on a server; one per
//! node in a cluster, or one per slot when the slot map is unknown or stale), sent at once,
//! and its replies turned into verdicts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bulk_policy::{AddressBatch, KeyBatch, MAX_DOMAIN_LEN, Preference, Regime, Verdict};
use redis::{Cmd, Pipeline, Value};
use rustc_hash::FxHashMap;

use crate::conn::{Conn, within};
use crate::layout::{REGIME_FIELD, SLOTS, domain_key, domain_slot};
use crate::{RedisBackend, RedisStoreError};

/// Which node serves each slot, from `CLUSTER SLOTS`: lets a lookup send one pipeline per
/// node rather than one per slot. Nodes are numbered in the order the reply lists them.
#[derive(Debug)]
pub(crate) struct SlotOwners {
    /// Per slot, its node's number; [`UNKNOWN`] for a slot no node serves.
    owner: Vec<u16>,
}

const UNKNOWN: u16 = u16::MAX;

/// How a batch's commands are cut into pipelines.
enum Grouping<'a> {
    /// All in one (a single server).
    All,
    /// One pipeline per slot: what the cluster client accepts without knowing more.
    Slot,
    /// One pipeline per node of the slot map (per slot for slots it does not know).
    Node(&'a SlotOwners),
}

/// The requests of one batch, built before the first await: the thread's [`KeyBatch`] is
/// never held across one.
struct Plan {
    /// What to send, each with the slot of its first command (in a cluster, the client
    /// routes the pipeline to the node serving that slot).
    pipelines: Vec<(Pipeline, u16)>,
    /// Per domain of the batch: its pipeline, its command's index there, and the number of
    /// fields it asks for (the regime's included).
    groups: Vec<(usize, usize, usize)>,
    /// Per address: its domain and the index of its field in that domain's reply, or
    /// `None` for an address answered `NotLocal` without asking.
    fields: Vec<Option<(usize, usize)>>,
}

impl RedisBackend {
    /// Resolves `batch`, appending one verdict per address to `out` (left unchanged on
    /// error). This is what [`PolicyBackend::lookup`](bulk_policy::PolicyBackend::lookup)
    /// runs.
    ///
    /// In a cluster, the batch goes out as one pipeline per node, by the slot map last read
    /// with `CLUSTER SLOTS` (read by the first lookup, and again by the first after a
    /// failure). If that fails (a slot moved, so the node answers MOVED for part of the
    /// pipeline, or a node is down), the map is forgotten and the batch is sent again as
    /// one pipeline per slot, which the client routes and redirects itself. The timeout
    /// bounds all of it.
    pub async fn lookup_batch(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), RedisStoreError> {
        let inner = &self.inner;
        let work = async {
            if !self.is_cluster() {
                return self.lookup_grouped(batch, &Grouping::All, out).await;
            }
            let cached = inner.owners.read().map(|o| o.clone()).unwrap_or_default();
            let owners = match cached {
                Some(owners) => Some(owners),
                None => self.refresh_owners().await.ok(),
            };
            if let Some(owners) = owners {
                match self
                    .lookup_grouped(batch, &Grouping::Node(&owners), out)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(_) => {
                        if let Ok(mut slot) = inner.owners.write() {
                            *slot = None;
                        }
                    }
                }
            }
            self.lookup_grouped(batch, &Grouping::Slot, out).await
        };
        within(inner.timeout, "lookup", &inner.target, work).await?
    }

    async fn lookup_grouped(
        &self,
        batch: &AddressBatch,
        grouping: &Grouping<'_>,
        out: &mut Vec<Verdict>,
    ) -> Result<(), RedisStoreError> {
        let plan = self.plan(batch, grouping);
        let replies = if plan.pipelines.is_empty() {
            Vec::new()
        } else {
            self.inner
                .round_trips
                .fetch_add(plan.pipelines.len() as u64, Ordering::Relaxed);
            let conn = &self.inner.conn;
            futures_util::future::try_join_all(
                plan.pipelines
                    .iter()
                    .map(|(pipeline, slot)| conn.routed_pipeline(pipeline, *slot)),
            )
            .await
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
    /// per distinct domain, cut by `grouping`.
    fn plan(&self, batch: &AddressBatch, grouping: &Grouping<'_>) -> Plan {
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
            let (pipelines, groups) = cut(commands, grouping);
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
                    Regime::from_bytes(value)
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
                        Value::BulkString(value) => Preference::from_bytes(value)
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

    /// Reads the slot map with `CLUSTER SLOTS` (one request, counted as a round trip) and
    /// keeps it for the next lookups.
    async fn refresh_owners(&self) -> Result<Arc<SlotOwners>, RedisStoreError> {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Value = self
            .inner
            .conn
            .query(redis::cmd("CLUSTER").arg("SLOTS"))
            .await
            .map_err(|source| self.failed("CLUSTER SLOTS", source))?;
        let owners = Arc::new(
            slot_owners(&reply)
                .ok_or_else(|| self.corrupt(format!("CLUSTER SLOTS answered {reply:?}")))?,
        );
        if let Ok(mut slot) = self.inner.owners.write() {
            *slot = Some(owners.clone());
        }
        Ok(owners)
    }
}

/// Cuts the commands of a batch (per domain: slot, command, fields asked) into pipelines,
/// in the order `grouping` gives; returns them with each domain's place in them.
#[allow(clippy::type_complexity)]
fn cut(
    commands: Vec<(u16, Cmd, usize)>,
    grouping: &Grouping<'_>,
) -> (Vec<(Pipeline, u16)>, Vec<(usize, usize, usize)>) {
    let key = |slot: u16| -> u32 {
        match grouping {
            Grouping::All => 0,
            Grouping::Slot => u32::from(slot),
            Grouping::Node(owners) => match owners.owner.get(usize::from(slot)) {
                Some(&node) if node != UNKNOWN => u32::from(node),
                _ => u32::from(UNKNOWN) + 1 + u32::from(slot),
            },
        }
    };
    let mut groups = vec![(0, 0, 0); commands.len()];
    let mut order: Vec<(u32, u16, usize, Cmd, usize)> = commands
        .into_iter()
        .enumerate()
        .map(|(group, (slot, cmd, asked))| (key(slot), slot, group, cmd, asked))
        .collect();
    order.sort_unstable_by_key(|&(key, slot, group, ..)| (key, slot, group));
    let mut pipelines: Vec<(Pipeline, u16)> = Vec::new();
    let mut last_key = None;
    for (key, slot, group, cmd, asked) in order {
        if last_key != Some(key) {
            pipelines.push((redis::pipe(), slot));
            last_key = Some(key);
        }
        let index = pipelines.len() - 1;
        let pipeline = &mut pipelines[index].0;
        groups[group] = (index, pipeline.len(), asked);
        pipeline.add_command(cmd);
    }
    (pipelines, groups)
}

/// The slot map of a `CLUSTER SLOTS` reply: entries `[start, end, [host, port, ...],
/// replicas...]`; a node is its (host, port).
fn slot_owners(reply: &Value) -> Option<SlotOwners> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let mut owner = vec![UNKNOWN; usize::from(SLOTS)];
    let mut nodes: Vec<(&Value, &Value)> = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            return None;
        };
        let number = match nodes.iter().position(|&n| n == (host, port)) {
            Some(number) => number,
            None => {
                nodes.push((host, port));
                nodes.len() - 1
            }
        };
        let number = u16::try_from(number).ok().filter(|&n| n != UNKNOWN)?;
        let start = usize::try_from(*start).ok()?;
        let end = usize::try_from(*end).ok()?;
        owner.get_mut(start..=end)?.fill(number);
    }
    Some(SlotOwners { owner })
}

impl Conn {
    /// Sends `pipeline`: on a server as is, in a cluster to the node serving `slot`.
    async fn routed_pipeline(
        &self,
        pipeline: &Pipeline,
        slot: u16,
    ) -> redis::RedisResult<Vec<Value>> {
        use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
        match self {
            Conn::Single(_) => self.pipeline(pipeline).await,
            Conn::Cluster(conn) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                conn.clone()
                    .route_pipeline(pipeline.clone(), 0, pipeline.len(), route)
                    .await
            }
        }
    }
}
