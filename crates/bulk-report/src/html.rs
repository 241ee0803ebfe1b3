//! `report.html` and `comparison.html`: a [`Report`] as a self-contained page, and
//! [`render_run`], which writes a run's whole rendered report (plots, `summary.md`,
//! `report.html`).
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

use crate::compare::{Comparison, plot_files};
use crate::format::{run_date, upper_first};
use crate::plot::{self, HEIGHT, Progress, RenderedPlot, WIDTH};
use crate::report::{
    Block, Figure, Report, Section, Span, Table, Text, Tone, comparison_report, run_report,
};
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
    let report = run_report(data, &run_date(data), &rendered);
    let mut files = plot_files(&rendered);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map(|()| path.clone())
            .map_err(|source| ReportError::Io { path, source })
    };
    files.push(write(
        "summary.md",
        crate::markdown::render_markdown(&report),
    )?);
    progress.step();
    files.push(write("report.html", render_html(&report))?);
    progress.step();
    Ok(files)
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

/// Text as HTML: strong, code and links marked up, everything escaped.
fn text(t: &Text) -> String {
    t.0.iter()
        .map(|span| match span {
            Span::Plain(s) => escape(s),
            Span::Strong(s) => format!("<strong>{}</strong>", escape(s)),
            Span::Code(s) => format!("<code>{}</code>", escape(s)),
            Span::Link { text, href } => {
                format!("<a href=\"{}\">{}</a>", escape(href), escape(text))
            }
        })
        .collect()
}

/// A table; the first cell of a row heads the row. Cells of free text or raw data wrap.
fn table(out: &mut String, table: &Table) {
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for h in &table.header {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\">{}</th>", text(cell));
            } else if table.wrap || cell.is_code() {
                let _ = write!(out, "<td class=\"text\">{}</td>", text(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", text(cell));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// A plot with its SVG inline as a data URI, sized, with alt text.
fn figure(out: &mut String, figure: &Figure) {
    let engine = base64::engine::general_purpose::STANDARD;
    let _ = write!(
        out,
        "<figure id=\"{name}\">\n<img src=\"data:image/svg+xml;base64,{data}\" \
         alt=\"{alt}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" loading=\"lazy\">\n\
         <figcaption><strong>{title}.</strong> {caption} Files: \
         <a href=\"{name}.png\">PNG</a>, <a href=\"{name}.svg\">SVG</a>.</figcaption>\n\
         </figure>\n",
        name = escape(&figure.name),
        data = engine.encode(figure.svg.as_bytes()),
        alt = escape(&figure.alt),
        title = escape(&figure.title),
        caption = escape(&figure.caption),
    );
}

fn blocks(out: &mut String, blocks: &[Block]) {
    for block in blocks {
        match block {
            Block::Paragraph(t) => {
                let _ = writeln!(out, "<p>{}</p>", text(t));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(out, "<li>{}</li>", text(item));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(t) => table(out, t),
            Block::Figure(f) => figure(out, f),
        }
    }
}

fn section(out: &mut String, section: &Section) {
    let id = section
        .id
        .as_ref()
        .map(|id| format!(" id=\"{}\"", escape(id)))
        .unwrap_or_default();
    let class = match section.tone {
        Tone::Plain => "",
        Tone::Ok => " class=\"box ok\"",
        Tone::Problem => " class=\"box problem\"",
    };
    let _ = writeln!(
        out,
        "<section{id}{class}><h2>{}</h2>",
        escape(&section.title)
    );
    blocks(out, &section.blocks);
    out.push_str("</section>\n");
}

/// A report as a self-contained page: the title, the problems, the tiles, then the
/// documents' sections.
pub fn render_html(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<header><h1>{}</h1><p class=\"sub\">{}</p></header>",
        escape(&report.title),
        escape(&report.subtitle.join(" · "))
    );
    if report.problems.is_empty() {
        let _ = writeln!(
            out,
            "<section class=\"box ok\"><h2>No problems</h2><p>{}</p></section>",
            escape(&upper_first(&report.all_clear))
        );
    } else {
        out.push_str("<section class=\"box problem\"><h2>Problems</h2>\n");
        for problem in &report.problems {
            let _ = writeln!(out, "<h3>{}</h3>", escape(&problem.headline));
            if let Some(detail) = &problem.detail {
                let _ = writeln!(out, "<p>{}</p>", text(detail));
            }
            blocks(&mut out, &problem.blocks);
        }
        out.push_str("</section>\n");
    }
    if !report.tiles.is_empty() {
        out.push_str("<section><div class=\"cards\">\n");
        for tile in &report.tiles {
            let _ = writeln!(
                out,
                "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div>\
                 <div class=\"d\">{}</div></div>",
                escape(&tile.label),
                escape(&tile.value),
                escape(&tile.detail)
            );
        }
        out.push_str("</div></section>\n");
    }
    for s in report.sections.iter().filter(|s| s.show.documents()) {
        section(&mut out, s);
    }
    page(&report.title, &out)
}

/// `report.html` of a run.
pub fn run_html(data: &RunData, date: &str, plots: &[RenderedPlot]) -> String {
    render_html(&run_report(data, date, plots))
}

/// `comparison.html`: failed arms first, then the verdict, the setup, the side-by-side
/// table and the plots.
pub fn comparison_html(comparison: &Comparison, plots: &[RenderedPlot]) -> String {
    render_html(&comparison_report(comparison, plots))
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
