//! Comparisons: configurations ("arms") of one scenario, each run a few times, side by side.
//!
//! [`Comparison::new`] reduces each [`Arm`]'s repeats to the median, min and max of every
//! figure, and the ratio of each median to the baseline arm's (the first arm that has
//! runs), with a 95% confidence interval from a bootstrap over the repeats
//! ([`ratio_interval`]): a ratio whose interval holds 1 is noise. It keeps each repeat's
//! figures, and is saved as `comparison.json` ([`Comparison::save`], [`Comparison::load`])
//! so a later comparison can be checked against it ([`Comparison::verdict`], judged by the
//! interval's bound, not by the medians). [`run_order`] draws the arms' order in each
//! repeat. [`render_comparison`] writes `comparison.md`, `comparison.html` and overlaid
//! plots.
//!
//! On the project's two-core machines server and generator share the cores, so absolute
//! rates move with the machine; ratios measured in the same comparison hold better.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bulk_loadgen::Phase;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::format::{fmt_num, target_text};
use crate::plot::{
    self, Bar, BarChart, Chart, Plot, Progress, RenderedPlot, arm_color, spectrum_chart,
};
use crate::summary::{Latency, Machine};
use crate::{ReportError, RunData};

/// The version of `comparison.json`; bump it when a field changes meaning or goes away.
/// Version 2 added each repeat's figures (`values`), the ratios' intervals, the run order
/// and the baseline verdict; [`Comparison::load`] reads version 1 too (without them).
pub const COMPARISON_SCHEMA_VERSION: u32 = 2;

/// Resamples of the bootstrap behind every interval of a comparison.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// The seed of the bootstrap's resampling: fixed, so a report of the same runs states the
/// same intervals.
pub const BOOTSTRAP_SEED: u64 = 0x0b0b_5eed;

/// How the intervals of a comparison are made, as the reports state it.
pub const INTERVAL_METHOD: &str = "95% percentile bootstrap over repeats: each arm's repeats \
     resampled with replacement, the ratio of the resamples' medians, 10,000 resamples \
     (fixed seed), its 2.5th and 97.5th percentiles";

/// What the reports say where there is no interval for want of repeats.
pub const ONE_REPEAT: &str = "1 repeat: no confidence interval; use --repeat 5 or more";

/// The names of a comparison's plots; each is written as `NAME.svg` and `NAME.png`.
pub const COMPARISON_PLOTS: [&str; 4] = [
    "compare_rcpt_spectrum",
    "compare_session_spectrum",
    "compare_throughput",
    "compare_cpu_per_rcpt",
];

/// Significant digits of the figures of a comparison. Far beyond what the measurements
/// resolve, and few enough that `comparison.json` reads back bit for bit (a decimal of at
/// most 15 digits parses to exactly the double it was printed from).
pub const SIGNIFICANT_DIGITS: i32 = 9;

/// `value` rounded to [`SIGNIFICANT_DIGITS`], through the decimal text itself so the
/// value is exactly the double that decimal parses to.
fn round_significant(value: f64) -> f64 {
    if !value.is_finite() {
        return value;
    }
    format!("{value:.prec$e}", prec = (SIGNIFICANT_DIGITS - 1) as usize)
        .parse()
        .unwrap_or(value)
}

/// One configuration of a comparison and its runs.
#[derive(Clone, Debug)]
pub struct Arm {
    /// The arm's name (a backend, a flag setting, ...), unique within the comparison.
    pub name: String,
    /// One run per repeat; empty when the arm failed before any run completed.
    pub runs: Vec<RunData>,
    /// Why the arm failed (server did not start, ...); its completed runs still count.
    pub error: Option<String>,
}

/// The median, min and max of a figure over an arm's repeats.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (non-finite ones ignored), to [`SIGNIFICANT_DIGITS`]; None
    /// when there is none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Spread {
            median: round_significant(median),
            min: round_significant(sorted[0]),
            max: round_significant(sorted[n - 1]),
        })
    }
}

/// Latency percentiles of one phase over an arm's repeats, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseFigures {
    /// Median.
    pub p50: Spread,
    /// 99th percentile.
    pub p99: Spread,
    /// 99.9th percentile.
    pub p99_9: Spread,
    /// Largest sample.
    pub max: Spread,
}

/// One statistic of a phase's latency.
type LatencyStat = fn(&Latency) -> u64;

