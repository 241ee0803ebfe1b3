//! Scenarios: the declarative description of a run (population, workload, server limits),
//! read from TOML.
//!
//! The keys, their units and defaults are documented on the fields below and in
//! `scenarios/README.md`. Every table refuses unknown keys, so a typo is an error rather
//! than a silently ignored setting. A key's own range is its type's ([`crate::checked`]:
//! counts, shares, finite numbers), so a value out of it is refused as the file is read;
//! [`Scenario::validate`] checks the rules across keys. [`Scenario::from_toml`] resolves
//! defaults that depend on other keys (closed-loop `concurrency`, open-loop
//! `max_in_flight`, `popularity_zipf`), so the scenario copied into a report states every
//! setting the run used.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checked::{CountU32, CountU64, NonNegative, Positive, RunSecs, Share};

/// Largest `population.mailboxes` accepted.
pub const MAX_MAILBOXES: u64 = 1_000_000_000;
/// Largest `population.domains` accepted.
pub const MAX_DOMAINS: u64 = 1_000_000;
/// Largest number of sessions a workload may hold (`workload.sessions`, or rate x duration).
pub const MAX_SESSIONS: u64 = 100_000_000;
/// Largest `workload.recipients_max` accepted (RCPTs per transaction).
pub const MAX_RECIPIENTS_PER_SESSION: u32 = 100_000;
/// Largest `workload.transactions_max` accepted.
pub const MAX_TRANSACTIONS_PER_SESSION: u32 = 100_000;
/// Largest `transactions_max x recipients_max`: the RCPTs one session may hold (a session
/// is drawn whole, so this bounds its memory, about 64 bytes per RCPT).
pub const MAX_RCPTS_PER_SESSION: u64 = 1_000_000;
/// Largest `workload.duration_secs` accepted: a week.
pub const MAX_DURATION_SECS: f64 = 7.0 * 86_400.0;
/// Default closed-loop `workload.concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 50;
/// Default open-loop `workload.max_in_flight`: the open-files limit here is 20,000 per
/// process, and a socket per session in flight must fit under it.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10_000;
/// Default Zipf exponent of `workload.popularity_zipf`.
pub const DEFAULT_POPULARITY_ZIPF: f64 = 1.0;

/// A whole scenario file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports and traces; default: the file stem (the `name_hint`). Letters,
    /// digits, `.`, `_` and `-` only, at most 100 characters.
    #[serde(default)]
    pub name: String,
    /// Seed of every random draw (population and workload); default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `[population]`: who the server serves.
    #[serde(default)]
    pub population: PopulationConfig,
    /// `[workload]`: the sessions the generator replays.
    #[serde(default)]
    pub workload: WorkloadConfig,
    /// `[server]`: server settings the expected replies depend on.
    #[serde(default)]
    pub server: ServerConfig,
}

fn default_seed() -> u64 {
    1
}

/// `[population]`: served domains and mailboxes. A population is a pure function of this
/// and the seed ([`crate::PopulationModel`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PopulationConfig {
    /// Number of mailboxes (1..=[`MAX_MAILBOXES`]); default 100,000.
    pub mailboxes: CountU64<MAX_MAILBOXES>,
    /// Number of served domains (1..=[`MAX_DOMAINS`]); default 200.
    pub domains: CountU64<MAX_DOMAINS>,
    /// Zipf exponent of domain sizes: domain of rank r gets a share proportional to
    /// 1/(r+1)^s; 0 gives equal sizes. Finite, >= 0; default 1.0.
    pub domain_size_zipf: NonNegative,
    /// Share of domains whose regime is opt-in (the rest are opt-out), in [0, 1]; each
    /// domain draws its regime independently. Default 0.5.
    pub opt_in_domain_share: Share,
    /// Share of mailboxes with an explicit preference (`in` or `out`; the rest have
    /// `default`), in [0, 1]; default 0.3.
    pub explicit_share: Share,
    /// Of the mailboxes with an explicit preference, the share that opted in (the rest
    /// opted out), in [0, 1]; default 0.5.
    pub explicit_opt_in_share: Share,
}

impl PopulationConfig {
    /// A fingerprint of these parameters (64-bit FNV-1a of their JSON form), stable across
    /// builds and machines: a trace records it, so a replay against a population drawn
    /// with other parameters can be refused.
    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_string(self).expect("plain numbers serialize");
        json.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

impl Default for PopulationConfig {
    fn default() -> Self {
        // `const`: a default out of its type's range fails the build.
        PopulationConfig {
            mailboxes: const { CountU64::new(100_000).unwrap() },
            domains: const { CountU64::new(200).unwrap() },
            domain_size_zipf: const { NonNegative::new(1.0).unwrap() },
            opt_in_domain_share: const { Share::new(0.5).unwrap() },
            explicit_share: const { Share::new(0.3).unwrap() },
            explicit_opt_in_share: const { Share::new(0.5).unwrap() },
        }
    }
}

/// How sessions are started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoopMode {
    /// A fixed number of sessions in flight; each starts when one ends.
    #[default]
    Closed,
    /// Sessions arrive at a target rate (Poisson), whether or not earlier ones ended.
    Open,
}

