//! Our output read by tools that are not ours: PyPI's `hdrhistogram` reads the `.hlog`
//! files.
//!
//! A missing tool shows the test as ignored, with the package named, in the test output;
//! with `BULKBENCH_REQUIRE_EXTERNAL=1` (as CI runs) it fails instead. libtest decides what
//! is ignored when it compiles (`#[ignore]`), so this file runs under libtest-mimic
//! (`harness = false` in Cargo.toml), which lets a test report itself ignored when it runs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bulk_loadgen::{Phase, Recorder, RunResult};
use bulk_report::RunData;
use bulk_report::summary::{Expected, Summary, SummaryInput, Target};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    let trials = vec![Trial::ignorable_test(
        "hlog_files_decode_with_the_python_hdrhistogram_reader",
        hlog_files_decode_with_the_python_hdrhistogram_reader,
    )];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

/// What a test does when its tool is missing: fails where every tool is required
/// (`BULKBENCH_REQUIRE_EXTERNAL=1`, as CI runs), else reports itself ignored, naming the
/// package and how to install it.
fn missing(package: &str, install: &str) -> Result<Completion, Failed> {
    if std::env::var_os("BULKBENCH_REQUIRE_EXTERNAL").is_some_and(|v| v == "1") {
        return Err(format!(
            "{package} is required (BULKBENCH_REQUIRE_EXTERNAL=1) but missing: {install}"
        )
        .into());
    }
    Ok(Completion::ignored_with(format!(
        "needs {package}, which is missing: {install}"
    )))
}

fn run_data() -> RunData {
    let mut measured = Recorder::default();
    let mut warmup = Recorder::default();
    for v in 1..=5000u64 {
        for (phase, scale) in [(Phase::Rcpt, 3), (Phase::Session, 40), (Phase::Connect, 1)] {
            measured.record(phase, v * scale);
            measured.record_interval((1 + v / 1000) * 1_000_000, phase, v * scale);
        }
        if v % 50 == 0 {
            warmup.record(Phase::Rcpt, v);
            warmup.record_interval(0, Phase::Rcpt, v);
        }
    }
    let result = RunResult {
        measured,
        warmup,
        window: Duration::from_secs(6),
        elapsed: Duration::from_secs(6),
        ..RunResult::default()
    };
    let summary = Summary::new(
        SummaryInput {
            command: "load".into(),
            started_at: std::time::SystemTime::now(),
            scenario: serde_json::json!({"name": "external"}),
            seed: 1,
            scenario_fingerprint: 0x0123_4567_89ab_cdef,
            trace: None,
            shard: None,
            target: Target {
                address: "127.0.0.1:25".into(),
                external: true,
                backend: None,
                server_cpus: None,
                generator_cpus: None,
                processes: Vec::new(),
            },
            expected: Expected {
                sessions: 0,
                rcpts: 0,
            },
            warmup_secs: 1.0,
            server: None,
            store: None,
            generator_cpu_seconds: 0.0,
            generator_event_loops: 2,
            listen_queue: None,
            cpu_sets: None,
        },
        &result,
    );
    RunData::new(summary, &result)
}

fn have_python_hdrhistogram() -> bool {
    Command::new("python3")
        .args(["-c", "import hdrh.log"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What `read_hlog.py` (PyPI's `hdrhistogram`) reads from `hlog`.
fn python_reader(hlog: &Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/read_hlog.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(hlog)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the reader")
}

fn hlog_files_decode_with_the_python_hdrhistogram_reader() -> Result<Completion, Failed> {
    if !have_python_hdrhistogram() {
        return missing("PyPI package hdrhistogram", "pip install hdrhistogram");
    }
    let data = run_data();
    let dir = tempfile::tempdir().unwrap();
    data.save(dir.path()).unwrap();
    let run = python_reader(&dir.path().join("run.hlog"));
    for (phase, histogram) in &data.phases {
        let total = run["totals"][phase.name()].as_u64().unwrap_or(0);
        assert_eq!(total, histogram.len(), "run.hlog {}", phase.name());
    }
    let series = python_reader(&dir.path().join("intervals.hlog"));
    for phase in Phase::ALL {
        let ours: u64 = data.intervals.iter().map(|i| i.count(phase)).sum();
        let theirs = series["totals"][phase.name()].as_u64().unwrap_or(0);
        assert_eq!(theirs, ours, "intervals.hlog {}", phase.name());
    }
    // 5000 measured RCPTs in six seconds, plus the warm-up second.
    assert_eq!(series["intervals"]["rcpt"], 7);
    assert_eq!(series["totals"]["rcpt"], 5000 + 100);

    // Both logs state their format version and the run's real start, and the reader
    // places the intervals from it: the first interval starts at the start.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let recorded = data.summary.started_at_epoch_secs.unwrap();
    for (name, log) in [("run.hlog", &run), ("intervals.hlog", &series)] {
        assert_eq!(log["version"], "1.3", "{name}: {log}");
        let start = log["start_time_sec"].as_f64().unwrap();
        assert!(
            (now - start).abs() < 86_400.0,
            "{name}: StartTime {start} is not within a day of now ({now})"
        );
        assert!(
            (start - recorded).abs() < 0.001,
            "{name}: {start} vs {recorded}"
        );
    }
    let first = series["first_interval_start_sec"].as_f64().unwrap();
    assert!((first - recorded).abs() < 0.001, "{first} vs {recorded}");
    // run.hlog's one interval per phase is the window, after the warm-up second.
    let window = run["first_interval_start_sec"].as_f64().unwrap();
    assert!(
        (window - recorded - 1.0).abs() < 0.001,
        "{window} vs {recorded}"
    );
    Ok(Completion::Completed)
}