/// An arm's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmFigures {
    /// The arm's name.
    pub name: String,
    /// Completed repeats.
    pub repeats: usize,
    /// Why the arm failed, if it did.
    pub error: Option<String>,
    /// The target of its first run, in words.
    pub target: Option<String>,
    /// RCPT replies per second of the window.
    pub rcpt_per_sec: Option<Spread>,
    /// Completed sessions per second.
    pub sessions_per_sec: Option<Spread>,
    /// Per phase with samples in some repeat.
    pub latency_us: BTreeMap<String, PhaseFigures>,
    /// Server CPU microseconds per RCPT; None for an external target.
    pub server_cpu_us_per_rcpt: Option<Spread>,
    /// CPU microseconds per RCPT of the store's own processes (a Redis or PostgreSQL
    /// started for the run); None for a store inside the server, or none started.
    #[serde(default)]
    pub store_cpu_us_per_rcpt: Option<Spread>,
    /// Server and store CPU microseconds per RCPT: the whole cost of an answer (the
    /// server's alone when the store is inside it); None for an external target.
    #[serde(default)]
    pub whole_cpu_us_per_rcpt: Option<Spread>,
    /// Server peak RSS; None for an external target.
    pub peak_rss_bytes: Option<Spread>,
    /// Mismatched RCPT replies per run.
    pub mismatches: Option<Spread>,
    /// Failed sessions per run (measured and warm-up).
    pub failed_sessions: Option<Spread>,
    /// The kernel's listen-queue overflows per run (the summary's `listen_queue`); None
    /// where no repeat read them.
    #[serde(default)]
    pub listen_overflows: Option<Spread>,
    /// Each metric's median divided by the baseline arm's, by metric key (see
    /// [`ArmFigures::metric`]); absent where either is missing or the baseline's is 0.
    pub ratios: BTreeMap<String, f64>,
    /// The 95% confidence interval of each ratio ([`ratio_interval`]), by metric key;
    /// absent for the baseline arm, and where either arm has fewer than 2 repeats.
    #[serde(default)]
    pub intervals: BTreeMap<String, Interval>,
    /// Each repeat's figure by metric key, in the order the repeats ran (repeats without
    /// the figure left out); empty in a version 1 `comparison.json`.
    #[serde(default)]
    pub values: BTreeMap<String, Vec<f64>>,
}

/// A 95% confidence interval of a ratio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// The interval holds 1: the difference is not told apart from run-to-run noise.
    pub fn is_noise(&self) -> bool {
        self.low <= 1.0 && 1.0 <= self.high
    }
}

/// The median of `values` (the mean of the middle two for an even count); `values` must not
/// be empty.
fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The 95% confidence interval of `median(current) / median(base)` by a percentile
/// bootstrap ([`INTERVAL_METHOD`]): both samples resampled with replacement
/// [`BOOTSTRAP_RESAMPLES`] times from a fixed seed. A base of one value is held fixed.
/// `None` with fewer than 2 current values, no base value, or a base value that is not
/// positive and finite.
pub fn ratio_interval(base: &[f64], current: &[f64]) -> Option<Interval> {
    use rand::{RngExt as _, SeedableRng as _};
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
    if current.len() < 2 || base.is_empty() || !finite(current) || !finite(base) {
        return None;
    }
    if base.iter().any(|v| *v <= 0.0) {
        return None;
    }
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(BOOTSTRAP_SEED);
    let mut resample = |sample: &[f64], into: &mut Vec<f64>| {
        into.clear();
        into.extend((0..sample.len()).map(|_| sample[rng.random_range(0..sample.len())]));
        median_of(into)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut ratios: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let current = resample(current, &mut a);
            current / resample(base, &mut b)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[(q * (ratios.len() - 1) as f64).round() as usize];
    Some(Interval {
        low: round_significant(at(0.025)),
        high: round_significant(at(0.975)),
    })
}

/// The order the arms run in, repeat by repeat: a shuffle of `0..arms` per repeat from an
/// RNG seeded by `seed` (the same seed, the same orders), so that no arm always runs first
/// or right after another; an order that would repeat the previous repeat's is rotated by
/// one, so two arms alternate.
pub fn run_order(arms: usize, repeats: u32, seed: u64) -> Vec<Vec<usize>> {
    use rand::SeedableRng as _;
    use rand::seq::SliceRandom as _;
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut orders: Vec<Vec<usize>> = Vec::with_capacity(repeats as usize);
    for _ in 0..repeats {
        let mut order: Vec<usize> = (0..arms).collect();
        order.shuffle(&mut rng);
        if orders.last() == Some(&order) {
            order.rotate_left(1);
        }
        orders.push(order);
    }
    orders
}

/// The order a comparison's runs went in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOrder {
    /// The seed of the order (`--order-seed`).
    pub seed: u64,
    /// Each repeat's arms, by name, in the order they ran.
    pub repeats: Vec<Vec<String>>,
}

