//! Workloads: the sessions of a scenario, each drawn from its own RNG seeded by (seed,
//! session index), and their trace format (JSON Lines).
//!
//! Expected verdicts come from [`PopulationModel::verdict`], i.e. from the scenario alone:
//! the generator needs neither the server nor the exported population file to know what
//! every RCPT should get.
//!
//! A trace is a header line (`bulkbench_trace` version, `scenario` name, `seed`, the
//! `population` parameters' fingerprint, `sessions` count) and then one [`SessionSpec`]
//! per line. Replaying it with a scenario of another name, seed or population is refused
//! by `bulkbench`: the verdicts it carries would not be that population's.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};

use bulk_policy::Verdict;
use rand::RngExt;
use rand_distr::{Distribution, Exp1, Geometric, Zipf};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checked::NonNegative;
use crate::names::{DOMAIN_SUFFIXES, DOMAIN_WORDS, FIRST, LAST, SENDER_ROLES, SENDER_WORDS, TAGS};
use crate::population::PopulationModel;
use crate::scenario::{
    LoopMode, MAX_SESSIONS, Popularity, RecipientsDistribution, Scenario, WorkloadConfig,
};
use crate::seeding::{
    ItemRng, STREAM_ARRIVAL, STREAM_POPULARITY, STREAM_RECIPIENT, STREAM_SESSION, STREAM_STARTTLS,
    affine, item_rng, mix, scatter_multiplier,
};

/// Version written in, and required of, a trace header.
pub const TRACE_VERSION: u32 = 2;
/// The oldest trace version this build reads: version 1 held one transaction per session.
pub const OLDEST_TRACE_VERSION: u32 = 1;

/// Attempts at drawing a known recipient not yet in the session before a duplicate is
/// accepted (a small population or a steep Zipf law can make distinct draws rare).
const DISTINCT_ATTEMPTS: u32 = 16;

/// Which verb opens a session's transaction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `BULK FROM`: each RCPT is decided by the recipient's preference.
    Bulk,
    /// `MAIL FROM`: preferences are not consulted (only existence and relaying).
    Mail,
}

/// One RCPT of a session, as written on the wire, with its expected verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The mailbox as sent in `RCPT TO:<...>`: possibly mixed case, possibly with `+tag`.
    pub address: String,
    /// Its verdict in a *bulk* transaction, under the default normalization (case folded,
    /// `+` delimiter). Serialized as `accept`, `opted_out`, `unknown_mailbox`, `not_local`.
    #[serde(with = "verdict_serde")]
    pub verdict: Verdict,
}

impl Recipient {
    /// The verdict expected in a transaction of `kind`: in a `MAIL` transaction preferences
    /// are not consulted, so an opted-out recipient is accepted there.
    pub fn expected(&self, kind: Kind) -> Verdict {
        match (kind, self.verdict) {
            (Kind::Mail, Verdict::OptedOut) => Verdict::Accept,
            (_, verdict) => verdict,
        }
    }
}

/// One session to replay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Index of the session in the scenario's workload (0-based).
    pub index: u64,
    /// Open loop: intended start, in microseconds from the run's start (Poisson arrivals;
    /// session 0 at 0). Closed loop: 0.
    pub start_offset_us: u64,
    /// Send commands pipelined (RFC 2920).
    pub pipelining: bool,
    /// The transactions the session sends over its one connection, in order (at least
    /// one): each starts with BULK or MAIL FROM after the previous one's end of data, or
    /// after RSET when the previous one sent no message.
    pub transactions: Vec<Transaction>,
    /// The session upgrades its connection with STARTTLS (RFC 3207) after its first EHLO,
    /// then says EHLO again. Left out of a trace line when false, so the traces of
    /// sessions without TLS are what they were (and traces written before it still read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starttls: bool,
}

/// One transaction of a session: sender, recipients with their expected verdicts, message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// BULK or MAIL.
    pub kind: Kind,
    /// Reverse path (`news@shop7.test`), never in a served domain.
    pub sender: String,
    /// RCPTs in order.
    pub recipients: Vec<Recipient>,
    /// Message body size in bytes; 0 means the transaction sends no DATA.
    pub message_size: u32,
}

impl SessionSpec {
    /// RCPTs over all its transactions.
    pub fn rcpt_count(&self) -> u64 {
        self.transactions
            .iter()
            .map(|t| t.recipients.len() as u64)
            .sum()
    }

    /// Every RCPT of the session, with its transaction's kind, in order.
    pub fn recipients(&self) -> impl Iterator<Item = (Kind, &Recipient)> {
        self.transactions
            .iter()
            .flat_map(|t| t.recipients.iter().map(move |r| (t.kind, r)))
    }
}

/// A session as trace version 1 wrote it: one transaction, its fields at the top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSpecV1 {
    index: u64,
    start_offset_us: u64,
    kind: Kind,
    sender: String,
    recipients: Vec<Recipient>,
    pipelining: bool,
    message_size: u32,
}

impl From<SessionSpecV1> for SessionSpec {
    fn from(v1: SessionSpecV1) -> Self {
        SessionSpec {
            index: v1.index,
            start_offset_us: v1.start_offset_us,
            pipelining: v1.pipelining,
            transactions: vec![Transaction {
                kind: v1.kind,
                sender: v1.sender,
                recipients: v1.recipients,
                message_size: v1.message_size,
            }],
            starttls: false,
        }
    }
}

/// The sessions of a scenario (or of one shard of it), in index order.
///
/// A list of sessions drawn up front ([`sessions`](Self::sessions)) and how it is run
/// ([`run`](Self::run)): once (a scenario sized in sessions, an open loop, a trace),
/// cycled to a count (the trace of a run sized in time), or, for a closed loop sized in
/// time, a pool of sessions 0, 1, ... cycled until the time is up. Each session is the
/// same either way, since it depends only on (seed, index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Name of the scenario the sessions were drawn from.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// [`PopulationConfig::fingerprint`](crate::PopulationConfig::fingerprint) of the
    /// population the recipients' verdicts were drawn from (`None`: a trace written before
    /// traces recorded it).
    pub population: Option<u64>,
    /// The sessions, by increasing index: the whole list, or the pool a workload sized in
    /// time cycles through.
    pub sessions: Vec<SessionSpec>,
    /// How the list is run: once, cycled to a count, or cycled for a time.
    pub run: RunLength,
}

