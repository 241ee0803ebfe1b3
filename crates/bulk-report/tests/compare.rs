//! Comparisons: figures, ratios, regressions, save/load, rendering.

mod common;

use bulk_report::compare::{COMPARISON_PLOTS, Spread, render_comparison_with_progress};
use bulk_report::{Arm, Comparison, ReportError, render_comparison};
use common::{Spec, run};

/// Three repeats of an arm, differing a little; `slowdown` doubles every latency and
/// stretches the window, so every rate is 1/slowdown.
fn arm(name: &str, slowdown: u64) -> Arm {
    Arm {
        name: name.into(),
        runs: (0..3)
            .map(|i| {
                run(&Spec {
                    latency_scale: slowdown,
                    window_scale: slowdown as f64,
                    sessions_per_sec: 40 + i,
                    secs: 6,
                    ..Spec::default()
                })
            })
            .collect(),
        error: None,
    }
}

/// Arm `fast`, and arm `slow`: every latency doubled, half the RCPT/s.
fn arms() -> Vec<Arm> {
    vec![arm("fast", 1), arm("slow", 2)]
}

fn ratio(c: &Comparison, arm: &str, key: &str) -> f64 {
    let arm = c.arms.iter().find(|a| a.name == arm).unwrap();
    *arm.ratios
        .get(key)
        .unwrap_or_else(|| panic!("no ratio {key}"))
}

#[test]
fn ratios_rank_the_slower_arm_right() {
    let c = Comparison::new("quick", &arms());
    assert_eq!(c.baseline.as_deref(), Some("fast"));
    assert_eq!(c.arms[0].repeats, 3);
    assert_eq!(ratio(&c, "fast", "rcpt_per_sec"), 1.0);
    let rcpt_rate = ratio(&c, "slow", "rcpt_per_sec");
    assert!((rcpt_rate - 0.5).abs() < 1e-9, "{rcpt_rate}");
    let p99 = ratio(&c, "slow", "latency_us.rcpt.p99");
    assert!((1.9..2.1).contains(&p99), "{p99}");
    let session_p50 = ratio(&c, "slow", "latency_us.session.p50");
    assert!((1.9..2.1).contains(&session_p50), "{session_p50}");
    // The spread covers the repeats.
    let rate: Spread = c.arms[0].rcpt_per_sec.unwrap();
    assert!(rate.min < rate.median && rate.median < rate.max, "{rate:?}");
    // The same server CPU seconds for the same RCPTs: the same cost per RCPT.
    assert_eq!(ratio(&c, "slow", "server_cpu_us_per_rcpt"), 1.0);
    assert_eq!(ratio(&c, "slow", "peak_rss_bytes"), 1.0);
}

#[test]
fn regressions_beyond_the_threshold_only() {
    let all = arms();
    let fast = &all[0];
    let baseline = Comparison::new("quick", std::slice::from_ref(fast));
    // The same arm name, half the RCPT/s, the same latencies.
    let mut halved = arm("fast", 1);
    for (i, run_data) in halved.runs.iter_mut().enumerate() {
        *run_data = run(&Spec {
            window_scale: 2.0,
            sessions_per_sec: 40 + i as u64,
            secs: 6,
            ..Spec::default()
        });
    }
    let current = Comparison::new("quick", &[halved]);
    let found = current.regressions(&baseline, 10.0);
    let drop = found
        .iter()
        .find(|r| r.metric == "rcpt_per_sec")
        .unwrap_or_else(|| panic!("no RCPT/s regression in {found:?}"));
    assert!((drop.change_pct + 50.0).abs() < 1e-6, "{drop:?}");
    assert_eq!(drop.arm, "fast");
    let text = drop.to_string();
    assert!(text.contains("fast") && text.contains("rcpt_per_sec") && text.contains("fell"));
    assert!(
        !found.iter().any(|r| r.metric == "latency_us.rcpt.p99"),
        "{found:?}"
    );
    assert!(
        current.regressions(&baseline, 60.0).is_empty(),
        "{:?}",
        current.regressions(&baseline, 60.0)
    );
    // Against itself: nothing.
    assert!(baseline.regressions(&baseline, 0.0).is_empty());

    // Twice the latency: the RCPT p99 rises 100%.
    let slow = Arm {
        name: "fast".into(),
        ..all[1].clone()
    };
    let slower = Comparison::new("quick", &[slow]);
    let found = slower.regressions(&baseline, 60.0);
    let p99 = found
        .iter()
        .find(|r| r.metric == "latency_us.rcpt.p99")
        .unwrap_or_else(|| panic!("no p99 regression in {found:?}"));
    assert!(p99.change_pct > 90.0, "{p99:?}");

    // An arm that ran before and fails now is a regression; an unknown arm is not.
    let failed = Comparison::new(
        "quick",
        &[
            Arm {
                name: "fast".into(),
                runs: Vec::new(),
                error: Some("server did not start".into()),
            },
            Arm {
                name: "new".into(),
                runs: Vec::new(),
                error: None,
            },
        ],
    );
    let found = failed.regressions(&baseline, 10.0);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].change_pct, -100.0);
}

