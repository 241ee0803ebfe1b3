//! Latency recording: per-phase HdrHistograms, sharded so sessions rarely contend, merged
//! at the end; and one-second interval histograms per phase for the time series.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded, in microseconds (one hour); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the main histograms (DESIGN.md section 5).
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Significant digits of the one-second interval histograms (every phase): two keep a run
/// of many minutes in tens of megabytes, and percentiles over time need no more.
pub const INTERVAL_SIGNIFICANT_DIGITS: u8 = 2;

/// A measured step of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Open loop: from the session's intended start to its actual start.
    ScheduleLag,
    /// TCP connect (open loop: from the intended start).
    Connect,
    /// From connected to the 220 greeting.
    Greeting,
    /// EHLO to its reply.
    Ehlo,
    /// BULK FROM / MAIL FROM to its reply (pipelined: from the batch's write).
    From,
    /// Each RCPT, from the write that carried it to its reply.
    Rcpt,
    /// DATA to its reply (354).
    Data,
    /// The message content and its final dot to the reply.
    EndOfData,
    /// QUIT to 221.
    Quit,
    /// The whole session (open loop: from the intended start).
    Session,
}

impl Phase {
    /// All phases, in session order.
    pub const ALL: [Phase; 10] = [
        Phase::ScheduleLag,
        Phase::Connect,
        Phase::Greeting,
        Phase::Ehlo,
        Phase::From,
        Phase::Rcpt,
        Phase::Data,
        Phase::EndOfData,
        Phase::Quit,
        Phase::Session,
    ];

    /// The phase's name in reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ScheduleLag => "schedule_lag",
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "ehlo",
            Phase::From => "from",
            Phase::Rcpt => "rcpt",
            Phase::Data => "data",
            Phase::EndOfData => "end_of_data",
            Phase::Quit => "quit",
            Phase::Session => "session",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A new histogram for latencies in microseconds.
pub fn new_histogram(significant_digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, significant_digits)
        .expect("constant histogram bounds are valid")
}

/// A new auto-resizing histogram for interval latencies: it starts small and grows only
/// to the largest value recorded, so a second of sub-millisecond replies costs a few KiB.
fn new_interval_histogram() -> Histogram<u64> {
    let mut histogram =
        Histogram::new(INTERVAL_SIGNIFICANT_DIGITS).expect("constant histogram precision is valid");
    histogram.auto(true);
    histogram
}

/// One second of the run, by completion time: a histogram per phase, and counts.
#[derive(Clone, Debug)]
pub struct Interval {
    /// RCPT replies received in this second.
    pub rcpts: u64,
    /// Sessions completed in this second.
    pub sessions: u64,
    /// Sessions failed in this second.
    pub errors: u64,
    phases: Vec<Histogram<u64>>,
}

impl Interval {
    fn new() -> Self {
        Interval {
            rcpts: 0,
            sessions: 0,
            errors: 0,
            phases: Phase::ALL
                .iter()
                .map(|_| new_interval_histogram())
                .collect(),
        }
    }

    /// The latencies of `phase` completed in this second.
    pub fn phase(&self, phase: Phase) -> &Histogram<u64> {
        &self.phases[phase.index()]
    }

    fn merge(&mut self, other: &Interval) {
        self.rcpts += other.rcpts;
        self.sessions += other.sessions;
        self.errors += other.errors;
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            // Auto-resizing histograms of the same precision: adding cannot fail.
            let _ = mine.add(theirs);
        }
    }
}

/// Latencies of one recorder: a histogram per phase and the interval series.
#[derive(Clone, Debug)]
pub struct Recorder {
    phases: Vec<Histogram<u64>>,
    /// By second since the run's start.
    intervals: BTreeMap<u64, Interval>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            phases: Phase::ALL
                .iter()
                .map(|_| new_histogram(SIGNIFICANT_DIGITS))
                .collect(),
            intervals: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records one latency of `phase`.
    pub fn record(&mut self, phase: Phase, latency_us: u64) {
        self.phases[phase.index()].saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
    }

    /// Records one latency into the interval series: the second in which it completed.
    pub fn record_interval(&mut self, second: u64, phase: Phase, latency_us: u64) {
        let interval = self.intervals.entry(second).or_insert_with(Interval::new);
        // `record`, not `saturating_record`: an auto-resizing histogram grows on record,
        // while saturating_record would clamp to its current (tiny) range.
        let _ = interval.phases[phase.index()].record(latency_us.clamp(1, MAX_LATENCY_US));
        match phase {
            Phase::Rcpt => interval.rcpts += 1,
            Phase::Session => interval.sessions += 1,
            _ => {}
        }
    }

    /// Counts a failed session in the interval series.
    pub fn record_error(&mut self, second: u64) {
        self.intervals
            .entry(second)
            .or_insert_with(Interval::new)
            .errors += 1;
    }

    /// The histogram of `phase`.
    pub fn phase(&self, phase: Phase) -> &Histogram<u64> {
        &self.phases[phase.index()]
    }

    /// The interval series, by second since the run's start.
    pub fn intervals(&self) -> &BTreeMap<u64, Interval> {
        &self.intervals
    }

    /// Adds another recorder's samples (HdrHistograms add exactly).
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            let _ = mine.add(theirs);
        }
        for (second, interval) in &other.intervals {
            self.intervals
                .entry(*second)
                .or_insert_with(Interval::new)
                .merge(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_exactly() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for v in 1..=1000 {
            a.record(Phase::Rcpt, v);
            b.record(Phase::Rcpt, v * 10);
            a.record_interval(v / 500, Phase::Rcpt, v);
        }
        b.record_interval(0, Phase::Session, 5000);
        b.record_error(3);
        a.merge(&b);
        assert_eq!(a.phase(Phase::Rcpt).len(), 2000);
        let rcpt = a.phase(Phase::Rcpt);
        assert!(rcpt.equivalent(rcpt.max(), 10_000), "{}", rcpt.max());
        assert_eq!(a.intervals()[&0].rcpts, 499);
        assert_eq!(a.intervals()[&0].sessions, 1);
        assert_eq!(a.intervals()[&3].errors, 1);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut r = Recorder::default();
        r.record(Phase::Session, 0);
        r.record(Phase::Session, u64::MAX);
        assert_eq!(r.phase(Phase::Session).len(), 2);
    }
}
