//! Comparisons: figures, ratios, regressions, save/load, rendering.

mod common;

use bulk_report::compare::{
    COMPARISON_PLOTS, Check, ONE_REPEAT, Outcome, RunOrder, Spread,
    render_comparison_with_progress, run_order,
};
use bulk_report::{Arm, Comparison, ReportError, Verdict, render_comparison};
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

    // Each ratio has its interval: the halved rate's lies below 1, the unchanged cost's
    // holds 1 (noise); the baseline arm has none, being the base.
    let slow = c.arms.iter().find(|a| a.name == "slow").unwrap();
    let rate = slow.intervals["rcpt_per_sec"];
    assert!(
        rate.low <= 0.5 && 0.5 <= rate.high && rate.high < 0.6,
        "{rate:?}"
    );
    assert!(!rate.is_noise());
    assert!(slow.intervals["server_cpu_us_per_rcpt"].is_noise());
    assert!(c.arms[0].intervals.is_empty());
    assert_eq!(slow.values["rcpt_per_sec"].len(), 3);
    // The same runs, the same intervals (a fixed bootstrap seed).
    assert_eq!(Comparison::new("quick", &arms()), c);
}

#[test]
fn one_repeat_has_no_interval_and_the_report_says_so() {
    let arms = vec![arm_stretched("a", &[1.0]), arm_stretched("b", &[2.0])];
    let c = Comparison::new("quick", &arms);
    assert!(c.arms[1].ratios.contains_key("rcpt_per_sec"));
    assert!(c.arms[1].intervals.is_empty());
    let dir = tempfile::tempdir().unwrap();
    render_comparison(&c, &arms, dir.path()).unwrap();
    for name in ["comparison.md", "comparison.html"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.contains(ONE_REPEAT), "{name}");
    }
}

/// Arm `name` with one run per window stretch: a stretch of 2.0 halves that run's rates.
fn arm_stretched(name: &str, stretches: &[f64]) -> Arm {
    Arm {
        name: name.into(),
        runs: stretches
            .iter()
            .enumerate()
            .map(|(i, &stretch)| {
                run(&Spec {
                    window_scale: stretch,
                    sessions_per_sec: 40 + i as u64,
                    secs: 6,
                    ..Spec::default()
                })
            })
            .collect(),
        error: None,
    }
}

fn check<'a>(verdict: &'a Verdict, arm: &str, metric: &str) -> &'a Check {
    verdict
        .checks
        .iter()
        .find(|c| c.arm == arm && c.metric == metric)
        .unwrap_or_else(|| panic!("no check of {arm} {metric} in {verdict:#?}"))
}

#[test]
fn a_real_regression_fails_by_its_interval() {
    let baseline = Comparison::new("quick", &[arm("fast", 1)]);
    // The same arm name, half the RCPT/s in every repeat, the same latencies.
    let current = Comparison::new("quick", &[arm_stretched("fast", &[2.0, 2.0, 2.0])]);
    let verdict = current.verdict(&baseline, "base", 10.0);
    assert!(!verdict.passed, "{verdict:#?}");
    let drop = check(&verdict, "fast", "rcpt_per_sec");
    assert_eq!(drop.outcome, Outcome::Fail);
    assert!((drop.change_pct() + 50.0).abs() < 2.0, "{drop:?}");
    let interval = drop.interval.unwrap();
    assert!(
        interval.high < 0.9 && interval.low <= drop.ratio,
        "{drop:?}"
    );
    assert_eq!(drop.limit, 0.9);
    let text = drop.to_string();
    assert!(text.contains("FAIL") && text.contains("rcpt_per_sec") && text.contains("fell"));
    assert!(
        verdict.headline().starts_with("FAIL"),
        "{}",
        verdict.headline()
    );
    assert_eq!(
        check(&verdict, "fast", "latency_us.rcpt.p99").outcome,
        Outcome::Pass
    );
    // Tolerating 60%, the same drop passes; against itself nothing fails even at 0%.
    assert!(current.verdict(&baseline, "base", 60.0).passed);
    assert!(baseline.verdict(&baseline, "base", 0.0).passed);

    // Twice the latency: the RCPT p99's interval lies above 1.6.
    let slower = Comparison::new(
        "quick",
        &[Arm {
            name: "fast".into(),
            ..arm("slow", 2)
        }],
    );
    let verdict = slower.verdict(&baseline, "base", 60.0);
    let p99 = check(&verdict, "fast", "latency_us.rcpt.p99");
    assert_eq!(p99.outcome, Outcome::Fail, "{p99:?}");
    assert!(p99.interval.unwrap().low > 1.6, "{p99:?}");

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
    let verdict = failed.verdict(&baseline, "base", 10.0);
    assert_eq!(verdict.checks.len(), 1, "{verdict:#?}");
    assert_eq!(verdict.checks[0].outcome, Outcome::Fail);
    assert_eq!(verdict.checks[0].change_pct(), -100.0);
}

