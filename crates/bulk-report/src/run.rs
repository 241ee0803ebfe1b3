//! A run's saved results: everything a report is rendered from, kept in the run's folder
//! so it can be re-rendered (`bulkbench report render`) and merged (`report merge`).
//!
//! - `summary.json`: counts, figures, the scenario ([`Summary`]).
//! - `run.hlog`: the whole measurement window, one histogram per phase (3 significant
//!   digits), tagged with the phase name.
//! - `intervals.hlog`: interval histograms per phase (2 significant digits; 100 ms
//!   intervals, doubled as often as needed to keep at most 600),
//!   tagged likewise, warm-up included, timestamps in seconds since the run's start.
//!
//! Both `.hlog` files are in the HdrHistogram interval log format, version 1.3 (V2,
//! deflate-compressed histograms, base64), with the header HdrHistogram's own writers put
//! there: the format version, the run's start as `StartTime` (seconds since the epoch and
//! a date) and the same instant as `BaseTime`, so interval timestamps are seconds since the
//! run's start and the tools of other languages place them in time.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use bulk_loadgen::{Phase, RunResult};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogHistogram, IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use crate::ReportError;
use crate::summary::{ListenQueue, Merged, Shard, Summary, Target};

/// One interval of the time series.
#[derive(Clone, Debug)]
pub struct IntervalData {
    /// Seconds since the run's start.
    pub start_secs: f64,
    /// Length in seconds (the series' interval length, but for a run's last, partial
    /// interval).
    pub duration_secs: f64,
    /// Latencies completed in this interval, by phase (phases with no sample omitted).
    pub phases: BTreeMap<Phase, Histogram<u64>>,
}

impl IntervalData {
    /// Samples of `phase` in this interval.
    pub fn count(&self, phase: Phase) -> u64 {
        self.phases.get(&phase).map_or(0, Histogram::len)
    }
}

/// Everything a report is rendered from.
#[derive(Clone, Debug)]
pub struct RunData {
    /// The summary.
    pub summary: Summary,
    /// Whole-window histograms by phase (every phase present, possibly empty).
    pub phases: BTreeMap<Phase, Histogram<u64>>,
    /// The interval series in time order, warm-up included.
    pub intervals: Vec<IntervalData>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> ReportError {
    ReportError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, message.into()),
    }
}

fn phase_by_name(name: &str) -> Option<Phase> {
    Phase::ALL.into_iter().find(|p| p.name() == name)
}

impl RunData {
    /// The data of a finished run.
    pub fn new(summary: Summary, result: &RunResult) -> RunData {
        let phases = Phase::ALL
            .iter()
            .map(|p| (*p, result.measured.phase(*p).clone()))
            .collect();
        // Warm-up and measured sessions complete in the same seconds: the series is their
        // sum, so it shows the whole run.
        let mut series = result.warmup.clone();
        series.merge(&result.measured);
        let end = result.elapsed.as_secs_f64();
        let length = series.interval_ms() as f64 / 1000.0;
        let intervals = series
            .intervals()
            .iter()
            .map(|(n, interval)| {
                let start = *n as f64 * length;
                // Millisecond precision: what an interval log keeps, so a report renders the
                // same before and after saving.
                let duration = ((end - start).clamp(0.001, length) * 1000.0).round() / 1000.0;
                IntervalData {
                    start_secs: start,
                    duration_secs: duration,
                    phases: Phase::ALL
                        .iter()
                        .filter(|p| !interval.phase(**p).is_empty())
                        .map(|p| (*p, interval.phase(*p).clone()))
                        .collect(),
                }
            })
            .collect();
        RunData {
            summary,
            phases,
            intervals,
        }
    }

    /// Writes `summary.json`, `run.hlog` and `intervals.hlog` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ReportError> {
        let path = dir.join("summary.json");
        let json =
            serde_json::to_vec_pretty(&self.summary).map_err(|e| invalid(&path, e.to_string()))?;
        std::fs::write(&path, json).map_err(io_error(&path))?;

