//! A run's rendered report: every file, self-contained HTML, text actually drawn in the
//! plots, and runs with nothing in them.

mod common;

use std::path::Path;

use base64::Engine as _;
use bulk_report::plot::{self, HEIGHT, RUN_PLOTS, WIDTH};
use bulk_report::{render_run, render_run_with_progress};
use common::{Spec, empty_run, run};

const DATA_URI: &str = "<img src=\"data:image/svg+xml;base64,";

/// Renders `data` into a fresh folder named like a report folder.
fn render(data: &bulk_report::RunData) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("quick-20261127T202405Z");
    std::fs::create_dir(&dir).unwrap();
    let files = render_run(data, &dir).unwrap();
    for file in &files {
        assert!(file.is_file(), "{} listed but missing", file.display());
    }
    (root, dir)
}

fn check_files(dir: &Path) {
    for name in RUN_PLOTS {
        for ext in ["svg", "png"] {
            let path = dir.join(format!("{name}.{ext}"));
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|_| panic!("{} missing", path.display()))
                .len();
            assert!(size > 1000, "{} is {size} bytes", path.display());
        }
    }
    assert!(dir.join("summary.md").is_file());
    assert!(dir.join("report.html").is_file());
}

/// The HTML is self-contained and embeds every plot, each with a size and alt text.
fn check_html(html: &str, plots: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<img").count(), plots, "one <img> per plot");
    assert_eq!(html.matches(DATA_URI).count(), plots, "every plot inline");
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<link") && !html.contains("@import"));
    assert!(html.contains("name=\"viewport\""));
    for img in html.split("<img").skip(1) {
        let tag = &img[..img.find('>').unwrap()];
        assert!(tag.contains(&format!("width=\"{WIDTH}\"")), "{tag:.80}");
        assert!(tag.contains(&format!("height=\"{HEIGHT}\"")));
        let alt = tag.split("alt=\"").nth(1).unwrap();
        assert!(alt.len() > 20, "alt text too thin: {alt:.60}");
        // The embedded SVG is a drawing with text in it.
        let data = tag.split("base64,").nth(1).unwrap();
        let data = &data[..data.find('"').unwrap()];
        let svg = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<text"), "{svg:.200}");
    }
}