#[test]
fn save_and_load_round_trip() {
    let c = Comparison::new("quick", &arms());
    let dir = tempfile::tempdir().unwrap();
    c.save(dir.path()).unwrap();
    let loaded = Comparison::load(dir.path()).unwrap();
    assert_eq!(loaded, c);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("comparison.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema_version"], 1);

    // Another version is refused, not misread.
    let mut json = json;
    json["schema_version"] = 99.into();
    std::fs::write(
        dir.path().join("comparison.json"),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        Comparison::load(dir.path()),
        Err(ReportError::SchemaVersion { found: 99, .. })
    ));
}

#[test]
fn render_writes_every_file_failed_arms_first() {
    let mut arms = arms();
    arms.push(Arm {
        name: "broken <arm>".into(),
        runs: Vec::new(),
        error: Some("server exited: <signal 9> & gone".into()),
    });
    // An external target: no server cost.
    arms.push(Arm {
        name: "external".into(),
        runs: vec![run(&Spec {
            server: None,
            secs: 4,
            ..Spec::default()
        })],
        error: None,
    });
    let c = Comparison::new("quick", &arms);
    let dir = tempfile::tempdir().unwrap();
    let files = render_comparison(&c, &arms, dir.path()).unwrap();
    assert_eq!(files.len(), COMPARISON_PLOTS.len() * 2 + 2);
    for name in COMPARISON_PLOTS {
        for ext in ["svg", "png"] {
            let path = dir.path().join(format!("{name}.{ext}"));
            assert!(path.is_file(), "{} missing", path.display());
            assert!(files.contains(&path));
        }
    }
    let html = std::fs::read_to_string(dir.path().join("comparison.html")).unwrap();
    assert_eq!(html.matches("<img").count(), COMPARISON_PLOTS.len());
    assert_eq!(
        html.matches("<img src=\"data:image/svg+xml;base64,")
            .count(),
        COMPARISON_PLOTS.len()
    );
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    let failed = html
        .find("broken &lt;arm&gt; FAILED")
        .expect("failed arm shown");
    assert!(failed < html.find("Side by side").unwrap());
    assert!(html.contains("server exited: &lt;signal 9&gt; &amp; gone"));
    assert!(html.contains("external"));

    let md = std::fs::read_to_string(dir.path().join("comparison.md")).unwrap();
    let failed = md.find("FAILED").expect("failed arm in markdown");
    assert!(failed < md.find("## Side by side").unwrap());
    for needle in [
        "| RCPT/s |",
        "rcpt p99 (ms)",
        "server CPU µs/RCPT",
        "x0.5",
        "failed",
    ] {
        assert!(md.contains(needle), "comparison.md lacks {needle:?}");
    }
}

#[test]
fn a_comparison_of_failed_arms_only_renders() {
    let arms = vec![Arm {
        name: "only".into(),
        runs: Vec::new(),
        error: Some("no server".into()),
    }];
    let c = Comparison::new("quick", &arms);
    assert_eq!(c.baseline, None);
    let dir = tempfile::tempdir().unwrap();
    let steps = std::sync::atomic::AtomicUsize::new(0);
    render_comparison_with_progress(&c, &arms, dir.path(), &|_, _| {
        steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(steps.into_inner(), COMPARISON_PLOTS.len() + 3);
}