#[test]
fn a_noisy_drop_does_not_fail() {
    let baseline = Comparison::new("quick", &[arm_stretched("a", &[1.0, 1.0, 1.0])]);
    // One repeat, 30% down: no interval, so not judged, and the verdict says why.
    let single = Comparison::new("quick", &[arm_stretched("a", &[1.0 / 0.7])]);
    let verdict = single.verdict(&baseline, "base", 10.0);
    assert!(verdict.passed, "{verdict:#?}");
    let drop = check(&verdict, "a", "rcpt_per_sec");
    assert!(drop.ratio < 0.75, "{drop:?}");
    assert_eq!((drop.outcome, drop.interval), (Outcome::NoInterval, None));
    assert_eq!(drop.note.as_deref(), Some(ONE_REPEAT));
    assert!(
        verdict.headline().contains(ONE_REPEAT),
        "{}",
        verdict.headline()
    );
    // Three repeats whose median is 20% down, but one of them as fast as the baseline:
    // the interval reaches past the limit, so the drop is noise, not a regression.
    let noisy = Comparison::new("quick", &[arm_stretched("a", &[1.0, 1.25, 1.6])]);
    let verdict = noisy.verdict(&baseline, "base", 10.0);
    let drop = check(&verdict, "a", "rcpt_per_sec");
    assert!(drop.ratio < 0.85, "{drop:?}");
    assert_eq!(drop.outcome, Outcome::Pass, "{drop:?}");
    assert!(drop.interval.unwrap().high >= 0.9, "{drop:?}");
    assert!(verdict.passed);
}

