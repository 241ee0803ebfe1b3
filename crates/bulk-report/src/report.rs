//! The report as data: built once from a run ([`run_report`], [`summary_report`]) or a
//! comparison ([`comparison_report`]), then walked by each renderer: the terminal
//! ([`crate::terminal`]), Markdown ([`crate::markdown`]) and HTML ([`crate::html`]).
//!
//! A [`Report`] is a title, the problems (always first), the HTML page's tiles and
//! sections of blocks: paragraphs, lists, tables and figures. Text is plain with light
//! emphasis ([`Span`]); each renderer escapes it and marks it up its own way. Each
//! section says where it shows ([`Show`]): the terminal keeps its compact layout by
//! rendering only the sections made for it, while the sections of the documents are the
//! same in Markdown and HTML. A figure (or a table, or a paragraph) added to a section
//! shows in every rendering of that section.

use bulk_loadgen::Phase;

use crate::RunData;
use crate::compare::Comparison;
use crate::format::{
    VERDICT_HEADER, ceiling_method, ceiling_notes, ceiling_rows, ceiling_text, class_names,
    comparison_cell, comparison_legend, comparison_rows, cpu_set_text, cpus_text, failed_kinds,
    fmt_count, fmt_mib, fmt_ms, fmt_num, fmt_ratio, fmt_share, latency_rows, machine_text,
    no_server_text, partial_text, run_files, run_order_text, scenario_figures, scenario_name,
    shards_text, starttls_text, target_text, upper_first, verdict_rows, window_text,
};
use crate::plot::RenderedPlot;
use crate::summary::{Ceiling, CpuSetCost, Summary};

/// A piece of text with its emphasis.
#[derive(Clone, Debug, PartialEq)]
pub enum Span {
    /// Plain text.
    Plain(String),
    /// Text that stands out (bold).
    Strong(String),
    /// Text from the wire or a program (reply lines, addresses, errors).
    Code(String),
    /// A link to a file of the report's folder.
    Link {
        /// What the reader sees.
        text: String,
        /// The file, relative to the report.
        href: String,
    },
}

impl Span {
    /// The text without markup.
    pub fn text(&self) -> &str {
        match self {
            Span::Plain(t) | Span::Strong(t) | Span::Code(t) => t,
            Span::Link { text, .. } => text,
        }
    }
}

/// Text: spans in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Text(pub Vec<Span>);

impl Text {
    /// Empty text, to build on.
    pub fn new() -> Text {
        Text(Vec::new())
    }

    /// Appends plain text.
    pub fn plain(mut self, text: impl Into<String>) -> Text {
        self.0.push(Span::Plain(text.into()));
        self
    }

    /// Appends strong text.
    pub fn strong(mut self, text: impl Into<String>) -> Text {
        self.0.push(Span::Strong(text.into()));
        self
    }

    /// Appends code.
    pub fn code(mut self, text: impl Into<String>) -> Text {
        self.0.push(Span::Code(text.into()));
        self
    }

    /// Appends a link to a file.
    pub fn link(mut self, text: impl Into<String>, href: impl Into<String>) -> Text {
        self.0.push(Span::Link {
            text: text.into(),
            href: href.into(),
        });
        self
    }

    /// The text without markup.
    pub fn plain_text(&self) -> String {
        self.0.iter().map(Span::text).collect()
    }

    /// Whether it is all code (a cell of raw data).
    pub fn is_code(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|s| matches!(s, Span::Code(_)))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(vec![Span::Plain(text)])
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(vec![Span::Plain(text.to_owned())])
    }
}

/// A table: a header and rows of cells; the first cell of a row heads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Text>>,
    /// The cells hold free text that may wrap (settings), not figures.
    pub wrap: bool,
}

impl Table {
    /// A table of plain cells.
    pub fn new(header: &[&str], rows: Vec<Vec<String>>) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: rows
                .into_iter()
                .map(|r| r.into_iter().map(Text::from).collect())
                .collect(),
            wrap: false,
        }
    }
}

/// A block of a section.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A paragraph (one line in the terminal).
    Paragraph(Text),
    /// A bulleted list.
    List(Vec<Text>),
    /// A table.
    Table(Table),
    /// A plot, drawn into the report's folder.
    Figure(Figure),
}

/// A plot as the reports show it: the files in the folder and the SVG to embed.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// File stem: `NAME.svg`, `NAME.png`.
    pub name: String,
    /// Title.
    pub title: String,
    /// What it shows, for the reader.
    pub caption: String,
    /// Alternative text.
    pub alt: String,
    /// The SVG document.
    pub svg: String,
}