impl ArmFigures {
    /// The key of a latency metric: `latency_us.<phase>.<stat>` (stat: p50, p99, p99_9, max).
    pub fn latency_key(phase: &str, stat: &str) -> String {
        format!("latency_us.{phase}.{stat}")
    }

    /// A metric by key: `rcpt_per_sec`, `sessions_per_sec`, `server_cpu_us_per_rcpt`,
    /// `peak_rss_bytes`, `mismatches`, `failed_sessions`, or a latency key.
    pub fn metric(&self, key: &str) -> Option<Spread> {
        match key {
            "rcpt_per_sec" => self.rcpt_per_sec,
            "sessions_per_sec" => self.sessions_per_sec,
            "server_cpu_us_per_rcpt" => self.server_cpu_us_per_rcpt,
            "store_cpu_us_per_rcpt" => self.store_cpu_us_per_rcpt,
            "whole_cpu_us_per_rcpt" => self.whole_cpu_us_per_rcpt,
            "peak_rss_bytes" => self.peak_rss_bytes,
            "mismatches" => self.mismatches,
            "failed_sessions" => self.failed_sessions,
            "listen_overflows" => self.listen_overflows,
            _ => {
                let rest = key.strip_prefix("latency_us.")?;
                let (phase, stat) = rest.rsplit_once('.')?;
                let figures = self.latency_us.get(phase)?;
                match stat {
                    "p50" => Some(figures.p50),
                    "p99" => Some(figures.p99),
                    "p99_9" => Some(figures.p99_9),
                    "max" => Some(figures.max),
                    _ => None,
                }
            }
        }
    }

    /// Every metric the arm has, by key.
    pub fn metrics(&self) -> Vec<(String, Spread)> {
        let mut keys: Vec<String> = [
            "rcpt_per_sec",
            "sessions_per_sec",
            "server_cpu_us_per_rcpt",
            "store_cpu_us_per_rcpt",
            "whole_cpu_us_per_rcpt",
            "peak_rss_bytes",
            "mismatches",
            "failed_sessions",
            "listen_overflows",
        ]
        .iter()
        .map(|k| (*k).to_owned())
        .collect();
        for phase in self.latency_us.keys() {
            for stat in ["p50", "p99", "p99_9", "max"] {
                keys.push(Self::latency_key(phase, stat));
            }
        }
        keys.into_iter()
            .filter_map(|k| self.metric(&k).map(|s| (k, s)))
            .collect()
    }

    /// The arm failed: an error, or no completed run.
    pub fn is_failed(&self) -> bool {
        self.error.is_some() || self.repeats == 0
    }