#[test]
fn a_version_1_baseline_is_read_and_its_median_held_exact() {
    let dir = tempfile::tempdir().unwrap();
    Comparison::new("quick", &[arm("fast", 1)])
        .save(dir.path())
        .unwrap();
    // What version 1 saved: no per-repeat figures, intervals, order or verdict.
    let path = dir.path().join("comparison.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["schema_version"] = 1.into();
    for key in ["interval_method", "run_order", "verdict"] {
        json.as_object_mut().unwrap().remove(key);
    }
    for arm in json["arms"].as_array_mut().unwrap() {
        arm.as_object_mut().unwrap().remove("values");
        arm.as_object_mut().unwrap().remove("intervals");
    }
    std::fs::write(&path, json.to_string()).unwrap();
    let old = Comparison::load(dir.path()).unwrap();
    assert!(old.arms[0].values.is_empty());
    let current = Comparison::new("quick", &[arm_stretched("fast", &[2.0, 2.0, 2.0])]);
    let verdict = current.verdict(&old, "old", 10.0);
    let drop = check(&verdict, "fast", "rcpt_per_sec");
    assert_eq!(drop.outcome, Outcome::Fail, "{drop:?}");
    assert!(
        drop.note.as_deref().unwrap().contains("version 1"),
        "{drop:?}"
    );
}

#[test]
fn the_run_order_is_seeded_and_changes_from_repeat_to_repeat() {
    for arms in [2, 3, 5] {
        let order = run_order(arms, 6, 1);
        assert_eq!(order, run_order(arms, 6, 1), "deterministic per seed");
        assert_eq!(order.len(), 6);
        for repeat in &order {
            let mut sorted = repeat.clone();
            sorted.sort();
            assert_eq!(sorted, (0..arms).collect::<Vec<_>>(), "a permutation");
        }
        for pair in order.windows(2) {
            assert_ne!(pair[0], pair[1], "{arms} arms: {order:?}");
        }
        // Another seed, other orders.
        assert!(
            (2..20).any(|seed| run_order(arms, 6, seed) != order),
            "{arms} arms"
        );
    }
    // Two arms alternate, so each runs first as often as the other.
    let two = run_order(2, 4, 9);
    assert_eq!(two[0], two[2]);
    assert_ne!(two[0], two[1]);
    assert_eq!(run_order(1, 3, 1), vec![vec![0]; 3]);
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
    assert_eq!(json["schema_version"], 2);

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
    let mut c = Comparison::new("quick", &arms);
    c.run_order = Some(RunOrder {
        seed: 7,
        repeats: vec![
            vec!["slow".into(), "fast".into()],
            vec!["fast".into(), "slow".into()],
        ],
    });
    // Checked against a baseline in which "slow" was as fast as "fast": it regressed.
    let baseline = Comparison::new(
        "quick",
        &[
            arm("fast", 1),
            Arm {
                name: "slow".into(),
                ..arm("fast", 1)
            },
        ],
    );
    c.verdict = Some(c.verdict(&baseline, "reports/base", 10.0));
    let dir = tempfile::tempdir().unwrap();
    let files = render_comparison(&c, &arms, dir.path()).unwrap();
    assert_eq!(files.len(), COMPARISON_PLOTS.len() * 2 + 2);
    // The verdict and the order are in all three files, the verdict among the problems.
    c.save(dir.path()).unwrap();
    let saved = Comparison::load(dir.path()).unwrap();
    assert_eq!(saved.verdict, c.verdict);
    assert!(!saved.verdict.as_ref().unwrap().passed);
    assert_eq!(saved.run_order, c.run_order);
    for name in ["comparison.md", "comparison.html"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        for needle in [
            "Against the baseline",
            "FAIL: 2 figures regressed beyond 10% against reports/base",
            "REGRESSION against the baseline",
            "upper bound ≥ 0.9",
            "lower bound ≤ 1.1",
            "seed 7: repeat 1: slow, fast; repeat 2: fast, slow",
            "10,000 resamples",
            " noise",
        ] {
            assert!(text.contains(needle), "{name} lacks {needle:?}");
        }
        let problem = text.find("REGRESSION against the baseline").unwrap();
        assert!(problem < text.find("Side by side").unwrap(), "{name}");
    }
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

#[test]
fn arms_with_a_store_of_their_own_show_its_cost_and_the_whole() {
    use bulk_report::summary::StoreCost;
    let mut with_store = arm("redis", 1);
    for run in &mut with_store.runs {
        run.summary.store = Some(StoreCost {
            kind: "redis".into(),
            cpu_seconds: 1.0,
            cpu_us_per_rcpt: 4.0,
        });
    }
    let embedded = arm("memory", 1);
    let c = Comparison::new("quick", &[embedded.clone(), with_store.clone()]);
    let (memory, redis) = (&c.arms[0], &c.arms[1]);
    assert!(memory.store_cpu_us_per_rcpt.is_none());
    assert_eq!(
        memory.whole_cpu_us_per_rcpt.unwrap().median,
        memory.server_cpu_us_per_rcpt.unwrap().median
    );
    let whole = redis.whole_cpu_us_per_rcpt.unwrap().median;
    let server = redis.server_cpu_us_per_rcpt.unwrap().median;
    assert!(
        (whole - (server + 4.0)).abs() < 0.01 * whole,
        "{whole} vs {server} + 4"
    );
    let dir = tempfile::tempdir().unwrap();
    render_comparison(&c, &[embedded, with_store], dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("comparison.md")).unwrap();
    assert!(md.contains("store CPU µs/RCPT"), "{md}");
    assert!(md.contains("server + store CPU µs/RCPT"), "{md}");
    assert!(
        md.contains("in the server"),
        "the embedded arm's store cell: {md}"
    );
}

/// An arm whose runs met full listen queues is a problem of the comparison, with a row of
/// its own; arms that read no counters add no row.
#[test]
fn listen_queue_overflows_of_an_arm_are_a_problem() {
    use bulk_report::summary::ListenQueue;
    let quiet = arm("quiet", 1);
    let c = Comparison::new("quick", std::slice::from_ref(&quiet));
    assert!(c.arms[0].listen_overflows.is_none());
    let dir = tempfile::tempdir().unwrap();
    render_comparison(&c, std::slice::from_ref(&quiet), dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("comparison.md")).unwrap();
    assert!(!md.contains("listen-queue overflows"), "{md}");

    let mut burst = arm("burst", 1);
    for (run, overflows) in burst.runs.iter_mut().zip([0, 40, 7]) {
        run.summary.listen_queue = Some(ListenQueue {
            overflows,
            drops: overflows,
        });
    }
    let c = Comparison::new("quick", &[quiet.clone(), burst.clone()]);
    let figures = c.arms[1].listen_overflows.unwrap();
    assert_eq!((figures.median, figures.max), (7.0, 40.0));
    let dir = tempfile::tempdir().unwrap();
    render_comparison(&c, &[quiet, burst], dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("comparison.md")).unwrap();
    assert!(md.contains("arm burst: LISTEN QUEUE OVERFLOWS"), "{md}");
    assert!(md.contains("| listen-queue overflows |"), "{md}");
    assert!(!md.contains("arm quiet: LISTEN"), "{md}");
}
