//! `report.html` and `comparison.html`: self-contained reports, and [`render_run`], which
//! writes a run's whole rendered report (plots, `summary.md`, `report.html`).
//!
//! Self-contained means one file that opens anywhere, offline: inline CSS, no script, no
//! external request; every plot is embedded as an SVG data URI. The layout reads on a phone
//! and on a wide screen (a max-width column, tables that scroll sideways on their own).
//! Problems come first, then the figures a reader needs to trust the run (scenario,
//! machine, totals, verdicts), then plots and detail tables. All text from data (scenario
//! names, reply lines, recipients) is HTML-escaped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::compare::{Comparison, comparison_machine, plot_files};
use crate::markdown::{
    VERDICT_HEADER, ceiling_method, ceiling_notes, ceiling_rows, ceiling_text, class_names,
    comparison_cell, comparison_legend, comparison_rows, cpu_set_text, failed_kinds, fmt_count,
    fmt_mib, fmt_num, fmt_ratio, fmt_share, latency_rows, machine_text, no_server_text,
    partial_text, run_date, run_files, run_order_text, scenario_figures, scenario_name,
    shards_text, target_text, upper_first, verdict_rows, window_text,
};
use crate::plot::{self, HEIGHT, Progress, RenderedPlot, WIDTH};
use crate::{ReportError, RunData};

/// Writes a run's report into `dir` (which exists): each plot of [`plot::RUN_PLOTS`] as
/// SVG and PNG, `summary.md` and `report.html`; returns the files written.
///
/// The run's saved data (`summary.json`, `.hlog`, `.hgrm`) is [`crate::ReportDir::write_run`]'s.
pub fn render_run(data: &RunData, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    render_run_with_progress(data, dir, &|_, _| {})
}

/// [`render_run`], calling `progress(done, total)` as each file is written (from rayon's
/// threads: plots are drawn in parallel, one task per plot).
pub fn render_run_with_progress(
    data: &RunData,
    dir: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<PathBuf>, ReportError> {
    let plots = plot::run_plots(data);
    let progress = Progress::new(plots.len() + 2, progress);
    let rendered = plot::render_plots(&plots, dir, &|| progress.step())?;
    let date = run_date(data);
    let mut files = plot_files(&rendered);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map(|()| path.clone())
            .map_err(|source| ReportError::Io { path, source })
    };
    files.push(write(
        "summary.md",
        crate::markdown::run_markdown(data, &date, &rendered),
    )?);
    progress.step();
    files.push(write("report.html", run_html(data, &date, &rendered))?);
    progress.step();
    Ok(files)
}

