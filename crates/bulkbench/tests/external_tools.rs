//! A run's report folder read by tools that are not ours: its `.hlog` files by PyPI's
//! `hdrhistogram` (another HdrHistogram implementation), its `report.html` by a real
//! browser (Chromium, headless).
//!
//! A missing tool shows this test as ignored, with the package named, in the test output;
//! with `BULKBENCH_REQUIRE_EXTERNAL=1` (as CI runs) it fails instead. libtest decides what
//! is ignored when it compiles (`#[ignore]`), so these tests run under libtest-mimic
//! (`harness = false` in Cargo.toml), which lets a test report itself ignored when it runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod common;

const PLOTS: [&str; 5] = [
    "latency_spectrum",
    "throughput",
    "rcpt_latency_over_time",
    "verdicts",
    "phase_breakdown",
];

/// Sized in time, so the 0.2 s warm-up never holds the whole run.
const SCENARIO: &str = r#"
name = "external"
seed = 11
[population]
mailboxes = 3000
domains = 20
[workload]
mode = "closed"
duration_secs = 1.0
concurrency = 20
recipients_max = 20
message_size_min = 200
message_size_max = 2000
warmup_secs = 0.2
"#;

fn main() {
    let args = Arguments::from_args();
    let dir = tempfile::tempdir().unwrap();
    // One run for every test here, made by the first that needs it (none when every tool
    // is missing).
    let folder = Arc::new(RunFolder {
        dir: dir.path().to_owned(),
        run: OnceLock::new(),
    });
    let trials = vec![
        trial(
            "hlog_files_decode_with_the_pypi_hdrhistogram_reader",
            &folder,
            hlog_files_decode_with_the_pypi_hdrhistogram_reader,
        ),
        trial(
            "the_report_renders_in_chromium_at_desk_and_phone_width",
            &folder,
            the_report_renders_in_chromium_at_desk_and_phone_width,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    drop(dir);
    conclusion.exit();
}

/// Where the shared run goes, and the run once made.
struct RunFolder {
    dir: PathBuf,
    run: OnceLock<PathBuf>,
}

impl RunFolder {
    /// The report folder of one `bench` run of [`SCENARIO`], made on first use.
    fn get(&self) -> &Path {
        self.run.get_or_init(|| {
            let scenario = self.dir.join("external.toml");
            std::fs::write(&scenario, SCENARIO).unwrap();
            let out = self.dir.join("run");
            common::ok(&[
                "bench",
                scenario.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ]);
            out
        })
    }
}

fn trial(
    name: &str,
    folder: &Arc<RunFolder>,
    test: fn(&RunFolder) -> Result<Completion, Failed>,
) -> Trial {
    let folder = Arc::clone(folder);
    Trial::ignorable_test(name, move || test(&folder))
}

fn have_python_hdrhistogram() -> bool {
    Command::new("python3")
        .args(["-c", "import hdrh.log"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What `read_hlog.py` (PyPI's `hdrhistogram`) reads from `hlog`.
fn python_read(hlog: &Path) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bulk-report/tests/python/read_hlog.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(hlog)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The .hlog files decode with an independent reader to the run's counts.
fn hlog_files_decode_with_the_pypi_hdrhistogram_reader(
    folder: &RunFolder,
) -> Result<Completion, Failed> {
    if !have_python_hdrhistogram() {
        return common::missing("PyPI package hdrhistogram", "pip install hdrhistogram");
    }
    let out = folder.get();
    let summary = common::summary(out);
    let totals = python_read(&out.join("run.hlog"));
    for phase in bulk_loadgen::Phase::ALL {
        let phase = phase.name();
        let count = summary["latency_us"][phase]["count"].as_u64().unwrap();
        assert_eq!(
            totals["totals"][phase].as_u64().unwrap_or(0),
            count,
            "run.hlog {phase}"
        );
    }
    // The logs carry the format version and the run's real start time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = totals["start_time_sec"].as_f64().unwrap();
    assert!(
        (now - start).abs() < 86_400.0,
        "StartTime {start}, now {now}"
    );
    assert_eq!(totals["version"], "1.3");
    let recorded = summary["started_at_epoch_secs"].as_f64().unwrap();
    assert!((start - recorded).abs() < 0.001, "{start} vs {recorded}");
    let series = python_read(&out.join("intervals.hlog"));
    let all_rcpts = summary["totals"]["rcpts"].as_u64().unwrap()
        + summary["warmup_totals"]["rcpts"].as_u64().unwrap();
    assert_eq!(
        series["totals"]["rcpt"].as_u64().unwrap(),
        all_rcpts,
        "intervals.hlog rcpt"
    );
    Ok(Completion::Completed)
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Renders `report` in headless Chromium at `width` CSS pixels; returns what the harness
/// measured and Chromium's log.
fn render_in_browser(
    browser: &str,
    report: &Path,
    width: u32,
    work: &Path,
) -> (serde_json::Value, String) {
    let harness = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/measure.html"
    ))
    .unwrap()
    .replace(
        "REPORT_URL",
        &format!("file://{}", report.canonicalize().unwrap().display()),
    )
    .replace("WIDTH", &width.to_string());
    let page = work.join(format!("measure-{width}.html"));
    std::fs::write(&page, harness).unwrap();
    let profile = work.join(format!("profile-{width}"));
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--enable-logging=stderr",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    let start = dom
        .find("data-result=\"")
        .unwrap_or_else(|| panic!("no result in the DOM:\n{dom}\n{log}"));
    let rest = &dom[start + "data-result=\"".len()..];
    let raw = &rest[..rest.find('"').unwrap()];
    let text = raw
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    (serde_json::from_str(&text).unwrap(), log)
}

/// A real browser renders the report, every plot with a size, at desk and phone width.
fn the_report_renders_in_chromium_at_desk_and_phone_width(
    folder: &RunFolder,
) -> Result<Completion, Failed> {
    let Some(browser) = chromium() else {
        return common::missing("Chromium", "apt-get install chromium");
    };
    let out = folder.get();
    let work = tempfile::tempdir().unwrap();
    for width in [1280, 390] {
        let (result, log) =
            render_in_browser(browser, &out.join("report.html"), width, work.path());
        assert!(result.get("error").is_none(), "{result}");
        assert_eq!(result["scripts"], 0);
        let images = result["images"].as_array().unwrap();
        assert!(images.len() >= PLOTS.len(), "{result}");
        for image in images {
            assert_eq!(image["complete"], true, "{image}");
            for key in ["natural_width", "natural_height", "width", "height"] {
                assert!(
                    image[key].as_f64().unwrap() > 0.0,
                    "{key} of {image} at {width}px"
                );
            }
            assert!(
                image["width"].as_f64().unwrap() <= width as f64,
                "{image} wider than {width}px"
            );
        }
        let (scroll, client) = (
            result["scroll_width"].as_f64().unwrap(),
            result["client_width"].as_f64().unwrap(),
        );
        assert!(
            scroll <= client + 1.0,
            "the page scrolls sideways at {width}px: {scroll} > {client}"
        );
        assert!(
            !log.contains("Uncaught") && !log.contains("ERROR:CONSOLE"),
            "browser errors:\n{log}"
        );
    }
    Ok(Completion::Completed)
}