        let start = self.start_epoch_secs();
        let window = Duration::from_secs_f64(self.summary.window.measured_secs.max(0.0));
        let warmup = self.summary.window.warmup_secs.max(0.0);
        let whole: Vec<(f64, f64, Phase, &Histogram<u64>)> = self
            .phases
            .iter()
            .map(|(phase, h)| (warmup, window.as_secs_f64(), *phase, h))
            .collect();
        write_hlog(&dir.join("run.hlog"), start, &whole)?;
        let series: Vec<(f64, f64, Phase, &Histogram<u64>)> = self
            .intervals
            .iter()
            .flat_map(|i| {
                i.phases
                    .iter()
                    .map(move |(phase, h)| (i.start_secs, i.duration_secs, *phase, h))
            })
            .collect();
        write_hlog(&dir.join("intervals.hlog"), start, &series)
    }

    /// The run's start in seconds since the epoch: as recorded, else (a summary written
    /// before it was) from the `started_at` stamp, to the second.
    fn start_epoch_secs(&self) -> f64 {
        let s = &self.summary;
        s.started_at_epoch_secs
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .or_else(|| crate::parse_utc_stamp(&s.started_at).map(|secs| secs as f64))
            .unwrap_or(0.0)
    }

    /// Reads what [`save`](Self::save) wrote.
    pub fn load(dir: &Path) -> Result<RunData, ReportError> {
        let path = dir.join("summary.json");
        let text = std::fs::read(&path).map_err(io_error(&path))?;
        let summary: Summary =
            serde_json::from_slice(&text).map_err(|e| invalid(&path, e.to_string()))?;
        let mut phases: BTreeMap<Phase, Histogram<u64>> = Phase::ALL
            .iter()
            .map(|p| (*p, crate::new_full_histogram()))
            .collect();
        for (_, _, phase, h) in read_hlog(&dir.join("run.hlog"))? {
            let target = phases
                .entry(phase)
                .or_insert_with(crate::new_full_histogram);
            target
                .add(&h)
                .map_err(|e| invalid(&dir.join("run.hlog"), format!("{e:?}")))?;
        }
        let mut by_start: BTreeMap<u64, IntervalData> = BTreeMap::new();
        for (start, duration, phase, h) in read_hlog(&dir.join("intervals.hlog"))? {
            let key = (start * 1000.0).round() as u64;
            let interval = by_start.entry(key).or_insert_with(|| IntervalData {
                start_secs: start,
                duration_secs: duration,
                phases: BTreeMap::new(),
            });
            let mut h = h;
            // Decoded histograms have a fixed range; merging adds histograms of other runs.
            h.auto(true);
            interval.phases.insert(phase, h);
        }
        Ok(RunData {
            summary,
            phases,
            intervals: by_start.into_values().collect(),
        })
    }
}

/// What the runs of a merge must share, and what each one is: refuses anything that would
/// count a session twice or add up the runs of different workloads. Returns what the
/// merged summary records of them (its `server_note` still unset).
fn check_mergeable(runs: &[(String, RunData)], partial: bool) -> Result<Merged, ReportError> {
    let refuse = |message: String| Err(ReportError::Merge(message));
    let mut shards: Vec<(Shard, &str)> = Vec::with_capacity(runs.len());
    for (label, run) in runs {
        let s = &run.summary;
        if let Some(merged) = &s.merged {
            return refuse(format!(
                "{label} is itself a merge (of shards {}); merge the shards' own folders",
                merged.shards_text()
            ));
        }
        if s.scenario_fingerprint.is_none() {
            return refuse(format!(
                "{label} was written by an older bulkbench: its summary.json records neither \
                 its shard nor its scenario's fingerprint, so a merge cannot tell a shard \
                 from a duplicate or a whole run; run it again with this version"
            ));
        }
        match s.shard {
            Some(shard) => shards.push((shard, label)),
            None if runs.len() == 1 => {
                return refuse(format!(
                    "{label} is a whole run, not a shard: there is nothing to merge \
                     (`report render` re-renders it)"
                ));
            }
            None => {
                return refuse(format!(
                    "{label} is a whole run (no --shard): merged with any shard of its \
                     workload it would count that shard's sessions twice"
                ));
            }
        }
    }
    let (first_label, first) = &runs[0];
    let a = &first.summary;
    for (label, run) in &runs[1..] {
        same_workload((first_label, a), (label, &run.summary))?;
    }
    let count = shards[0].0.count;
    if let Some((other, label)) = shards.iter().find(|(shard, _)| shard.count != count) {
        return refuse(format!(
            "{first_label} is shard {} but {label} is shard {other}: shards of different \
             counts overlap (each holds sessions of the other's)",
            shards[0].0
        ));
    }
    let mut sorted = shards.clone();
    sorted.sort();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return refuse(format!(
            "shard {} is given twice ({} and {}): its sessions would count twice",
            pair[0].0, pair[0].1, pair[1].1
        ));
    }
    let have: Vec<u32> = sorted.iter().map(|(shard, _)| shard.index).collect();
    let missing: Vec<u32> = (0..count).filter(|i| !have.contains(i)).collect();
    let merged = Merged {
        shard_count: count,
        shards: have,
        missing,
        addresses: if a.target.external {
            vec![a.target.address.clone()]
        } else {
            sorted
                .iter()
                .filter_map(|(shard, _)| {
                    runs.iter()
                        .find(|(_, run)| run.summary.shard == Some(*shard))
                        .map(|(_, run)| run.summary.target.address.clone())
                })
                .collect()
        },
        server_note: None,
    };
    if !merged.missing.is_empty() && !partial {
        return refuse(format!(
            "shard{} {} of the workload {} missing; merge all {count}, or pass --partial \
             to merge these and have the report say which are missing",
            if merged.missing.len() == 1 { "" } else { "s" },
            merged.missing_text(),
            if merged.missing.len() == 1 {
                "is"
            } else {
                "are"
            },
        ));
    }
    Ok(merged)
}