impl From<&RenderedPlot> for Figure {
    fn from(plot: &RenderedPlot) -> Figure {
        Figure {
            name: plot.name.clone(),
            title: plot.title.clone(),
            caption: plot.caption.clone(),
            alt: plot.alt.clone(),
            svg: plot.svg.clone(),
        }
    }
}

/// Where a section shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Every rendering.
    Everywhere,
    /// `.md` and `.html` only.
    Documents,
    /// The terminal only (its compact summary).
    Terminal,
}

impl Show {
    /// In the terminal.
    pub fn terminal(self) -> bool {
        self != Show::Documents
    }

    /// In the Markdown and HTML documents.
    pub fn documents(self) -> bool {
        self != Show::Terminal
    }
}

/// How a section reads at a glance (the HTML page boxes it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tone {
    /// An ordinary section.
    #[default]
    Plain,
    /// All is well.
    Ok,
    /// Something went wrong.
    Problem,
}

/// A section: a title and blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// The heading; the terminal's sections have none.
    pub title: String,
    /// An anchor for the HTML page.
    pub id: Option<String>,
    /// Where it shows.
    pub show: Show,
    /// How it reads at a glance.
    pub tone: Tone,
    /// The content.
    pub blocks: Vec<Block>,
}

impl Section {
    /// A section of the documents.
    pub fn new(title: &str, blocks: Vec<Block>) -> Section {
        Section {
            title: title.to_owned(),
            id: None,
            show: Show::Documents,
            tone: Tone::Plain,
            blocks,
        }
    }

    /// A section of the terminal's summary (no title).
    pub fn terminal(blocks: Vec<Block>) -> Section {
        Section {
            show: Show::Terminal,
            ..Section::new("", blocks)
        }
    }
}

/// Something the reader must know before trusting the figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// What went wrong, in capitals where it must catch the eye.
    pub headline: String,
    /// What it means, a sentence.
    pub detail: Option<Text>,
    /// The particulars (tables, lists).
    pub blocks: Vec<Block>,
}

impl Problem {
    fn new(headline: impl Into<String>, detail: Option<Text>) -> Problem {
        Problem {
            headline: headline.into(),
            detail,
            blocks: Vec::new(),
        }
    }
}

/// A figure at a glance, on the HTML page's cards.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    /// What it is.
    pub label: String,
    /// The figure.
    pub value: String,
    /// Context.
    pub detail: String,
}

fn tile(label: &str, value: impl Into<String>, detail: impl Into<String>) -> Tile {
    Tile {
        label: label.to_owned(),
        value: value.into(),
        detail: detail.into(),
    }
}

/// A whole report, ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The title (the heading and the page's title).
    pub title: String,
    /// Facts under the title on the HTML page, each short.
    pub subtitle: Vec<String>,
    /// The problems, shown first by every renderer.
    pub problems: Vec<Problem>,
    /// With no problem: what was checked, as a sentence.
    pub all_clear: String,
    /// The figures a reader needs first, as the HTML page's cards.
    pub tiles: Vec<Tile>,
    /// The rest, in order.
    pub sections: Vec<Section>,
}

// ---- a run -----------------------------------------------------------------------------

/// A run's report: problems, setup, totals, verdicts, throughput, plots, latency, cost,
/// ceiling and files for the documents, and the terminal's compact summary.
pub fn run_report(data: &RunData, date: &str, plots: &[RenderedPlot]) -> Report {
    let phases: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| data.phases.contains_key(p))
        .collect();
    summary_report(&data.summary, date, &phases, plots)
}

/// [`run_report`] from a summary alone: `date` heads it, `phases` have a `.hgrm` file.
pub fn summary_report(s: &Summary, date: &str, phases: &[Phase], plots: &[RenderedPlot]) -> Report {
    let name = scenario_name(s);
    let mut subtitle = vec![s.command.clone(), target_text(s)];
    subtitle.extend(shards_text(s));
    let mut sections = vec![
        setup_section(s),
        totals_section(s),
        verdicts_section(s),
        Section::new(
            "Throughput",
            vec![Block::Paragraph(
                Text::new()
                    .strong(format!("{} RCPT/s", fmt_num(s.throughput.rcpt_per_sec)))
                    .plain(format!(
                        ", {} sessions/s over the {} s window.",
                        fmt_num(s.throughput.sessions_per_sec),
                        fmt_num(s.window.measured_secs)
                    )),
            )],
        ),
        plots_section(plots),
        latency_section(s),
        cost_section(s),
    ];
    if let Some(ceiling) = &s.ceiling {
        sections.push(ceiling_section(s, ceiling));
    }
    let files = run_files(phases)
        .into_iter()
        .map(|(file, what)| Text::new().link(&file, &file).plain(format!(": {what}")))
        .collect();
    sections.push(Section::new("Files", vec![Block::List(files)]));
    sections.extend(terminal_sections(s));
    Report {
        title: format!("bulkbench: {name} ({date})"),
        subtitle,
        problems: run_problems(s),
        all_clear: "every RCPT reply matched the population and no session failed.".to_owned(),
        tiles: run_tiles(s),
        sections,
    }
}