/// How many sessions of a [`Workload`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RunLength {
    /// Each session of the list once.
    #[default]
    Once,
    /// The list in order, cyclically, until this many sessions have started (a trace of
    /// a run sized in time).
    Count(u64),
    /// The list in order, cyclically, until the time is up (a closed loop sized in time).
    Time(std::time::Duration),
}

/// A trace could not be read. Every variant about content names the 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading failed.
    #[error("trace line {line}: read error")]
    Io {
        /// Line being read.
        line: usize,
        /// The I/O error.
        source: io::Error,
    },
    /// The input is empty.
    #[error("trace is empty: expected a header line")]
    Empty,
    /// Line 1 is not a trace header.
    #[error("trace line 1: not a bulkbench trace header")]
    Header {
        /// Why it does not parse as one.
        source: serde_json::Error,
    },
    /// The header announces a version this build does not read.
    #[error(
        "trace line 1: trace version {found} is not supported (this build reads versions {OLDEST_TRACE_VERSION} to {TRACE_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// A session line does not parse.
    #[error("trace line {line}")]
    Session {
        /// The line.
        line: usize,
        /// The JSON error (its column is within the line).
        source: serde_json::Error,
    },
    /// Session indices must increase.
    #[error("trace line {line}: session index {index} does not follow index {previous}")]
    Order {
        /// The line.
        line: usize,
        /// Index on this line.
        index: u64,
        /// Index of the previous session.
        previous: u64,
    },
    /// The number of session lines differs from the header's.
    #[error("trace has {found} sessions but its header announces {expected}")]
    Count {
        /// Sessions announced.
        expected: u64,
        /// Sessions read.
        found: u64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceHeader {
    bulkbench_trace: u32,
    scenario: String,
    seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    population: Option<u64>,
    sessions: u64,
    /// The sessions run cyclically until this many started (a run sized in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runs: Option<u64>,
}

/// Verdicts as snake_case strings (bulk_policy's `Verdict` has no serde).
mod verdict_serde {
    use bulk_policy::Verdict;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Repr {
        Accept,
        OptedOut,
        UnknownMailbox,
        NotLocal,
    }

    pub(super) fn serialize<S: Serializer>(verdict: &Verdict, s: S) -> Result<S::Ok, S::Error> {
        match verdict {
            Verdict::Accept => Repr::Accept,
            Verdict::OptedOut => Repr::OptedOut,
            Verdict::UnknownMailbox => Repr::UnknownMailbox,
            Verdict::NotLocal => Repr::NotLocal,
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Verdict, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Accept => Verdict::Accept,
            Repr::OptedOut => Verdict::OptedOut,
            Repr::UnknownMailbox => Verdict::UnknownMailbox,
            Repr::NotLocal => Verdict::NotLocal,
        })
    }
}

/// Everything a session draw needs, computed once per workload. Keys an invalid scenario
/// could set against each other (a minimum above its maximum, shares adding up to more
/// than 1) are sanitized here, so generation never panics.
#[derive(Debug)]
struct Generator {
    seed: u64,
    model: PopulationModel,
    bulk_share: f64,
    recipients: (u32, u32),
    geometric: Option<Geometric>,
    fixed: bool,
    zipf: Option<Zipf<f64>>,
    popularity_multiplier: u64,
    popularity_offset: u64,
    unknown_share: f64,
    foreign_share: f64,
    subaddress_share: f64,
    mixed_case_share: f64,
    pipelining: bool,
    message_size: (u32, u32),
    /// Fewest and most transactions per session.
    transactions: (u32, u32),
    /// Open loop arrival rate (sessions per second), if any.
    rate_per_sec: Option<f64>,
    /// Share of sessions that use STARTTLS.
    starttls_share: f64,
}

impl Generator {
    fn new(w: &WorkloadConfig, seed: u64, model: &PopulationModel) -> Self {
        let hi = w.recipients_max.get();
        let lo = w.recipients_min.get().min(hi);
        let geometric = match (w.recipients_distribution, w.recipients_mean) {
            (RecipientsDistribution::Geometric, Some(mean)) => {
                // Failures before the first success have mean (1-p)/p; solve for the mean
                // above `lo`.
                Geometric::new(1.0 / (mean - f64::from(lo) + 1.0).max(1.0)).ok()
            }
            _ => None,
        };
        let n = model.mailbox_count();
        let zipf = match w.recipient_popularity {
            Popularity::Zipf => {
                Zipf::new(n as f64, w.popularity_zipf.map_or(1.0, NonNegative::get)).ok()
            }
            Popularity::Uniform => None,
        };
        let unknown_share = w.unknown_share.get();
        let rate_per_sec = match (w.mode, w.rate_per_sec) {
            (LoopMode::Open, Some(rate)) => Some(rate.get()),
            _ => None,
        };
        Generator {
            seed,
            model: model.clone(),
            bulk_share: w.bulk_share.get(),
            recipients: (lo, hi),
            geometric,
            fixed: w.recipients_distribution == RecipientsDistribution::Fixed,
            zipf,
            popularity_multiplier: scatter_multiplier(n),
            popularity_offset: mix(seed, STREAM_POPULARITY, 0),
            unknown_share,
            foreign_share: w.foreign_share.get().min(1.0 - unknown_share),
            subaddress_share: w.subaddress_share.get(),
            mixed_case_share: w.mixed_case_share.get(),
            pipelining: w.pipelining,
            message_size: (
                w.message_size_min.min(w.message_size_max),
                w.message_size_max.max(w.message_size_min),
            ),
            transactions: {
                let hi = w.transactions_max.get();
                (w.transactions_min.get().min(hi), hi)
            },
            rate_per_sec,
            starttls_share: w.starttls_share.get(),
        }
    }