/// Refuses two runs that are not parts of one workload against one target.
fn same_workload(
    (first_label, a): (&str, &Summary),
    (label, b): (&str, &Summary),
) -> Result<(), ReportError> {
    let differ = |what: &str, x: &dyn std::fmt::Display, y: &dyn std::fmt::Display| {
        ReportError::Merge(format!(
            "{first_label} and {label} ran {what} ({x} and {y}); only shards of one \
             workload against one target merge"
        ))
    };
    if a.seed != b.seed {
        return Err(differ("different seeds", &a.seed, &b.seed));
    }
    if a.scenario_fingerprint != b.scenario_fingerprint {
        let fingerprint = |s: &Summary| s.scenario_fingerprint.clone().unwrap_or_default();
        return Err(differ(
            "different scenarios (fingerprints)",
            &fingerprint(a),
            &fingerprint(b),
        ));
    }
    if a.trace != b.trace {
        let trace = |s: &Summary| match &s.trace {
            Some(name) => format!("trace {name}"),
            None => "generated".to_owned(),
        };
        return Err(differ("different workloads", &trace(a), &trace(b)));
    }
    let (x, y) = (&a.target, &b.target);
    if x.external != y.external {
        let kind = |t: &Target| {
            if t.external {
                format!("external server {}", t.address)
            } else {
                "a server bench started".to_owned()
            }
        };
        return Err(differ("against different targets", &kind(x), &kind(y)));
    }
    if x.external && x.address != y.address {
        return Err(differ("against different servers", &x.address, &y.address));
    }
    if !x.external && x.backend != y.backend {
        let backend = |t: &Target| t.backend.clone().unwrap_or_else(|| "unknown".into());
        return Err(differ(
            "against servers of different backends",
            &backend(x),
            &backend(y),
        ));
    }
    Ok(())
}

/// Merges runs of disjoint parts of one workload (`load --shard I/N`, run together against
/// one server) into one: histograms added exactly, counts summed, the window the longest of
/// the parts (they ran at the same time), throughput recomputed over it. Each run comes
/// with a label (its folder) for the errors.
///
/// Refused: a shard given twice, a whole run with anything, shards of different counts,
/// runs of different scenarios (fingerprint), seeds, traces or targets, summaries that do
/// not record their shard, and a missing shard unless `partial` (the merged summary then
/// lists the missing shards in [`Merged::missing`]).
pub fn merge(runs: &[(String, RunData)], partial: bool) -> Result<RunData, ReportError> {
    if runs.is_empty() {
        return Err(ReportError::Merge("nothing to merge".into()));
    }
    let mut facts = check_mergeable(runs, partial)?;
    let mut merged = runs[0].1.clone();
    for (_, run) in &runs[1..] {
        let b = &run.summary;
        for (phase, histogram) in &run.phases {
            let target = merged
                .phases
                .entry(*phase)
                .or_insert_with(crate::new_full_histogram);
            target
                .add(histogram)
                .map_err(|e| ReportError::Merge(format!("{phase:?}: {e:?}")))?;
        }
        for interval in &run.intervals {
            let at = merged
                .intervals
                .iter_mut()
                .find(|i| (i.start_secs - interval.start_secs).abs() < 1e-6);
            match at {
                Some(target) => {
                    for (phase, histogram) in &interval.phases {
                        let mut fresh = histogram.clone();
                        fresh.reset();
                        let slot = target.phases.entry(*phase).or_insert(fresh);
                        slot.auto(true);
                        slot.add(histogram)
                            .map_err(|e| ReportError::Merge(format!("{phase:?}: {e:?}")))?;
                    }
                    target.duration_secs = target.duration_secs.max(interval.duration_secs);
                }
                None => merged.intervals.push(interval.clone()),
            }
        }
        let s = &mut merged.summary;
        s.totals.add(&b.totals);
        s.warmup_totals.add(&b.warmup_totals);
        s.mismatches.merge(&b.mismatches);
        for (kind, count) in &b.errors {
            *s.errors.entry(kind.clone()).or_default() += count;
        }
        s.expected.sessions += b.expected.sessions;
        s.expected.rcpts += b.expected.rcpts;
        s.window.measured_secs = s.window.measured_secs.max(b.window.measured_secs);
        s.window.elapsed_secs = s.window.elapsed_secs.max(b.window.elapsed_secs);
        s.window.interrupted |= b.window.interrupted;
        // The shards ran together: the merged run started with the first of them.
        if let Some(start) = b.started_at_epoch_secs
            && s.started_at_epoch_secs.is_none_or(|first| start < first)
        {
            s.started_at_epoch_secs = Some(start);
            s.started_at = b.started_at.clone();
        }
        s.generator.cpu_seconds += b.generator.cpu_seconds;
        // The shards' generators ran side by side: their threads add up.
        s.generator.event_loops = s
            .generator
            .event_loops
            .zip(b.generator.event_loops)
            .map(|(x, y)| x + y);
        // The counters are host-wide and the shards may have shared a host: the largest of
        // their counts, which the merged run met at least.
        s.listen_queue = match (s.listen_queue, b.listen_queue) {
            (Some(x), Some(y)) => Some(ListenQueue {
                overflows: x.overflows.max(y.overflows),
                drops: x.drops.max(y.drops),
            }),
            (x, y) => x.or(y),
        };
        // Neither do the CPUs of separate runs (they may even be the same CPUs).
        s.generator.cpu_set = None;
        // The pinning stated is every shard's, or none.
        if s.target.server_cpus != b.target.server_cpus
            || s.target.generator_cpus != b.target.generator_cpus
        {
            s.target.server_cpus = None;
            s.target.generator_cpus = None;
        }
    }
    merged
        .intervals
        .sort_by(|a, b| a.start_secs.total_cmp(&b.start_secs));
    let s = &mut merged.summary;
    // Server figures of separately started servers do not add up to one server's.
    if runs.len() > 1 && runs.iter().any(|(_, run)| run.summary.server.is_some()) {
        s.server = None;
        facts.server_note = Some(format!(
            "not merged: each shard ran against a bulkbench server of its own ({} servers), \
             and the CPU and memory figures of separate servers do not add up to one \
             server's; see each shard's report",
            runs.len()
        ));
    }
    // Nor does a ceiling measured against one of them describe the merged run, nor the
    // cost of one of their stores.
    if runs.len() > 1 {
        s.ceiling = None;
        s.store = None;
    }
    s.shard = None;
    s.merged = Some(facts);
    let secs = s.window.measured_secs;
    let rate = |count: u64| if secs > 0.0 { count as f64 / secs } else { 0.0 };
    s.throughput.rcpt_per_sec = rate(s.totals.rcpts);
    s.throughput.sessions_per_sec = rate(s.totals.sessions_completed);
    s.generator.cpu_us_per_rcpt =
        crate::summary::per_rcpt_us(s.generator.cpu_seconds, s.totals.rcpts);
    s.latency_us = crate::summary::latency_of(&merged.phases);
    // Every error kind present, as in a run's summary, also when the first shard's
    // summary was written before some kind existed.
    for kind in bulk_loadgen::ErrorKind::ALL {
        s.errors.entry(kind.name().to_owned()).or_default();
    }
    Ok(merged)
}

