//! `summary.md` and `comparison.md`: a [`Report`] as Markdown, problems first.
//!
//! Text from data is escaped (`md`): no markup, no raw HTML. Code spans are written as
//! escaped plain text, since a reply line may hold backticks and pipes that a Markdown
//! code span in a table cannot carry. The HTML page's tiles and subtitle repeat figures
//! the sections hold, so Markdown leaves them out; so do the terminal's sections.

use std::fmt::Write as _;

use crate::RunData;
use crate::compare::Comparison;
use crate::plot::RenderedPlot;
use crate::report::{
    Block, Figure, Report, Section, Span, Table, Text, comparison_report, run_report,
};

/// Escapes text from data for Markdown (tables included): no markup, no raw HTML. An
/// underscore inside a word (`end_of_data`) cannot open emphasis, so it stays as it is.
pub(crate) fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let word = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|c| c.is_alphanumeric())
    };
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '_' if word(i.checked_sub(1)) && word(Some(i + 1)) => out.push(c),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text as Markdown: strong as `**...**`, links to the folder's files as links.
fn text(t: &Text) -> String {
    t.0.iter()
        .map(|span| match span {
            Span::Plain(s) | Span::Code(s) => md(s),
            Span::Strong(s) => format!("**{}**", md(s)),
            Span::Link { text, href } => format!("[{}]({href})", md(text)),
        })
        .collect()
}

/// Whether a cell holds a figure (right-aligned) rather than text; a placeholder for a
/// missing figure counts as one.
fn is_figure(cell: &str) -> bool {
    let cell = cell.trim();
    let ratio = cell.strip_prefix('x').unwrap_or(cell);
    ratio.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        || ["failed", "external", "n/a"].contains(&cell)
}

/// A GitHub-flavoured Markdown table; columns of figures (not code) are right-aligned.
fn table(out: &mut String, table: &Table) {
    let header: Vec<String> = table.header.iter().map(|h| md(h)).collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let rule: Vec<&str> = (0..header.len())
        .map(|i| {
            let mut cells = table
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(Text::plain_text)
                .filter(|c| !c.is_empty());
            let code = table
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .any(Text::is_code);
            let figures =
                i > 0 && !code && cells.clone().next().is_some() && cells.all(|c| is_figure(&c));
            if figures { "---:" } else { "---" }
        })
        .collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(text).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn figure(out: &mut String, figure: &Figure) {
    let _ = writeln!(
        out,
        "### {}\n\n![{}]({}.png)\n\n{} ([SVG]({}.svg))\n",
        md(&figure.title),
        md(&figure.alt),
        figure.name,
        md(&figure.caption),
        figure.name
    );
}

fn blocks(out: &mut String, blocks: &[Block]) {
    for block in blocks {
        match block {
            Block::Paragraph(t) => {
                let _ = writeln!(out, "{}\n", text(t));
            }
            Block::List(items) => {
                for item in items {
                    let _ = writeln!(out, "- {}", text(item));
                }
                out.push('\n');
            }
            Block::Table(t) => table(out, t),
            Block::Figure(f) => figure(out, f),
        }
    }
}

fn section(out: &mut String, section: &Section) {
    let _ = writeln!(out, "## {}\n", md(&section.title));
    blocks(out, &section.blocks);
}

/// A report as Markdown: the title, the problems, then the documents' sections.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", md(&report.title));
    let _ = writeln!(out, "## Problems\n");
    for problem in &report.problems {
        match &problem.detail {
            Some(detail) => {
                let _ = writeln!(out, "**{}:** {}\n", md(&problem.headline), text(detail));
            }
            None => {
                let _ = writeln!(out, "**{}.**\n", md(&problem.headline));
            }
        }
        blocks(&mut out, &problem.blocks);
    }
    if report.problems.is_empty() {
        let _ = writeln!(out, "None: {}\n", md(&report.all_clear));
    }
    for s in report.sections.iter().filter(|s| s.show.documents()) {
        section(&mut out, s);
    }
    out
}

/// `summary.md` of a run: problems, setup, totals, verdicts, throughput, plots, latency,
/// cost, ceiling and files.
pub fn run_markdown(data: &RunData, date: &str, plots: &[RenderedPlot]) -> String {
    render_markdown(&run_report(data, date, plots))
}

/// `comparison.md`: failed arms first, then the verdict, the setup, the side-by-side table
/// and plots.
pub fn comparison_markdown(comparison: &Comparison, plots: &[RenderedPlot]) -> String {
    render_markdown(&comparison_report(comparison, plots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escapes_markup() {
        assert_eq!(md("a|b*<i>\n"), "a\\|b\\*&lt;i&gt; ");
        assert_eq!(md("end_of_data _x_ y_"), "end_of_data \\_x\\_ y\\_");
        let t = Text::new().strong("a*b").plain(" & ").link("_y", "_y");
        assert_eq!(text(&t), "**a\\*b** &amp; [\\_y](_y)");
    }
}
