//! Report folders as a person sees them: every file, HTML with its plots, percentile files,
//! interval logs, shard merges, and comparisons. How tools that are not ours read them (a
//! real browser, another HdrHistogram implementation): `external_tools.rs`.

use std::path::{Path, PathBuf};

mod common;

use common::{build_population, ok, run, serve};
const PLOTS: [&str; 5] = [
    "latency_spectrum",
    "throughput",
    "rcpt_latency_over_time",
    "verdicts",
    "phase_breakdown",
];
const PHASES: [&str; 11] = [
    "schedule_lag",
    "connect",
    "greeting",
    "ehlo",
    "rset",
    "from",
    "rcpt",
    "data",
    "end_of_data",
    "quit",
    "session",
];

const SCENARIO: &str = r#"
name = "reports"
seed = 11
[population]
mailboxes = 3000
domains = 20
[workload]
mode = "closed"
sessions = 600
concurrency = 20
recipients_max = 20
message_size_min = 200
message_size_max = 2000
warmup_secs = WARMUP
"#;

/// The test scenario with `warmup` seconds of warm-up (comparisons use none: a fast arm
/// could otherwise finish inside the warm-up and have no window at all).
fn scenario_with(dir: &Path, warmup: &str) -> PathBuf {
    let path = dir.join("reports.toml");
    std::fs::write(&path, SCENARIO.replace("WARMUP", warmup)).unwrap();
    path
}