#[test]
fn a_run_writes_every_file_and_a_self_contained_report() {
    let data = run(&Spec {
        scenario: "quick & \"dirty\" <b>".into(),
        mismatches: 3,
        failed_sessions: 2,
        ..Spec::default()
    });
    let (_root, dir) = render(&data);
    check_files(&dir);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    check_html(&html, RUN_PLOTS.len());

    // Data is escaped: the scenario name and the reply line.
    assert!(html.contains("quick &amp; &quot;dirty&quot; &lt;b&gt;"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; ok"));
    assert!(!html.contains("<b>"));
    // Problems, scenario and machine come before the plots.
    let first_plot = html.find("<figure").unwrap();
    for needle in [
        "MISMATCHES",
        "FAILED SESSIONS",
        "timeout",
        "cores",
        "RCPT replies",
    ] {
        let at = html
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"));
        assert!(at < first_plot, "{needle} after the plots");
    }
    assert!(html.contains("2026-11-27 20:24:05 UTC"));
    assert!(html.contains("on its CPU 1: 0.9 busy s"));

    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    // Markdown renders `&amp;` as `&`: the title reads `quick & "dirty" <b>`, no markup.
    assert!(
        md.starts_with("# bulkbench: quick &amp; \"dirty\" &lt;b&gt; (2026-11-27 20:24:05 UTC)")
    );
    let setup = md.find("## Setup").unwrap();
    assert!(md.find("MISMATCHES").unwrap() < setup);
    assert!(md.find("FAILED SESSIONS").unwrap() < setup);
    for needle in [
        "## Totals",
        "## Verdicts",
        "## Throughput",
        "## Latency",
        "| rcpt |",
        "| end_of_data |",
        "µs CPU per RCPT",
        "generator (2 threads):",
        // Time on each side's pinned CPU, split by kind.
        "on its CPU 0: 1 busy s",
        "(user 25%, system 50%, softirq 25%)",
        "on its CPU 1: 0.9 busy s",
        "softirq 33%)",
        "100,000 mailboxes in 200 domains",
        "closed loop, 64 sessions in flight",
        "](latency_spectrum.png)",
        "](phase_breakdown.png)",
        "[summary.json](summary.json)",
    ] {
        assert!(md.contains(needle), "summary.md lacks {needle:?}");
    }
    assert!(!md.contains("<script>"));
}

#[test]
fn progress_counts_every_file() {
    let data = run(&Spec::default());
    let root = tempfile::tempdir().unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let files = render_run_with_progress(&data, root.path(), &|done, total| {
        seen.lock().unwrap().push((done, total));
    })
    .unwrap();
    assert_eq!(files.len(), RUN_PLOTS.len() * 2 + 2);
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    let total = RUN_PLOTS.len() + 2;
    assert_eq!(seen.first(), Some(&(0, total)));
    assert_eq!(seen.last(), Some(&(total, total)));
    assert_eq!(seen.len(), total + 1);
}

/// Pixels darker than this (sum of RGB) are text or axes, not background or grid.
const DARK: u32 = 3 * 120;

fn dark_pixels(rgb: &[u8], width: u32, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
    let mut n = 0;
    for row in y {
        for col in x.clone() {
            let i = ((row * width + col) * 3) as usize;
            let sum: u32 = rgb[i..i + 3].iter().map(|v| u32::from(*v)).sum();
            if sum < DARK {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn png_plots_have_text_in_the_title_and_axis_label_areas() {
    let data = run(&Spec::default());
    let (_root, dir) = render(&data);
    for name in RUN_PLOTS {
        let png = image::open(dir.join(format!("{name}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (WIDTH, HEIGHT), "{name}");
        let rgb = png.as_raw();
        // The title: centred at the top.
        let title = dark_pixels(rgb, WIDTH, 200..1000, 0..50);
        assert!(title > 300, "{name}: {title} dark pixels in the title area");
        // The x axis description and tick labels: the bottom band.
        let x_labels = dark_pixels(rgb, WIDTH, 100..1150, HEIGHT - 70..HEIGHT);
        assert!(
            x_labels > 300,
            "{name}: {x_labels} dark pixels under the x axis"
        );
        // The y axis labels: the left band.
        let y_labels = dark_pixels(rgb, WIDTH, 0..90, 120..HEIGHT - 80);
        assert!(
            y_labels > 200,
            "{name}: {y_labels} dark pixels left of the y axis"
        );
        // And the middle is not all text: mostly background.
        let middle = dark_pixels(rgb, WIDTH, 400..800, 250..450);
        assert!(
            middle < 400 * 200 / 4,
            "{name}: {middle} dark pixels mid-plot"
        );
    }
}

#[test]
fn a_known_title_is_drawn_into_the_buffer() {
    let data = run(&Spec::default());
    let mut plot = plot::run_plots(&data)
        .into_iter()
        .find(|p| p.name == "verdicts")
        .unwrap();
    plot.subtitle.clear();
    plot.title = "A KNOWN TITLE, DRAWN IN DEJAVU SANS BOLD".into();
    let with_title = plot.render_rgb().unwrap();
    assert_eq!(with_title.len(), (WIDTH * HEIGHT * 3) as usize);
    let inked = |rgb: &[u8]| {
        let mut n = 0;
        for row in 0..45u32 {
            for col in 0..WIDTH {
                let i = ((row * WIDTH + col) * 3) as usize;
                if rgb[i..i + 3] != [255, 255, 255] {
                    n += 1;
                }
            }
        }
        n
    };
    let titled = inked(&with_title);
    assert!(
        titled > 2000,
        "{titled} non-background pixels in the title area"
    );
    // The same plot with an empty title leaves that area (nearly) blank: the pixels
    // were the text.
    plot.title.clear();
    let untitled = inked(&plot.render_rgb().unwrap());
    assert!(untitled * 4 < titled, "{untitled} vs {titled}");
}

#[test]
fn an_empty_run_renders() {
    let data = empty_run();
    let (_root, dir) = render(&data);
    check_files(&dir);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    check_html(&html, RUN_PLOTS.len());
    assert!(html.contains("INTERRUPTED"));
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("No latency samples."));
    assert!(md.contains("external target, cost not measured"));
}

#[test]
fn a_run_without_any_rcpt_renders() {
    let data = run(&Spec {
        rcpts_per_session: 0,
        ..Spec::default()
    });
    assert!(data.phases[&bulk_loadgen::Phase::Rcpt].is_empty());
    let (_root, dir) = render(&data);
    check_files(&dir);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    check_html(&html, RUN_PLOTS.len());
}

#[test]
fn a_run_of_one_sample_renders() {
    let mut data = empty_run();
    let mut h = bulk_report::new_full_histogram();
    h.record(1234).unwrap();
    data.phases.insert(bulk_loadgen::Phase::Session, h);
    let (_root, dir) = render(&data);
    check_files(&dir);
}

/// The latency-over-time plot reads the interval histograms: their percentiles must be
/// those of the samples. Fails while bulk-loadgen's `Recorder::record_interval` uses
/// `saturating_record` on auto-resizing histograms, which clamps every value above the
/// initial range to the histogram's starting maximum (2 µs) instead of growing it.
#[test]
fn interval_histograms_hold_the_recorded_latencies() {
    let data = run(&Spec::default());
    let whole = &data.phases[&bulk_loadgen::Phase::Rcpt];
    for interval in &data.intervals {
        let h = &interval.phases[&bulk_loadgen::Phase::Rcpt];
        let (p50, whole_p50) = (h.value_at_quantile(0.5), whole.value_at_quantile(0.5));
        assert!(
            p50 * 2 > whole_p50 && p50 < whole_p50 * 2,
            "second {}: interval p50 {p50} µs, whole-run p50 {whole_p50} µs",
            interval.start_secs
        );
    }
}

#[test]
fn summaries_with_and_without_a_server_satisfy_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(bulk_report::summary::SCHEMA).unwrap();
    for data in [run(&Spec::default()), empty_run()] {
        let value = serde_json::to_value(&data.summary).unwrap();
        if let Err(errors) = bulk_report::schema::validate(&schema, &value) {
            panic!("{errors:#?}");
        }
    }
    // The pinned run carries both sides' CPU sets; the schema checks their every field.
    let pinned = serde_json::to_value(&run(&Spec::default()).summary).unwrap();
    assert!(pinned["server"]["cpu_set"]["busy_seconds"].is_number());
    assert!(pinned["generator"]["cpu_set"]["steal_seconds"].is_number());
    let mut broken = pinned.clone();
    broken["generator"]["cpu_set"]["busy_seconds"] = serde_json::json!("a lot");
    assert!(bulk_report::schema::validate(&schema, &broken).is_err());
}

#[test]
fn every_report_says_when_the_server_did_not_advertise_bulk() {
    let mut data = run(&Spec::default());
    let plain = bulk_report::table(&data.summary);
    data.summary.totals.bulk_fallback_sessions = 30;
    data.summary.warmup_totals.bulk_fallback_sessions = 12;
    let table = bulk_report::table(&data.summary);
    assert!(!plain.contains("MAIL FROM"), "{plain}");
    assert!(
        table.contains("server does not advertise BULK: 42 sessions used MAIL FROM"),
        "{table}"
    );
    let (_root, dir) = render(&data);
    let markdown = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        markdown.contains("**The server does not advertise BULK:** 42 sessions used MAIL FROM"),
        "{markdown}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("42") && html.contains("MAIL FROM"),
        "fallback missing from the page"
    );
}

/// A run with a ceiling: the canned arm twice as fast, at half the server CPU per RCPT.
fn with_ceiling() -> bulk_report::RunData {
    let mut data = run(&Spec::default());
    let mut canned = run(&Spec {
        latency_scale: 1,
        ..Spec::default()
    })
    .summary;
    canned.throughput.rcpt_per_sec = data.summary.throughput.rcpt_per_sec * 2.0;
    let server = canned.server.as_mut().unwrap();
    server.cpu_us_per_rcpt = data.summary.server.as_ref().unwrap().cpu_us_per_rcpt / 2.0;
    data.summary.ceiling = Some(bulk_report::summary::Ceiling::new(
        "canned:0.8".into(),
        0.8,
        &data.summary,
        &canned,
    ));
    data
}

#[test]
fn a_ceiling_is_schema_valid_and_every_report_says_it_is_unverified() {
    let data = with_ceiling();
    let ceiling = data.summary.ceiling.as_ref().unwrap();
    assert_eq!(ceiling.ratios.rcpt_per_sec, Some(0.5));
    assert_eq!(ceiling.ratios.server_cpu_per_rcpt, Some(2.0));
    assert!(!ceiling.verified);

    let schema: serde_json::Value = serde_json::from_str(bulk_report::summary::SCHEMA).unwrap();
    let value = serde_json::to_value(&data.summary).unwrap();
    if let Err(errors) = bulk_report::schema::validate(&schema, &value) {
        panic!("{errors:#?}");
    }
    assert_eq!(value["ceiling"]["ratios"]["rcpt_per_sec"], 0.5);
    // A ceiling claiming verification, or missing a figure, is refused.
    let mut claimed = value.clone();
    claimed["ceiling"]["verified"] = true.into();
    assert!(bulk_report::schema::validate(&schema, &claimed).is_err());
    let mut partial = value.clone();
    partial["ceiling"]
        .as_object_mut()
        .unwrap()
        .remove("rcpt_per_sec");
    assert!(bulk_report::schema::validate(&schema, &partial).is_err());
    // Summaries written before the ceiling existed still validate and load.
    let mut older = serde_json::to_value(&run(&Spec::default()).summary).unwrap();
    assert!(older["ceiling"].is_null());
    older.as_object_mut().unwrap().remove("ceiling");
    assert!(bulk_report::schema::validate(&schema, &older).is_ok());
    let loaded: bulk_report::Summary = serde_json::from_value(older).unwrap();
    assert_eq!(loaded.ceiling, None);

    let headline = "this server reached 50% of this machine's canned-reply ceiling";
    let unverified = "the canned arm's replies come from a fixed rule and were not verified";
    let table = bulk_report::table(&data.summary);
    assert!(table.contains(&format!("ceiling: {headline}")), "{table}");
    assert!(table.contains(unverified), "{table}");
    assert!(table.contains("canned arm (canned:0.8"), "{table}");
    assert!(table.contains("(this server x2.00)"), "{table}");
    let (_root, dir) = render(&data);
    let markdown = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(markdown.contains("## Ceiling\n"), "{markdown}");
    assert!(markdown.contains("**This server reached 50%"), "{markdown}");
    assert!(markdown.contains(unverified), "{markdown}");
    assert!(markdown.contains("| server CPU µs/RCPT |"), "{markdown}");
    assert!(
        markdown.contains("| messages per 100 RCPTs | 10 | 10 |"),
        "{markdown}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<h2>Ceiling</h2>"), "ceiling section missing");
    assert!(html.contains("This server reached 50%"));
    assert!(html.contains(&unverified.replace('\'', "&#39;")));
    assert!(html.contains("share of the ceiling"));
    check_html(&html, RUN_PLOTS.len());

    // Saved with the run and loaded back (floats to JSON's precision).
    let saved = tempfile::tempdir().unwrap();
    data.save(saved.path()).unwrap();
    let loaded = bulk_report::RunData::load(saved.path()).unwrap();
    let loaded = loaded.summary.ceiling.expect("the ceiling is saved");
    assert_eq!(
        (&loaded.backend, loaded.rcpts, &loaded.ratios),
        (&ceiling.backend, ceiling.rcpts, &ceiling.ratios)
    );

    // Without a ceiling, no report mentions one.
    let plain = run(&Spec::default());
    assert!(!bulk_report::table(&plain.summary).contains("ceiling"));
    let (_root, dir) = render(&plain);
    let markdown = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(!markdown.contains("Ceiling"), "{markdown}");
}

#[test]
fn ceiling_notes_say_when_its_rate_means_little() {
    let mut data = with_ceiling();
    let ceiling = data.summary.ceiling.as_mut().unwrap();
    ceiling.generator_cpus_busy = Some(0.97);
    ceiling.sessions_failed = 3;
    let table = bulk_report::table(&data.summary);
    assert!(
        table.contains("The generator's CPUs were 97% busy in the canned arm"),
        "{table}"
    );
    assert!(
        table.contains("3 sessions of the canned arm failed"),
        "{table}"
    );
    assert!(!table.contains("open loop"), "{table}");
    assert!(!table.contains("harvest-resistant"), "{table}");
    data.summary.scenario["workload"]["mode"] = "open".into();
    data.summary.scenario["server"]["harvest_resistant"] = true.into();
    let table = bulk_report::table(&data.summary);
    assert!(table.contains("In open loop both arms"), "{table}");
    assert!(table.contains("The server is harvest-resistant"), "{table}");
    // A canned arm with no rate at all states no share.
    let ceiling = data.summary.ceiling.as_mut().unwrap();
    ceiling.rcpt_per_sec = 0.0;
    ceiling.ratios.rcpt_per_sec = None;
    let table = bulk_report::table(&data.summary);
    assert!(table.contains("no share of it to state"), "{table}");
}

/// The report is built once as data: a figure added to the model shows in the terminal,
/// Markdown and HTML renderings alike, each in its own form.
#[test]
fn a_figure_added_to_the_model_shows_in_every_rendering() {
    use bulk_report::report::{Block, Figure, Section, Show, run_report};
    let data = run(&Spec::default());
    let mut report = run_report(&data, "2026-11-27 20:24:05 UTC", &[]);
    let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>added</text></svg>";
    report.sections.push(Section {
        show: Show::Everywhere,
        ..Section::new(
            "Added",
            vec![Block::Figure(Figure {
                name: "added_figure".into(),
                title: "An added figure".into(),
                caption: "What the added figure shows.".into(),
                alt: "A figure added to the report model, drawn as a bar".into(),
                svg: svg.into(),
            })],
        )
    });

    let terminal = bulk_report::terminal::render_terminal(&report);
    assert!(
        terminal.contains("An added figure: added_figure.png, added_figure.svg"),
        "{terminal}"
    );
    let markdown = bulk_report::markdown::render_markdown(&report);
    assert!(markdown.contains("## Added\n"), "{markdown}");
    assert!(
        markdown
            .contains("![A figure added to the report model, drawn as a bar](added_figure.png)"),
        "{markdown}"
    );
    let html = bulk_report::html::render_html(&report);
    check_html(&html, 1);
    let data_uri = base64::engine::general_purpose::STANDARD.encode(svg);
    assert!(html.contains(&format!("{DATA_URI}{data_uri}\"")));
    assert!(html.contains("<strong>An added figure.</strong>"));
    // The terminal's own compact sections and the documents' sections are still apart.
    assert!(terminal.contains("phase (us)") && !markdown.contains("phase (us)"));
    assert!(!terminal.contains("## Setup") && markdown.contains("## Setup"));
}

#[test]
fn a_store_of_its_own_shows_beside_the_server_and_in_the_whole_cost() {
    use bulk_report::report::run_report;
    use bulk_report::summary::StoreCost;
    let mut data = run(&Spec::default());
    let server = data.summary.server.as_ref().unwrap().cpu_us_per_rcpt;
    data.summary.store = Some(StoreCost {
        kind: "redis".into(),
        cpu_seconds: 0.75,
        cpu_us_per_rcpt: 2.5,
    });
    let whole = data.summary.whole_cpu_us_per_rcpt().unwrap();
    assert!((whole - (server + 2.5)).abs() < 1e-9, "{whole} {server}");
    let report = run_report(&data, "2026-12-05 04:00:00 UTC", &[]);
    let terminal = bulk_report::terminal::render_terminal(&report);
    let markdown = bulk_report::markdown::render_markdown(&report);
    let html = bulk_report::html::render_html(&report);
    for (name, text) in [
        ("terminal", &terminal),
        ("markdown", &markdown),
        ("html", &html),
    ] {
        assert!(
            text.contains("store (redis, processes of its own)") && text.contains("2.5 µs"),
            "{name}: {text}"
        );
        assert!(text.contains("per RCPT in all"), "{name}: {text}");
    }
    assert!(
        html.contains("server + store CPU per RCPT"),
        "the tile names the whole: {html}"
    );
    // The saved summary carries it and still passes the schema.
    let dir = tempfile::tempdir().unwrap();
    data.save(dir.path()).unwrap();
    let loaded = bulk_report::RunData::load(dir.path()).unwrap();
    assert_eq!(loaded.summary.store, data.summary.store);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(bulk_report::summary::SCHEMA).unwrap();
    bulk_report::schema::validate(&schema, &json).unwrap();
}

#[test]
fn every_report_states_the_starttls_share_and_its_handshake() {
    let plain = run(&Spec::default());
    let data = run(&Spec {
        starttls_every: 4,
        ..Spec::default()
    });
    // 400 sessions, warm-up included; one in four used STARTTLS.
    let t = &data.summary.totals;
    let w = &data.summary.warmup_totals;
    assert_eq!(t.starttls_sessions + w.starttls_sessions, 100);
    let handshake = &data.summary.latency_us["tls_handshake"];
    assert_eq!(handshake.count, t.starttls_sessions);
    let schema: serde_json::Value = serde_json::from_str(bulk_report::summary::SCHEMA).unwrap();
    let value = serde_json::to_value(&data.summary).unwrap();
    if let Err(errors) = bulk_report::schema::validate(&schema, &value) {
        panic!("{errors:#?}");
    }
    assert_eq!(value["totals"]["starttls_sessions"], t.starttls_sessions);

    let share = "100 of 400 sessions (25%) used STARTTLS; TLS handshake p50";
    let table = bulk_report::table(&data.summary);
    assert!(table.contains(share), "{table}");
    assert!(table.contains("tls_handshake"), "{table}");
    let (_root, dir) = render(&data);
    let markdown = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(markdown.contains(share), "{markdown}");
    assert!(
        markdown.contains("| sessions with STARTTLS |"),
        "{markdown}"
    );
    assert!(markdown.contains("| tls_handshake |"), "{markdown}");
    assert!(markdown.contains("| starttls |"), "{markdown}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains(share), "the share is missing from the page");

    // A run without TLS says nothing of it.
    let table = bulk_report::table(&plain.summary);
    assert!(
        !table.contains("STARTTLS") && !table.contains("tls_"),
        "{table}"
    );
    let (_root, dir) = render(&plain);
    let markdown = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(!markdown.contains("STARTTLS"), "{markdown}");
    assert!(!markdown.contains("| tls_handshake |"), "{markdown}");
}