fn run_problems(s: &Summary) -> Vec<Problem> {
    let mut problems = Vec::new();
    if s.mismatches.total > 0 {
        let mut problem = Problem::new(
            format!(
                "MISMATCHES: {} RCPT replies contradicted the population",
                fmt_count(s.mismatches.total)
            ),
            None,
        );
        let rows = s
            .mismatches
            .by_class
            .iter()
            .map(|(pair, n)| vec![pair.clone(), fmt_count(*n)])
            .collect();
        problem.blocks.push(Block::Table(Table::new(
            &["expected → actual", "count"],
            rows,
        )));
        if !s.mismatches.examples.is_empty() {
            let rows = s
                .mismatches
                .examples
                .iter()
                .map(|e| {
                    vec![
                        Text::from(e.session.to_string()),
                        Text::new().code(&e.recipient),
                        Text::from(e.expected.name()),
                        Text::new().code(&e.reply),
                    ]
                })
                .collect();
            problem.blocks.push(Block::Paragraph("Examples:".into()));
            problem.blocks.push(Block::Table(Table {
                rows,
                ..Table::new(&["session", "recipient", "expected", "reply"], Vec::new())
            }));
        }
        problems.push(problem);
    }
    let failed = failed_kinds(s);
    if !failed.is_empty() {
        let total: u64 = failed.iter().map(|f| f.1).sum();
        let mut problem = Problem::new(
            format!(
                "FAILED SESSIONS: {} (measured and warm-up)",
                fmt_count(total)
            ),
            None,
        );
        let rows = failed
            .iter()
            .map(|(kind, n)| vec![(*kind).to_owned(), fmt_count(*n)])
            .collect();
        problem
            .blocks
            .push(Block::Table(Table::new(&["kind", "sessions"], rows)));
        problems.push(problem);
    }
    if let Some(queue) = s.listen_queue.filter(|q| q.overflows > 0) {
        problems.push(Problem::new(
            format!(
                "LISTEN QUEUE OVERFLOWS: {} SYNs or handshakes dropped",
                fmt_count(queue.overflows)
            ),
            Some(
                format!(
                    "The kernel found a listen queue full {} times during the run ({} \
                     listen drops in all; TcpExtListenOverflows, counted for every \
                     listener of the network namespace). A dropped SYN or handshake is \
                     sent again a second or more later: connect latencies and the session \
                     rate are the backlog's, not the server's. \
                     Raise the server's backlog (serve --backlog, net.core.somaxconn) or \
                     start fewer sessions at once.",
                    fmt_count(queue.overflows),
                    fmt_count(queue.drops)
                )
                .into(),
            ),
        ));
    }
    if s.window.interrupted {
        problems.push(Problem::new(
            "INTERRUPTED",
            Some("The run was stopped before its workload finished.".into()),
        ));
    }
    if let Some(partial) = partial_text(s) {
        problems.push(Problem::new(
            "PARTIAL MERGE",
            Some(format!("{}.", upper_first(&partial)).into()),
        ));
    }
    let fallback = s.fallback_sessions();
    if fallback > 0 {
        problems.push(Problem::new(
            "The server does not advertise BULK",
            Some(format!("{} sessions used MAIL FROM instead.", fmt_count(fallback)).into()),
        ));
    }
    problems
}

