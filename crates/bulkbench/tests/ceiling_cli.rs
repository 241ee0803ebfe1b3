//! `bulkbench bench --ceiling` as a user runs it: the measured run, then the same workload
//! against `serve --backend canned:SHARE`, recorded in the measured run's report.

use std::path::Path;

mod common;

use common::{run, summary};

/// A tiny workload of BULK sessions only, so the canned rule's share governs every RCPT.
const SCENARIO: &str = r#"
name = "ceiling"
seed = 5
[population]
mailboxes = 3000
domains = 30
[workload]
mode = "closed"
sessions = 300
concurrency = 20
bulk_share = 1.0
recipients_min = 1
recipients_max = 30
message_size_min = 300
message_size_max = 3000
warmup_secs = 0.0
timeout_ms = 5000
"#;

#[test]
fn bench_ceiling_records_the_canned_arm_and_every_report_says_it_is_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("ceiling.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = dir.path().join("report");
    let output = run(&[
        "bench",
        scenario.to_str().unwrap(),
        "--ceiling",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // summary() checks the whole document, ceiling included, against the schema.
    let s = summary(&out);
    assert_eq!(
        s["mismatches"]["total"], 0,
        "the measured run is still verified"
    );
    let c = &s["ceiling"];
    assert!(c.is_object(), "no ceiling in {s}");
    assert_eq!(c["verified"], false);
    assert_eq!(c["interrupted"], false);
    assert_eq!(c["sessions_failed"], 0, "{c}");
    let rcpts = c["rcpts"].as_u64().unwrap();
    assert_eq!(rcpts, s["expected"]["rcpts"].as_u64().unwrap(), "{c}");
    // The rule's share is the workload's expected one: the measured run's accepted share.
    let measured_accepted = s["totals"]["by_class"]["accepted"].as_u64().unwrap();
    let share = c["accept_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{c}");
    assert_eq!(c["backend"], format!("canned:{share}"));
    assert!(
        (share - measured_accepted as f64 / rcpts as f64).abs() < 1e-9,
        "{share} vs {measured_accepted}/{rcpts}"
    );
    // Every RCPT went through the canned server's rule, whose first n RCPTs hold exactly
    // floor(n * share) acceptances; the share is the measured mix rounded to the billionth.
    let ppb = (share * 1e9).round() as u128;
    let canned_accepted = c["rcpts_accepted"].as_u64().unwrap();
    assert_eq!(
        u128::from(canned_accepted),
        u128::from(rcpts) * ppb / 1_000_000_000
    );
    assert!(canned_accepted.abs_diff(measured_accepted) <= 1);
    // So the DATA traffic is alike: a message in most sessions, in both arms.
    let (messages, canned_messages) = (
        s["totals"]["messages"].as_u64().unwrap(),
        c["messages"].as_u64().unwrap(),
    );
    assert!(
        messages > 200 && canned_messages > 200,
        "{messages} {canned_messages}"
    );
    for key in [
        "rcpt_per_sec",
        "generator_cpu_us_per_rcpt",
        "server_cpu_us_per_rcpt",
    ] {
        assert!(c[key].as_f64().unwrap() > 0.0, "{key}: {c}");
    }
    assert!(c["rcpt_p99_us"].as_u64().unwrap() >= c["rcpt_p50_us"].as_u64().unwrap());
    let rate = s["throughput"]["rcpt_per_sec"].as_f64().unwrap();
    let ratio = c["ratios"]["rcpt_per_sec"].as_f64().unwrap();
    assert!(
        (ratio - rate / c["rcpt_per_sec"].as_f64().unwrap()).abs() < 1e-9,
        "{c}"
    );
    let server = s["server"]["cpu_us_per_rcpt"].as_f64().unwrap();
    let cpu_ratio = c["ratios"]["server_cpu_per_rcpt"].as_f64().unwrap();
    assert!(
        (cpu_ratio - server / c["server_cpu_us_per_rcpt"].as_f64().unwrap()).abs() < 1e-9,
        "{c}"
    );

    let unverified = "the canned arm's replies come from a fixed rule and were not verified";
    assert!(stdout.contains("ceiling: this server reached"), "{stdout}");
    assert!(stdout.contains(unverified), "{stdout}");
    let markdown = read(&out, "summary.md");
    assert!(markdown.contains("## Ceiling"), "{markdown}");
    assert!(markdown.contains(unverified), "{markdown}");
    let html = read(&out, "report.html");
    assert!(html.contains("<h2>Ceiling</h2>"));
    assert!(html.contains("were not verified"));

    // Re-rendered from the saved results alone, the section is still there.
    std::fs::remove_file(out.join("summary.md")).unwrap();
    let output = run(&["report", "render", out.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(read(&out, "summary.md").contains("## Ceiling"));
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}