/// How many recipients a session has.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecipientsDistribution {
    /// Uniform over `recipients_min..=recipients_max`.
    #[default]
    Uniform,
    /// `recipients_min` plus a geometric count, with mean `recipients_mean`, truncated at
    /// `recipients_max` (so the realised mean is slightly lower when the tail is cut).
    Geometric,
    /// Always `recipients_max`.
    Fixed,
}

/// Which mailboxes are drawn as recipients.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Popularity {
    /// Every mailbox equally likely.
    #[default]
    Uniform,
    /// Zipf over popularity ranks with exponent `popularity_zipf`; ranks map to mailboxes
    /// through a fixed permutation, so popular mailboxes are spread over domains.
    Zipf,
}

/// `[workload]`: the sessions of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Number of sessions (1..=[`MAX_SESSIONS`]). Exactly one of `sessions` and
    /// `duration_secs` is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<CountU64<MAX_SESSIONS>>,
    /// Run length in seconds (finite, > `warmup_secs`; no default), instead of
    /// `sessions`. Open loop: the session count is `round(rate_per_sec * duration_secs)`.
    /// Closed loop: a pool of sessions 0, 1, ... (each from its own (seed, index) RNG) is
    /// drawn before the run and cycled, sessions starting until the time is up; those in
    /// flight then finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<RunSecs>,
    /// `"closed"` or `"open"`; default closed.
    pub mode: LoopMode,
    /// Closed loop only: sessions in flight (>= 1); default [`DEFAULT_CONCURRENCY`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<CountU32>,
    /// Open loop only, required: Poisson arrival rate in sessions per second (finite, > 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<Positive>,
    /// Open loop only: cap on sessions in flight (>= 1); sessions due while the cap is
    /// reached wait, and the wait shows as schedule lag. Default [`DEFAULT_MAX_IN_FLIGHT`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<CountU32>,
    /// Fewest transactions per session (>= 1); default 1.
    pub transactions_min: CountU32,
    /// Most transactions per session (>= transactions_min, <=
    /// [`MAX_TRANSACTIONS_PER_SESSION`]); uniform in between; default 1. A session sends
    /// its transactions one after the other over one connection, as bulk senders do.
    pub transactions_max: CountU32<MAX_TRANSACTIONS_PER_SESSION>,
    /// Share of transactions that use `BULK FROM` (the rest use `MAIL FROM`), in [0, 1];
    /// default 0.9.
    pub bulk_share: Share,
    /// Fewest recipients per transaction (>= 1); default 1.
    pub recipients_min: CountU32,
    /// Most recipients per transaction (>= recipients_min, <=
    /// [`MAX_RECIPIENTS_PER_SESSION`]); default 50.
    pub recipients_max: CountU32<MAX_RECIPIENTS_PER_SESSION>,
    /// `"uniform"`, `"geometric"` or `"fixed"`; default uniform.
    pub recipients_distribution: RecipientsDistribution,
    /// Geometric only, required: mean recipients per transaction before truncation, in
    /// [recipients_min, recipients_max].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients_mean: Option<f64>,
    /// `"uniform"` or `"zipf"`; default uniform.
    pub recipient_popularity: Popularity,
    /// Zipf only: exponent (finite, >= 0); default [`DEFAULT_POPULARITY_ZIPF`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub popularity_zipf: Option<NonNegative>,
    /// Share of recipients that are unknown mailboxes of served domains, in [0, 1];
    /// default 0.05.
    pub unknown_share: Share,
    /// Share of recipients in domains not served (relay attempts), in [0, 1]; default 0.02.
    /// `unknown_share + foreign_share` must not exceed 1.
    pub foreign_share: Share,
    /// Share of recipients written with a `+tag` subaddress, in [0, 1]; default 0.05.
    pub subaddress_share: Share,
    /// Share of recipients written in mixed case, in [0, 1]; default 0.1.
    pub mixed_case_share: Share,
    /// Send commands pipelined (RFC 2920); default true.
    pub pipelining: bool,
    /// Smallest message body in bytes; default 500.
    pub message_size_min: u32,
    /// Largest message body in bytes (>= message_size_min); sizes are uniform between the
    /// two. A session of size 0 sends no DATA; 0 and 0 means no session does. Default 5000.
    pub message_size_max: u32,
    /// Seconds at the start of the run excluded from the figures (finite, >= 0); default 1.0.
    pub warmup_secs: NonNegative,
    /// Per-command reply timeout of the generator in milliseconds (>= 1); default 10,000.
    pub timeout_ms: CountU64,
    /// Share of sessions that use STARTTLS (RFC 3207), in [0, 1]; default 0. Session `i`
    /// uses it when a number drawn from (seed, `i`) on a stream of its own falls below the
    /// share, so the choice neither changes nor depends on anything else the session
    /// draws. Left out of the scenario's JSON when 0, so the fingerprints of scenarios
    /// that do not set it stay what they were.
    #[serde(skip_serializing_if = "Share::is_zero")]
    pub starttls_share: Share,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        // `const`: a default out of its type's range fails the build.
        WorkloadConfig {
            sessions: None,
            duration_secs: None,
            mode: LoopMode::Closed,
            concurrency: None,
            rate_per_sec: None,
            max_in_flight: None,
            transactions_min: const { CountU32::new(1).unwrap() },
            transactions_max: const { CountU32::new(1).unwrap() },
            bulk_share: const { Share::new(0.9).unwrap() },
            recipients_min: const { CountU32::new(1).unwrap() },
            recipients_max: const { CountU32::new(50).unwrap() },
            recipients_distribution: RecipientsDistribution::Uniform,
            recipients_mean: None,
            recipient_popularity: Popularity::Uniform,
            popularity_zipf: None,
            unknown_share: const { Share::new(0.05).unwrap() },
            foreign_share: const { Share::new(0.02).unwrap() },
            subaddress_share: const { Share::new(0.05).unwrap() },
            mixed_case_share: const { Share::new(0.1).unwrap() },
            pipelining: true,
            message_size_min: 500,
            message_size_max: 5000,
            warmup_secs: const { NonNegative::new(1.0).unwrap() },
            timeout_ms: const { CountU64::new(10_000).unwrap() },
            starttls_share: const { Share::new(0.0).unwrap() },
        }
    }
}

