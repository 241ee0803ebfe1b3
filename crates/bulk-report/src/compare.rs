//! Comparisons: configurations ("arms") of one scenario, each run a few times, side by side.
//!
//! [`Comparison::new`] reduces each [`Arm`]'s repeats to the median, min and max of every
//! figure, and the ratio of each median to the baseline arm's (the first arm that has
//! runs); it is saved as `comparison.json` ([`Comparison::save`], [`Comparison::load`]) so
//! a later comparison can be checked against it ([`Comparison::regressions`]).
//! [`render_comparison`] writes `comparison.md`, `comparison.html` and overlaid plots.
//!
//! On the project's two-core machines server and generator share the cores, so absolute
//! rates move with the machine; ratios measured in the same comparison hold better.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bulk_loadgen::Phase;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::markdown::{fmt_num, machine_text, target_text};
use crate::plot::{
    self, Bar, BarChart, Chart, Plot, Progress, RenderedPlot, arm_color, spectrum_chart,
};
use crate::summary::{Latency, Machine};
use crate::{ReportError, RunData};

/// The version of `comparison.json`; bump it when a field changes meaning or goes away.
pub const COMPARISON_SCHEMA_VERSION: u32 = 1;

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
    /// Server peak RSS; None for an external target.
    pub peak_rss_bytes: Option<Spread>,
    /// Mismatched RCPT replies per run.
    pub mismatches: Option<Spread>,
    /// Failed sessions per run (measured and warm-up).
    pub failed_sessions: Option<Spread>,
    /// Each metric's median divided by the baseline arm's, by metric key (see
    /// [`ArmFigures::metric`]); absent where either is missing or the baseline's is 0.
    pub ratios: BTreeMap<String, f64>,
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
            "peak_rss_bytes" => self.peak_rss_bytes,
            "mismatches" => self.mismatches,
            "failed_sessions" => self.failed_sessions,
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
            "peak_rss_bytes",
            "mismatches",
            "failed_sessions",
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
        let spread = |f: &dyn Fn(&RunData) -> Option<f64>| {
            Spread::of(&runs.iter().filter_map(f).collect::<Vec<_>>())
        };
        let mut latency_us = BTreeMap::new();
        for phase in Phase::ALL {
            let per_run: Vec<Latency> = runs
                .iter()
                .filter_map(|r| r.phases.get(&phase))
                .filter(|h| !h.is_empty())
                .map(Latency::of)
                .collect();
            let stat = |f: fn(&Latency) -> u64| {
                Spread::of(&per_run.iter().map(|l| f(l) as f64).collect::<Vec<_>>())
            };
            if let (Some(p50), Some(p99), Some(p99_9), Some(max)) = (
                stat(|l| l.p50),
                stat(|l| l.p99),
                stat(|l| l.p99_9),
                stat(|l| l.max),
            ) {
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
            rcpt_per_sec: spread(&|r| Some(r.summary.throughput.rcpt_per_sec)),
            sessions_per_sec: spread(&|r| Some(r.summary.throughput.sessions_per_sec)),
            latency_us,
            server_cpu_us_per_rcpt: spread(&|r| {
                r.summary.server.as_ref().map(|s| s.cpu_us_per_rcpt)
            }),
            peak_rss_bytes: spread(&|r| r.summary.server.as_ref().map(|s| s.peak_rss_bytes as f64)),
            mismatches: spread(&|r| Some(r.summary.mismatches.total as f64)),
            failed_sessions: spread(&|r| Some(r.summary.errors.values().sum::<u64>() as f64)),
            ratios: BTreeMap::new(),
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
}

/// A figure that got worse than a baseline comparison allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// The arm.
    pub arm: String,
    /// The metric key (`rcpt_per_sec`, `latency_us.rcpt.p99`, `server_cpu_us_per_rcpt`).
    pub metric: String,
    /// The baseline's median.
    pub baseline: f64,
    /// This comparison's median (0 RCPT/s for an arm that failed).
    pub current: f64,
    /// `(current - baseline) / baseline * 100`: negative for a drop.
    pub change_pct: f64,
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.change_pct < 0.0 {
            "fell"
        } else {
            "rose"
        };
        write!(
            f,
            "{}: {} {what} {:.1}% ({} -> {})",
            self.arm,
            self.metric,
            self.change_pct.abs(),
            fmt_num(self.baseline),
            fmt_num(self.current)
        )
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
        }
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

    /// Reads `comparison.json` from `dir`; refuses another schema version.
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
        if found != u64::from(COMPARISON_SCHEMA_VERSION) {
            return Err(ReportError::SchemaVersion {
                path,
                found,
                expected: COMPARISON_SCHEMA_VERSION,
            });
        }
        serde_json::from_value(value).map_err(json_error)
    }

    /// Regressions of `self` against `baseline` beyond `max_pct` percent, per arm present
    /// in both (matched by name), comparing medians: RCPT/s lower, RCPT p99 higher, server
    /// CPU per RCPT higher. An arm that ran in the baseline but has no run now counts as
    /// a 100% RCPT/s drop.
    pub fn regressions(&self, baseline: &Comparison, max_pct: f64) -> Vec<Regression> {
        // (metric, worse when it rises)
        let rcpt_p99 = ArmFigures::latency_key(Phase::Rcpt.name(), "p99");
        let checks: [(&str, bool); 3] = [
            ("rcpt_per_sec", false),
            (rcpt_p99.as_str(), true),
            ("server_cpu_us_per_rcpt", true),
        ];
        let mut out = Vec::new();
        for current in &self.arms {
            let Some(base) = baseline.arms.iter().find(|a| a.name == current.name) else {
                continue;
            };
            for (metric, rising_is_worse) in checks {
                let Some(before) = base.metric(metric).map(|s| s.median) else {
                    continue;
                };
                if !(before > 0.0 && before.is_finite()) {
                    continue;
                }
                let now = match current.metric(metric) {
                    Some(spread) => spread.median,
                    None if metric == "rcpt_per_sec" && current.repeats == 0 => 0.0,
                    None => continue,
                };
                let change_pct = (now - before) / before * 100.0;
                let worse = if rising_is_worse {
                    change_pct > max_pct
                } else {
                    change_pct < -max_pct
                };
                if worse {
                    out.push(Regression {
                        arm: current.name.clone(),
                        metric: metric.to_owned(),
                        baseline: before,
                        current: now,
                        change_pct,
                    });
                }
            }
        }
        out
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

/// The comparison's plots, in [`COMPARISON_PLOTS`] order. `arms` supply the histograms
/// (matched to the comparison's arms by name).
pub fn comparison_plots(comparison: &Comparison, arms: &[Arm]) -> Vec<Plot> {
    let spectrum = |phase: Phase, name: &str, title: &str| {
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
    };
    let bars = |key: &str, missing: &str| -> Vec<Bar> {
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
    };
    let throughput_bars = bars("rcpt_per_sec", "no samples");
    let cpu_bars = bars("server_cpu_us_per_rcpt", "external: not measured");
    let describe = |bars: &[Bar]| {
        bars.iter()
            .map(|b| format!("{} {}", b.label, b.text))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        spectrum(
            Phase::Rcpt,
            "compare_rcpt_spectrum",
            "RCPT latency by percentile",
        ),
        spectrum(
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
            title: "Server CPU per RCPT".to_owned(),
            subtitle: "median over repeats, whiskers from min to max; lower is cheaper".to_owned(),
            caption: "Server CPU time (user + system, from /proc) in the measurement window \
                      divided by the RCPT replies in it. Cost holds across noisy machines \
                      better than a rate; an external target has no figure."
                .to_owned(),
            alt: format!(
                "Server CPU microseconds per RCPT by arm: {}.",
                describe(&cpu_bars)
            ),
            chart: Chart::Bars(BarChart {
                horizontal: false,
                value_desc: "server CPU µs per RCPT".to_owned(),
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

/// The machine line of a comparison, for the reports.
pub(crate) fn comparison_machine(comparison: &Comparison) -> Option<String> {
    comparison.machine.as_ref().map(machine_text)
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
            peak_rss_bytes: None,
            mismatches: None,
            failed_sessions: None,
            ratios: BTreeMap::new(),
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