    fn of(arm: &Arm) -> ArmFigures {
        let runs = &arm.runs;
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut record = |key: String, per_run: Vec<f64>| {
            let per_run: Vec<f64> = per_run
                .into_iter()
                .filter(|v| v.is_finite())
                .map(round_significant)
                .collect();
            if !per_run.is_empty() {
                values.insert(key, per_run);
            }
        };
        let each = |f: &dyn Fn(&RunData) -> Option<f64>| runs.iter().filter_map(f).collect();
        record(
            "rcpt_per_sec".into(),
            each(&|r| Some(r.summary.throughput.rcpt_per_sec)),
        );
        record(
            "sessions_per_sec".into(),
            each(&|r| Some(r.summary.throughput.sessions_per_sec)),
        );
        record(
            "server_cpu_us_per_rcpt".into(),
            each(&|r| r.summary.server.as_ref().map(|s| s.cpu_us_per_rcpt)),
        );
        record(
            "store_cpu_us_per_rcpt".into(),
            each(&|r| r.summary.store.as_ref().map(|s| s.cpu_us_per_rcpt)),
        );
        record(
            "whole_cpu_us_per_rcpt".into(),
            each(&|r| r.summary.whole_cpu_us_per_rcpt()),
        );
        record(
            "peak_rss_bytes".into(),
            each(&|r| r.summary.server.as_ref().map(|s| s.peak_rss_bytes as f64)),
        );
        record(
            "mismatches".into(),
            each(&|r| Some(r.summary.mismatches.total as f64)),
        );
        record(
            "failed_sessions".into(),
            each(&|r| Some(r.summary.errors.values().sum::<u64>() as f64)),
        );
        record(
            "listen_overflows".into(),
            each(&|r| r.summary.listen_queue.map(|q| q.overflows as f64)),
        );
        for phase in Phase::ALL {
            let per_run: Vec<Latency> = runs
                .iter()
                .filter_map(|r| r.phases.get(&phase))
                .filter(|h| !h.is_empty())
                .map(Latency::of)
                .collect();
            let stats: [(&str, LatencyStat); 4] = [
                ("p50", |l| l.p50),
                ("p99", |l| l.p99),
                ("p99_9", |l| l.p99_9),
                ("max", |l| l.max),
            ];
            for (stat, f) in stats {
                record(
                    Self::latency_key(phase.name(), stat),
                    per_run.iter().map(|l| f(l) as f64).collect(),
                );
            }
        }
        let spread = |key: &str| values.get(key).and_then(|v| Spread::of(v));
        let mut latency_us = BTreeMap::new();
        for phase in Phase::ALL {
            let stat = |stat: &str| spread(&Self::latency_key(phase.name(), stat));
            if let (Some(p50), Some(p99), Some(p99_9), Some(max)) =
                (stat("p50"), stat("p99"), stat("p99_9"), stat("max"))
            {
                latency_us.insert(
                    phase.name().to_owned(),
                    PhaseFigures {
                        p50,
                        p99,
                        p99_9,
                        max,
                    },
                );
            }
        }
        ArmFigures {
            name: arm.name.clone(),
            repeats: runs.len(),
            error: arm.error.clone(),
            target: runs.first().map(|r| target_text(&r.summary)),
            rcpt_per_sec: spread("rcpt_per_sec"),
            sessions_per_sec: spread("sessions_per_sec"),
            latency_us,
            server_cpu_us_per_rcpt: spread("server_cpu_us_per_rcpt"),
            store_cpu_us_per_rcpt: spread("store_cpu_us_per_rcpt"),
            whole_cpu_us_per_rcpt: spread("whole_cpu_us_per_rcpt"),
            peak_rss_bytes: spread("peak_rss_bytes"),
            mismatches: spread("mismatches"),
            failed_sessions: spread("failed_sessions"),
            listen_overflows: spread("listen_overflows"),
            ratios: BTreeMap::new(),
            intervals: BTreeMap::new(),
            values,
        }
    }
}

/// Arms side by side: the figures of a comparison, saved as `comparison.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// [`COMPARISON_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The scenario every arm ran.
    pub scenario: String,
    /// The machine of the first run (every arm ran on it).
    pub machine: Option<Machine>,
    /// The arm ratios divide by: the first arm that has runs.
    pub baseline: Option<String>,
    /// The arms in the order given.
    pub arms: Vec<ArmFigures>,
    /// How the ratios' intervals were made ([`INTERVAL_METHOD`]); `None` in version 1.
    #[serde(default)]
    pub interval_method: Option<String>,
    /// The order the runs went in; `None` when not recorded (version 1, a comparison
    /// built from runs in memory).
    #[serde(default)]
    pub run_order: Option<RunOrder>,
    /// The check against a baseline comparison (`--baseline`, `--max-regression`).
    #[serde(default)]
    pub verdict: Option<Verdict>,
}

/// How one figure of one arm fared against the baseline comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The interval's bound is within the tolerated regression.
    Pass,
    /// The interval's bound is past it: a regression beyond noise.
    Fail,
    /// No interval (1 repeat): not judged.
    NoInterval,
}

impl Outcome {
    /// `pass`, `FAIL`, `not judged`.
    pub fn text(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::NoInterval => "not judged",
        }
    }
}

/// One figure of one arm against the baseline comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The arm.
    pub arm: String,
    /// The metric key (`rcpt_per_sec`, `latency_us.rcpt.p99`, `server_cpu_us_per_rcpt`).
    pub metric: String,
    /// Higher is better (RCPT/s); else lower is (latency, CPU).
    pub higher_is_better: bool,
    /// The baseline's median.
    pub baseline: f64,
    /// This comparison's median (0 RCPT/s for an arm without a run).
    pub current: f64,
    /// `current / baseline`.
    pub ratio: f64,
    /// The ratio's 95% confidence interval; `None` when there is none (1 repeat).
    pub interval: Option<Interval>,
    /// The ratio past which the interval's bound fails: `1 - PCT/100` for a figure where
    /// higher is better (the upper bound must not fall below it), `1 + PCT/100` otherwise
    /// (the lower bound must not rise above it).
    pub limit: f64,
    /// Pass, fail, or not judged.
    pub outcome: Outcome,
    /// What qualifies the check (no interval, a baseline without per-repeat figures).
    pub note: Option<String>,
}