/// `[server]`: the settings of the server under test that change the expected replies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The server's `--max-recipients` (>= 1): RCPTs of a transaction beyond it expect
    /// `452 4.5.3`. Default 1000.
    pub max_recipients: CountU32,
    /// The server runs in harvest-resistant mode (unknown mailboxes answered as opted out,
    /// delays after repeated unknowns); default false.
    pub harvest_resistant: bool,
    /// Which transactions the server applies recipients' preferences to: `bulk` (BULK
    /// transactions only, as `bulkbench serve` does; the default) or `all` (every
    /// transaction, MAIL included: a server without the BULK verb, such as Postfix with
    /// an access map or `bulkbench policyd --bulk every`, whose opted-out recipients are
    /// refused under MAIL too, or `bulkbench serve --preferences-apply-to all`, which
    /// `bench` starts for such a scenario). Left out of the scenario's JSON when `bulk`, so the
    /// fingerprints of scenarios that do not set it stay what they were.
    #[serde(skip_serializing_if = "PreferencesApplyTo::is_bulk")]
    pub preferences_apply_to: PreferencesApplyTo,
}

/// `[server] preferences_apply_to`: the transactions preferences are applied to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PreferencesApplyTo {
    /// BULK transactions only; under MAIL an opted-out recipient is accepted.
    #[default]
    Bulk,
    /// Every transaction.
    All,
}

impl PreferencesApplyTo {
    fn is_bulk(&self) -> bool {
        *self == PreferencesApplyTo::Bulk
    }
}

/// The scenario's spelling, `bulk` or `all`, for the flags that name the same choice
/// (`serve --preferences-apply-to`).
impl std::str::FromStr for PreferencesApplyTo {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "bulk" => Ok(PreferencesApplyTo::Bulk),
            "all" => Ok(PreferencesApplyTo::All),
            other => Err(format!("`{other}` is neither `bulk` nor `all`")),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        // `const`: a default out of its type's range fails the build.
        ServerConfig {
            max_recipients: const { CountU32::new(1000).unwrap() },
            harvest_resistant: false,
            preferences_apply_to: PreferencesApplyTo::Bulk,
        }
    }
}

/// How sessions of a validated scenario start ([`Scenario::arrival`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrival {
    /// Closed loop with this many sessions in flight.
    Closed {
        /// Sessions in flight.
        concurrency: u32,
    },
    /// Open loop.
    Open {
        /// Poisson arrival rate, sessions per second.
        rate_per_sec: f64,
        /// Cap on sessions in flight.
        max_in_flight: u32,
    },
}

/// A scenario could not be read, parsed or validated. Messages name the origin (file path
/// or name hint), the line when known, and the key.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {}: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a value has the wrong type or is out of its range
    /// (the types of [`crate::checked`] refuse it as it is read), or a key is unknown.
    #[error("{}", located(origin, *line, key.as_deref(), message))]
    Parse {
        /// File path or name hint.
        origin: String,
        /// 1-based line of the error, when toml reported a position.
        line: Option<usize>,
        /// Dotted key (`workload.concurrency`), when the error sits on a `key = value` line.
        key: Option<String>,
        /// toml's message.
        message: String,
    },
    /// The scenario parsed but a value is inconsistent with another (a minimum above its
    /// maximum, a key not allowed in this mode), or the name is not allowed.
    #[error("{}", located(origin, *line, Some(key), message))]
    Invalid {
        /// File path or name hint.
        origin: String,
        /// 1-based line of the key in the text, when it is written there (not a default).
        line: Option<usize>,
        /// Dotted key (`workload.recipients_min`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ScenarioError {
    /// The 1-based line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Io { .. } => None,
            ScenarioError::Parse { line, .. } | ScenarioError::Invalid { line, .. } => *line,
        }
    }

    /// The dotted key the error is about, if known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ScenarioError::Io { .. } => None,
            ScenarioError::Parse { key, .. } => key.as_deref(),
            ScenarioError::Invalid { key, .. } => Some(key),
        }
    }
}

