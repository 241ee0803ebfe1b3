//! Our output read by tools that are not ours: PyPI's `hdrhistogram` reads the `.hlog`
//! files. CI installs the tools and sets `BULKBENCH_REQUIRE_EXTERNAL=1`, which turns a
//! missing tool into a failure; elsewhere a missing tool is skipped, loudly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bulk_loadgen::{Phase, Recorder, RunResult};
use bulk_report::RunData;
use bulk_report::summary::{Expected, Summary, SummaryInput, Target};

/// Whether CI demands every external tool.
fn required() -> bool {
    std::env::var_os("BULKBENCH_REQUIRE_EXTERNAL").is_some_and(|v| v == "1")
}

/// Says loudly that a check was skipped, or fails when CI requires it.
fn missing(tool: &str, how: &str) {
    assert!(
        !required(),
        "{tool} is required (BULKBENCH_REQUIRE_EXTERNAL=1) but missing: {how}"
    );
    eprintln!("\n*** SKIPPED: {tool} is not installed ({how}); this check did not run ***\n");
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
            },
            expected: Expected {
                sessions: 0,
                rcpts: 0,
            },
            warmup_secs: 1.0,
            server: None,
            generator_cpu_seconds: 0.0,
            cpu_sets: None,
        },
        &result,
    );
    RunData::new(summary, &result)
}

fn python_reader(hlog: &Path) -> Option<serde_json::Value> {
    let probe = Command::new("python3")
        .args(["-c", "import hdrh.log"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        missing("PyPI package hdrhistogram", "pip install hdrhistogram");
        return None;
    }
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
    Some(serde_json::from_slice(&output.stdout).expect("JSON from the reader"))
}

#[test]
fn hlog_files_decode_with_the_python_hdrhistogram_reader() {
    let data = run_data();
    let dir = tempfile::tempdir().unwrap();
    data.save(dir.path()).unwrap();
    let Some(run) = python_reader(&dir.path().join("run.hlog")) else {
        return;
    };
    for (phase, histogram) in &data.phases {
        let total = run["totals"][phase.name()].as_u64().unwrap_or(0);
        assert_eq!(total, histogram.len(), "run.hlog {}", phase.name());
    }
    let Some(series) = python_reader(&dir.path().join("intervals.hlog")) else {
        return;
    };
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
}