/// One histogram of an interval log: start and duration in seconds, phase, histogram.
type LoggedHistogram = (f64, f64, Phase, Histogram<u64>);

/// The version of the interval log format written, as HdrHistogram's writers state it.
pub const HLOG_FORMAT_VERSION: &str = "1.3";

/// Writes histograms as an interval log: (start secs, duration secs, phase, histogram),
/// starts relative to `start_epoch_secs`, the log's `StartTime` and `BaseTime`.
fn write_hlog(
    path: &Path,
    start_epoch_secs: f64,
    entries: &[(f64, f64, Phase, &Histogram<u64>)],
) -> Result<(), ReportError> {
    // The header as HdrHistogram's Java writer has it (the Rust crate's writer leaves out
    // the version and the StartTime's date).
    let mut out = format!(
        "#bulkbench latency histograms, microseconds; tags are phases\n\
         #[Histogram log format version {HLOG_FORMAT_VERSION}]\n\
         #[StartTime: {start_epoch_secs:.3} (seconds since epoch), {}]\n\
         #[BaseTime: {start_epoch_secs:.3} (seconds since epoch)]\n",
        crate::java_date(start_epoch_secs as u64)
    )
    .into_bytes();
    let mut body = Vec::new();
    {
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut body, &mut serializer)
            .map_err(io_error(path))?;
        for (start, duration, phase, histogram) in entries {
            writer
                .write_histogram(
                    histogram,
                    Duration::from_secs_f64(start.max(0.0)),
                    Duration::from_secs_f64(duration.max(0.0)),
                    Tag::new(phase.name()),
                )
                .map_err(|e| invalid(path, format!("{e:?}")))?;
        }
    }
    // The writer's one header line (`#[MaxValueDivisor: 1000.000]`), then the legend.
    let header_end = match body.first() {
        Some(b'#') => body.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1),
        _ => 0,
    };
    out.extend_from_slice(&body[..header_end]);
    out.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    out.extend_from_slice(&body[header_end..]);
    let mut file = std::fs::File::create(path).map_err(io_error(path))?;
    file.write_all(&out).map_err(io_error(path))
}

/// Reads an interval log written by [`write_hlog`] (or any log tagged with phase names;
/// untagged or unknown tags are an error, since they cannot be placed).
fn read_hlog(path: &Path) -> Result<Vec<LoggedHistogram>, ReportError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let mut out = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| invalid(path, format!("{e:?}")))?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let (phase, histogram) = decode(&interval, &mut deserializer, path)?;
        out.push((
            interval.start_timestamp().as_secs_f64(),
            interval.duration().as_secs_f64(),
            phase,
            histogram,
        ));
    }
    Ok(out)
}