fn run_tiles(s: &Summary) -> Vec<Tile> {
    let mut tiles = vec![tile(
        "throughput",
        format!("{} RCPT/s", fmt_num(s.throughput.rcpt_per_sec)),
        format!("{} sessions/s", fmt_num(s.throughput.sessions_per_sec)),
    )];
    let rcpt = s.latency_us.get("rcpt").filter(|l| l.count > 0);
    tiles.push(tile(
        "RCPT latency p99",
        rcpt.map_or_else(
            || "no samples".to_owned(),
            |l| format!("{} ms", fmt_ms(l.p99)),
        ),
        rcpt.map_or_else(String::new, |l| format!("p50 {} ms", fmt_ms(l.p50))),
    ));
    tiles.push(tile(
        "RCPT replies",
        fmt_count(s.totals.rcpts),
        format!(
            "{} with warm-up, of {} planned",
            fmt_count(s.totals.rcpts + s.warmup_totals.rcpts),
            fmt_count(s.expected.rcpts)
        ),
    ));
    tiles.push(tile(
        "sessions",
        fmt_count(s.totals.sessions_completed + s.warmup_totals.sessions_completed),
        format!(
            "completed of {} planned; {} failed",
            fmt_count(s.expected.sessions),
            fmt_count(s.totals.sessions_failed + s.warmup_totals.sessions_failed)
        ),
    ));
    tiles.push(match &s.server {
        Some(server) => match &s.store {
            Some(store) => tile(
                "server + store CPU per RCPT",
                format!(
                    "{} µs",
                    fmt_num(server.cpu_us_per_rcpt + store.cpu_us_per_rcpt)
                ),
                format!(
                    "server {} µs, {} {} µs; peak RSS {}",
                    fmt_num(server.cpu_us_per_rcpt),
                    store.kind,
                    fmt_num(store.cpu_us_per_rcpt),
                    fmt_mib(server.peak_rss_bytes as f64)
                ),
            ),
            None => tile(
                "server CPU per RCPT",
                format!("{} µs", fmt_num(server.cpu_us_per_rcpt)),
                format!("peak RSS {}", fmt_mib(server.peak_rss_bytes as f64)),
            ),
        },
        None if s.target.external => tile("server cost", "external target", "not measured"),
        None if s.merged.is_some() => tile("server cost", "per shard only", no_server_text(s)),
        None => tile("server cost", "not measured", ""),
    });
    if let Some(ceiling) = &s.ceiling {
        tiles.push(tile(
            "share of the ceiling",
            ceiling
                .ratios
                .rcpt_per_sec
                .map_or_else(|| "n/a".to_owned(), |r| format!("{}%", fmt_num(r * 100.0))),
            format!(
                "of {} RCPT/s canned (unverified)",
                fmt_num(ceiling.rcpt_per_sec)
            ),
        ));
    }
    tiles.push(tile(
        "machine",
        format!("{} cores", s.machine.cores),
        machine_text(&s.machine),
    ));
    tiles
}

fn setup_section(s: &Summary) -> Section {
    let mut rows = vec![
        vec!["scenario".to_owned(), scenario_name(s)],
        vec!["command".to_owned(), s.command.clone()],
        vec!["target".to_owned(), target_text(s)],
    ];
    if let Some(shards) = shards_text(s) {
        rows.push(vec!["shards".to_owned(), shards]);
    }
    rows.extend([
        vec!["machine".to_owned(), machine_text(&s.machine)],
        vec!["window".to_owned(), window_text(s)],
        vec!["seed".to_owned(), s.seed.to_string()],
        vec!["bulkbench".to_owned(), s.bulkbench_version.clone()],
    ]);
    for (label, value) in scenario_figures(&s.scenario) {
        rows.push(vec![format!("scenario: {label}"), value]);
    }
    Section::new(
        "Setup",
        vec![
            // Free text (CPU model, scenario figures): let it wrap.
            Block::Table(Table {
                wrap: true,
                ..Table::new(&["setting", "value"], rows)
            }),
            Block::Paragraph(
                format!(
                    "Server and generator share the machine's {} cores: compare \
                     configurations as ratios measured on the same machine.",
                    s.machine.cores
                )
                .into(),
            ),
        ],
    )
}

