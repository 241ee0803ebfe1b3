//! A [`Report`] as plain text for the terminal: the problems, then the sections made for
//! it ([`crate::report::Show`]), compact: a paragraph is a line, a list indented lines, a
//! table aligned columns, a figure the file that holds it.

use std::fmt::Write as _;

use crate::report::{Block, Report, Table, Text};

/// Text with its control characters (a reply's CR LF, an escape) made spaces.
fn plain(t: &Text) -> String {
    t.plain_text()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether a cell holds a figure: a column of them (and no code) is right-aligned.
fn is_figure(cell: &str) -> bool {
    cell.is_empty() || cell.starts_with(|c: char| c.is_ascii_digit() || c == '-')
}

fn table(out: &mut String, indent: &str, table: &Table) {
    let mut rows: Vec<Vec<String>> = vec![table.header.clone()];
    rows.extend(table.rows.iter().map(|r| r.iter().map(plain).collect()));
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let right: Vec<bool> = (0..columns)
        .map(|i| {
            let code = table
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .any(Text::is_code);
            i > 0
                && !code
                && rows[1..]
                    .iter()
                    .filter_map(|r| r.get(i))
                    .all(|c| is_figure(c))
        })
        .collect();
    for row in &rows {
        let mut line = indent.to_owned();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if right[i] {
                let _ = write!(line, "{pad}{cell}");
            } else {
                let _ = write!(line, "{cell}{pad}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn blocks(out: &mut String, indent: &str, blocks: &[Block]) {
    for block in blocks {
        match block {
            Block::Paragraph(t) => {
                let _ = writeln!(out, "{indent}{}", plain(t));
            }
            Block::List(items) => {
                for item in items {
                    let _ = writeln!(out, "{indent}  {}", plain(item));
                }
            }
            Block::Table(t) => table(out, indent, t),
            Block::Figure(f) => {
                let _ = writeln!(out, "{indent}{}: {}.png, {}.svg", f.title, f.name, f.name);
            }
        }
    }
}

/// The terminal's summary of a report: problems first, then its sections, a blank line
/// apart.
pub fn render_terminal(report: &Report) -> String {
    let mut out = String::new();
    for problem in &report.problems {
        match &problem.detail {
            Some(detail) => {
                let _ = writeln!(out, "{}: {}", problem.headline, plain(detail));
            }
            None => {
                let _ = writeln!(out, "{}", problem.headline);
            }
        }
        blocks(&mut out, "  ", &problem.blocks);
        out.push('\n');
    }
    let sections: Vec<String> = report
        .sections
        .iter()
        .filter(|s| s.show.terminal())
        .map(|s| {
            let mut text = String::new();
            if !s.title.is_empty() {
                let _ = writeln!(text, "{}", s.title);
            }
            blocks(&mut text, "", &s.blocks);
            text
        })
        .collect();
    out.push_str(&sections.join("\n"));
    out
}
