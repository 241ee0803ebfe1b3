//! Latency recording: per-phase HdrHistograms, sharded so sessions rarely contend, merged
//! at the end; and interval histograms per phase for the time series.
//!
//! Intervals start at [`FIRST_INTERVAL_MS`] (100 ms), so even a window of a few seconds
//! has dozens of points, and double in length (adjacent pairs added, exactly) whenever a
//! recorder holds more than [`MAX_INTERVALS`]: a run of any length keeps between 300 and
//! 600 of them, in bounded memory.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded, in microseconds (one hour); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the main histograms (docs/measuring.md, "Histograms and the
/// interval series").
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Significant digits of the interval histograms (every phase): two keep a run's series in
/// tens of megabytes, and percentiles over time need no more.
pub const INTERVAL_SIGNIFICANT_DIGITS: u8 = 2;
/// Length of a recorder's intervals until it has too many of them.
pub const FIRST_INTERVAL_MS: u64 = 100;
/// Intervals a recorder holds at most: past this it doubles their length.
pub const MAX_INTERVALS: usize = 600;

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
    /// EHLO to its reply. A STARTTLS session says EHLO twice, before STARTTLS and after
    /// the handshake (over TLS), and records both.
    Ehlo,
    /// STARTTLS sessions only: STARTTLS to its 220 (from the write that carried it).
    Starttls,
    /// STARTTLS sessions only: the TLS handshake, from the moment STARTTLS's 220 was read
    /// (the client's hello is written at once) to the handshake's end on the client's
    /// side: the server's Finished received and checked, the client's own Finished
    /// written (so in TLS 1.3 one round trip, in TLS 1.2 two). Certificate checking, when
    /// on, is in it; session resumption is off, so every session pays a full handshake.
    TlsHandshake,
    /// RSET to its reply: between transactions of a session, after one that sent no
    /// message (pipelined: from the write of the next transaction's group).
    Rset,
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
    pub const ALL: [Phase; 13] = [
        Phase::ScheduleLag,
        Phase::Connect,
        Phase::Greeting,
        Phase::Ehlo,
        Phase::Starttls,
        Phase::TlsHandshake,
        Phase::Rset,
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
            Phase::Starttls => "starttls",
            Phase::TlsHandshake => "tls_handshake",
            Phase::Rset => "rset",
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

/// One interval of the run, by completion time: a histogram per phase, and counts.
#[derive(Clone, Debug)]
pub struct Interval {
    /// RCPT replies received in this interval.
    pub rcpts: u64,
    /// Sessions completed in this interval.
    pub sessions: u64,
    /// Sessions failed in this interval.
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

    /// The latencies of `phase` completed in this interval.
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
    /// Length of every interval: [`FIRST_INTERVAL_MS`] times a power of two.
    interval_ms: u64,
    /// By interval number since the run's start (interval n starts at n x interval_ms).
    intervals: BTreeMap<u64, Interval>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            phases: Phase::ALL
                .iter()
                .map(|_| new_histogram(SIGNIFICANT_DIGITS))
                .collect(),
            interval_ms: FIRST_INTERVAL_MS,
            intervals: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records one latency of `phase`.
    pub fn record(&mut self, phase: Phase, latency_us: u64) {
        self.phases[phase.index()].saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
    }

    /// Records one latency into the interval series: the interval in which it completed,
    /// `at_us` microseconds after the run's start.
    pub fn record_interval(&mut self, at_us: u64, phase: Phase, latency_us: u64) {
        let interval = self.interval_at(at_us);
        // `record`, not `saturating_record`: an auto-resizing histogram grows on record,
        // while saturating_record would clamp to its current (tiny) range.
        let _ = interval.phases[phase.index()].record(latency_us.clamp(1, MAX_LATENCY_US));
        match phase {
            Phase::Rcpt => interval.rcpts += 1,
            Phase::Session => interval.sessions += 1,
            _ => {}
        }
    }

    /// Counts a failed session in the interval series, `at_us` after the run's start.
    pub fn record_error(&mut self, at_us: u64) {
        self.interval_at(at_us).errors += 1;
    }

    /// The interval holding `at_us`, made room for.
    fn interval_at(&mut self, at_us: u64) -> &mut Interval {
        if !self
            .intervals
            .contains_key(&(at_us / (self.interval_ms * 1000)))
            && self.intervals.len() >= MAX_INTERVALS
        {
            self.double_intervals();
        }
        let n = at_us / (self.interval_ms * 1000);
        self.intervals.entry(n).or_insert_with(Interval::new)
    }

    /// Doubles the interval length: intervals 2n and 2n+1 become interval n.
    fn double_intervals(&mut self) {
        self.interval_ms *= 2;
        let old = std::mem::take(&mut self.intervals);
        for (n, interval) in old {
            match self.intervals.entry(n / 2) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(interval);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    slot.get_mut().merge(&interval)
                }
            }
        }
    }

    /// The length of every interval of the series, in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// The histogram of `phase`.
    pub fn phase(&self, phase: Phase) -> &Histogram<u64> {
        &self.phases[phase.index()]
    }

    /// The interval series, by interval number since the run's start: interval `n` covers
    /// `n * interval_ms()` to `(n + 1) * interval_ms()` milliseconds.
    pub fn intervals(&self) -> &BTreeMap<u64, Interval> {
        &self.intervals
    }

    /// Adds another recorder's samples (HdrHistograms add exactly); the series takes the
    /// longer of the two interval lengths.
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            let _ = mine.add(theirs);
        }
        while self.interval_ms < other.interval_ms {
            self.double_intervals();
        }
        // The other's intervals are as long or shorter, by a power of two.
        let shift = self.interval_ms / other.interval_ms.max(1);
        for (n, interval) in &other.intervals {
            self.intervals
                .entry(n / shift.max(1))
                .or_insert_with(Interval::new)
                .merge(interval);
        }
        while self.intervals.len() > MAX_INTERVALS {
            self.double_intervals();
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
            a.record_interval(v / 500 * 100_000, Phase::Rcpt, v);
        }
        b.record_interval(0, Phase::Session, 5000);
        b.record_error(300_000);
        a.merge(&b);
        assert_eq!(a.phase(Phase::Rcpt).len(), 2000);
        let rcpt = a.phase(Phase::Rcpt);
        assert!(rcpt.equivalent(rcpt.max(), 10_000), "{}", rcpt.max());
        assert_eq!(a.interval_ms(), FIRST_INTERVAL_MS);
        assert_eq!(a.intervals()[&0].rcpts, 499);
        assert_eq!(a.intervals()[&0].sessions, 1);
        assert_eq!(a.intervals()[&3].errors, 1);
    }

    #[test]
    fn intervals_start_at_100_ms_and_double_past_the_cap() {
        let mut r = Recorder::default();
        // 20 s at one sample per 10 ms: 200 intervals of 100 ms.
        for at_ms in (0..20_000u64).step_by(10) {
            r.record_interval(at_ms * 1000, Phase::Rcpt, 10);
        }
        assert_eq!((r.interval_ms(), r.intervals().len()), (100, 200));
        assert!(r.intervals().values().all(|i| i.rcpts == 10));
        // Up to 2 minutes: 1,200 intervals of 100 ms would be too many; 600 of 200 ms.
        for at_ms in (20_000..120_000u64).step_by(10) {
            r.record_interval(at_ms * 1000, Phase::Rcpt, 10);
        }
        assert_eq!((r.interval_ms(), r.intervals().len()), (200, 600));
        assert!(r.intervals().values().all(|i| i.rcpts == 20));
        // One more interval doubles the length again.
        r.record_interval(120_000_000, Phase::Rcpt, 10);
        assert_eq!((r.interval_ms(), r.intervals().len()), (400, 301));
        assert!(r.intervals().values().take(300).all(|i| i.rcpts == 40));
        let total: u64 = r.intervals().values().map(|i| i.rcpts).sum();
        assert_eq!(total, 12_001, "no sample lost in doubling");
        // Merging a recorder of shorter intervals brings it to the longer length.
        let mut fine = Recorder::default();
        fine.record_interval(150_000, Phase::Rcpt, 10);
        fine.record_error(1_250_000);
        let mut merged = fine.clone();
        merged.merge(&r);
        assert_eq!(merged.interval_ms(), 400);
        assert_eq!(merged.intervals()[&0].rcpts, 41);
        assert_eq!(merged.intervals()[&3].errors, 1);
        r.merge(&fine);
        assert_eq!(r.intervals()[&0].rcpts, 41);
        assert_eq!(r.intervals()[&3].errors, 1);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut r = Recorder::default();
        r.record(Phase::Session, 0);
        r.record(Phase::Session, u64::MAX);
        assert_eq!(r.phase(Phase::Session).len(), 2);
    }
}