fn decode(
    interval: &IntervalLogHistogram<'_>,
    deserializer: &mut Deserializer,
    path: &Path,
) -> Result<(Phase, Histogram<u64>), ReportError> {
    let tag = interval
        .tag()
        .ok_or_else(|| invalid(path, "an interval without a phase tag"))?;
    let phase = phase_by_name(tag.as_str())
        .ok_or_else(|| invalid(path, format!("unknown phase tag {:?}", tag.as_str())))?;
    let compressed = base64_decode(interval.encoded_histogram())
        .ok_or_else(|| invalid(path, "bad base64 in a histogram"))?;
    let histogram: Histogram<u64> = deserializer
        .deserialize(&mut &compressed[..])
        .map_err(|e| invalid(path, format!("{e:?}")))?;
    Ok((phase, histogram))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::summary::{Expected, SummaryInput, Target};
    use bulk_loadgen::{Mismatches, Recorder, Totals};

    pub(crate) fn sample_result() -> RunResult {
        let mut measured = Recorder::default();
        let mut warmup = Recorder::default();
        for v in 1..=3000u64 {
            let second_us = (v / 1000) * 1_000_000;
            measured.record(Phase::Rcpt, v * 7);
            measured.record_interval(second_us + 1_000_000, Phase::Rcpt, v * 7);
            if v % 10 == 0 {
                measured.record(Phase::Session, v * 100);
                measured.record_interval(second_us + 1_000_000, Phase::Session, v * 100);
            }
            if v % 100 == 0 {
                warmup.record(Phase::Rcpt, v);
                warmup.record_interval(0, Phase::Rcpt, v);
            }
        }
        RunResult {
            measured,
            warmup,
            totals: Totals {
                sessions: 300,
                sessions_completed: 300,
                rcpts: 3000,
                ..Totals::default()
            },
            warmup_totals: Totals::default(),
            mismatches: Mismatches::default(),
            window: Duration::from_secs(3),
            elapsed: Duration::from_millis(3500),
            interrupted: false,
            drawn: 0,
            event_loops: 2,
        }
    }

    pub(crate) fn sample_summary(result: &RunResult) -> Summary {
        Summary::new(
            SummaryInput {
                command: "bench".into(),
                started_at: std::time::UNIX_EPOCH + Duration::from_millis(1_795_811_045_250),
                scenario: serde_json::json!({"name": "sample"}),
                seed: 1,
                scenario_fingerprint: 0x0123_4567_89ab_cdef,
                trace: None,
                shard: None,
                target: Target {
                    address: "127.0.0.1:1".into(),
                    external: false,
                    backend: Some("memory".into()),
                    server_cpus: None,
                    generator_cpus: None,
                    processes: Vec::new(),
                },
                expected: Expected {
                    sessions: 300,
                    rcpts: 3000,
                },
                warmup_secs: 0.5,
                server: Some((1.0, 1 << 20, Some(0.1))),
                store: None,
                generator_cpu_seconds: 0.5,
                generator_event_loops: 2,
                listen_queue: None,
                cpu_sets: None,
            },
            result,
        )
    }

    #[test]
    fn saved_results_load_back_exactly() {
        let result = sample_result();
        let data = RunData::new(sample_summary(&result), &result);
        let dir = tempfile::tempdir().unwrap();
        data.save(dir.path()).unwrap();
        let loaded = RunData::load(dir.path()).unwrap();
        assert_eq!(loaded.summary, data.summary);
        for phase in Phase::ALL {
            let (a, b) = (&data.phases[&phase], &loaded.phases[&phase]);
            assert_eq!(a.len(), b.len(), "{phase:?}");
            assert_eq!(
                a.value_at_quantile(0.99),
                b.value_at_quantile(0.99),
                "{phase:?}"
            );
            assert_eq!(a.max(), b.max(), "{phase:?}");
        }
        assert_eq!(loaded.intervals.len(), data.intervals.len());
        for (a, b) in data.intervals.iter().zip(&loaded.intervals) {
            assert_eq!(a.start_secs, b.start_secs);
            for phase in Phase::ALL {
                assert_eq!(
                    a.count(phase),
                    b.count(phase),
                    "{phase:?} at {}",
                    a.start_secs
                );
            }
        }
        // Warm-up samples are in the series but not in the window's histograms.
        assert_eq!(data.intervals[0].count(Phase::Rcpt), 30);
        assert_eq!(data.intervals[1].count(Phase::Rcpt), 999);
        assert_eq!(data.phases[&Phase::Rcpt].len(), 3000);
        // The header HdrHistogram's own writers put there, the run's start in it.
        for name in ["run.hlog", "intervals.hlog"] {
            let log = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let header: Vec<&str> = log.lines().take(6).collect();
            assert_eq!(
                header[1..],
                [
                    "#[Histogram log format version 1.3]",
                    "#[StartTime: 1795811045.250 (seconds since epoch), Fri Nov 27 20:24:05 UTC 2026]",
                    "#[BaseTime: 1795811045.250 (seconds since epoch)]",
                    "#[MaxValueDivisor: 1000.000]",
                    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"",
                ],
                "{name}"
            );
            assert!(log.contains("Tag=rcpt,"));
        }
    }

    /// A folder as bulkbench wrote it before the logs had a version and a start time.
    fn write_old_folder(data: &RunData, dir: &Path) {
        data.save(dir).unwrap();
        let mut summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        summary
            .as_object_mut()
            .unwrap()
            .remove("started_at_epoch_secs");
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
        for name in ["run.hlog", "intervals.hlog"] {
            let log = std::fs::read_to_string(dir.join(name)).unwrap();
            let body: Vec<&str> = log
                .lines()
                .filter(|l| !l.starts_with("#[") && !l.starts_with('"'))
                .skip(1)
                .collect();
            let old = format!(
                "#bulkbench latency histograms, microseconds; tags are phases\n\
                 #[StartTime: 0.000 (seconds since epoch)]\n\
                 #[BaseTime: 0.000 (seconds since epoch)]\n\
                 #[MaxValueDivisor: 1000.000]\n{}\n",
                body.join("\n")
            );
            std::fs::write(dir.join(name), old).unwrap();
        }
    }

    #[test]
    fn logs_written_before_the_start_time_was_recorded_still_load() {
        let result = sample_result();
        let data = RunData::new(sample_summary(&result), &result);
        let dir = tempfile::tempdir().unwrap();
        write_old_folder(&data, dir.path());
        let loaded = RunData::load(dir.path()).unwrap();
        assert_eq!(loaded.summary.started_at_epoch_secs, None);
        assert_eq!(loaded.phases[&Phase::Rcpt].len(), 3000);
        assert_eq!(loaded.intervals.len(), data.intervals.len());
        for (a, b) in data.intervals.iter().zip(&loaded.intervals) {
            assert_eq!(a.start_secs, b.start_secs);
            assert_eq!(a.count(Phase::Rcpt), b.count(Phase::Rcpt));
        }
        // Saved again (`report render`), the logs get the start from the stamp.
        loaded.save(dir.path()).unwrap();
        let log = std::fs::read_to_string(dir.path().join("run.hlog")).unwrap();
        assert!(
            log.contains("#[StartTime: 1795811045.000 (seconds since epoch), Fri Nov 27"),
            "{log:.300}"
        );
    }

    #[test]
    fn unknown_tags_are_an_error_not_a_silent_drop() {
        let result = sample_result();
        let data = RunData::new(sample_summary(&result), &result);
        let dir = tempfile::tempdir().unwrap();
        data.save(dir.path()).unwrap();
        let path = dir.path().join("run.hlog");
        let log = std::fs::read_to_string(&path)
            .unwrap()
            .replace("Tag=rcpt,", "Tag=bogus,");
        std::fs::write(&path, log).unwrap();
        let error = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("run.hlog"), "{error}");
    }

    /// Shard `index/count` of the sample workload, as a run against `address` would save
    /// it (labelled as its folder would be).
    fn shard(index: u32, count: u32, address: &str) -> (String, RunData) {
        let result = sample_result();
        let mut summary = sample_summary(&result);
        summary.shard = Some(Shard { index, count });
        summary.target.address = address.to_owned();
        (
            format!("runs/s{index}of{count}"),
            RunData::new(summary, &result),
        )
    }

    fn merge_error(runs: &[(String, RunData)], partial: bool) -> String {
        match merge(runs, partial) {
            Ok(_) => panic!("merged, but must be refused"),
            Err(error) => error.to_string(),
        }
    }

    /// Shards' listen-queue counts merge as the larger (the counters are the host's, and
    /// shards may share one), a shard without them leaves the other's, and their
    /// generator threads add up.
    #[test]
    fn listen_queue_counts_and_generator_threads_merge() {
        let counts = |overflows, drops| Some(ListenQueue { overflows, drops });
        for (a, b, want) in [
            (counts(3, 9), counts(5, 6), counts(5, 9)),
            (counts(3, 9), None, counts(3, 9)),
            (None, None, None),
        ] {
            let mut runs = [shard(0, 2, "127.0.0.1:1"), shard(1, 2, "127.0.0.1:2")];
            runs[0].1.summary.listen_queue = a;
            runs[1].1.summary.listen_queue = b;
            runs[1].1.summary.generator.event_loops = Some(3);
            let merged = merge(&runs, false).unwrap().summary;
            assert_eq!(merged.listen_queue, want, "{a:?} + {b:?}");
            assert_eq!(merged.generator.event_loops, Some(2 + 3));
        }
    }

    #[test]
    fn a_shard_given_twice_is_refused() {
        let runs = [
            shard(0, 2, "127.0.0.1:1"),
            shard(1, 2, "127.0.0.1:2"),
            shard(0, 2, "127.0.0.1:3"),
        ];
        let error = merge_error(&runs, false);
        assert!(error.contains("shard 0/2 is given twice"), "{error}");
        assert!(error.contains("runs/s0of2"), "{error}");
        // --partial allows a missing shard, never a duplicate.
        merge_error(&runs, true);
    }

    #[test]
    fn a_whole_run_does_not_merge_with_anything() {
        let (label, mut whole) = shard(0, 2, "127.0.0.1:1");
        whole.summary.shard = None;
        let runs = [(label.clone(), whole.clone()), shard(1, 2, "127.0.0.1:2")];
        let error = merge_error(&runs, true);
        assert!(error.contains("is a whole run"), "{error}");
        let error = merge_error(&[(label, whole)], true);
        assert!(error.contains("nothing to merge"), "{error}");
        // Shards of different counts overlap as well.
        let error = merge_error(&[shard(0, 2, "a:1"), shard(1, 3, "a:2")], true);
        assert!(error.contains("different counts"), "{error}");
    }

    #[test]
    fn runs_of_different_workloads_or_targets_are_refused() {
        let base = || [shard(0, 2, "127.0.0.1:1"), shard(1, 2, "127.0.0.1:2")];
        let mut runs = base();
        runs[1].1.summary.scenario_fingerprint = Some("00000000000000ff".into());
        let error = merge_error(&runs, false);
        assert!(error.contains("different scenarios"), "{error}");
        assert!(error.contains("00000000000000ff"), "{error}");
        let mut runs = base();
        runs[1].1.summary.seed = 2;
        assert!(merge_error(&runs, false).contains("different seeds"));
        let mut runs = base();
        runs[0].1.summary.trace = Some("saved.jsonl".into());
        assert!(merge_error(&runs, false).contains("trace saved.jsonl"));
        let mut runs = base();
        runs[1].1.summary.target.backend = Some("lmdb".into());
        assert!(merge_error(&runs, false).contains("different backends"));
        // External servers: the same one, or no merge.
        let mut runs = base();
        for (_, run) in &mut runs {
            run.summary.target.external = true;
            run.summary.server = None;
        }
        let error = merge_error(&runs, false);
        assert!(error.contains("different servers"), "{error}");
        runs[1].1.summary.target.address = "127.0.0.1:1".into();
        let merged = merge(&runs, false).unwrap();
        assert_eq!(merged.summary.merged.unwrap().addresses, ["127.0.0.1:1"]);
        runs[1].1.summary.target.external = false;
        assert!(merge_error(&runs, false).contains("different targets"));
    }

    #[test]
    fn a_missing_shard_is_refused_unless_partial_and_then_reported_everywhere() {
        let runs = [shard(0, 3, "127.0.0.1:1"), shard(2, 3, "127.0.0.1:3")];
        let error = merge_error(&runs, false);
        assert!(
            error.contains("shard 1/3 of the workload is missing") && error.contains("--partial"),
            "{error}"
        );
        let merged = merge(&runs, true).unwrap();
        let facts = merged.summary.merged.clone().unwrap();
        assert_eq!((facts.shards, facts.missing), (vec![0, 2], vec![1]));
        // Planned counts are the merged shards' only.
        assert_eq!(merged.summary.expected.sessions, 2 * 300);
        let table = crate::table(&merged.summary);
        let markdown = crate::markdown::run_markdown(&merged, "today", &[]);
        let html = crate::html::run_html(&merged, "today", &[]);
        for (name, text) in [
            ("table", &table),
            ("summary.md", &markdown),
            ("report.html", &html),
        ] {
            assert!(text.contains("PARTIAL MERGE"), "{name}:\n{text}");
            assert!(text.contains("1/3 of 3 missing"), "{name}:\n{text}");
            assert!(
                text.contains("merged shards 0/3, 2/3 (missing 1/3)"),
                "{name}"
            );
        }
        assert!(markdown.find("PARTIAL MERGE") < markdown.find("## Setup"));
    }

    #[test]
    fn a_merged_report_names_its_shards_and_its_servers_truthfully() {
        let runs = [
            shard(2, 3, "127.0.0.1:3"),
            shard(0, 3, "127.0.0.1:1"),
            shard(1, 3, "127.0.0.1:2"),
        ];
        let merged = merge(&runs, false).unwrap();
        let s = &merged.summary;
        assert_eq!(s.shard, None);
        assert_eq!(s.expected.sessions, 3 * 300);
        // Three servers bench started: named, and their figures left out, with the reason.
        assert_eq!(s.server, None);
        let facts = s.merged.as_ref().unwrap();
        assert_eq!(
            facts.addresses,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        );
        assert!(
            facts
                .server_note
                .as_ref()
                .unwrap()
                .contains("do not add up")
        );
        let table = crate::table(s);
        let markdown = crate::markdown::run_markdown(&merged, "today", &[]);
        let html = crate::html::run_html(&merged, "today", &[]);
        for (name, text) in [
            ("table", &table),
            ("summary.md", &markdown),
            ("report.html", &html),
        ] {
            assert!(
                text.contains("merged shards 0/3, 1/3, 2/3"),
                "{name}:\n{text}"
            );
            assert!(
                text.contains("3 bulkbench servers, one per shard, backend memory: 127.0.0.1:1"),
                "{name}:\n{text}"
            );
            assert!(!text.contains("external"), "{name}:\n{text}");
            assert!(text.contains("do not add up"), "{name}:\n{text}");
            assert!(!text.contains("PARTIAL"), "{name}");
        }
        // Saved and loaded back, the facts stay, and the summary still fits its schema.
        let dir = tempfile::tempdir().unwrap();
        merged.save(dir.path()).unwrap();
        assert_eq!(RunData::load(dir.path()).unwrap().summary, merged.summary);
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap())
                .unwrap();
        let schema: serde_json::Value = serde_json::from_str(crate::summary::SCHEMA).unwrap();
        let errors = crate::schema::validate(&schema, &value)
            .err()
            .unwrap_or_default();
        // The sample's scenario is not a full one: only its errors may show.
        assert!(
            errors.iter().all(|e| e.starts_with("$.scenario")),
            "{errors:#?}"
        );
        // A merge is not merged again.
        let again = [("merged".to_owned(), merged.clone()), shard(0, 3, "x:1")];
        assert!(merge_error(&again, true).contains("itself a merge"));
    }

    #[test]
    fn runs_saved_before_starttls_load_validate_and_merge_with_runs_that_used_it() {
        let (_, old) = shard(0, 2, "127.0.0.1:1");
        let dir = tempfile::tempdir().unwrap();
        write_old_folder(&old, dir.path());
        // What a summary and its logs held before STARTTLS: none of its keys or tags.
        let path = dir.path().join("summary.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for totals in ["totals", "warmup_totals"] {
            json[totals]
                .as_object_mut()
                .unwrap()
                .remove("starttls_sessions");
        }
        for phase in ["starttls", "tls_handshake"] {
            json["latency_us"].as_object_mut().unwrap().remove(phase);
        }
        let kinds = [
            "starttls_not_offered",
            "starttls_refused",
            "tls_handshake",
            "tls_certificate",
        ];
        for kind in kinds {
            json["errors"].as_object_mut().unwrap().remove(kind);
        }
        std::fs::write(&path, json.to_string()).unwrap();
        for name in ["run.hlog", "intervals.hlog"] {
            let log = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let kept: Vec<&str> = log
                .lines()
                .filter(|l| !l.starts_with("Tag=starttls,") && !l.starts_with("Tag=tls_handshake,"))
                .collect();
            std::fs::write(dir.path().join(name), kept.join("\n") + "\n").unwrap();
        }
        let schema: serde_json::Value = serde_json::from_str(crate::summary::SCHEMA).unwrap();
        let errors = crate::schema::validate(&schema, &json)
            .err()
            .unwrap_or_default();
        // The sample's scenario is not a full one: only its errors may show.
        assert!(
            errors.iter().all(|e| e.starts_with("$.scenario")),
            "{errors:#?}"
        );
        let old = RunData::load(dir.path()).unwrap();
        assert_eq!(old.summary.totals.starttls_sessions, 0);
        assert!(old.phases[&Phase::TlsHandshake].is_empty());

        // The other shard's sessions used STARTTLS.
        let (label, mut tls) = shard(1, 2, "127.0.0.1:2");
        let mut handshakes = crate::new_full_histogram();
        for v in 1..=50u64 {
            handshakes.record(v * 40).unwrap();
        }
        tls.phases.insert(Phase::TlsHandshake, handshakes);
        tls.summary.totals.starttls_sessions = 50;
        let merged = merge(&[("old".to_owned(), old), (label, tls)], false).unwrap();
        let s = &merged.summary;
        assert_eq!(s.totals.starttls_sessions, 50);
        assert_eq!(s.latency_us["tls_handshake"].count, 50);
        assert_eq!(s.latency_us["starttls"].count, 0);
        for kind in kinds {
            assert_eq!(s.errors.get(kind), Some(&0), "{kind}");
        }
        let table = crate::table(s);
        assert!(table.contains("50 of 600 sessions"), "{table}");
    }

    #[test]
    fn summaries_without_the_new_fields_load_but_do_not_merge() {
        let runs = [shard(0, 2, "127.0.0.1:1"), shard(1, 2, "127.0.0.1:2")];
        let dir = tempfile::tempdir().unwrap();
        write_old_folder(&runs[0].1, dir.path());
        let path = dir.path().join("summary.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for field in ["scenario_fingerprint", "trace", "shard", "merged"] {
            json.as_object_mut().unwrap().remove(field);
        }
        std::fs::write(&path, json.to_string()).unwrap();
        let old = RunData::load(dir.path()).unwrap();
        assert_eq!(old.summary.scenario_fingerprint, None);
        assert_eq!(old.summary.shard, None);
        let error = merge_error(&[("old".to_owned(), old), runs[1].clone()], true);
        assert!(
            error.contains("old was written by an older bulkbench"),
            "{error}"
        );
    }
}
