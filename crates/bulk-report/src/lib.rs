//! bulkbench run outputs: `summary.json` with its versioned schema, one `.hgrm` percentile
//! file per phase, and the summary table printed at the end of a run.
//!
//! - [`Summary`] (in [`summary`]): the machine-readable result, built from a
//!   [`bulk_loadgen::RunResult`] and the run's context; [`summary::SCHEMA`] is its JSON
//!   Schema, and [`schema::validate`] checks a document against it.
//! - [`hgrm::percentile_distribution`]: HdrHistogram's percentile text format.
//! - [`ReportDir`]: a run's folder, created fresh (never overwriting), and what goes in it.
//! - [`report`]: a report built once as data (problems, sections, tables, figures) from a
//!   run or a comparison, which [`terminal`] ([`table`], the terminal summary),
//!   [`markdown`] and [`html`] render, all wording figures alike (module `format`).
//! - [`render_run`]: a run's plots ([`plot`]), `summary.md` ([`markdown`]) and the
//!   self-contained `report.html` ([`html`]).
//! - [`Comparison`] (in [`compare`]): arms of repeated runs side by side, their saved
//!   figures with confidence intervals, the verdict against a baseline, and
//!   [`render_comparison`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod compare;
mod format;
pub mod hgrm;
pub mod html;
pub mod markdown;
pub mod plot;
pub mod report;
pub mod run;
pub mod schema;
pub mod summary;
pub mod terminal;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

pub use crate::compare::{Arm, Comparison, Verdict, render_comparison};
pub use crate::html::{render_run, render_run_with_progress};
pub use crate::run::{IntervalData, RunData};
pub use crate::summary::{Summary, SummaryInput};

/// An empty whole-run histogram, as the generator records them.
pub fn new_full_histogram() -> Histogram<u64> {
    bulk_loadgen::record::new_histogram(bulk_loadgen::record::SIGNIFICANT_DIGITS)
}

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Runs that cannot be merged.
    #[error("cannot merge: {0}")]
    Merge(String),
    /// The folder exists already: a report is never overwritten.
    #[error("report folder {0} exists already; choose another --out")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The embedded DejaVu font could not be registered with plotters.
    #[error("cannot register the embedded DejaVu font for plots")]
    Font,
    /// Drawing a plot failed.
    #[error("cannot draw plot {plot}: {message}")]
    Plot {
        /// The plot's name (`latency_spectrum`, ...).
        plot: String,
        /// What the drawing backend said.
        message: String,
    },
    /// A JSON file could not be written or read.
    #[error("bad JSON in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A saved file has a schema version this build does not read.
    #[error("{path} has schema version {found}; this build reads version {expected}")]
    SchemaVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this build reads.
        expected: u32,
    },
}

/// A UTC calendar date and time of day.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    /// Seconds since midnight.
    secs: u64,
    /// 0 for Sunday.
    weekday: u64,
}

/// The UTC date and time `secs` seconds after the epoch (Howard Hinnant's algorithm).
fn civil(secs: u64) -> Civil {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        secs: rest,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4) % 7,
    }
}

/// Days from 1970-01-01 to a date (the inverse of [`civil`]'s date).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSZ` for a time (UTC), as in report folder names.
pub fn utc_stamp(time: SystemTime) -> String {
    let c = civil(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year,
        c.month,
        c.day,
        c.secs / 3600,
        c.secs % 3600 / 60,
        c.secs % 60
    )
}

/// Seconds since the epoch of a [`utc_stamp`]; `None` for anything else.
pub fn parse_utc_stamp(stamp: &str) -> Option<u64> {
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = stamp.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day);
    if !valid || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// A time as Java's `Date.toString()` writes it in UTC, `Fri Nov 27 20:24:05 UTC 2026`:
/// the date of an HdrHistogram log's `StartTime` line, as HdrHistogram's own writer has it.
pub(crate) fn java_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(secs);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[c.weekday as usize],
        MONTHS[(c.month - 1) as usize],
        c.day,
        c.secs / 3600,
        c.secs % 3600 / 60,
        c.secs % 60,
        c.year
    )
}

/// A run's report folder.
#[derive(Clone, Debug)]
pub struct ReportDir {
    path: PathBuf,
}

impl ReportDir {
    /// Creates `reports_root/<scenario>-<stamp>[-n]`, the first free name.
    pub fn create_dated(
        reports_root: &Path,
        scenario: &str,
        time: SystemTime,
    ) -> Result<ReportDir, ReportError> {
        let base = format!("{scenario}-{}", utc_stamp(time));
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ReportError::Io { path, source }
        };
        std::fs::create_dir_all(reports_root).map_err(io_error(reports_root))?;
        for n in 0..1000 {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let path = reports_root.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ReportDir { path }),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(io_error(&path)(error)),
            }
        }
        Err(ReportError::Exists(reports_root.join(base)))
    }

    /// Creates exactly `path`, which must not exist yet (`--out DIR`).
    pub fn create_exact(path: &Path) -> Result<ReportDir, ReportError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| ReportError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        match std::fs::create_dir(path) {
            Ok(()) => Ok(ReportDir {
                path: path.to_owned(),
            }),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Err(ReportError::Exists(path.to_owned()))
            }
            Err(source) => Err(ReportError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A folder that exists already (re-rendering a saved run).
    pub fn existing(path: &Path) -> ReportDir {
        ReportDir {
            path: path.to_owned(),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, name: &str, contents: &[u8]) -> Result<(), ReportError> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).map_err(|source| ReportError::Io { path, source })
    }

    /// Writes the run's saved results (`summary.json`, `run.hlog`, `intervals.hlog`) and
    /// one `<phase>.hgrm` per phase (values in microseconds).
    pub fn write_run(&self, data: &RunData) -> Result<(), ReportError> {
        data.save(&self.path)?;
        for (phase, histogram) in &data.phases {
            let text = hgrm::percentile_distribution(histogram, 1.0);
            self.write(&format!("{}.hgrm", phase.name()), text.as_bytes())?;
        }
        Ok(())
    }
}

/// The summary a person reads at the end of a run: problems first, then throughput,
/// latency per phase and cost ([`report::summary_report`] in the terminal's rendering).
pub fn table(summary: &Summary) -> String {
    let report = report::summary_report(summary, &summary.started_at, &[], &[]);
    terminal::render_terminal(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        let at = |secs| utc_stamp(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_795_811_045), "20261127T202405Z");
        for secs in [0, 951_782_400, 1_795_811_045, 4_102_444_799] {
            assert_eq!(parse_utc_stamp(&at(secs)), Some(secs), "{secs}");
        }
        for bad in [
            "",
            "20261127T202405",
            "2026112XT202405Z",
            "20261327T202405Z",
        ] {
            assert_eq!(parse_utc_stamp(bad), None, "{bad}");
        }
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(1_795_811_045), "Fri Nov 27 20:24:05 UTC 2026");
        assert_eq!(java_date(951_782_400), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn report_folders_are_never_reused() {
        let root = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH;
        let a = ReportDir::create_dated(root.path(), "quick", t).unwrap();
        let b = ReportDir::create_dated(root.path(), "quick", t).unwrap();
        assert!(a.path().ends_with("quick-19700101T000000Z"));
        assert!(b.path().ends_with("quick-19700101T000000Z-1"));
        assert!(matches!(
            ReportDir::create_exact(a.path()),
            Err(ReportError::Exists(_))
        ));
    }
}