/// Rows of an .hgrm file: (value, percentile, total count).
fn hgrm_rows(text: &str) -> Vec<(f64, f64, u64)> {
    text.lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_run_folder_has_every_file_and_each_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    // Sized in time, so the 0.2 s warm-up never holds the whole run (600 sessions can
    // end within it on a fast machine).
    let scenario = dir.path().join("reports.toml");
    std::fs::write(
        &scenario,
        SCENARIO
            .replace("WARMUP", "0.2")
            .replace("sessions = 600", "duration_secs = 1.0"),
    )
    .unwrap();
    let out = dir.path().join("run");
    ok(&[
        "bench",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);

    for name in [
        "summary.json",
        "summary.md",
        "report.html",
        "run.hlog",
        "intervals.hlog",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    for phase in PHASES {
        assert!(
            out.join(format!("{phase}.hgrm")).is_file(),
            "{phase}.hgrm missing"
        );
    }
    for plot in PLOTS {
        for ext in ["svg", "png"] {
            let path = out.join(format!("{plot}.{ext}"));
            assert!(
                std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
                "{plot}.{ext}"
            );
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<img").count(),
        html.matches("src=\"data:image/").count()
    );
    assert!(
        html.matches("src=\"data:image/").count() >= PLOTS.len(),
        "every plot embedded"
    );
    assert!(!html.contains("<script"), "no script in the report");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network"
    );
    let markdown = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(markdown.contains("reports"), "{markdown}");

    // Each .hgrm parses back to the run's percentile distribution: row for row, the value,
    // percentile and count of the histogram's own percentile iteration (as HdrHistogram's
    // tools print it), and the last row's count is the phase's count.
    let summary = common::summary(&out);
    let saved = bulk_report::RunData::load(&out).unwrap();
    for phase in bulk_loadgen::Phase::ALL {
        let text = std::fs::read_to_string(out.join(format!("{}.hgrm", phase.name()))).unwrap();
        let rows = hgrm_rows(&text);
        let histogram = &saved.phases[&phase];
        let count = summary["latency_us"][phase.name()]["count"]
            .as_u64()
            .unwrap();
        assert_eq!(
            rows.last().map_or(0, |r| r.2),
            count,
            "{} count",
            phase.name()
        );
        let mut total = 0;
        let steps: Vec<(f64, f64, u64)> = histogram
            .iter_quantiles(5)
            .map(|step| {
                total += step.count_since_last_iteration();
                (
                    step.value_iterated_to() as f64,
                    step.quantile_iterated_to(),
                    total,
                )
            })
            .collect();
        assert_eq!(rows.len(), steps.len(), "{} rows", phase.name());
        for (row, step) in rows.iter().zip(&steps) {
            assert!(
                (row.0 - step.0).abs() < 0.001,
                "{} value {row:?} vs {step:?}",
                phase.name()
            );
            assert!(
                (row.1 - step.1).abs() < 1e-9,
                "{} percentile {row:?} vs {step:?}",
                phase.name()
            );
            assert_eq!(row.2, step.2, "{} count", phase.name());
        }
        if count > 0 {
            let p50 = summary["latency_us"][phase.name()]["p50"].as_u64().unwrap();
            assert_eq!(
                histogram.value_at_quantile(0.5),
                p50,
                "{} p50",
                phase.name()
            );
        }
    }

    // Re-rendering from the saved results gives the same summary.
    let before = std::fs::read_to_string(out.join("summary.md")).unwrap();
    std::fs::remove_file(out.join("report.html")).unwrap();
    ok(&["report", "render", out.to_str().unwrap()]);
    assert!(out.join("report.html").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("summary.md")).unwrap(),
        before
    );
}

#[test]
fn merged_shards_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    // No warm-up: a shard of this small workload ends within the usual 0.2 s.
    let scenario = scenario_with(dir.path(), "0.0");
    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    let server = serve(&["--population", population.to_str().unwrap()]);
    let load = |name: &str, shard: Option<&str>| -> PathBuf {
        let out = dir.path().join(name);
        let extra = match shard {
            Some(shard) => vec!["--shard", shard],
            None => Vec::new(),
        };
        let output = common::load(&scenario, &server, &out, &extra);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    };
    let whole = load("whole", None);
    let a = load("a", Some("0/2"));
    let b = load("b", Some("1/2"));
    let merged = dir.path().join("merged");
    ok(&[
        "report",
        "merge",
        "-o",
        merged.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let (w, m) = (common::summary(&whole), common::summary(&merged));
    let both = |key: &str| {
        let (w, m) = (&w["totals"][key], &m["totals"][key]);
        assert_eq!(w, m, "totals.{key}");
    };
    for key in [
        "sessions",
        "sessions_completed",
        "rcpts",
        "messages",
        "by_class",
    ] {
        // Warm-up splits sessions differently between runs: compare measured + warm-up.
        let sum = |s: &serde_json::Value| -> serde_json::Value {
            let (t, u) = (&s["totals"][key], &s["warmup_totals"][key]);
            match (t, u) {
                (serde_json::Value::Object(t), serde_json::Value::Object(u)) => t
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            (v.as_u64().unwrap() + u[k].as_u64().unwrap()).into(),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                _ => (t.as_u64().unwrap() + u.as_u64().unwrap()).into(),
            }
        };
        assert_eq!(sum(&w), sum(&m), "totals.{key} with warm-up");
    }
    let _ = both;
    assert_eq!(w["expected"], m["expected"]);
    // The shards' generator threads add up; the host-wide listen counters are the larger
    // shard's.
    let (sa, sb) = (common::summary(&a), common::summary(&b));
    let threads = |s: &serde_json::Value| s["generator"]["event_loops"].as_u64().unwrap();
    assert_eq!(threads(&m), threads(&sa) + threads(&sb));
    let overflows = |s: &serde_json::Value| s["listen_queue"]["overflows"].as_u64().unwrap();
    assert_eq!(overflows(&m), overflows(&sa).max(overflows(&sb)));
    assert_eq!(m["mismatches"]["total"], 0);
    // Histogram totals: the merged series holds every RCPT and session of both shards.
    let series_total = |dir: &Path, phase: &str| -> u64 {
        let data = bulk_report::RunData::load(dir).unwrap();
        let phase = bulk_loadgen::Phase::ALL
            .into_iter()
            .find(|p| p.name() == phase)
            .unwrap();
        data.intervals.iter().map(|i| i.count(phase)).sum()
    };
    for phase in ["rcpt", "session", "connect"] {
        assert_eq!(
            series_total(&whole, phase),
            series_total(&merged, phase),
            "{phase} series"
        );
    }
    assert!(merged.join("report.html").is_file());
    // The merged report says what it is made of, and the server the shards ran against.
    assert_eq!(m["merged"]["shards"], serde_json::json!([0, 1]));
    assert_eq!(m["shard"], serde_json::Value::Null);
    assert_eq!(
        common::summary(&a)["shard"],
        serde_json::json!({"index": 0, "count": 2})
    );
    assert_eq!(w["shard"], serde_json::Value::Null);
    assert_eq!(w["scenario_fingerprint"].as_str().unwrap().len(), 16);
    let report = std::fs::read_to_string(merged.join("summary.md")).unwrap();
    assert!(report.contains("merged shards 0/2, 1/2"), "{report}");
    assert!(report.contains(&format!("{} (external server)", server.addr)));

    // What would count sessions twice, or add up different workloads, is refused.
    let refused = |dirs: &[&Path], partial: bool, why: &str| {
        let out = dir.path().join(format!("refused-{}", why.len()));
        let mut args = vec!["report", "merge", "-o", out.to_str().unwrap()];
        if partial {
            args.push("--partial");
        }
        args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(!out.exists(), "a refused merge writes no report");
    };
    refused(&[&a, &b, &a], true, "shard 0/2 is given twice");
    refused(&[&whole, &b], true, "is a whole run");
    refused(&[&b], false, "shard 0/2 of the workload is missing");
    let other_text = SCENARIO
        .replace("WARMUP", "0.0")
        .replace("recipients_max = 20", "recipients_max = 19");
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other_scenario = other_dir.join("reports.toml");
    std::fs::write(&other_scenario, other_text).unwrap();
    let other = dir.path().join("other-run");
    let output = common::load(&other_scenario, &server, &other, &["--shard", "1/2"]);
    assert!(output.status.success());
    refused(&[&a, &other], false, "different scenarios");

    // With --partial a missing shard is merged and said, in every rendering.
    let partial = dir.path().join("partial");
    let output = ok(&[
        "report",
        "merge",
        "--partial",
        "-o",
        partial.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for text in [
        stdout.into_owned(),
        std::fs::read_to_string(partial.join("summary.md")).unwrap(),
        std::fs::read_to_string(partial.join("report.html")).unwrap(),
    ] {
        assert!(text.contains("PARTIAL MERGE"), "{text}");
        assert!(
            text.to_lowercase().contains("shard 0/2 of 2 missing"),
            "{text}"
        );
    }
    assert_eq!(
        common::summary(&partial)["merged"]["missing"],
        serde_json::json!([0])
    );
}

#[test]
fn merged_bench_shards_name_their_servers_not_an_external_one() {
    let dir = tempfile::tempdir().unwrap();
    // No warm-up: a shard of this small workload may end within 0.2 s.
    let scenario = scenario_with(dir.path(), "0.0");
    let bench = |name: &str, shard: &str| -> PathBuf {
        let out = dir.path().join(name);
        ok(&[
            "bench",
            scenario.to_str().unwrap(),
            "--shard",
            shard,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        out
    };
    let (a, b) = (bench("a", "0/2"), bench("b", "1/2"));
    let merged = dir.path().join("merged");
    let output = ok(&[
        "report",
        "merge",
        "-o",
        merged.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let m = common::summary(&merged);
    assert_eq!(m["server"], serde_json::Value::Null);
    assert!(
        m["merged"]["server_note"]
            .as_str()
            .unwrap()
            .contains("do not add up")
    );
    for text in [
        stdout.into_owned(),
        std::fs::read_to_string(merged.join("summary.md")).unwrap(),
        std::fs::read_to_string(merged.join("report.html")).unwrap(),
    ] {
        assert!(
            text.contains("2 bulkbench servers, one per shard, backend memory"),
            "{text}"
        );
        assert!(text.contains("merged shards 0/2, 1/2"), "{text}");
        assert!(!text.contains("external"), "{text}");
    }
}

#[test]
fn compare_ranks_a_slower_backend_below_and_catches_regressions() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_with(dir.path(), "0.0");
    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    let fast = serve(&["--population", population.to_str().unwrap()]);
    let slow = serve(&[
        "--population",
        population.to_str().unwrap(),
        "--lookup-delay-us",
        "20000",
    ]);
    let out = dir.path().join("cmp");
    let fast_arm = format!("fast={}", fast.addr);
    let slow_arm = format!("slow={}", slow.addr);
    // The fast server's process is named: its CPU is measured, the slow one's is not.
    let fast_pid = format!("fast={}", fast.child.id());
    let unknown = run(&[
        "compare",
        scenario.to_str().unwrap(),
        "--target",
        &fast_arm,
        "--target-pid",
        "quick=1",
    ]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no --target is named \"quick\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    ok(&[
        "compare",
        scenario.to_str().unwrap(),
        "--target",
        &fast_arm,
        "--target",
        &slow_arm,
        "--target-pid",
        &fast_pid,
        "--repeat",
        "2",
        "--order-seed",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    for name in ["comparison.json", "comparison.md", "comparison.html"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    assert_eq!(common::check_compare_runs(&out), 4, "two arms, two repeats");
    let text = std::fs::read_to_string(out.join("comparison.json")).unwrap();
    let comparison: bulk_report::compare::Comparison = serde_json::from_str(&text).unwrap();
    let arm = |c: &bulk_report::compare::Comparison, name: &str| {
        c.arms.iter().find(|a| a.name == name).cloned().unwrap()
    };
    let (f, s) = (arm(&comparison, "fast"), arm(&comparison, "slow"));
    assert_eq!((f.repeats, s.repeats), (2, 2));
    let median = |a: &bulk_report::compare::ArmFigures, key: &str| a.metric(key).unwrap().median;
    assert!(median(&f, "server_cpu_us_per_rcpt") > 0.0, "{text}");
    assert!(s.metric("server_cpu_us_per_rcpt").is_none(), "{text}");
    assert!(
        median(&f, "rcpt_per_sec") > 1.5 * median(&s, "rcpt_per_sec"),
        "{text}"
    );
    assert!(
        median(&f, "latency_us.rcpt.p99") < median(&s, "latency_us.rcpt.p99"),
        "{text}"
    );
    assert!(
        s.ratios["rcpt_per_sec"] < 0.67,
        "ratio to the first arm: {text}"
    );
    // Two repeats each: the ratio has its interval, far from 1.
    let interval = s.intervals["rcpt_per_sec"];
    assert!(interval.high < 0.8 && !interval.is_noise(), "{text}");
    // The arms ran in the order the seed draws, recorded.
    let order = comparison.run_order.as_ref().expect("run order recorded");
    let names = ["fast", "slow"];
    let drawn: Vec<Vec<String>> = bulk_report::compare::run_order(2, 2, 5)
        .iter()
        .map(|repeat| repeat.iter().map(|&i| names[i].to_owned()).collect())
        .collect();
    assert_eq!((order.seed, &order.repeats), (5, &drawn));
    let markdown = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(
        markdown.contains("run order (seed 5: repeat 1: "),
        "{markdown}"
    );

    // Against the fast arm as a baseline, the slow server under the same name regresses:
    // the whole interval of its RCPT/s ratio lies below 0.8. The verdict is in every file.
    let regressed = dir.path().join("cmp2");
    let renamed = format!("fast={}", slow.addr);
    let baseline = out.to_str().unwrap().to_owned();
    let against_baseline = |repeat: &str, out: &Path| {
        run(&[
            "compare",
            scenario.to_str().unwrap(),
            "--target",
            &renamed,
            "--repeat",
            repeat,
            "--baseline",
            &baseline,
            "--max-regression",
            "20",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
    };
    let output = against_baseline("2", &regressed);
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("REGRESSIONS"));
    let saved = bulk_report::Comparison::load(&regressed).unwrap();
    let verdict = saved.verdict.expect("the verdict is saved");
    assert!(!verdict.passed);
    let check = verdict
        .checks
        .iter()
        .find(|c| c.metric == "rcpt_per_sec")
        .unwrap();
    assert_eq!(check.outcome, bulk_report::compare::Outcome::Fail);
    assert!(check.interval.unwrap().high < 0.8, "{check:?}");
    for name in ["comparison.md", "comparison.html"] {
        let text = std::fs::read_to_string(regressed.join(name)).unwrap();
        assert!(text.contains("Against the baseline"), "{name}");
        assert!(text.contains("FAIL: "), "{name}");
        assert!(text.contains("REGRESSION against the baseline"), "{name}");
    }

    // One repeat has no interval: the same drop is not judged, and the reports say why.
    let single = dir.path().join("cmp-single");
    let output = against_baseline("1", &single);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let verdict = bulk_report::Comparison::load(&single)
        .unwrap()
        .verdict
        .unwrap();
    assert!(verdict.passed);
    assert!(
        verdict
            .checks
            .iter()
            .all(|c| c.outcome == bulk_report::compare::Outcome::NoInterval)
    );
    for name in ["comparison.md", "comparison.html"] {
        let text = std::fs::read_to_string(single.join(name)).unwrap();
        assert!(text.contains("PASS: "), "{name}");
        assert!(text.contains(bulk_report::compare::ONE_REPEAT), "{name}");
    }

    // An arm that cannot run is reported as failed; the others complete.
    let failing = dir.path().join("cmp3");
    let nobody = "dead=127.0.0.1:9";
    let output = run(&[
        "compare",
        scenario.to_str().unwrap(),
        "--target",
        &fast_arm,
        "--target",
        nobody,
        "--repeat",
        "1",
        "--out",
        failing.to_str().unwrap(),
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(5), "{stdout}");
    let comparison: bulk_report::compare::Comparison =
        serde_json::from_str(&std::fs::read_to_string(failing.join("comparison.json")).unwrap())
            .unwrap();
    let arm = |name: &str| comparison.arms.iter().find(|a| a.name == name).unwrap();
    assert!(
        arm("dead")
            .error
            .as_deref()
            .unwrap_or("")
            .contains("connect_refused"),
        "{stdout}"
    );
    assert_eq!(arm("fast").repeats, 1);
}