/// `text` with its first letter upper-case.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#1d2129;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:.5rem 0 .2rem;overflow-wrap:anywhere}
h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:1px solid #d8dbe0;padding-bottom:.2rem}
h3{font-size:1.05rem;margin:1rem 0 .4rem}
.sub{color:#5a6270;margin:0 0 1rem}
.box{background:#fff;border:1px solid #d8dbe0;border-radius:6px;padding:.8rem 1rem;margin:.8rem 0}
.problem{border-left:6px solid #c62828;background:#fff5f5}
.ok{border-left:6px solid #2e7d32;background:#f3fbf3}
.problem h2,.ok h2{border:0;margin:.2rem 0 .5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(15rem,1fr));gap:.8rem}
.card{background:#fff;border:1px solid #d8dbe0;border-radius:6px;padding:.7rem .9rem}
.card .k{color:#5a6270;font-size:.85rem;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:1.35rem;font-weight:600;overflow-wrap:anywhere}
.card .d{color:#5a6270;font-size:.9rem;overflow-wrap:anywhere}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%;margin:.5rem 0}
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e3e5e9;text-align:right;white-space:nowrap}
th{background:#eef0f3;font-weight:600}
th:first-child,td:first-child{text-align:left}
td.text{text-align:left;white-space:normal;min-width:12rem;overflow-wrap:anywhere}
code{font:.9em/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#eef0f3;padding:0 .2em;border-radius:3px}
figure{margin:1.2rem 0;background:#fff;border:1px solid #d8dbe0;border-radius:6px;padding:.5rem}
figure img{display:block;width:100%;max-width:100%;height:auto}
figcaption{color:#3d4450;font-size:.92rem;padding:.4rem .3rem 0}
ul{padding-left:1.3rem}
@media (max-width:600px){body{font-size:15px}main{padding:.6rem}h1{font-size:1.3rem}th,td{padding:.25rem .45rem}}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n\
         </body>\n</html>\n",
        escape(title)
    )
}

/// A table whose cells are already HTML; `header` names the columns, the first cell of a
/// row heads the row.
fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    table_with(out, header, rows, "");
}

/// [`table`] with a CSS class on the data cells.
fn table_with(out: &mut String, header: &[String], rows: &[Vec<String>], class: &str) {
    let td = if class.is_empty() {
        "<td>".to_owned()
    } else {
        format!("<td class=\"{class}\">")
    };
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for h in header {
        let _ = write!(out, "<th scope=\"col\">{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\">{cell}</th>");
            } else {
                let _ = write!(out, "{td}{cell}</td>");
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// Escaped header names.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| escape(n)).collect()
}

fn card(out: &mut String, key: &str, value: &str, detail: &str) {
    let _ = writeln!(
        out,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div>\
         <div class=\"d\">{}</div></div>",
        escape(key),
        escape(value),
        escape(detail)
    );
}

/// Each plot as a figure with its SVG inline as a data URI, sized, with alt text.
fn figures(out: &mut String, plots: &[RenderedPlot]) {
    let engine = base64::engine::general_purpose::STANDARD;
    for plot in plots {
        let _ = write!(
            out,
            "<figure id=\"{name}\">\n<img src=\"data:image/svg+xml;base64,{data}\" \
             alt=\"{alt}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" loading=\"lazy\">\n\
             <figcaption><strong>{title}.</strong> {caption} Files: \
             <a href=\"{name}.png\">PNG</a>, <a href=\"{name}.svg\">SVG</a>.</figcaption>\n\
             </figure>\n",
            name = escape(&plot.name),
            data = engine.encode(plot.svg.as_bytes()),
            alt = escape(&plot.alt),
            title = escape(&plot.title),
            caption = escape(&plot.caption),
        );
    }
}

fn problems(out: &mut String, data: &RunData) {
    let s = &data.summary;
    let failed = failed_kinds(s);
    let fallback = s.fallback_sessions();
    let partial = partial_text(s);
    let any = s.mismatches.total > 0
        || !failed.is_empty()
        || s.window.interrupted
        || fallback > 0
        || partial.is_some();
    if !any {
        out.push_str(
            "<section class=\"box ok\"><h2>No problems</h2><p>Every RCPT reply matched \
             the population and no session failed.</p></section>\n",
        );
        return;
    }
    out.push_str("<section class=\"box problem\"><h2>Problems</h2>\n");
    if s.mismatches.total > 0 {
        let _ = writeln!(
            out,
            "<h3>MISMATCHES: {} RCPT replies contradicted the population</h3>",
            fmt_count(s.mismatches.total)
        );
        let rows: Vec<Vec<String>> = s
            .mismatches
            .by_class
            .iter()
            .map(|(pair, n)| vec![escape(pair), fmt_count(*n)])
            .collect();
        table(out, &header(&["expected → actual", "count"]), &rows);
        if !s.mismatches.examples.is_empty() {
            out.push_str(
                "<div class=\"scroll\"><table>\n<thead><tr><th scope=\"col\">session</th>\
                          <th scope=\"col\">recipient</th><th scope=\"col\">expected</th>\
                          <th scope=\"col\">reply</th></tr></thead>\n<tbody>\n",
            );
            for e in &s.mismatches.examples {
                let _ = writeln!(
                    out,
                    "<tr><th scope=\"row\">{}</th><td class=\"text\"><code>{}</code></td>\
                     <td>{}</td><td class=\"text\"><code>{}</code></td></tr>",
                    e.session,
                    escape(&e.recipient),
                    escape(e.expected.name()),
                    escape(&e.reply)
                );
            }
            out.push_str("</tbody></table></div>\n");
        }
    }
    if !failed.is_empty() {
        let total: u64 = failed.iter().map(|f| f.1).sum();
        let _ = writeln!(
            out,
            "<h3>FAILED SESSIONS: {} (measured and warm-up)</h3>",
            fmt_count(total)
        );
        let rows: Vec<Vec<String>> = failed
            .iter()
            .map(|(kind, n)| vec![escape(kind), fmt_count(*n)])
            .collect();
        table(out, &header(&["kind", "sessions"]), &rows);
    }
    if s.window.interrupted {
        out.push_str(
            "<h3>INTERRUPTED</h3><p>The run was stopped before its workload finished.</p>\n",
        );
    }
    if fallback > 0 {
        let _ = writeln!(
            out,
            "<h3>The server does not advertise BULK</h3><p>{} sessions used MAIL FROM instead.</p>",
            fmt_count(fallback)
        );
    }
    if let Some(partial) = partial {
        let _ = writeln!(
            out,
            "<h3>PARTIAL MERGE</h3><p>{}.</p>",
            escape(&capitalized(&partial))
        );
    }
    out.push_str("</section>\n");
}

/// `report.html` of a run.
pub fn run_html(data: &RunData, date: &str, plots: &[RenderedPlot]) -> String {
    let s = &data.summary;
    let name = scenario_name(s);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<header><h1>bulkbench: {}</h1><p class=\"sub\">{} · {} · {}{}</p></header>",
        escape(&name),
        escape(date),
        escape(&s.command),
        escape(&target_text(s)),
        shards_text(s)
            .map(|shards| format!(" · {}", escape(&shards)))
            .unwrap_or_default()
    );
    problems(&mut out, data);

    // The figures a reader needs first.
    out.push_str("<section><div class=\"cards\">\n");
    card(
        &mut out,
        "throughput",
        &format!("{} RCPT/s", fmt_num(s.throughput.rcpt_per_sec)),
        &format!("{} sessions/s", fmt_num(s.throughput.sessions_per_sec)),
    );
    let rcpt = s.latency_us.get("rcpt").filter(|l| l.count > 0);
    card(
        &mut out,
        "RCPT latency p99",
        &rcpt.map_or_else(
            || "no samples".to_owned(),
            |l| format!("{} ms", crate::markdown::fmt_ms(l.p99)),
        ),
        &rcpt.map_or_else(String::new, |l| {
            format!("p50 {} ms", crate::markdown::fmt_ms(l.p50))
        }),
    );
    card(
        &mut out,
        "RCPT replies",
        &fmt_count(s.totals.rcpts),
        &format!(
            "{} with warm-up, of {} planned",
            fmt_count(s.totals.rcpts + s.warmup_totals.rcpts),
            fmt_count(s.expected.rcpts)
        ),
    );
    card(
        &mut out,
        "sessions",
        &fmt_count(s.totals.sessions_completed + s.warmup_totals.sessions_completed),
        &format!(
            "completed of {} planned; {} failed",
            fmt_count(s.expected.sessions),
            fmt_count(s.totals.sessions_failed + s.warmup_totals.sessions_failed)
        ),
    );
    match &s.server {
        Some(server) => card(
            &mut out,
            "server CPU per RCPT",
            &format!("{} µs", fmt_num(server.cpu_us_per_rcpt)),
            &format!("peak RSS {}", fmt_mib(server.peak_rss_bytes as f64)),
        ),
        None if s.target.external => {
            card(&mut out, "server cost", "external target", "not measured");
        }
        None if s.merged.is_some() => {
            card(
                &mut out,
                "server cost",
                "per shard only",
                &no_server_text(s),
            );
        }
        None => card(&mut out, "server cost", "not measured", ""),
    }
    if let Some(ceiling) = &s.ceiling {
        card(
            &mut out,
            "share of the ceiling",
            &ceiling
                .ratios
                .rcpt_per_sec
                .map_or_else(|| "n/a".to_owned(), |r| format!("{}%", fmt_num(r * 100.0))),
            &format!(
                "of {} RCPT/s canned (unverified)",
                fmt_num(ceiling.rcpt_per_sec)
            ),
        );
    }
    card(
        &mut out,
        "machine",
        &format!("{} cores", s.machine.cores),
        &machine_text(&s.machine),
    );
    out.push_str("</div></section>\n");

    out.push_str("<section><h2>Setup</h2>\n");
    let mut rows = vec![
        vec!["scenario".to_owned(), escape(&name)],
        vec!["command".to_owned(), escape(&s.command)],
        vec!["target".to_owned(), escape(&target_text(s))],
    ];
    if let Some(shards) = shards_text(s) {
        rows.push(vec!["shards".to_owned(), escape(&shards)]);
    }
    rows.extend([
        vec!["machine".to_owned(), escape(&machine_text(&s.machine))],
        vec!["window".to_owned(), escape(&window_text(s))],
        vec!["seed".to_owned(), s.seed.to_string()],
        vec!["bulkbench".to_owned(), escape(&s.bulkbench_version)],
    ]);
    for (label, value) in scenario_figures(&s.scenario) {
        rows.push(vec![escape(&label), escape(&value)]);
    }
    // Free text (CPU model, scenario figures): let it wrap.
    table_with(&mut out, &header(&["setting", "value"]), &rows, "text");
    let _ = writeln!(
        out,
        "<p>Server and generator share the machine's {} cores: compare configurations as \
         ratios measured on the same machine.</p></section>",
        s.machine.cores
    );

    out.push_str("<section><h2>Totals</h2>\n");
    let (m, w) = (&s.totals, &s.warmup_totals);
    let row = |label: &str, a: u64, b: u64, planned: Option<u64>| {
        vec![
            escape(label),
            fmt_count(a),
            fmt_count(b),
            fmt_count(a + b),
            planned.map(fmt_count).unwrap_or_default(),
        ]
    };
    let rows = vec![
        row(
            "sessions started",
            m.sessions,
            w.sessions,
            Some(s.expected.sessions),
        ),
        row(
            "sessions completed",
            m.sessions_completed,
            w.sessions_completed,
            None,
        ),
        row(
            "sessions failed",
            m.sessions_failed,
            w.sessions_failed,
            Some(0),
        ),
        row("RCPT replies", m.rcpts, w.rcpts, Some(s.expected.rcpts)),
        row("messages accepted", m.messages, w.messages, None),
    ];
    table(
        &mut out,
        &header(&["", "measured", "warm-up", "total", "planned"]),
        &rows,
    );
    out.push_str("</section>\n<section><h2>Verdicts: RCPT replies by class</h2>\n");
    let rows: Vec<Vec<String>> = class_names(m)
        .iter()
        .map(|class| {
            let n = m.by_class.get(class).copied().unwrap_or(0);
            let wn = w.by_class.get(class).copied().unwrap_or(0);
            vec![
                escape(class),
                fmt_count(n),
                fmt_share(n, m.rcpts),
                fmt_count(wn),
            ]
        })
        .collect();
    table(
        &mut out,
        &header(&["class", "measured", "share", "warm-up"]),
        &rows,
    );
    out.push_str("</section>\n<section><h2>Plots</h2>\n");
    figures(&mut out, plots);
    out.push_str("</section>\n<section><h2>Latency (ms, measured sessions)</h2>\n");
    let rows: Vec<Vec<String>> = latency_rows(s)
        .into_iter()
        .map(|r| r.into_iter().map(|c| escape(&c)).collect())
        .collect();
    if rows.is_empty() {
        out.push_str("<p>No latency samples.</p>\n");
    } else {
        table(
            &mut out,
            &header(&[
                "phase", "count", "mean", "p50", "p90", "p99", "p99.9", "max",
            ]),
            &rows,
        );
    }
    out.push_str("</section>\n<section><h2>Cost</h2>\n<ul>\n");
    match &s.server {
        Some(server) => {
            let _ = writeln!(
                out,
                "<li>server: {} CPU s in the window, <strong>{} µs CPU per RCPT</strong>, \
                 peak RSS {}, ready {} s after spawn{}</li>",
                fmt_num(server.cpu_seconds),
                fmt_num(server.cpu_us_per_rcpt),
                fmt_mib(server.peak_rss_bytes as f64),
                fmt_num(server.startup_secs),
                escape(&cpu_set_text(server.cpu_set.as_ref()))
            );
        }
        None => {
            let _ = writeln!(out, "<li>server: {}</li>", escape(&no_server_text(s)));
        }
    }
    let _ = writeln!(
        out,
        "<li>generator: {} CPU s in the window, {} µs CPU per RCPT{}</li>\n</ul></section>",
        fmt_num(s.generator.cpu_seconds),
        fmt_num(s.generator.cpu_us_per_rcpt),
        escape(&cpu_set_text(s.generator.cpu_set.as_ref()))
    );
    if let Some(ceiling) = &s.ceiling {
        let _ = writeln!(
            out,
            "<section id=\"ceiling\"><h2>Ceiling</h2>\n<p><strong>{}.</strong></p>",
            escape(&upper_first(&ceiling_text(ceiling)))
        );
        let rows: Vec<Vec<String>> = ceiling_rows(s, ceiling)
            .into_iter()
            .map(|r| r.into_iter().map(|c| escape(&c)).collect())
            .collect();
        table(
            &mut out,
            &header(&["", "this server", "canned ceiling", "ratio"]),
            &rows,
        );
        let _ = writeln!(out, "<p>{}</p>", escape(&ceiling_method(ceiling)));
        let notes = ceiling_notes(s, ceiling);
        if !notes.is_empty() {
            out.push_str("<ul>\n");
            for note in notes {
                let _ = writeln!(out, "<li>{}</li>", escape(&note));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("<section><h2>Files</h2>\n<ul>\n");
    for (file, what) in run_files(data) {
        let _ = writeln!(
            out,
            "<li><a href=\"{f}\">{f}</a>: {}</li>",
            escape(&what),
            f = escape(&file)
        );
    }
    out.push_str("<li><a href=\"summary.md\">summary.md</a>: this report as Markdown</li>\n</ul></section>\n");
    page(&format!("bulkbench: {name} ({date})"), &out)
}

/// `comparison.html`: failed arms first, then the side-by-side table and the plots.
pub fn comparison_html(comparison: &Comparison, plots: &[RenderedPlot]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<header><h1>bulkbench comparison: {}</h1><p class=\"sub\">{} arm(s){}</p></header>",
        escape(&comparison.scenario),
        comparison.arms.len(),
        comparison_machine(comparison)
            .map(|m| format!(" · {}", escape(&m)))
            .unwrap_or_default()
    );
    let failed: Vec<_> = comparison.arms.iter().filter(|a| a.is_failed()).collect();
    let troubled: Vec<_> = comparison
        .arms
        .iter()
        .filter(|a| {
            a.metric("mismatches").is_some_and(|s| s.max > 0.0)
                || a.metric("failed_sessions").is_some_and(|s| s.max > 0.0)
        })
        .collect();
    let regressed = comparison.verdict.as_ref().filter(|v| !v.passed);
    if failed.is_empty() && troubled.is_empty() && regressed.is_none() {
        out.push_str(
            "<section class=\"box ok\"><h2>No problems</h2><p>Every arm ran, with no \
             mismatch and no failed session.</p></section>\n",
        );
    } else {
        out.push_str("<section class=\"box problem\"><h2>Problems</h2>\n<ul>\n");
        for arm in &failed {
            let _ = writeln!(
                out,
                "<li><strong>arm {} FAILED</strong> after {} completed repeat(s): <code>{}</code></li>",
                escape(&arm.name),
                arm.repeats,
                escape(arm.error.as_deref().unwrap_or("no run completed"))
            );
        }
        for arm in &troubled {
            let _ = writeln!(
                out,
                "<li><strong>arm {}</strong>: up to {} mismatches and {} failed sessions per run</li>",
                escape(&arm.name),
                fmt_num(arm.metric("mismatches").map_or(0.0, |s| s.max)),
                fmt_num(arm.metric("failed_sessions").map_or(0.0, |s| s.max))
            );
        }
        for check in regressed.iter().flat_map(|v| v.failures()) {
            let _ = writeln!(
                out,
                "<li><strong>REGRESSION against the baseline</strong>: arm {}, {} ratio {} \
                 (95% interval {}), past the limit {}</li>",
                escape(&check.arm),
                escape(&check.metric),
                escape(&fmt_ratio(check.ratio)),
                escape(&check.interval_text()),
                escape(&fmt_num(check.limit))
            );
        }
        out.push_str("</ul></section>\n");
    }
    if let Some(verdict) = &comparison.verdict {
        let _ = writeln!(
            out,
            "<section class=\"box {}\"><h2>Against the baseline</h2><p><strong>{}</strong></p>",
            if verdict.passed { "ok" } else { "problem" },
            escape(&verdict.headline())
        );
        let rows: Vec<Vec<String>> = verdict_rows(verdict)
            .into_iter()
            .map(|row| row.iter().map(|c| escape(c)).collect())
            .collect();
        if rows.is_empty() {
            out.push_str("<p>No arm of this comparison ran in the baseline.</p>\n");
        } else {
            table(&mut out, &header(&VERDICT_HEADER), &rows);
        }
        out.push_str("</section>\n");
    }

    out.push_str("<section><div class=\"cards\">\n");
    for arm in &comparison.arms {
        let value = arm.rcpt_per_sec.map_or_else(
            || "failed".to_owned(),
            |s| format!("{} RCPT/s", fmt_num(s.median)),
        );
        let ratio = arm
            .ratios
            .get("rcpt_per_sec")
            .map(|r| format!("x{} of baseline; ", fmt_num(*r)))
            .unwrap_or_default();
        card(
            &mut out,
            &arm.name,
            &value,
            &format!(
                "{ratio}{} repeat(s){}",
                arm.repeats,
                arm.target
                    .as_deref()
                    .map(|t| format!("; {t}"))
                    .unwrap_or_default()
            ),
        );
    }
    out.push_str("</div></section>\n");

    let _ = writeln!(
        out,
        "<section><h2>Side by side</h2><p>Baseline arm: {}. {}</p>{}",
        escape(
            comparison
                .baseline
                .as_deref()
                .unwrap_or("none: no arm completed")
        ),
        escape(&comparison_legend(comparison)),
        run_order_text(comparison)
            .map(|order| format!("<p>Run order ({}).</p>", escape(&order)))
            .unwrap_or_default()
    );
    let mut head = vec![String::new()];
    head.extend(comparison.arms.iter().map(|a| escape(&a.name)));
    let mut rows = vec![{
        let mut row = vec!["repeats".to_owned()];
        row.extend(comparison.arms.iter().map(|a| a.repeats.to_string()));
        row
    }];
    for r in comparison_rows(comparison) {
        let mut row = vec![escape(&r.label)];
        row.extend(
            comparison
                .arms
                .iter()
                .map(|a| escape(&comparison_cell(a, &r.key, r.format))),
        );
        rows.push(row);
    }
    table(&mut out, &head, &rows);
    out.push_str("</section>\n<section><h2>Plots</h2>\n");
    figures(&mut out, plots);
    out.push_str(
        "</section>\n<section><h2>Files</h2><ul>\n<li><a href=\"comparison.json\">comparison.json</a>: \
         the figures, machine-readable</li>\n<li><a href=\"comparison.md\">comparison.md</a>: \
         this report as Markdown</li>\n</ul></section>\n",
    );
    page(
        &format!("bulkbench comparison: {}", comparison.scenario),
        &out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">Tom & 'Jerry'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }
}