impl Check {
    /// `(current - baseline) / baseline * 100`: negative for a drop.
    pub fn change_pct(&self) -> f64 {
        (self.ratio - 1.0) * 100.0
    }

    /// The interval as text, `0.41–0.52`, or why there is none.
    pub fn interval_text(&self) -> String {
        match self.interval {
            Some(i) => format!("{}–{}", fmt_num(i.low), fmt_num(i.high)),
            None => "none".to_owned(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.change_pct() < 0.0 {
            "fell"
        } else {
            "rose"
        };
        write!(
            f,
            "{}: {}: {} {what} {:.1}% ({} -> {}), ratio {}, 95% interval {}, limit {}",
            self.outcome.text(),
            self.arm,
            self.metric,
            self.change_pct().abs(),
            fmt_num(self.baseline),
            fmt_num(self.current),
            fmt_num(self.ratio),
            self.interval_text(),
            fmt_num(self.limit)
        )?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// A comparison checked against a baseline comparison (`--baseline DIR --max-regression
/// PCT`), saved in `comparison.json` and shown in its reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The baseline comparison (its folder, as given).
    pub baseline: String,
    /// The tolerated regression, in percent.
    pub max_regression_pct: f64,
    /// No check failed.
    pub passed: bool,
    /// Each checked figure of each arm present in both.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }

    /// How many checks had no interval.
    pub fn not_judged(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::NoInterval)
            .count()
    }

    /// `PASS` or `FAIL` and what that rests on, in a line.
    pub fn headline(&self) -> String {
        let failed = self.failures().count();
        let mut text = if self.passed {
            format!(
                "PASS: no figure regressed beyond {}% against {} (judged by the 95% \
                 interval's bound)",
                fmt_num(self.max_regression_pct),
                self.baseline
            )
        } else {
            format!(
                "FAIL: {failed} figure{} regressed beyond {}% against {}, the whole 95% \
                 interval past the limit",
                if failed == 1 { "" } else { "s" },
                fmt_num(self.max_regression_pct),
                self.baseline
            )
        };
        let unjudged = self.not_judged();
        if unjudged > 0 {
            text.push_str(&format!(
                "; {unjudged} check{} not judged ({ONE_REPEAT})",
                if unjudged == 1 { "" } else { "s" }
            ));
        }
        text
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Comparison {
    /// The figures of `arms`, all of scenario `scenario_name`.
    pub fn new(scenario_name: &str, arms: &[Arm]) -> Comparison {
        let mut figures: Vec<ArmFigures> = arms.iter().map(ArmFigures::of).collect();
        let baseline = figures.iter().find(|a| a.repeats > 0).cloned();
        if let Some(base) = &baseline {
            for arm in &mut figures {
                arm.ratios = arm
                    .metrics()
                    .into_iter()
                    .filter_map(|(key, spread)| {
                        let base = base.metric(&key)?.median;
                        (base > 0.0 && base.is_finite())
                            .then(|| (key, round_significant(spread.median / base)))
                    })
                    .collect();
                if arm.name == base.name {
                    continue;
                }
                arm.intervals = arm
                    .ratios
                    .keys()
                    .filter_map(|key| {
                        let (ours, theirs) = (arm.values.get(key)?, base.values.get(key)?);
                        if theirs.len() < 2 {
                            return None;
                        }
                        Some((key.clone(), ratio_interval(theirs, ours)?))
                    })
                    .collect();
            }
        }
        Comparison {
            schema_version: COMPARISON_SCHEMA_VERSION,
            scenario: scenario_name.to_owned(),
            machine: arms
                .iter()
                .flat_map(|a| a.runs.first())
                .map(|r| r.summary.machine.clone())
                .next(),
            baseline: baseline.map(|b| b.name),
            arms: figures,
            interval_method: Some(INTERVAL_METHOD.to_owned()),
            run_order: None,
            verdict: None,
        }
    }

    /// Fewest repeats of an arm that ran: below 2 there is no interval.
    pub fn fewest_repeats(&self) -> Option<usize> {
        self.arms.iter().map(|a| a.repeats).filter(|r| *r > 0).min()
    }

    /// Writes `comparison.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ReportError> {
        let path = dir.join("comparison.json");
        let json = serde_json::to_vec_pretty(self).map_err(|source| ReportError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, json).map_err(io_error(&path))
    }

    /// Reads `comparison.json` from `dir`: this version, or version 1 (which has no
    /// per-repeat figures, intervals, run order or verdict); refuses any other.
    pub fn load(dir: &Path) -> Result<Comparison, ReportError> {
        let path = dir.join("comparison.json");
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let json_error = |source| ReportError::Json {
            path: path.clone(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(json_error)?;
        let found = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if !(1..=u64::from(COMPARISON_SCHEMA_VERSION)).contains(&found) {
            return Err(ReportError::SchemaVersion {
                path,
                found,
                expected: COMPARISON_SCHEMA_VERSION,
            });
        }
        serde_json::from_value(value).map_err(json_error)
    }

    /// Checks `self` against `baseline` (a comparison saved earlier, from `baseline_name`)
    /// with `max_pct` percent of tolerated regression, per arm present in both (matched by
    /// name): RCPT/s, RCPT p99 and server CPU per RCPT.
    ///
    /// Each check bootstraps the ratio of this comparison's median to the baseline's from
    /// both sides' repeats ([`ratio_interval`]) and fails only when the whole interval is
    /// past the limit: for RCPT/s its upper bound below `1 - max_pct/100`, for latency and
    /// CPU its lower bound above `1 + max_pct/100`. An arm with one repeat has no interval
    /// and is not judged. A baseline without per-repeat figures (version 1) or with one
    /// repeat has its median held exact, as the check notes. An arm that ran in the
    /// baseline but has no run now fails (RCPT/s 0).
    pub fn verdict(&self, baseline: &Comparison, baseline_name: &str, max_pct: f64) -> Verdict {
        let rcpt_p99 = ArmFigures::latency_key(Phase::Rcpt.name(), "p99");
        let checks: [(&str, bool); 3] = [
            ("rcpt_per_sec", true),
            (rcpt_p99.as_str(), false),
            ("server_cpu_us_per_rcpt", false),
        ];
        let mut out = Vec::new();
        for current in &self.arms {
            let Some(base) = baseline.arms.iter().find(|a| a.name == current.name) else {
                continue;
            };
            for (metric, higher_is_better) in checks {
                let Some(before) = base.metric(metric).map(|s| s.median) else {
                    continue;
                };
                if !(before > 0.0 && before.is_finite()) {
                    continue;
                }
                let limit = round_significant(if higher_is_better {
                    1.0 - max_pct / 100.0
                } else {
                    1.0 + max_pct / 100.0
                });
                let mut check = Check {
                    arm: current.name.clone(),
                    metric: metric.to_owned(),
                    higher_is_better,
                    baseline: before,
                    current: 0.0,
                    ratio: 0.0,
                    interval: None,
                    limit,
                    outcome: Outcome::NoInterval,
                    note: None,
                };
                let Some(now) = current.metric(metric).map(|s| s.median) else {
                    if metric == "rcpt_per_sec" && current.repeats == 0 {
                        check.outcome = Outcome::Fail;
                        check.note = Some("no completed run; it ran in the baseline".into());
                        out.push(check);
                    }
                    continue;
                };
                check.current = now;
                check.ratio = round_significant(now / before);
                let ours = current.values.get(metric).map_or(&[][..], Vec::as_slice);
                let theirs = match base.values.get(metric) {
                    Some(values) if values.len() >= 2 => values.clone(),
                    _ => {
                        check.note = Some(if base.values.is_empty() {
                            "the baseline's comparison.json (version 1) keeps no per-repeat \
                             figures: its median is held exact"
                                .into()
                        } else {
                            "the baseline has 1 repeat: its figure is held exact".into()
                        });
                        vec![before]
                    }
                };
                check.interval = ratio_interval(&theirs, ours);
                check.outcome = match check.interval {
                    None => {
                        check.note = Some(ONE_REPEAT.into());
                        Outcome::NoInterval
                    }
                    Some(i) if higher_is_better && i.high < limit => Outcome::Fail,
                    Some(i) if !higher_is_better && i.low > limit => Outcome::Fail,
                    Some(_) => Outcome::Pass,
                };
                out.push(check);
            }
        }
        Verdict {
            baseline: baseline_name.to_owned(),
            max_regression_pct: max_pct,
            passed: !out.iter().any(|c| c.outcome == Outcome::Fail),
            checks: out,
        }
    }
}

/// Merges a phase's histograms over an arm's repeats (HdrHistograms add exactly).
fn merged(arm: &Arm, phase: Phase) -> Histogram<u64> {
    let mut total = crate::new_full_histogram();
    for run in &arm.runs {
        if let Some(h) = run.phases.get(&phase) {
            // Same bounds as the generator's histograms; a foreign one that does not fit
            // is left out rather than failing the report.
            let _ = total.add(h);
        }
    }
    total
}

/// One phase's latency spectrum, a line per arm, its repeats' histograms merged.
fn spectrum_plot(
    comparison: &Comparison,
    arms: &[Arm],
    phase: Phase,
    name: &str,
    title: &str,
) -> Plot {
    let histograms: Vec<(String, Histogram<u64>)> = comparison
        .arms
        .iter()
        .map(|figures| {
            let h = arms
                .iter()
                .find(|a| a.name == figures.name)
                .map_or_else(crate::new_full_histogram, |a| merged(a, phase));
            (figures.name.clone(), h)
        })
        .collect();
    let chart = spectrum_chart(
        histograms
            .iter()
            .enumerate()
            .map(|(i, (arm, h))| (arm.clone(), arm_color(i), h)),
    );
    let alt = format!(
        "{title}: {}.",
        histograms
            .iter()
            .map(|(arm, h)| if h.is_empty() {
                format!("{arm} no samples")
            } else {
                format!(
                    "{arm} p50 {} ms, p99 {} ms",
                    fmt_num(h.value_at_quantile(0.5) as f64 / 1000.0),
                    fmt_num(h.value_at_quantile(0.99) as f64 / 1000.0)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    Plot {
        name: name.to_owned(),
        title: title.to_owned(),
        subtitle: "each arm's repeats merged; one line per arm".to_owned(),
        caption: format!(
            "{} latency by percentile of each arm, its repeats' histograms added \
             together, on HdrHistogram's log \"nines\" axis (90%, 99%, 99.9%... evenly \
             spaced) and a log latency axis. Arms without runs have no line.",
            phase.name()
        ),
        alt,
        chart: Chart::Lines(chart),
    }
}

/// One bar per arm: the median of a metric over its repeats, whiskers from min to max.
fn metric_bars(comparison: &Comparison, key: &str, missing: &str) -> Vec<Bar> {
    comparison
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| {
            let spread = arm.metric(key);
            Bar {
                label: arm.name.clone(),
                value: spread.map(|s| s.median),
                range: spread.filter(|s| s.min < s.max).map(|s| (s.min, s.max)),
                color: arm_color(i),
                text: match (spread, arm.ratios.get(key)) {
                    (Some(s), Some(ratio)) => {
                        format!("{} (x{})", fmt_num(s.median), fmt_num(*ratio))
                    }
                    (Some(s), None) => fmt_num(s.median),
                    (None, _) if arm.is_failed() => "failed".to_owned(),
                    (None, _) => missing.to_owned(),
                },
            }
        })
        .collect()
}

/// The comparison's plots, in [`COMPARISON_PLOTS`] order. `arms` supply the histograms
/// (matched to the comparison's arms by name).
pub fn comparison_plots(comparison: &Comparison, arms: &[Arm]) -> Vec<Plot> {
    let throughput_bars = metric_bars(comparison, "rcpt_per_sec", "no samples");
    // The whole cost: server and store, where the store ran as processes of its own.
    let cpu_bars = metric_bars(
        comparison,
        "whole_cpu_us_per_rcpt",
        "external: not measured",
    );
    let describe = |bars: &[Bar]| {
        bars.iter()
            .map(|b| format!("{} {}", b.label, b.text))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        spectrum_plot(
            comparison,
            arms,
            Phase::Rcpt,
            "compare_rcpt_spectrum",
            "RCPT latency by percentile",
        ),
        spectrum_plot(
            comparison,
            arms,
            Phase::Session,
            "compare_session_spectrum",
            "Session latency by percentile",
        ),
        Plot {
            name: "compare_throughput".to_owned(),
            title: "Throughput: RCPT replies per second".to_owned(),
            subtitle: "median over repeats, whiskers from min to max; ratio to the baseline arm"
                .to_owned(),
            caption: "Each arm's RCPT/s over its measurement window: the bar is the median \
                      of its repeats, the whisker spans the slowest and fastest repeat, and \
                      the ratio divides by the baseline arm's median."
                .to_owned(),
            alt: format!(
                "RCPT replies per second by arm: {}.",
                describe(&throughput_bars)
            ),
            chart: Chart::Bars(BarChart {
                horizontal: false,
                value_desc: "RCPT/s".to_owned(),
                category_desc: "arm".to_owned(),
                bars: throughput_bars,
                reference: None,
            }),
        },
        Plot {
            name: "compare_cpu_per_rcpt".to_owned(),
            title: "Server (and store) CPU per RCPT".to_owned(),
            subtitle: "median over repeats, whiskers from min to max; lower is cheaper".to_owned(),
            caption: "Server CPU time (user + system, from /proc) in the measurement window \
                      divided by the RCPT replies in it, plus the store's where the store ran \
                      as processes of its own (Redis, PostgreSQL): the whole cost of an \
                      answer. Cost holds across noisy machines better than a rate; an \
                      external target has no figure."
                .to_owned(),
            alt: format!(
                "Server (and store) CPU microseconds per RCPT by arm: {}.",
                describe(&cpu_bars)
            ),
            chart: Chart::Bars(BarChart {
                horizontal: false,
                value_desc: "server + store CPU µs per RCPT".to_owned(),
                category_desc: "arm".to_owned(),
                bars: cpu_bars,
                reference: None,
            }),
        },
    ]
}

/// Writes `comparison.md`, `comparison.html` and the overlaid plots (SVG and PNG) into
/// `dir`; returns the files written. `comparison.json` is [`Comparison::save`]'s.
pub fn render_comparison(
    comparison: &Comparison,
    arms: &[Arm],
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    render_comparison_with_progress(comparison, arms, dir, &|_, _| {})
}

/// [`render_comparison`], calling `progress(done, total)` as each file is written.
pub fn render_comparison_with_progress(
    comparison: &Comparison,
    arms: &[Arm],
    dir: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<PathBuf>, ReportError> {
    let plots = comparison_plots(comparison, arms);
    let progress = Progress::new(plots.len() + 2, progress);
    let rendered = plot::render_plots(&plots, dir, &|| progress.step())?;
    let mut files = plot_files(&rendered);
    let md_path = dir.join("comparison.md");
    let markdown = crate::markdown::comparison_markdown(comparison, &rendered);
    std::fs::write(&md_path, markdown).map_err(io_error(&md_path))?;
    progress.step();
    files.push(md_path);
    let html_path = dir.join("comparison.html");
    let html = crate::html::comparison_html(comparison, &rendered);
    std::fs::write(&html_path, html).map_err(io_error(&html_path))?;
    progress.step();
    files.push(html_path);
    Ok(files)
}

/// Both files of each plot, in order.
pub(crate) fn plot_files(rendered: &[RenderedPlot]) -> Vec<PathBuf> {
    rendered
        .iter()
        .flat_map(|p| [p.svg_path.clone(), p.png_path.clone()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn intervals_need_two_repeats_and_a_positive_base() {
        assert_eq!(ratio_interval(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(ratio_interval(&[], &[1.0, 2.0]), None);
        assert_eq!(ratio_interval(&[0.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(ratio_interval(&[1.0, f64::NAN], &[1.0, 2.0]), None);
        // No spread: a point.
        let point = ratio_interval(&[4.0, 4.0], &[2.0, 2.0, 2.0]).unwrap();
        assert_eq!((point.low, point.high), (0.5, 0.5));
        assert!(!point.is_noise());
        // A base of one value is held fixed: the interval is the current side's spread.
        let one = ratio_interval(&[10.0], &[9.0, 10.0, 11.0]).unwrap();
        assert!(
            one.low >= 0.9 && one.high <= 1.1 && one.is_noise(),
            "{one:?}"
        );
        // Reproducible: a fixed seed.
        let sample = [3.0, 5.0, 4.0, 6.0, 5.5];
        assert_eq!(
            ratio_interval(&sample, &[1.0, 9.0, 4.0]),
            ratio_interval(&sample, &[1.0, 9.0, 4.0])
        );
    }

    #[test]
    fn metric_keys_round_trip() {
        let spread = Spread {
            median: 1.0,
            min: 1.0,
            max: 1.0,
        };
        let mut arm = ArmFigures {
            name: "a".into(),
            repeats: 1,
            error: None,
            target: None,
            rcpt_per_sec: Some(spread),
            sessions_per_sec: None,
            latency_us: BTreeMap::new(),
            server_cpu_us_per_rcpt: None,
            store_cpu_us_per_rcpt: None,
            whole_cpu_us_per_rcpt: None,
            peak_rss_bytes: None,
            mismatches: None,
            failed_sessions: None,
            listen_overflows: None,
            ratios: BTreeMap::new(),
            intervals: BTreeMap::new(),
            values: BTreeMap::new(),
        };
        arm.latency_us.insert(
            "end_of_data".into(),
            PhaseFigures {
                p50: spread,
                p99: spread,
                p99_9: spread,
                max: spread,
            },
        );
        let keys: Vec<String> = arm.metrics().into_iter().map(|m| m.0).collect();
        assert!(keys.contains(&"rcpt_per_sec".to_owned()));
        assert!(keys.contains(&"latency_us.end_of_data.p99_9".to_owned()));
        assert_eq!(keys.len(), 5);
    }
}