    /// Whether session `index` uses STARTTLS: a uniform number in [0, 1) from (seed,
    /// index) on its own stream, below the share. Drawn apart from the session's RNG, so
    /// that every other draw of the session is the same whatever the share; at share 0
    /// nothing is drawn.
    fn starttls(&self, index: u64) -> bool {
        if self.starttls_share <= 0.0 {
            return false;
        }
        // The top 53 bits as a fraction: exact in an f64, and below 1, so a share of 1
        // takes every session.
        let unit = (mix(self.seed, STREAM_STARTTLS, index) >> 11) as f64 / (1u64 << 53) as f64;
        unit < self.starttls_share
    }

    /// Gap before session `index` (0 for session 0 and in closed loop), in microseconds.
    fn gap_us(&self, index: u64) -> u64 {
        match self.rate_per_sec {
            Some(rate) if index > 0 => {
                let mut rng = item_rng(self.seed, STREAM_ARRIVAL, index);
                let secs: f64 = Exp1.sample(&mut rng);
                // `as` saturates: an absurd gap cannot wrap around.
                (secs / rate * 1e6).round() as u64
            }
            _ => 0,
        }
    }

    fn recipient_count(&self, rng: &mut ItemRng) -> u32 {
        let (lo, hi) = self.recipients;
        if self.fixed {
            hi
        } else if let Some(geometric) = &self.geometric {
            let extra = geometric.sample(rng).min(u64::from(hi - lo)) as u32;
            lo + extra
        } else {
            rng.random_range(lo..=hi)
        }
    }

    /// A mailbox index by popularity.
    fn popular_mailbox(&self, rng: &mut ItemRng) -> u64 {
        let n = self.model.mailbox_count();
        match &self.zipf {
            Some(zipf) => {
                let rank = (zipf.sample(rng) as u64).saturating_sub(1).min(n - 1);
                affine(rank, self.popularity_multiplier, self.popularity_offset, n)
            }
            None => rng.random_range(0..n),
        }
    }

    fn session(&self, index: u64) -> SessionSpec {
        let mut rng = item_rng(self.seed, STREAM_SESSION, index);
        // Drawn only when there is a choice, so that sessions of one transaction are the
        // same as before transactions could be several.
        let (lo, hi) = self.transactions;
        let count = if lo == hi {
            lo
        } else {
            rng.random_range(lo..=hi)
        };
        let transactions = (0..count).map(|_| self.transaction(&mut rng)).collect();
        SessionSpec {
            index,
            start_offset_us: 0,
            pipelining: self.pipelining,
            transactions,
            starttls: self.starttls(index),
        }
    }

    fn transaction(&self, rng: &mut ItemRng) -> Transaction {
        let kind = if rng.random::<f64>() < self.bulk_share {
            Kind::Bulk
        } else {
            Kind::Mail
        };
        let sender = format!(
            "{}@{}{}.test",
            SENDER_ROLES[rng.random_range(0..SENDER_ROLES.len())],
            SENDER_WORDS[rng.random_range(0..SENDER_WORDS.len())],
            rng.random_range(1..=500u32)
        );
        let count = self.recipient_count(rng);
        let mut recipients = Vec::with_capacity(count as usize);
        let mut chosen = HashSet::new();
        for _ in 0..count {
            recipients.push(self.recipient(rng, Some(&mut chosen)));
        }
        let (lo, hi) = self.message_size;
        let message_size = if hi == 0 {
            0
        } else {
            rng.random_range(lo..=hi)
        };
        Transaction {
            kind,
            sender,
            recipients,
            message_size,
        }
    }

    /// One recipient; with `chosen` (the mailboxes already in the transaction), a known
    /// mailbox is redrawn a few times rather than repeated.
    fn recipient(&self, rng: &mut ItemRng, chosen: Option<&mut HashSet<u64>>) -> Recipient {
        let class = rng.random::<f64>();
        let model = &self.model;
        let (mut local, domain, verdict) = if class < self.unknown_share {
            // A served domain, weighted by size, and a local part with two '-': the mailbox
            // generator never writes one (population.rs, "Uniqueness").
            let domain = model.domain_of(rng.random_range(0..model.mailbox_count()));
            let local = format!(
                "{}-nobody-{}",
                FIRST[rng.random_range(0..FIRST.len())],
                rng.random_range(0..100_000u32)
            );
            (
                local,
                model.domain(domain).0.to_string(),
                Verdict::UnknownMailbox,
            )
        } else if class < self.unknown_share + self.foreign_share {
            // `.test` is never served (served domains end in `.example`).
            let word = DOMAIN_WORDS[rng.random_range(0..DOMAIN_WORDS.len())];
            let domain = if rng.random::<f64>() < 0.5 {
                format!("{word}{}.test", rng.random_range(1..1000u32))
            } else {
                let suffix = DOMAIN_SUFFIXES[rng.random_range(0..DOMAIN_SUFFIXES.len())];
                format!("{word}-{suffix}.test")
            };
            let local = format!(
                "{}.{}",
                FIRST[rng.random_range(0..FIRST.len())],
                LAST[rng.random_range(0..LAST.len())]
            );
            (local, domain, Verdict::NotLocal)
        } else {
            let mut i = self.popular_mailbox(rng);
            if let Some(chosen) = chosen {
                for _ in 1..DISTINCT_ATTEMPTS {
                    if !chosen.contains(&i) {
                        break;
                    }
                    i = self.popular_mailbox(rng);
                }
                chosen.insert(i);
            }
            let mailbox = model.mailbox(i);
            let domain = model.domain(mailbox.domain).0.to_string();
            (mailbox.local, domain, model.verdict(i))
        };

        // Decorations the server's normalization must undo; the verdict is unchanged.
        if rng.random::<f64>() < self.subaddress_share {
            local.push('+');
            local.push_str(TAGS[rng.random_range(0..TAGS.len())]);
        }
        let mut address = local;
        address.push('@');
        let at = address.len() - 1;
        address.push_str(&domain);
        if rng.random::<f64>() < self.mixed_case_share {
            mix_case(&mut address, at, rng.random_range(0..3u8));
        }
        Recipient { address, verdict }
    }
}