fn totals_section(s: &Summary) -> Section {
    let (m, w) = (&s.totals, &s.warmup_totals);
    let row = |label: &str, a: u64, b: u64, planned: Option<u64>| {
        vec![
            label.to_owned(),
            fmt_count(a),
            fmt_count(b),
            fmt_count(a + b),
            planned.map(fmt_count).unwrap_or_default(),
        ]
    };
    let mut rows = vec![
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
    if m.starttls_sessions + w.starttls_sessions > 0 {
        rows.insert(
            3,
            row(
                "sessions with STARTTLS",
                m.starttls_sessions,
                w.starttls_sessions,
                None,
            ),
        );
    }
    Section::new(
        "Totals",
        vec![Block::Table(Table::new(
            &["", "measured", "warm-up", "total", "planned"],
            rows,
        ))],
    )
}

fn verdicts_section(s: &Summary) -> Section {
    let (m, w) = (&s.totals, &s.warmup_totals);
    let rows = class_names(m)
        .iter()
        .map(|class| {
            let n = m.by_class.get(class).copied().unwrap_or(0);
            let wn = w.by_class.get(class).copied().unwrap_or(0);
            vec![
                class.clone(),
                fmt_count(n),
                fmt_share(n, m.rcpts),
                fmt_count(wn),
            ]
        })
        .collect();
    Section::new(
        "Verdicts (RCPT replies by class)",
        vec![Block::Table(Table::new(
            &["class", "measured", "share", "warm-up"],
            rows,
        ))],
    )
}

fn plots_section(plots: &[RenderedPlot]) -> Section {
    Section::new(
        "Plots",
        plots.iter().map(|p| Block::Figure(p.into())).collect(),
    )
}

fn latency_section(s: &Summary) -> Section {
    let rows = latency_rows(s);
    let block = if rows.is_empty() {
        Block::Paragraph("No latency samples.".into())
    } else {
        Block::Table(Table::new(
            &[
                "phase", "count", "mean", "p50", "p90", "p99", "p99.9", "max",
            ],
            rows,
        ))
    };
    let mut blocks = vec![block];
    if let Some(tls) = starttls_text(s) {
        blocks.push(Block::Paragraph(
            format!(
                "{}. tls_handshake runs from STARTTLS's 220 to the handshake's end on the                  generator's side (a full handshake each: no resumption); those sessions say                  EHLO twice, and every phase after the handshake ran over TLS.",
                upper_first(&tls)
            )
            .into(),
        ));
    }
    Section::new("Latency (ms, measured sessions)", blocks)
}

fn cost_section(s: &Summary) -> Section {
    let server = match &s.server {
        Some(server) => Text::new()
            .plain(format!(
                "server: {} CPU s in the window, ",
                fmt_num(server.cpu_seconds)
            ))
            .strong(format!(
                "{} µs CPU per RCPT",
                fmt_num(server.cpu_us_per_rcpt)
            ))
            .plain(format!(
                ", peak RSS {}{}{}",
                fmt_mib(server.peak_rss_bytes as f64),
                match server.startup_secs {
                    Some(secs) => format!(", ready {} s after spawn", fmt_num(secs)),
                    None => format!(", measured on processes {}", pid_list(&s.target.processes)),
                },
                cpu_set_text(server.cpu_set.as_ref())
            )),
        None => format!("server: {}", no_server_text(s)).into(),
    };
    let generator = format!(
        "generator{}: {} CPU s in the window, {} µs CPU per RCPT{}",
        match s.generator.event_loops {
            Some(1) => " (1 thread)".to_owned(),
            Some(n) => format!(" ({n} threads)"),
            None => String::new(),
        },
        fmt_num(s.generator.cpu_seconds),
        fmt_num(s.generator.cpu_us_per_rcpt),
        cpu_set_text(s.generator.cpu_set.as_ref())
    );
    let mut items = vec![server];
    items.extend(store_text(s));
    items.push(generator.into());
    Section::new("Cost", vec![Block::List(items)])
}

/// The store's line, when it ran as processes of its own: its CPU, and the whole cost of
/// an answer with the server's.
fn store_text(s: &Summary) -> Option<Text> {
    let store = s.store.as_ref()?;
    let mut text = Text::new().plain(format!(
        "store ({}, processes of its own): {} CPU s in the window, {} µs CPU per RCPT",
        store.kind,
        fmt_num(store.cpu_seconds),
        fmt_num(store.cpu_us_per_rcpt)
    ));
    if let Some(whole) = s.whole_cpu_us_per_rcpt() {
        text = text
            .plain("; with the server's, ")
            .strong(format!("{} µs CPU per RCPT in all", fmt_num(whole)));
    }
    Some(text)
}

fn ceiling_section(s: &Summary, ceiling: &Ceiling) -> Section {
    let mut blocks = vec![
        Block::Paragraph(Text::new().strong(format!("{}.", upper_first(&ceiling_text(ceiling))))),
        Block::Table(Table::new(
            &["", "this server", "canned ceiling", "ratio"],
            ceiling_rows(s, ceiling),
        )),
        Block::Paragraph(ceiling_method(ceiling).into()),
    ];
    let notes = ceiling_notes(s, ceiling);
    if !notes.is_empty() {
        blocks.push(Block::List(notes.into_iter().map(Text::from).collect()));
    }
    Section {
        id: Some("ceiling".to_owned()),
        ..Section::new("Ceiling", blocks)
    }
}

/// The terminal's compact summary: the run in a few lines, latency in µs, cost, ceiling.
fn terminal_sections(s: &Summary) -> Vec<Section> {
    let t = &s.totals;
    let w = &s.warmup_totals;
    let mut run = vec![format!(
        "target {}, {} cores, window {:.1} s after {:.1} s warm-up{}",
        target_text(s),
        s.machine.cores,
        s.window.measured_secs,
        s.window.warmup_secs,
        if s.window.interrupted {
            ", INTERRUPTED"
        } else {
            ""
        }
    )];
    run.extend(shards_text(s));
    run.push(format!(
        "sessions {} ({} completed, {} failed) of {} planned; RCPTs {} of {} planned; messages {}",
        t.sessions + w.sessions,
        t.sessions_completed + w.sessions_completed,
        t.sessions_failed + w.sessions_failed,
        s.expected.sessions,
        t.rcpts + w.rcpts,
        s.expected.rcpts,
        t.messages + w.messages,
    ));
    run.push(format!(
        "throughput {:.0} RCPT/s, {:.1} sessions/s",
        s.throughput.rcpt_per_sec, s.throughput.sessions_per_sec
    ));
    run.extend(starttls_text(s));
    let classes: Vec<String> = t.by_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
    run.push(format!("verdicts: {}", classes.join(", ")));
    let run = run
        .into_iter()
        .map(|line| Block::Paragraph(line.into()))
        .collect();

    let rows: Vec<Vec<String>> = Phase::ALL
        .iter()
        .filter_map(|p| s.latency_us.get(p.name()).map(|l| (p, l)))
        .filter(|(_, l)| l.count > 0)
        .map(|(p, l)| {
            [l.count, l.p50, l.p90, l.p99, l.p99_9, l.max]
                .iter()
                .map(ToString::to_string)
                .fold(vec![p.name().to_owned()], |mut row, cell| {
                    row.push(cell);
                    row
                })
        })
        .collect();
    let latency = Block::Table(Table::new(
        &["phase (us)", "count", "p50", "p90", "p99", "p99.9", "max"],
        rows,
    ));

    let cpu_set = |blocks: &mut Vec<Block>, set: Option<&CpuSetCost>| {
        if let Some(set) = set {
            blocks.push(Block::List(vec![
                format!(
                    "{}: {:.2} busy s, {:.2} us/RCPT ({})",
                    cpus_text(&set.cpus),
                    set.busy_seconds,
                    set.busy_us_per_rcpt,
                    set.split_text()
                )
                .into(),
            ]));
        }
    };
    let mut cost = Vec::new();
    match &s.server {
        Some(server) => {
            cost.push(Block::Paragraph(
                format!(
                    "server: {:.2} CPU s, {:.2} us CPU/RCPT, peak RSS {:.1} MiB, {}",
                    server.cpu_seconds,
                    server.cpu_us_per_rcpt,
                    server.peak_rss_bytes as f64 / (1024.0 * 1024.0),
                    match server.startup_secs {
                        Some(secs) => format!("ready after {secs:.2} s"),
                        None => format!("measured on processes {}", pid_list(&s.target.processes)),
                    }
                )
                .into(),
            ));
            cpu_set(&mut cost, server.cpu_set.as_ref());
        }
        None => cost.push(Block::Paragraph(
            format!("server: {}", no_server_text(s)).into(),
        )),
    }
    if let Some(store) = store_text(s) {
        cost.push(Block::Paragraph(store));
    }
    cost.push(Block::Paragraph(
        format!(
            "generator: {:.2} CPU s, {:.2} us CPU/RCPT",
            s.generator.cpu_seconds, s.generator.cpu_us_per_rcpt
        )
        .into(),
    ));
    cpu_set(&mut cost, s.generator.cpu_set.as_ref());

    let mut sections = vec![
        Section::terminal(run),
        Section::terminal(vec![latency]),
        Section::terminal(cost),
    ];
    if let Some(ceiling) = &s.ceiling {
        sections.push(Section::terminal(terminal_ceiling(s, ceiling)));
    }
    sections
}

/// The ceiling in the terminal: its headline, the canned arm's figures with this run's
/// ratios, caveats.
fn terminal_ceiling(s: &Summary, ceiling: &Ceiling) -> Vec<Block> {
    let ratio = |r: Option<f64>| r.map_or_else(String::new, |r| format!(" (this server x{r:.2})"));
    let server = match ceiling.server_cpu_us_per_rcpt {
        Some(us) => format!(
            "server {us:.2} us CPU/RCPT{}",
            ratio(ceiling.ratios.server_cpu_per_rcpt)
        ),
        None => "server CPU not measured".to_owned(),
    };
    let mut lines = vec![Text::from(format!(
        "canned arm ({}, {} RCPTs in {:.1} s): {server}, generator {:.2} us CPU/RCPT{}, \
         RCPT p50 {} ms, p99 {} ms",
        ceiling.backend,
        ceiling.rcpts,
        ceiling.measured_secs,
        ceiling.generator_cpu_us_per_rcpt,
        ratio(ceiling.ratios.generator_cpu_per_rcpt),
        fmt_ms(ceiling.rcpt_p50_us),
        fmt_ms(ceiling.rcpt_p99_us),
    ))];
    lines.extend(ceiling_notes(s, ceiling).into_iter().map(Text::from));
    vec![
        Block::Paragraph(format!("ceiling: {}", ceiling_text(ceiling)).into()),
        Block::List(lines),
    ]
}

// ---- a comparison ----------------------------------------------------------------------

/// A comparison's report: failed arms and regressions first, the verdict against the
/// baseline, the setup, the side-by-side table, plots and files.
pub fn comparison_report(comparison: &Comparison, plots: &[RenderedPlot]) -> Report {
    let mut subtitle = vec![format!("{} arm(s)", comparison.arms.len())];
    subtitle.extend(comparison.machine.as_ref().map(machine_text));
    let mut sections = Vec::new();
    if let Some(verdict) = &comparison.verdict {
        let rows = verdict_rows(verdict);
        let detail = if rows.is_empty() {
            Block::Paragraph("No arm of this comparison ran in the baseline.".into())
        } else {
            Block::Table(Table::new(&VERDICT_HEADER, rows))
        };
        sections.push(Section {
            tone: if verdict.passed {
                Tone::Ok
            } else {
                Tone::Problem
            },
            ..Section::new(
                "Against the baseline",
                vec![
                    Block::Paragraph(Text::new().strong(verdict.headline())),
                    detail,
                ],
            )
        });
    }

    let mut setup = Vec::new();
    if let Some(machine) = &comparison.machine {
        setup.push(Text::from(format!("machine: {}", machine_text(machine))));
    }
    setup.push(
        format!(
            "baseline (ratios): {}",
            comparison
                .baseline
                .as_deref()
                .unwrap_or("none (no arm completed)")
        )
        .into(),
    );
    if let Some(order) = run_order_text(comparison) {
        setup.push(format!("run order ({order})").into());
    }
    for arm in &comparison.arms {
        setup.push(
            format!(
                "arm {}: {} repeat(s){}",
                arm.name,
                arm.repeats,
                arm.target
                    .as_deref()
                    .map(|t| format!(", target {t}"))
                    .unwrap_or_default()
            )
            .into(),
        );
    }
    sections.push(Section::new("Setup", vec![Block::List(setup)]));

    let mut header = vec![String::new()];
    header.extend(comparison.arms.iter().map(|a| a.name.clone()));
    let mut repeats = vec!["repeats".to_owned()];
    repeats.extend(comparison.arms.iter().map(|a| a.repeats.to_string()));
    let mut rows = vec![repeats];
    for r in comparison_rows(comparison) {
        let mut row = vec![r.label.clone()];
        row.extend(
            comparison
                .arms
                .iter()
                .map(|a| comparison_cell(a, &r.key, r.format)),
        );
        rows.push(row);
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    sections.push(Section::new(
        "Side by side",
        vec![
            Block::Paragraph(comparison_legend(comparison).into()),
            Block::Table(Table::new(&header, rows)),
        ],
    ));
    sections.push(plots_section(plots));
    sections.push(Section::new(
        "Files",
        vec![Block::List(vec![
            Text::new()
                .link("comparison.json", "comparison.json")
                .plain(": the figures above, machine-readable"),
            Text::new()
                .link("comparison.html", "comparison.html")
                .plain(": the report as one self-contained page"),
            Text::new()
                .link("comparison.md", "comparison.md")
                .plain(": the report as Markdown"),
        ])],
    ));

    Report {
        title: format!("bulkbench comparison: {}", comparison.scenario),
        subtitle,
        problems: comparison_problems(comparison),
        all_clear: "every arm ran, with no mismatch and no failed session.".to_owned(),
        tiles: comparison_tiles(comparison),
        sections,
    }
}

fn comparison_problems(comparison: &Comparison) -> Vec<Problem> {
    let mut problems = Vec::new();
    for arm in comparison.arms.iter().filter(|a| a.is_failed()) {
        problems.push(Problem::new(
            format!("arm {} FAILED", arm.name),
            Some(
                Text::new()
                    .plain(format!("After {} completed repeat(s): ", arm.repeats))
                    .code(arm.error.as_deref().unwrap_or("no run completed")),
            ),
        ));
    }
    // Per arm: what went wrong in at least one repeat, by metric, and what it means.
    let per_arm: [(&str, &str, &str); 3] = [
        ("mismatches", "MISMATCHES", ""),
        ("failed_sessions", "FAILED SESSIONS", ""),
        (
            "listen_overflows",
            "LISTEN QUEUE OVERFLOWS",
            ": SYNs or handshakes dropped at a full listen queue, so that arm's connect \
             latencies and session rate are the backlog's (see its runs' reports)",
        ),
    ];
    for arm in &comparison.arms {
        for (key, headline, meaning) in per_arm {
            let most = arm.metric(key).map_or(0.0, |s| s.max);
            if most > 0.0 {
                problems.push(Problem::new(
                    format!("arm {}: {headline}", arm.name),
                    Some(
                        format!(
                            "In at least one repeat, up to {} per run{meaning}.",
                            fmt_num(most)
                        )
                        .into(),
                    ),
                ));
            }
        }
    }
    if let Some(verdict) = comparison.verdict.as_ref().filter(|v| !v.passed) {
        let checks = verdict
            .failures()
            .map(|check| {
                Text::from(format!(
                    "arm {}, {} ratio {} (95% interval {}), past the limit {}",
                    check.arm,
                    check.metric,
                    fmt_ratio(check.ratio),
                    check.interval_text(),
                    fmt_num(check.limit)
                ))
            })
            .collect();
        problems.push(Problem {
            blocks: vec![Block::List(checks)],
            ..Problem::new("REGRESSION against the baseline", None)
        });
    }
    problems
}

fn comparison_tiles(comparison: &Comparison) -> Vec<Tile> {
    comparison
        .arms
        .iter()
        .map(|arm| {
            let value = arm.rcpt_per_sec.map_or_else(
                || "failed".to_owned(),
                |s| format!("{} RCPT/s", fmt_num(s.median)),
            );
            let ratio = arm
                .ratios
                .get("rcpt_per_sec")
                .map(|r| format!("x{} of baseline; ", fmt_num(*r)))
                .unwrap_or_default();
            let detail = format!(
                "{ratio}{} repeat(s){}",
                arm.repeats,
                arm.target
                    .as_deref()
                    .map(|t| format!("; {t}"))
                    .unwrap_or_default()
            );
            tile(&arm.name, value, detail)
        })
        .collect()
}

/// "1234 and 5678", "1, 2 and 3": the processes an external server was measured on (with
/// everything below them).
fn pid_list(pids: &[u32]) -> String {
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    match text.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::{sample_result, sample_summary};
    use crate::summary::ListenQueue;

    /// A run that met full listen queues says so among its problems, with the counts; one
    /// that met none, or did not read them, does not.
    #[test]
    fn listen_queue_overflows_are_a_problem() {
        let mut summary = sample_summary(&sample_result());
        let headlines = |s: &Summary| -> Vec<String> {
            run_problems(s).into_iter().map(|p| p.headline).collect()
        };
        for queue in [
            None,
            Some(ListenQueue {
                overflows: 0,
                drops: 3,
            }),
        ] {
            summary.listen_queue = queue;
            assert!(
                !headlines(&summary).iter().any(|h| h.contains("LISTEN")),
                "{queue:?}"
            );
        }
        summary.listen_queue = Some(ListenQueue {
            overflows: 1234,
            drops: 1300,
        });
        let problems = run_problems(&summary);
        let problem = problems
            .iter()
            .find(|p| p.headline.starts_with("LISTEN QUEUE OVERFLOWS"))
            .expect("the overflows are a problem");
        assert_eq!(
            problem.headline,
            "LISTEN QUEUE OVERFLOWS: 1,234 SYNs or handshakes dropped"
        );
        // The counts survive a round trip through summary.json.
        let json = serde_json::to_string(&summary).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.listen_queue, summary.listen_queue);
    }
}