fn located(origin: &str, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = origin.to_string();
    if let Some(line) = line {
        out.push_str(&format!(" line {line}"));
    }
    out.push_str(": ");
    if let Some(key) = key {
        out.push_str(key);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

impl Scenario {
    /// Parses and validates a scenario. `name_hint` is the default `name` (a file stem) and
    /// names the text in error messages.
    pub fn from_toml(text: &str, name_hint: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_at(text, name_hint, name_hint)
    }

    /// Reads, parses and validates the scenario file at `path`; its stem is the default
    /// name and errors name the path.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scenario::parse_at(&text, &stem, &path.display().to_string())
    }

    fn parse_at(text: &str, name_hint: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|span| span.start);
            ScenarioError::Parse {
                origin: origin.to_string(),
                line: offset.map(|offset| line_of(text, offset)),
                key: offset.and_then(|offset| KeyMap::new(text).key_at(offset).map(str::to_owned)),
                message: e.message().trim_end().to_string(),
            }
        })?;
        if scenario.name.is_empty() {
            scenario.name = name_hint.to_string();
        }
        scenario.validate_at(Some(text), origin)?;
        scenario.resolve_defaults();
        Ok(scenario)
    }

    /// Checks the rules across keys of a scenario built in code (each value is in range by
    /// its type; files are checked on load). Errors name the key.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.validate_at(None, &self.name)
    }

    /// Fills the defaults that depend on other keys, so the scenario states them.
    fn resolve_defaults(&mut self) {
        let w = &mut self.workload;
        match w.mode {
            LoopMode::Closed => {
                w.concurrency
                    .get_or_insert(const { CountU32::new(DEFAULT_CONCURRENCY).unwrap() });
            }
            LoopMode::Open => {
                w.max_in_flight
                    .get_or_insert(const { CountU32::new(DEFAULT_MAX_IN_FLIGHT).unwrap() });
            }
        }
        if w.recipient_popularity == Popularity::Zipf {
            w.popularity_zipf
                .get_or_insert(const { NonNegative::new(DEFAULT_POPULARITY_ZIPF).unwrap() });
        }
    }

    /// A closed loop sized in time: how long sessions are started for.
    pub fn timed_duration(&self) -> Option<std::time::Duration> {
        let w = &self.workload;
        match (w.mode, w.sessions, w.duration_secs) {
            (LoopMode::Closed, None, Some(secs)) => {
                std::time::Duration::try_from_secs_f64(secs.get()).ok()
            }
            _ => None,
        }
    }

    /// Number of sessions of the workload: `workload.sessions`, or in open loop
    /// `round(rate_per_sec * duration_secs)`. 0 for a closed loop sized in time (sessions
    /// are drawn until the time is up) and for an invalid scenario without either.
    pub fn session_count(&self) -> u64 {
        let w = &self.workload;
        match (w.sessions, w.rate_per_sec, w.duration_secs) {
            (Some(n), _, _) => n.get(),
            (None, Some(rate), Some(secs)) if w.mode == LoopMode::Open => {
                let n = (rate.get() * secs.get()).round();
                if n.is_finite() && n >= 0.0 {
                    n as u64
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// A fingerprint of the whole scenario, name and seed included (64-bit FNV-1a of its
    /// JSON form, as [`PopulationConfig::fingerprint`]): a run's summary records it, so
    /// runs of different workloads are not merged as shards of one.
    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_string(self).unwrap_or_default();
        json.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// How sessions start, with defaults applied.
    pub fn arrival(&self) -> Arrival {
        let w = &self.workload;
        match w.mode {
            LoopMode::Closed => Arrival::Closed {
                concurrency: w.concurrency.map_or(DEFAULT_CONCURRENCY, CountU32::get),
            },
            LoopMode::Open => Arrival::Open {
                rate_per_sec: w.rate_per_sec.map_or(0.0, Positive::get),
                max_in_flight: w.max_in_flight.map_or(DEFAULT_MAX_IN_FLIGHT, CountU32::get),
            },
        }
    }

    /// Checks the rules that tie several keys together; each key's own range is its type's,
    /// checked as it is read. `text`, when given, is searched for the line of the key.
    fn validate_at(&self, text: Option<&str>, origin: &str) -> Result<(), ScenarioError> {
        let rules = Rules { text, origin };
        let name = &self.name;
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let why = "use 1 to 100 letters, digits, '.', '_' or '-'";
        rules.check(name_ok, "name", format!("{name:?}: {why}"))?;
        self.check_loop(&rules)?;
        self.check_length(&rules)?;
        self.check_sessions(&rules)
    }

    /// The keys of the other loop mode are absent; an open loop has its rate.
    fn check_loop(&self, rules: &Rules) -> Result<(), ScenarioError> {
        let w = &self.workload;
        match w.mode {
            LoopMode::Closed => {
                rules.absent(
                    "workload.rate_per_sec",
                    w.rate_per_sec.is_some(),
                    "in closed loop (mode = \"closed\"): it sets the open-loop arrival rate",
                )?;
                rules.absent(
                    "workload.max_in_flight",
                    w.max_in_flight.is_some(),
                    "in closed loop: use concurrency",
                )
            }
            LoopMode::Open => {
                rules.absent(
                    "workload.concurrency",
                    w.concurrency.is_some(),
                    "in open loop (mode = \"open\"): use rate_per_sec, and max_in_flight for a cap",
                )?;
                let required = "required in open loop";
                rules.check(w.rate_per_sec.is_some(), "workload.rate_per_sec", required)
            }
        }
    }

    /// Exactly one of `sessions` and `duration_secs`; a duration outlasts the warm-up and,
    /// in open loop, gives a number of sessions in range.
    fn check_length(&self, rules: &Rules) -> Result<(), ScenarioError> {
        let w = &self.workload;
        let secs = match (w.sessions, w.duration_secs) {
            (Some(_), None) => return Ok(()),
            (Some(_), Some(_)) => {
                let message = "give either sessions or duration_secs, not both";
                return Err(rules.invalid("workload.duration_secs", message));
            }
            (None, None) => {
                let message = "required (or duration_secs, to size the run in time)";
                return Err(rules.invalid("workload.sessions", message));
            }
            (None, Some(secs)) => secs.get(),
        };
        let warmup = w.warmup_secs.get();
        rules.check(
            secs > warmup,
            "workload.duration_secs",
            format!(
                "{secs} s is not longer than warmup_secs ({warmup} s): nothing would be measured"
            ),
        )?;
        let sessions = self.session_count();
        rules.check(
            w.mode == LoopMode::Closed || (1..=MAX_SESSIONS).contains(&sessions),
            "workload.duration_secs",
            format!("gives {sessions} sessions, not in 1..={MAX_SESSIONS}"),
        )
    }

    /// Each minimum is at most its maximum, a session's RCPTs stay bounded, and the keys of
    /// a distribution are given with it.
    fn check_sessions(&self, rules: &Rules) -> Result<(), ScenarioError> {
        let w = &self.workload;
        let (t_min, t_max) = (w.transactions_min.get(), w.transactions_max.get());
        let (r_min, r_max) = (w.recipients_min.get(), w.recipients_max.get());
        rules.check(
            t_min <= t_max,
            "workload.transactions_min",
            format!("{t_min} is greater than workload.transactions_max ({t_max})"),
        )?;
        let per_session = u64::from(t_max) * u64::from(r_max);
        rules.check(
            per_session <= MAX_RCPTS_PER_SESSION,
            "workload.transactions_max",
            format!(
                "{t_max} transactions of up to {r_max} RCPTs is {per_session} RCPTs a session, \
                 over {MAX_RCPTS_PER_SESSION}"
            ),
        )?;
        rules.check(
            r_min <= r_max,
            "workload.recipients_min",
            format!("{r_min} is greater than workload.recipients_max ({r_max})"),
        )?;
        let geometric = w.recipients_distribution == RecipientsDistribution::Geometric;
        match w.recipients_mean {
            None if geometric => {
                let message = "required when recipients_distribution = \"geometric\"";
                return Err(rules.invalid("workload.recipients_mean", message));
            }
            Some(mean) if geometric => {
                let (lo, hi) = (f64::from(r_min), f64::from(r_max));
                rules.check(
                    (lo..=hi).contains(&mean),
                    "workload.recipients_mean",
                    format!("{mean} is not in [recipients_min, recipients_max] = [{lo}, {hi}]"),
                )?;
            }
            mean => rules.absent(
                "workload.recipients_mean",
                mean.is_some(),
                "unless recipients_distribution = \"geometric\"",
            )?,
        }
        rules.absent(
            "workload.popularity_zipf",
            w.popularity_zipf.is_some() && w.recipient_popularity != Popularity::Zipf,
            "unless recipient_popularity = \"zipf\"",
        )?;
        let unknown_and_foreign = w.unknown_share.get() + w.foreign_share.get();
        rules.check(
            unknown_and_foreign <= 1.0,
            "workload.foreign_share",
            format!("unknown_share + foreign_share = {unknown_and_foreign} exceeds 1"),
        )?;
        let (size_min, size_max) = (w.message_size_min, w.message_size_max);
        rules.check(
            size_min <= size_max,
            "workload.message_size_min",
            format!("{size_min} is greater than workload.message_size_max ({size_max})"),
        )
    }
}

/// Makes the errors of [`Scenario::validate_at`]: a key (dotted, `workload.recipients_min`)
/// is located in `text` when there is one.
struct Rules<'a> {
    text: Option<&'a str>,
    origin: &'a str,
}

impl Rules<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            origin: self.origin.to_string(),
            line: self.text.and_then(|text| {
                let offset = KeyMap::new(text).offset_of(key)?;
                Some(line_of(text, offset))
            }),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// An error about `key` unless `ok`.
    fn check(&self, ok: bool, key: &str, message: impl Into<String>) -> Result<(), ScenarioError> {
        if ok {
            Ok(())
        } else {
            Err(self.invalid(key, message))
        }
    }

    /// An error if `key` is `present`: it is not allowed `why`.
    fn absent(&self, key: &str, present: bool, why: &str) -> Result<(), ScenarioError> {
        self.check(!present, key, format!("not allowed {why}"))
    }
}

/// 1-based line of byte offset `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Where each key of a scenario's text is written, from toml's own spans: headers with
/// comments, dotted keys, inline tables and quoted keys are all located as the parser saw
/// them. Empty when the text does not parse (a syntax error carries its own position).
struct KeyMap {
    /// (dotted key, byte span of the key, byte span of the key through its value).
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

impl KeyMap {
    fn new(text: &str) -> KeyMap {
        let mut entries = Vec::new();
        if let Ok(root) = toml::de::DeTable::parse(text) {
            collect_keys(root.get_ref(), "", &mut entries);
        }
        KeyMap { entries }
    }

    /// The innermost key whose `key = value` covers byte `offset` (a type error points at
    /// the value, an unknown field at the key).
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, _, whole)| whole.contains(&offset))
            .min_by_key(|(_, _, whole)| whole.len())
            .map(|(dotted, _, _)| dotted.as_str())
    }

    /// Byte offset where `dotted` is written, if it is.
    fn offset_of(&self, dotted: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(key, _, _)| key == dotted)
            .map(|(_, key_span, _)| key_span.start)
    }
}