/// Recipients drawn one at a time, outside any session: recipient `index` comes from its own
/// RNG seeded by (seed, index), so a pool of any size is the same on every run, whatever
/// the order or the threads it is drawn in. Benches and the backends' scale tests draw the
/// addresses they look up here, with the recipient mix of a [`WorkloadConfig`]:
/// `recipient_popularity` (and `popularity_zipf`), `unknown_share`, `foreign_share`,
/// `subaddress_share` and `mixed_case_share`; its other keys are not used.
///
/// A recipient is drawn as a session's is (the same kinds of unknown and foreign
/// addresses, the same Zipf ranks scattered over the mailboxes, the same decorations), but
/// from its own stream: recipient `i` is not the `i`-th RCPT of [`Workload::generate`], and
/// consecutive recipients may name the same mailbox.
///
/// ```
/// use bulk_population::{PopulationConfig, PopulationModel, RecipientDraws, WorkloadConfig};
///
/// let model = PopulationModel::new(&PopulationConfig::default(), 7);
/// let draws = RecipientDraws::new(&model, &WorkloadConfig::default(), 7);
/// let population = model.build();
/// for index in 0..100 {
///     let recipient = draws.recipient(index);
///     assert_eq!(population.verdict_of(recipient.address.as_bytes()), recipient.verdict);
/// }
/// ```
#[derive(Debug)]
pub struct RecipientDraws {
    generator: Generator,
}

impl RecipientDraws {
    /// Recipients of `model` with `workload`'s mix, under `seed`. Shares of unknown and
    /// foreign recipients adding up to more than 1 are cut to 1, as [`Workload::generate`]
    /// does.
    pub fn new(model: &PopulationModel, workload: &WorkloadConfig, seed: u64) -> Self {
        RecipientDraws {
            generator: Generator::new(workload, seed, model),
        }
    }

    /// Recipient `index`: its address as written in a RCPT, and the verdict the population
    /// gives it.
    pub fn recipient(&self, index: u64) -> Recipient {
        let mut rng = item_rng(self.generator.seed, STREAM_RECIPIENT, index);
        self.generator.recipient(&mut rng, None)
    }
}

/// Writes `address` in mixed case: `style` 0 capitalizes each word of the local part
/// (`John.Smith`), 1 upper-cases the local part (`JSMITH`), 2 capitalizes each word of the
/// whole address (`John.Smith@Riverbend.Example`). Local parts start with a letter, so the
/// result always differs from the canonical form.
fn mix_case(address: &mut String, at: usize, style: u8) {
    let end = if style == 2 { address.len() } else { at };
    // ASCII-only changes keep the string valid UTF-8 (addresses are ASCII anyway).
    let mut bytes = std::mem::take(address).into_bytes();
    let mut word_start = true;
    for b in &mut bytes[..end] {
        if style == 1 || (word_start && b.is_ascii_alphabetic()) {
            b.make_ascii_uppercase();
        }
        word_start = !b.is_ascii_alphanumeric();
    }
    *address = String::from_utf8(bytes).unwrap_or_default();
}

/// RCPTs a workload sized in time draws before its run, to cycle through: drawing during
/// the run would cost the generator's event loops as much as a quarter of their time (and
/// block them for a millisecond per large session); this many RCPTs (about 80 MB) are
/// drawn in a fraction of a second before the clock starts.
pub const POOL_RCPTS: u64 = 1_000_000;
/// Sessions drawn at a time while filling a pool.
const POOL_CHUNK: u64 = 4096;

/// The pool of a workload sized in time: sessions 0, 1, ... until they hold
/// [`POOL_RCPTS`] RCPTs (at least one session), drawn in parallel chunks.
fn pool(generator: &Generator) -> Vec<SessionSpec> {
    let mut sessions: Vec<SessionSpec> = Vec::new();
    let mut rcpts = 0u64;
    let mut next = 0u64;
    while rcpts < POOL_RCPTS && next < MAX_SESSIONS {
        let chunk: Vec<SessionSpec> = (next..next + POOL_CHUNK)
            .into_par_iter()
            .map(|index| generator.session(index))
            .collect();
        next += POOL_CHUNK;
        for session in chunk {
            if rcpts >= POOL_RCPTS {
                break;
            }
            rcpts += session.rcpt_count();
            sessions.push(session);
        }
    }
    sessions
}

impl Workload {
    /// A workload of these sessions (a list, as a trace holds).
    pub fn from_sessions(
        scenario: String,
        seed: u64,
        population: Option<u64>,
        sessions: Vec<SessionSpec>,
    ) -> Workload {
        Workload {
            scenario,
            seed,
            population,
            sessions,
            run: RunLength::Once,
        }
    }

    /// Draws every session of `scenario` against `model` (which must be the scenario's
    /// population: [`PopulationModel::from_scenario`]). Sessions are drawn in parallel on
    /// the rayon pool; each uses only its own RNG, so the result is identical for any
    /// thread count. Open-loop start offsets are the sequential prefix sums of per-session
    /// exponential gaps.
    ///
    /// A scenario whose keys disagree (a minimum above its maximum, shares adding up to
    /// more than 1) is sanitized rather than refused; call [`Scenario::validate`] first to
    /// report it.
    pub fn generate(scenario: &Scenario, model: &PopulationModel) -> Workload {
        let generator = Generator::new(&scenario.workload, scenario.seed, model);
        if let Some(duration) = scenario.timed_duration() {
            return Workload {
                run: RunLength::Time(duration),
                ..Workload::from_sessions(
                    scenario.name.clone(),
                    scenario.seed,
                    Some(scenario.population.fingerprint()),
                    pool(&generator),
                )
            };
        }
        let count = scenario.session_count().min(MAX_SESSIONS);
        let drawn: Vec<(SessionSpec, u64)> = (0..count)
            .into_par_iter()
            .map(|index| (generator.session(index), generator.gap_us(index)))
            .collect();
        let mut offset_us = 0u64;
        let sessions = drawn
            .into_iter()
            .map(|(mut session, gap_us)| {
                offset_us = offset_us.saturating_add(gap_us);
                session.start_offset_us = offset_us;
                session
            })
            .collect();
        Workload {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            population: Some(scenario.population.fingerprint()),
            sessions,
            run: RunLength::Once,
        }
    }

    /// A closed loop sized in time: how long sessions are started for. `None`: the
    /// workload runs a count of sessions.
    pub fn duration(&self) -> Option<std::time::Duration> {
        match self.run {
            RunLength::Time(duration) => Some(duration),
            _ => None,
        }
    }

    /// The `k`-th session this workload runs (0-based): `sessions[k]` of a list run once
    /// (`None` past its end); `sessions[k % len]` of a list cycled (`None` past the count;
    /// never, sized in time: the run's clock ends it).
    pub fn session(&self, k: u64) -> Option<&SessionSpec> {
        let cycled = |k: u64| {
            let len = self.sessions.len() as u64;
            (len > 0).then(|| &self.sessions[(k % len) as usize])
        };
        match self.run {
            RunLength::Once => usize::try_from(k).ok().and_then(|k| self.sessions.get(k)),
            RunLength::Count(count) if k < count => cycled(k),
            RunLength::Count(_) => None,
            RunLength::Time(_) => cycled(k),
        }
    }

    /// What a run of this workload that started `count` sessions ran, replayable exactly:
    /// the list cycled to `count` (a workload sized in time), or the workload itself.
    pub fn as_run(&self, count: u64) -> Workload {
        match self.run {
            RunLength::Time(_) => Workload {
                run: RunLength::Count(count),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// Shard `i` of `n`: the sessions whose index is `i` modulo `n`, with their offsets
    /// unchanged (shards run side by side on one schedule). Empty if `n == 0` or `i >= n`.
    pub fn shard(&self, i: u32, n: u32) -> Workload {
        let sessions = if n == 0 || i >= n {
            Vec::new()
        } else {
            self.sessions
                .iter()
                .filter(|s| s.index % u64::from(n) == u64::from(i))
                .cloned()
                .collect()
        };
        // A count of a cycled list is split alike: about one n-th each.
        let run = match self.run {
            RunLength::Count(count) if n > 0 && i < n => {
                let (n, i) = (u64::from(n), u64::from(i));
                RunLength::Count(count / n + u64::from(count % n > i))
            }
            other => other,
        };
        Workload {
            run,
            ..Workload::from_sessions(self.scenario.clone(), self.seed, self.population, sessions)
        }
    }

    /// Sessions a run of this workload starts: the list's length, the count it is cycled
    /// to, or (sized in time) the pool's length, one pass of it.
    pub fn session_count(&self) -> u64 {
        match self.run {
            RunLength::Count(count) => count,
            RunLength::Once | RunLength::Time(_) => self.sessions.len() as u64,
        }
    }

    /// Whether any session asks for STARTTLS: the server must then offer it (`bench`
    /// starts `serve --tls self-signed`, and `simulate` offers it in process).
    pub fn uses_starttls(&self) -> bool {
        self.sessions.iter().any(|session| session.starttls)
    }

    /// RCPTs of the sessions a run starts ([`session_count`](Self::session_count)).
    pub fn rcpt_count(&self) -> u64 {
        let pass: u64 = self.sessions.iter().map(SessionSpec::rcpt_count).sum();
        match self.run {
            RunLength::Count(count) if !self.sessions.is_empty() => {
                let len = self.sessions.len() as u64;
                let rest: u64 = self.sessions[..(count % len) as usize]
                    .iter()
                    .map(SessionSpec::rcpt_count)
                    .sum();
                pass * (count / len) + rest
            }
            _ => pass,
        }
    }

    /// Writes the trace: JSON Lines, first a header object
    /// `{"bulkbench_trace":2,"scenario":NAME,"seed":SEED,"population":FINGERPRINT,
    /// "sessions":COUNT}` (with `"runs":N` when the list is cycled to N sessions: what a
    /// run sized in time ran, see [`as_run`](Self::as_run)), then one [`SessionSpec`] per
    /// line. A workload sized in time writes its pool, to be run once.
    pub fn write_trace(&self, w: impl Write) -> io::Result<()> {
        let mut w = io::BufWriter::with_capacity(1 << 16, w);
        let header = TraceHeader {
            bulkbench_trace: TRACE_VERSION,
            scenario: self.scenario.clone(),
            seed: self.seed,
            population: self.population,
            sessions: self.sessions.len() as u64,
            runs: match self.run {
                RunLength::Count(count) => Some(count),
                _ => None,
            },
        };
        serde_json::to_writer(&mut w, &header)?;
        w.write_all(b"\n")?;
        for session in &self.sessions {
            serde_json::to_writer(&mut w, session)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Reads a trace written by [`write_trace`](Self::write_trace). Blank lines are
    /// skipped; errors name the line.
    pub fn read_trace(mut r: impl BufRead) -> Result<Workload, TraceError> {
        let mut line = String::new();
        let mut number = 1;
        let read = |r: &mut dyn BufRead, line: &mut String, number: usize| {
            line.clear();
            r.read_line(line).map_err(|source| TraceError::Io {
                line: number,
                source,
            })
        };
        if read(&mut r, &mut line, number)? == 0 {
            return Err(TraceError::Empty);
        }
        let header: TraceHeader =
            serde_json::from_str(&line).map_err(|source| TraceError::Header { source })?;
        if !(OLDEST_TRACE_VERSION..=TRACE_VERSION).contains(&header.bulkbench_trace) {
            return Err(TraceError::Version {
                found: header.bulkbench_trace,
            });
        }
        let mut sessions: Vec<SessionSpec> = Vec::new();
        loop {
            number += 1;
            if read(&mut r, &mut line, number)? == 0 {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let session = match header.bulkbench_trace {
                1 => serde_json::from_str::<SessionSpecV1>(&line).map(SessionSpec::from),
                _ => serde_json::from_str::<SessionSpec>(&line),
            }
            .map_err(|source| TraceError::Session {
                line: number,
                source,
            })?;
            if let Some(previous) = sessions.last()
                && session.index <= previous.index
            {
                return Err(TraceError::Order {
                    line: number,
                    index: session.index,
                    previous: previous.index,
                });
            }
            sessions.push(session);
        }
        if sessions.len() as u64 != header.sessions {
            return Err(TraceError::Count {
                expected: header.sessions,
                found: sessions.len() as u64,
            });
        }
        Ok(Workload {
            scenario: header.scenario,
            seed: header.seed,
            population: header.population,
            sessions,
            run: header.runs.map_or(RunLength::Once, RunLength::Count),
        })
    }
}

#[cfg(test)]
mod tests {
    /// The one transaction of a session of a scenario without transactions_*.
    fn tx(s: &SessionSpec) -> &Transaction {
        assert_eq!(s.transactions.len(), 1);
        &s.transactions[0]
    }
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::from_toml(text, "test").unwrap()
    }

    const SMALL: &str = r#"
seed = 7
[population]
mailboxes = 2000
domains = 15
[workload]
sessions = 300
recipients_min = 1
recipients_max = 40
unknown_share = 0.1
foreign_share = 0.05
subaddress_share = 0.2
mixed_case_share = 0.3
"#;

    #[test]
    fn shares_and_counts_are_respected() {
        let s = scenario(SMALL);
        let model = PopulationModel::from_scenario(&s);
        let w = Workload::generate(&s, &model);
        assert_eq!(w.sessions.len(), 300);
        assert!(
            w.sessions
                .iter()
                .enumerate()
                .all(|(i, s)| s.index == i as u64)
        );
        assert!(
            w.sessions
                .iter()
                .all(|s| (1..=40).contains(&tx(s).recipients.len()))
        );
        assert!(w.sessions.iter().all(|s| s.start_offset_us == 0));
        let all: Vec<&Recipient> = w.sessions.iter().flat_map(|s| &tx(s).recipients).collect();
        let share = |f: &dyn Fn(&Recipient) -> bool| {
            all.iter().filter(|r| f(r)).count() as f64 / all.len() as f64
        };
        let unknown = share(&|r| r.verdict == Verdict::UnknownMailbox);
        let foreign = share(&|r| r.verdict == Verdict::NotLocal);
        let tagged = share(&|r| r.address.contains('+'));
        let mixed = share(&|r| r.address.bytes().any(|b| b.is_ascii_uppercase()));
        assert!((unknown - 0.1).abs() < 0.02, "{unknown}");
        assert!((foreign - 0.05).abs() < 0.015, "{foreign}");
        assert!((tagged - 0.2).abs() < 0.03, "{tagged}");
        assert!((mixed - 0.3).abs() < 0.03, "{mixed}");
        let bulk = w
            .sessions
            .iter()
            .filter(|s| tx(s).kind == Kind::Bulk)
            .count();
        assert!((240..=300).contains(&bulk), "{bulk}");
        for session in &w.sessions {
            assert!(
                tx(session).sender.ends_with(".test"),
                "{}",
                tx(session).sender
            );
            assert!((500..=5000).contains(&tx(session).message_size));
        }
    }

    #[test]
    fn the_starttls_share_picks_sessions_by_index_and_changes_nothing_else() {
        let plain = scenario(SMALL);
        let model = PopulationModel::from_scenario(&plain);
        let without = Workload::generate(&plain, &model);
        assert!(without.sessions.iter().all(|s| !s.starttls));
        let with_share = |share: &str| {
            let text = SMALL.replace(
                "[workload]",
                &format!("[workload]\nstarttls_share = {share}"),
            );
            Workload::generate(&scenario(&text), &model)
        };
        let all = with_share("1.0");
        assert!(all.sessions.iter().all(|s| s.starttls));
        let half = with_share("0.5");
        let tls = half.sessions.iter().filter(|s| s.starttls).count();
        // 300 sessions: a binomial(300, 0.5) count, pinned for this seed.
        assert_eq!(tls, 161);
        // The same sessions otherwise, drawn whatever the share; the choice is the same
        // for a session whatever else is drawn (a shard of the workload chooses alike).
        for (a, b) in half.sessions.iter().zip(&without.sessions) {
            assert_eq!(
                SessionSpec {
                    starttls: false,
                    ..a.clone()
                },
                *b
            );
        }
        let shard = half.shard(1, 3);
        assert!(
            shard
                .sessions
                .iter()
                .all(|s| s.starttls == half.sessions[s.index as usize].starttls)
        );
        // A lower share takes a subset of a higher one's sessions.
        let quarter = with_share("0.25");
        assert!(
            quarter
                .sessions
                .iter()
                .zip(&half.sessions)
                .all(|(q, h)| !q.starttls || h.starttls)
        );
        // Traces carry the choice; sessions without TLS are written as before.
        let mut trace = Vec::new();
        half.write_trace(&mut trace).unwrap();
        let text = String::from_utf8(trace.clone()).unwrap();
        assert_eq!(text.matches(r#""starttls":true"#).count(), tls);
        assert!(!text.contains(r#""starttls":false"#));
        assert_eq!(Workload::read_trace(trace.as_slice()).unwrap(), half);
    }

    #[test]
    fn a_closed_loop_sized_in_time_cycles_a_pool_drawn_by_index() {
        let counted = scenario(SMALL);
        let timed = scenario(&SMALL.replace("sessions = 300", "duration_secs = 5.0"));
        assert_eq!(
            timed.timed_duration(),
            Some(std::time::Duration::from_secs(5))
        );
        let model = PopulationModel::from_scenario(&counted);
        let list = Workload::generate(&counted, &model);
        let timed = Workload::generate(&timed, &model);
        assert_eq!(
            timed.run,
            RunLength::Time(std::time::Duration::from_secs(5))
        );
        // The pool is sessions 0, 1, ... drawn as a list draws them, up to POOL_RCPTS.
        let pool = timed.sessions.len();
        let rcpts = timed.rcpt_count();
        assert!((POOL_RCPTS..POOL_RCPTS + 40).contains(&rcpts), "{rcpts}");
        assert_eq!(timed.sessions[..300], list.sessions[..]);
        // Session k is pool entry k modulo the pool, for ever.
        assert_eq!(timed.session(7), Some(&list.sessions[7]));
        assert_eq!(timed.session(pool as u64 + 7), Some(&list.sessions[7]));
        assert_eq!(list.session(300), None, "a list run once ends");
        // What a run of n sessions ran: the pool cycled to n; it replays exactly, through
        // a trace too.
        let ran = timed.as_run(pool as u64 + 5);
        assert_eq!(ran.duration(), None);
        assert_eq!(ran.session(pool as u64 + 4), Some(&list.sessions[4]));
        assert_eq!(ran.session(pool as u64 + 5), None);
        let mut trace = Vec::new();
        ran.write_trace(&mut trace).unwrap();
        assert_eq!(Workload::read_trace(trace.as_slice()).unwrap(), ran);
        // Shards of the cycled run split its count.
        let counts: Vec<Option<u64>> = (0..3)
            .map(|i| match ran.shard(i, 3).run {
                RunLength::Count(n) => Some(n),
                _ => None,
            })
            .collect();
        let total = pool as u64 + 5;
        assert_eq!(counts.iter().flatten().sum::<u64>(), total, "{counts:?}");
    }

    #[test]
    fn sessions_hold_their_drawn_transactions_each_drawn_whole() {
        let s = scenario(&SMALL.replace(
            "sessions = 300",
            "sessions = 300\ntransactions_min = 2\ntransactions_max = 6",
        ));
        let w = Workload::generate(&s, &PopulationModel::from_scenario(&s));
        let counts: Vec<usize> = w.sessions.iter().map(|s| s.transactions.len()).collect();
        assert!(counts.iter().all(|n| (2..=6).contains(n)), "{counts:?}");
        assert!(
            counts.contains(&2) && counts.contains(&6),
            "the whole range is drawn"
        );
        for session in &w.sessions {
            for t in &session.transactions {
                assert!((1..=40).contains(&t.recipients.len()));
                assert!((500..=5000).contains(&t.message_size));
                assert!(t.sender.ends_with(".test"));
            }
            // Each transaction is drawn on its own: senders differ within a session.
            let senders: HashSet<&str> = session
                .transactions
                .iter()
                .map(|t| t.sender.as_str())
                .collect();
            assert!(senders.len() > 1, "session {}", session.index);
        }
        assert_eq!(
            w.rcpt_count(),
            w.sessions.iter().map(SessionSpec::rcpt_count).sum::<u64>()
        );
    }

    #[test]
    fn open_loop_offsets_are_poisson() {
        let s = scenario(
            "[population]\nmailboxes = 100\ndomains = 3\n[workload]\nmode = \"open\"\nrate_per_sec = 1000.0\nduration_secs = 5.0\n",
        );
        let w = Workload::generate(&s, &PopulationModel::from_scenario(&s));
        assert_eq!(w.sessions.len(), 5000);
        assert_eq!(w.sessions[0].start_offset_us, 0);
        assert!(
            w.sessions
                .windows(2)
                .all(|p| p[0].start_offset_us <= p[1].start_offset_us)
        );
        // 4999 gaps of mean 1 ms: the last start is near 5 s.
        let last = w.sessions.last().unwrap().start_offset_us as f64 / 1e6;
        assert!((last - 5.0).abs() < 0.3, "{last}");
    }

    #[test]
    fn recipient_distributions() {
        let base = "[population]\nmailboxes = 500\ndomains = 4\n[workload]\nsessions = 2000\nrecipients_min = 2\nrecipients_max = 30\n";
        let counts = |extra: &str| {
            let s = scenario(&format!("{base}{extra}"));
            let w = Workload::generate(&s, &PopulationModel::from_scenario(&s));
            w.sessions
                .iter()
                .map(|s| tx(s).recipients.len())
                .collect::<Vec<_>>()
        };
        assert!(
            counts("recipients_distribution = \"fixed\"\n")
                .iter()
                .all(|&n| n == 30)
        );
        let geometric = counts("recipients_distribution = \"geometric\"\nrecipients_mean = 6.0\n");
        assert!(geometric.iter().all(|&n| (2..=30).contains(&n)));
        let mean = geometric.iter().sum::<usize>() as f64 / geometric.len() as f64;
        assert!((mean - 6.0).abs() < 0.4, "{mean}");
        let uniform = counts("");
        let mean = uniform.iter().sum::<usize>() as f64 / uniform.len() as f64;
        assert!((mean - 16.0).abs() < 0.6, "{mean}");
    }

    #[test]
    fn zipf_popularity_concentrates_and_spreads_over_domains() {
        let s = scenario(
            "[population]\nmailboxes = 10000\ndomains = 50\n[workload]\nsessions = 500\nrecipient_popularity = \"zipf\"\npopularity_zipf = 1.1\nunknown_share = 0.0\nforeign_share = 0.0\nsubaddress_share = 0.0\nmixed_case_share = 0.0\n",
        );
        let model = PopulationModel::from_scenario(&s);
        let w = Workload::generate(&s, &model);
        let mut hits = std::collections::HashMap::<&str, usize>::new();
        for r in w.sessions.iter().flat_map(|s| &tx(s).recipients) {
            *hits.entry(r.address.as_str()).or_default() += 1;
        }
        let mut top: Vec<(&str, usize)> = hits.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        assert!(
            top[0].1 > 100,
            "most popular mailbox drawn {} times",
            top[0].1
        );
        let top_domains: HashSet<&str> = top[..20]
            .iter()
            .map(|(a, _)| a.rsplit('@').next().unwrap())
            .collect();
        assert!(top_domains.len() >= 5, "{top_domains:?}");
    }

    #[test]
    fn recipient_draws_are_pure_and_follow_the_mix() {
        let s = scenario(
            "[population]\nmailboxes = 20000\ndomains = 40\n[workload]\nsessions = 1\nunknown_share = 0.1\nforeign_share = 0.05\nsubaddress_share = 0.2\nmixed_case_share = 0.2\n",
        );
        let model = PopulationModel::from_scenario(&s);
        let population = model.build();
        let draws = RecipientDraws::new(&model, &s.workload, 3);
        let drawn: Vec<Recipient> = (0..10_000).map(|i| draws.recipient(i)).collect();
        // Index by index, in any order, from a fresh sampler: the same recipients.
        let again = RecipientDraws::new(&model, &s.workload, 3);
        for i in (0..10_000).rev().step_by(97) {
            assert_eq!(again.recipient(i), drawn[i as usize]);
        }
        assert_ne!(
            RecipientDraws::new(&model, &s.workload, 4).recipient(0),
            drawn[0]
        );
        for r in &drawn {
            assert_eq!(
                population.verdict_of(r.address.as_bytes()),
                r.verdict,
                "{r:?}"
            );
        }
        let share = |f: &dyn Fn(&Recipient) -> bool| {
            drawn.iter().filter(|r| f(r)).count() as f64 / drawn.len() as f64
        };
        let unknown = share(&|r| r.verdict == Verdict::UnknownMailbox);
        let foreign = share(&|r| r.verdict == Verdict::NotLocal);
        let tagged = share(&|r| r.address.contains('+'));
        let mixed = share(&|r| r.address.bytes().any(|b| b.is_ascii_uppercase()));
        assert!((unknown - 0.1).abs() < 0.015, "{unknown}");
        assert!((foreign - 0.05).abs() < 0.01, "{foreign}");
        assert!((tagged - 0.2).abs() < 0.02, "{tagged}");
        assert!((mixed - 0.2).abs() < 0.02, "{mixed}");
    }

    #[test]
    fn recipients_of_a_session_are_distinct_when_possible() {
        let s = scenario(
            "[population]\nmailboxes = 50000\n[workload]\nsessions = 50\nrecipients_min = 200\nrecipients_max = 200\nunknown_share = 0.0\nforeign_share = 0.0\nsubaddress_share = 0.0\nmixed_case_share = 0.0\n",
        );
        let w = Workload::generate(&s, &PopulationModel::from_scenario(&s));
        for session in &w.sessions {
            let distinct: HashSet<&str> = tx(session)
                .recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect();
            assert_eq!(distinct.len(), 200);
        }
    }

    #[test]
    fn mix_case_styles() {
        let cases = [
            (
                "john.smith+news@riverbend.example",
                0,
                "John.Smith+News@riverbend.example",
            ),
            ("jsmith2@x.example", 1, "JSMITH2@x.example"),
            (
                "anna_berg42@mail.lakeside.example",
                2,
                "Anna_Berg42@Mail.Lakeside.Example",
            ),
        ];
        for (input, style, expected) in cases {
            let mut address = input.to_string();
            let at = input.rfind('@').unwrap();
            mix_case(&mut address, at, style);
            assert_eq!(address, expected);
        }
    }

    #[test]
    fn expected_verdict_by_kind() {
        let r = Recipient {
            address: "a@b".into(),
            verdict: Verdict::OptedOut,
        };
        assert_eq!(r.expected(Kind::Bulk), Verdict::OptedOut);
        assert_eq!(r.expected(Kind::Mail), Verdict::Accept);
        let r = Recipient {
            address: "a@b".into(),
            verdict: Verdict::UnknownMailbox,
        };
        assert_eq!(r.expected(Kind::Mail), Verdict::UnknownMailbox);
    }

    #[test]
    fn trace_errors_name_the_line() {
        let header = r#"{"bulkbench_trace":1,"scenario":"t","seed":1,"sessions":1}"#;
        let session = r#"{"index":0,"start_offset_us":0,"kind":"bulk","sender":"a@b.test","recipients":[{"address":"x@y.example","verdict":"opted_out"}],"pipelining":true,"message_size":0}"#;
        let ok = format!("{header}\n{session}\n");
        // A version 1 trace (one transaction per session) still reads.
        let w = Workload::read_trace(ok.as_bytes()).unwrap();
        assert_eq!(
            w.sessions[0].transactions[0].recipients[0].verdict,
            Verdict::OptedOut
        );
        // Version 2 writes and reads it back with its transactions.
        let mut again = Vec::new();
        w.write_trace(&mut again).unwrap();
        assert!(again.starts_with(br#"{"bulkbench_trace":2,"#));
        assert_eq!(Workload::read_trace(again.as_slice()).unwrap(), w);

        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (
                format!("{session}\n"),
                "line 1: not a bulkbench trace header",
            ),
            (
                ok.replace("\"bulkbench_trace\":1", "\"bulkbench_trace\":3"),
                "version 3 is not supported (this build reads versions 1 to 2)",
            ),
            (
                format!("{header}\n\n{}\n", session.replace("opted_out", "maybe")),
                "line 3:",
            ),
            (
                format!("{header}\n{}\n", session.replace("\"bulk\"", "\"BULK\"")),
                "line 2:",
            ),
            (
                format!("{header}\n{session}\n{session}\n"),
                "line 3: session index 0 does not follow index 0",
            ),
            (
                ok.replace("\"sessions\":1", "\"sessions\":2"),
                "announces 2",
            ),
            (
                format!(
                    "{header}\n{}\n",
                    session.replace("\"index\"", "\"extra\":1,\"index\"")
                ),
                "line 2:",
            ),
        ];
        for (text, fragment) in cases {
            // As the CLI prints it: the error, then each cause.
            let error = Workload::read_trace(text.as_bytes()).unwrap_err();
            let mut err = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(c) = cause {
                err = format!("{err}: {c}");
                cause = c.source();
            }
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
    }
}