fn collect_keys(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    out: &mut Vec<(String, Range<usize>, Range<usize>)>,
) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let (key_span, value_span) = (key.span(), value.span());
        let whole = key_span.start.min(value_span.start)..key_span.end.max(value_span.end);
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            collect_keys(inner, &dotted, out);
        }
        out.push((dotted, key_span, whole));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[workload]\nsessions = 10\n";

    #[test]
    fn defaults_fill_a_minimal_file() {
        let s = Scenario::from_toml(MINIMAL, "mini").unwrap();
        assert_eq!(s.name, "mini");
        assert_eq!(s.seed, 1);
        assert_eq!(s.population, PopulationConfig::default());
        assert_eq!(s.workload.sessions.map(CountU64::get), Some(10));
        assert_eq!(
            s.workload.concurrency.map(CountU32::get),
            Some(DEFAULT_CONCURRENCY)
        );
        assert_eq!(s.arrival(), Arrival::Closed { concurrency: 50 });
        assert_eq!(s.session_count(), 10);
        assert_eq!(s.server, ServerConfig::default());
    }

    #[test]
    fn a_closed_loop_can_be_sized_in_time() {
        let text = "[workload]\nduration_secs = 12.0\nwarmup_secs = 2.0\n";
        let s = Scenario::from_toml(text, "timed").unwrap();
        assert_eq!(s.timed_duration(), Some(std::time::Duration::from_secs(12)));
        assert_eq!(s.session_count(), 0, "drawn until the time is up");
        // Not both, not neither, and longer than the warm-up.
        for (text, key, words) in [
            (
                "[workload]\nsessions = 5\nduration_secs = 3.0\n",
                "workload.duration_secs",
                "not both",
            ),
            (
                "[workload]\nconcurrency = 5\n",
                "workload.sessions",
                "required",
            ),
            (
                "[workload]\nduration_secs = 1.0\nwarmup_secs = 1.0\n",
                "workload.duration_secs",
                "not longer than warmup_secs",
            ),
            (
                "[workload]\nduration_secs = 1e20\n",
                "workload.duration_secs",
                "longer than a week",
            ),
            (
                "[workload]\nsessions = 1\ntransactions_max = 100000\nrecipients_max = 100000\n",
                "workload.transactions_max",
                "RCPTs a session",
            ),
        ] {
            let error = Scenario::from_toml(text, "timed").unwrap_err();
            assert_eq!(error.key(), Some(key), "{text}: {error}");
            assert!(error.to_string().contains(words), "{text}: {error}");
        }
    }

    #[test]
    fn the_scenario_fingerprint_is_pinned_and_sees_every_section() {
        // Summaries record it: a change here stops old shards from merging with new ones.
        let s = Scenario::from_toml(MINIMAL, "mini").unwrap();
        assert_eq!(s.fingerprint(), 8_923_055_715_844_355_899);
        let mut other = s.clone();
        other.seed += 1;
        assert_ne!(other.fingerprint(), s.fingerprint());
        let mut other = s.clone();
        other.workload.recipients_max = (s.workload.recipients_max.get() + 1).try_into().unwrap();
        assert_ne!(other.fingerprint(), s.fingerprint());
        let mut other = s.clone();
        other.workload.transactions_max =
            (s.workload.transactions_max.get() + 1).try_into().unwrap();
        assert_ne!(other.fingerprint(), s.fingerprint());
        let mut other = s.clone();
        other.server.harvest_resistant = !other.server.harvest_resistant;
        assert_ne!(other.fingerprint(), s.fingerprint());
        let mut other = s.clone();
        other.server.preferences_apply_to = PreferencesApplyTo::All;
        assert_ne!(other.fingerprint(), s.fingerprint());
        let all = Scenario::from_toml(
            &format!("{MINIMAL}\n[server]\npreferences_apply_to = \"all\"\n"),
            "mini",
        )
        .unwrap();
        assert_eq!(all.server.preferences_apply_to, PreferencesApplyTo::All);
        let mut other = s.clone();
        other.population.mailboxes = (s.population.mailboxes.get() + 1).try_into().unwrap();
        assert_ne!(other.fingerprint(), s.fingerprint());
        // A STARTTLS share of 0, written or not, is the scenario it was; any other is not.
        let zero = Scenario::from_toml(
            &MINIMAL.replace("[workload]", "[workload]\nstarttls_share = 0.0"),
            "mini",
        )
        .unwrap();
        assert_eq!(zero, s);
        assert_eq!(zero.fingerprint(), 8_923_055_715_844_355_899);
        let half = Scenario::from_toml(
            &MINIMAL.replace("[workload]", "[workload]\nstarttls_share = 0.5"),
            "mini",
        )
        .unwrap();
        assert_eq!(half.workload.starttls_share.get(), 0.5);
        assert_ne!(half.fingerprint(), s.fingerprint());
        let json = serde_json::to_string(&half).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), half);
    }

    #[test]
    fn open_loop_duration_gives_sessions() {
        let text = "[workload]\nmode = \"open\"\nrate_per_sec = 250.0\nduration_secs = 4.0\n";
        let s = Scenario::from_toml(text, "open").unwrap();
        assert_eq!(s.session_count(), 1000);
        assert_eq!(
            s.arrival(),
            Arrival::Open {
                rate_per_sec: 250.0,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT
            }
        );
    }

    #[test]
    fn round_trips_through_toml_and_json() {
        let text = "name = \"x\"\nseed = 9\n[workload]\nsessions = 5\nrecipient_popularity = \"zipf\"\nrecipients_distribution = \"geometric\"\nrecipients_mean = 3.5\n";
        let s = Scenario::from_toml(text, "hint").unwrap();
        assert_eq!(s.workload.popularity_zipf.map(NonNegative::get), Some(1.0));
        let toml_text = toml::to_string(&s).unwrap();
        assert_eq!(Scenario::from_toml(&toml_text, "other").unwrap(), s);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
    }

    /// (text, expected line, expected key, a fragment of the message).
    #[test]
    fn errors_name_line_and_key() {
        let cases: &[(&str, Option<usize>, &str, &str)] = &[
            // Located as toml parsed it: a comment after a header, inline tables, quoted
            // and dotted keys.
            (
                "[population]\nmailboxes = 100\n[workload] # the load\nsessions = 10\nconcurrency = \"x\"\n",
                Some(5),
                "workload.concurrency",
                "invalid type",
            ),
            (
                "[workload] # w\nsessions = 1\nbulk_share = 3.0\n",
                Some(3),
                "workload.bulk_share",
                "[0, 1]",
            ),
            (
                "seed = 1\nworkload = { sessions = 10, concurrency = \"x\" }\n",
                Some(2),
                "workload.concurrency",
                "invalid type",
            ),
            (
                "seed = 1\nworkload = { sessions = 1, bulk_share = 3.0 }\n",
                Some(2),
                "workload.bulk_share",
                "[0, 1]",
            ),
            (
                "[workload]\nsessions = 1\n\"bulk_share\" = 3.0\n",
                Some(3),
                "workload.bulk_share",
                "[0, 1]",
            ),
            (
                "workload.sessions = 1\nworkload.concurrency = \"x\"\n",
                Some(2),
                "workload.concurrency",
                "invalid type",
            ),
            (
                "seed = 3\n[workload]\nsessions = 10\nconcurrency = \"fifty\"\n",
                Some(4),
                "workload.concurrency",
                "invalid type",
            ),
            (
                "[workload]\nsessions = 10\nsesions = 3\n",
                Some(3),
                "workload.sesions",
                "unknown field",
            ),
            (
                "[population]\nmailboxes = -5\n[workload]\nsessions = 1\n",
                Some(2),
                "population.mailboxes",
                "invalid value",
            ),
            (
                "[workload]\nsessions = 10\nmode = \"half-open\"\n",
                Some(3),
                "workload.mode",
                "unknown variant",
            ),
            (
                "colour = 1\n[workload]\nsessions = 1\n",
                Some(1),
                "colour",
                "unknown field",
            ),
            (
                "[workload]\nsessions = 10\nstarttls_share = 1.5\n",
                Some(3),
                "workload.starttls_share",
                "[0, 1]",
            ),
            (
                "[workload]\nsessions = 10\n\n[population]\nopt_in_domain_share = 1.5\n",
                Some(5),
                "population.opt_in_domain_share",
                "[0, 1]",
            ),
            (
                "[workload]\nsessions = 10\nrecipients_min = 60\n",
                Some(3),
                "workload.recipients_min",
                "greater than",
            ),
            (
                "[workload]\nsessions = 10\nconcurrency = 0\n",
                Some(3),
                "workload.concurrency",
                ">= 1",
            ),
            (
                "[workload]\nconcurrency = 5\n",
                None,
                "workload.sessions",
                "required",
            ),
            (
                "[workload]\nsessions = 10\nrate_per_sec = 5.0\n",
                Some(3),
                "workload.rate_per_sec",
                "closed loop",
            ),
            (
                "[workload]\nmode = \"open\"\nsessions = 10\n",
                None,
                "workload.rate_per_sec",
                "required",
            ),
            (
                "[workload]\nmode = \"open\"\nrate_per_sec = 10.0\nsessions = 10\nconcurrency = 4\n",
                Some(5),
                "workload.concurrency",
                "open loop",
            ),
            (
                "[workload]\nmode = \"open\"\nrate_per_sec = 10.0\nsessions = 10\nduration_secs = 2.0\n",
                Some(5),
                "workload.duration_secs",
                "not both",
            ),
            (
                "[workload]\nmode = \"open\"\nrate_per_sec = 0.0\nsessions = 1\n",
                Some(3),
                "workload.rate_per_sec",
                "> 0",
            ),
            (
                "[workload]\nsessions = 1\nrecipients_distribution = \"geometric\"\n",
                None,
                "workload.recipients_mean",
                "required",
            ),
            (
                "[workload]\nsessions = 1\nrecipients_mean = 4.0\n",
                Some(3),
                "workload.recipients_mean",
                "geometric",
            ),
            (
                "[workload]\nsessions = 1\nunknown_share = 0.6\nforeign_share = 0.5\n",
                Some(4),
                "workload.foreign_share",
                "exceeds 1",
            ),
            (
                "[workload]\nsessions = 1\nmessage_size_min = 10\nmessage_size_max = 5\n",
                Some(3),
                "workload.message_size_min",
                "greater than",
            ),
            (
                "[workload]\nsessions = 1\npopularity_zipf = 1.2\n",
                Some(3),
                "workload.popularity_zipf",
                "zipf",
            ),
            (
                "[server]\nmax_recipients = 0\n[workload]\nsessions = 1\n",
                Some(2),
                "server.max_recipients",
                ">= 1",
            ),
            (
                "name = \"a b\"\n[workload]\nsessions = 1\n",
                Some(1),
                "name",
                "letters",
            ),
            (
                "workload.sessions = 0\n",
                Some(1),
                "workload.sessions",
                "not in 1..",
            ),
            (
                "[population]\ndomains = 0\n[workload]\nsessions = 1\n",
                Some(2),
                "population.domains",
                "not in 1..",
            ),
        ];
        for (text, line, key, fragment) in cases {
            let err = Scenario::from_toml(text, "case").expect_err(text);
            let shown = err.to_string();
            assert_eq!(err.line(), *line, "{text:?}: {shown}");
            assert_eq!(err.key(), Some(*key), "{text:?}: {shown}");
            assert!(shown.contains(fragment), "{text:?}: {shown}");
            assert!(shown.starts_with("case"), "{shown}");
            if let Some(line) = line {
                assert!(
                    shown.contains(&format!("case line {line}: {key}: ")),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn syntax_error_reports_a_line() {
        let err = Scenario::from_toml("[workload]\nsessions = = 3\n", "bad").unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
        assert!(matches!(err, ScenarioError::Parse { .. }));
    }

    #[test]
    fn load_uses_the_stem_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("night-run.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(Scenario::load(&path).unwrap().name, "night-run");
        std::fs::write(&path, "[workload]\nsessions = \"x\"\n").unwrap();
        let shown = Scenario::load(&path).unwrap_err().to_string();
        assert!(
            shown.starts_with(&format!("{} line 2: workload.sessions: ", path.display())),
            "{shown}"
        );
        let missing = Scenario::load(dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(missing, ScenarioError::Io { .. }));
    }
}
