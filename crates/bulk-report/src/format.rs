//! How every output words a figure: number formats, the facts the reports share (scenario
//! name, date, machine, target, scenario key figures, ceiling notes) and the rows of their
//! tables, so the terminal, Markdown, HTML and the plots say the same thing the same way.
//!
//! Everything here returns plain text; each renderer escapes it its own way.

use std::fmt::Write as _;

use bulk_loadgen::{Phase, ReplyClass};
use serde_json::Value;

use crate::RunData;
use crate::compare::{
    ArmFigures, Comparison, INTERVAL_METHOD, Interval, ONE_REPEAT, Spread, Verdict,
};
use crate::summary::{Ceiling, Counts, Machine, Summary};

// ---- number formats ------------------------------------------------------------------

/// `text` with its first letter upper-cased, to open a sentence.
pub(crate) fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// A figure for people: three significant digits below 100, whole (grouped) above.
pub(crate) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let magnitude = v.abs();
    if magnitude == 0.0 {
        "0".to_owned()
    } else if magnitude >= 99.95 {
        let rounded = v.round();
        let grouped = fmt_count(rounded.abs() as u64);
        if rounded < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else {
        let decimals = (2 - magnitude.log10().floor() as i32).clamp(0, 9) as usize;
        trim_zeros(format!("{v:.decimals$}"))
    }
}

/// Microseconds as milliseconds with microsecond resolution: `1234` -> `1.234`.
pub(crate) fn fmt_ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// Microseconds (fractional) as milliseconds, three decimals.
pub(crate) fn fmt_ms_f(us: f64) -> String {
    if us.is_finite() {
        format!("{:.3}", us / 1000.0)
    } else {
        "n/a".to_owned()
    }
}

/// Bytes as MiB.
pub(crate) fn fmt_mib(bytes: f64) -> String {
    format!("{} MiB", fmt_num(bytes / (1024.0 * 1024.0)))
}

/// A ratio to the baseline arm: `x0.52`.
pub(crate) fn fmt_ratio(ratio: f64) -> String {
    format!("x{}", fmt_num(ratio))
}

/// `count` as a share of `total`.
pub(crate) fn fmt_share(count: u64, total: u64) -> String {
    if total == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", count as f64 * 100.0 / total as f64)
    }
}

// ---- facts shared by the reports ------------------------------------------------------

/// The scenario's name, from the summary's copy of it.
pub(crate) fn scenario_name(summary: &Summary) -> String {
    summary
        .scenario
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("unnamed scenario")
        .to_owned()
}

/// The run's date, from its summary.
pub(crate) fn run_date(data: &RunData) -> String {
    format_stamp(&data.summary.started_at)
}

/// `YYYYMMDDTHHMMSSZ` as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_stamp(s: &str) -> String {
    if s.len() != 16 || !s.is_ascii() {
        return s.to_owned();
    }
    format!(
        "{}-{}-{} {}:{}:{} UTC",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// `2 cores, linux 6.1.0, Intel ...`.
pub(crate) fn machine_text(machine: &Machine) -> String {
    let mut out = format!(
        "{} core{}, {}",
        machine.cores,
        if machine.cores == 1 { "" } else { "s" },
        machine.os
    );
    if let Some(kernel) = &machine.kernel {
        let _ = write!(out, " {kernel}");
    }
    if let Some(cpu) = &machine.cpu_model {
        let _ = write!(out, ", {cpu}");
    }
    out
}

/// The target and who runs it.
pub(crate) fn target_text(summary: &Summary) -> String {
    let target = &summary.target;
    if target.external {
        format!("{} (external server)", target.address)
    } else if let Some(merged) = summary.merged.as_ref().filter(|m| m.addresses.len() > 1) {
        format!(
            "{} bulkbench servers, one per shard, backend {}: {}{}",
            merged.addresses.len(),
            target.backend.as_deref().unwrap_or("unknown"),
            merged.addresses.join(", "),
            pinning_text(target)
        )
    } else {
        format!(
            "{} (bulkbench server, backend {}){}",
            target.address,
            target.backend.as_deref().unwrap_or("unknown"),
            pinning_text(target)
        )
    }
}

/// Which part of the workload the figures cover: `shard 1/3 of the workload`, `merged
/// shards 0/3, 1/3, 2/3`; `None` for a whole run.
pub(crate) fn shards_text(summary: &Summary) -> Option<String> {
    if let Some(merged) = &summary.merged {
        let mut text = format!("merged shards {}", merged.shards_text());
        if !merged.missing.is_empty() {
            text.push_str(&format!(" (missing {})", merged.missing_text()));
        }
        return Some(text);
    }
    summary.shard.map(|shard| {
        format!(
            "shard {shard} of the workload (its sessions whose index % {} is {})",
            shard.count, shard.index
        )
    })
}

/// For a merge that left shards out (`--partial`): which, and what that means.
pub(crate) fn partial_text(summary: &Summary) -> Option<String> {
    let merged = summary.merged.as_ref().filter(|m| !m.missing.is_empty())?;
    Some(format!(
        "shard{} {} of {} missing (merged with --partial): the figures, planned counts \
         included, cover shards {} only",
        if merged.missing.len() == 1 { "" } else { "s" },
        merged.missing_text(),
        merged.shard_count,
        merged.shards_text()
    ))
}

/// Why a summary has no server figures.
pub(crate) fn no_server_text(summary: &Summary) -> String {
    match summary
        .merged
        .as_ref()
        .and_then(|m| m.server_note.as_deref())
    {
        Some(note) => note.to_owned(),
        None if summary.target.external => "external target, cost not measured".to_owned(),
        None => "not measured".to_owned(),
    }
}

/// `CPU 1` or `CPUs 2,3`.
pub(crate) fn cpus_text(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(ToString::to_string).collect();
    format!(
        "CPU{} {}",
        if cpus.len() == 1 { "" } else { "s" },
        names.join(",")
    )
}

/// `, server on CPU 0, generator on CPU 1` when the run pinned them; empty otherwise.
pub(crate) fn pinning_text(target: &crate::summary::Target) -> String {
    match (&target.server_cpus, &target.generator_cpus) {
        (Some(server), Some(generator)) => {
            format!(
                ", server on {}, generator on {}",
                cpus_text(server),
                cpus_text(generator)
            )
        }
        _ => String::new(),
    }
}

/// `; on its CPU 0: 4.1 busy s, 37.9 µs per RCPT (user 18%, ...)` for a pinned side.
pub(crate) fn cpu_set_text(set: Option<&crate::summary::CpuSetCost>) -> String {
    match set {
        Some(set) => format!(
            "; on its {}: {} busy s, {} µs per RCPT ({})",
            cpus_text(&set.cpus),
            fmt_num(set.busy_seconds),
            fmt_num(set.busy_us_per_rcpt),
            set.split_text()
        ),
        None => String::new(),
    }
}

/// The window: measured after warm-up.
pub(crate) fn window_text(summary: &Summary) -> String {
    let w = &summary.window;
    format!(
        "{} s measured after {} s warm-up ({} s elapsed){}",
        fmt_num(w.measured_secs),
        fmt_num(w.warmup_secs),
        fmt_num(w.elapsed_secs),
        if w.interrupted { ", interrupted" } else { "" }
    )
}

fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => fmt_count(u),
            (None, Some(f)) => fmt_num(f),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// The scenario's key figures as (label, value), those present in its JSON copy.
pub(crate) fn scenario_figures(scenario: &Value) -> Vec<(String, String)> {
    let get = |section: &str, key: &str| scenario.get(section).and_then(|s| s.get(key));
    let text = |section: &str, key: &str| get(section, key).and_then(json_text);
    let mut out = Vec::new();
    let mut push = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push((label.to_owned(), value));
        }
    };
    push(
        "population",
        text("population", "mailboxes").map(|m| match text("population", "domains") {
            Some(d) => format!("{m} mailboxes in {d} domains"),
            None => format!("{m} mailboxes"),
        }),
    );
    let mode = text("workload", "mode");
    let arrival = match mode.as_deref() {
        Some("open") => Some(format!(
            "open loop, {} sessions/s{}",
            text("workload", "rate_per_sec").unwrap_or_else(|| "?".into()),
            text("workload", "max_in_flight")
                .map(|m| format!(", at most {m} in flight"))
                .unwrap_or_default()
        )),
        Some(other) => Some(format!(
            "{other} loop{}",
            text("workload", "concurrency")
                .map(|c| format!(", {c} sessions in flight"))
                .unwrap_or_default()
        )),
        None => None,
    };
    push("arrival", arrival);
    push(
        "sessions",
        text("workload", "sessions")
            .or_else(|| text("workload", "duration_secs").map(|d| format!("for {d} s"))),
    );
    push(
        "transactions per session",
        text("workload", "transactions_min").map(|min| {
            match text("workload", "transactions_max").filter(|max| *max != min) {
                Some(max) => format!("{min}..{max} (uniform)"),
                None => min,
            }
        }),
    );
    push(
        "recipients per transaction",
        text("workload", "recipients_min").map(|min| {
            format!(
                "{min}..{} ({})",
                text("workload", "recipients_max").unwrap_or_else(|| "?".into()),
                text("workload", "recipients_distribution").unwrap_or_else(|| "uniform".into())
            )
        }),
    );
    push("BULK share", text("workload", "bulk_share"));
    // Absent from the scenario's JSON when 0.
    push("STARTTLS share", text("workload", "starttls_share"));
    push("pipelining", text("workload", "pipelining"));
    push(
        "unknown / foreign recipients",
        text("workload", "unknown_share").map(|u| {
            format!(
                "{u} / {}",
                text("workload", "foreign_share").unwrap_or_else(|| "?".into())
            )
        }),
    );
    push(
        "message size (bytes)",
        text("workload", "message_size_min").map(|min| {
            format!(
                "{min}..{}",
                text("workload", "message_size_max").unwrap_or_else(|| "?".into())
            )
        }),
    );
    push("server max recipients", text("server", "max_recipients"));
    out
}

/// Failed sessions by kind, non-zero only.
pub(crate) fn failed_kinds(summary: &Summary) -> Vec<(&str, u64)> {
    summary
        .errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.as_str(), *n))
        .collect()
}

/// Reply classes in report order, then any others the summary holds.
pub(crate) fn class_names(counts: &Counts) -> Vec<String> {
    let mut names: Vec<String> = ReplyClass::ALL
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let extra: Vec<String> = counts
        .by_class
        .keys()
        .filter(|k| !names.contains(k))
        .cloned()
        .collect();
    names.extend(extra);
    names
}

/// The files of a run's folder with what each holds; `phases` have a `.hgrm` file.
pub(crate) fn run_files(phases: &[Phase]) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "report.html".to_owned(),
            "the report as one self-contained page".to_owned(),
        ),
        ("summary.md".to_owned(), "the report as Markdown".to_owned()),
        (
            "summary.json".to_owned(),
            "machine-readable figures (versioned schema)".to_owned(),
        ),
        (
            "run.hlog".to_owned(),
            "whole-window histograms per phase (HdrHistogram log)".to_owned(),
        ),
        (
            "intervals.hlog".to_owned(),
            "interval histograms per phase (HdrHistogram log)".to_owned(),
        ),
    ];
    for phase in Phase::ALL {
        if phases.contains(&phase) {
            files.push((
                format!("{}.hgrm", phase.name()),
                format!("{} percentile distribution (µs)", phase.name()),
            ));
        }
    }
    files
}

/// The ceiling's headline: `this server reached 61.3% of this machine's canned-reply
/// ceiling (52,100 RCPT/s); the canned arm's replies come from a fixed rule and were not
/// verified`.
pub(crate) fn ceiling_text(ceiling: &Ceiling) -> String {
    let reached = match ceiling.ratios.rcpt_per_sec {
        Some(ratio) => format!(
            "this server reached {}% of this machine's canned-reply ceiling ({} RCPT/s)",
            fmt_num(ratio * 100.0),
            fmt_num(ceiling.rcpt_per_sec)
        ),
        None => "the canned arm measured no RCPT/s, so there is no share of it to state".to_owned(),
    };
    format!("{reached}; the canned arm's replies come from a fixed rule and were not verified")
}

/// What the reader must know before trusting the ceiling's figures.
pub(crate) fn ceiling_notes(summary: &Summary, ceiling: &Ceiling) -> Vec<String> {
    let mut notes = Vec::new();
    if ceiling.interrupted {
        notes.push("The canned arm was interrupted before its workload was done.".to_owned());
    }
    if ceiling.sessions_failed > 0 {
        notes.push(format!(
            "{} sessions of the canned arm failed.",
            fmt_count(ceiling.sessions_failed)
        ));
    }
    let open_loop = summary
        .scenario
        .get("workload")
        .and_then(|w| w.get("mode"))
        .and_then(Value::as_str)
        == Some("open");
    if open_loop {
        notes.push(
            "In open loop both arms were offered the scenario's arrival rate, so the share \
             of RCPT/s says little: compare CPU per RCPT."
                .to_owned(),
        );
    }
    let harvest_resistant = summary
        .scenario
        .get("server")
        .and_then(|s| s.get("harvest_resistant"))
        .and_then(Value::as_bool)
        == Some(true);
    if harvest_resistant {
        notes.push(
            "The server is harvest-resistant: the measured one delays a client address's \
             RCPTs for a window after one in which it named too many unknown mailboxes, \
             while the canned one never finds a mailbox unknown, so it has none to delay."
                .to_owned(),
        );
    }
    if let Some(busy) = ceiling.generator_cpus_busy.filter(|b| *b >= 0.9) {
        notes.push(format!(
            "The generator's CPUs were {}% busy in the canned arm: the ceiling's rate may be \
             the generator's limit rather than the server's.",
            fmt_num(busy * 100.0)
        ));
    }
    notes
}

/// The ceiling's table: figure, this server, the canned arm, this server's ratio to it.
pub(crate) fn ceiling_rows(summary: &Summary, ceiling: &Ceiling) -> Vec<Vec<String>> {
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), fmt_ratio);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), fmt_num);
    let rcpt = summary.latency_us.get(Phase::Rcpt.name());
    let accepted = summary
        .totals
        .by_class
        .get(ReplyClass::Accepted.name())
        .copied()
        .unwrap_or(0);
    vec![
        vec![
            "RCPT/s".to_owned(),
            fmt_num(summary.throughput.rcpt_per_sec),
            fmt_num(ceiling.rcpt_per_sec),
            ratio(ceiling.ratios.rcpt_per_sec),
        ],
        vec![
            "server CPU µs/RCPT".to_owned(),
            num(summary.server.as_ref().map(|s| s.cpu_us_per_rcpt)),
            num(ceiling.server_cpu_us_per_rcpt),
            ratio(ceiling.ratios.server_cpu_per_rcpt),
        ],
        vec![
            "generator CPU µs/RCPT".to_owned(),
            fmt_num(summary.generator.cpu_us_per_rcpt),
            fmt_num(ceiling.generator_cpu_us_per_rcpt),
            ratio(ceiling.ratios.generator_cpu_per_rcpt),
        ],
        vec![
            "RCPT p50 (ms)".to_owned(),
            rcpt.map_or_else(|| "-".to_owned(), |l| fmt_ms(l.p50)),
            fmt_ms(ceiling.rcpt_p50_us),
            String::new(),
        ],
        vec![
            "RCPT p99 (ms)".to_owned(),
            rcpt.map_or_else(|| "-".to_owned(), |l| fmt_ms(l.p99)),
            fmt_ms(ceiling.rcpt_p99_us),
            String::new(),
        ],
        vec![
            "RCPTs accepted".to_owned(),
            fmt_share(accepted, summary.totals.rcpts),
            fmt_share(ceiling.rcpts_accepted, ceiling.rcpts),
            String::new(),
        ],
        vec![
            "messages per 100 RCPTs".to_owned(),
            per_hundred(summary.totals.messages, summary.totals.rcpts),
            per_hundred(ceiling.messages, ceiling.rcpts),
            String::new(),
        ],
    ]
}

/// `count` per 100 of `of`, or `-`.
fn per_hundred(count: u64, of: u64) -> String {
    if of == 0 {
        "-".to_owned()
    } else {
        fmt_num(count as f64 * 100.0 / of as f64)
    }
}

/// The sentence under the ceiling's table: how the canned arm ran.
pub(crate) fn ceiling_method(ceiling: &Ceiling) -> String {
    format!(
        "The canned arm ran the same workload against bulkbench serve --backend {}, the \
         same server with the same flags and pinning, answering every RCPT by a fixed rule \
         without any lookup: it accepts {} of the RCPTs (the workload's expected share in \
         BULK transactions) and refuses the rest as opted out, so its reply mix, and the DATA \
         that follows, resemble this run's. Its {} RCPTs over {} s were not checked against \
         the population. Ratios are this server's figure over the canned arm's.",
        ceiling.backend,
        fmt_num(ceiling.accept_share),
        fmt_count(ceiling.rcpts),
        fmt_num(ceiling.measured_secs)
    )
}

/// `12 of 40 sessions (30%) used STARTTLS; TLS handshake p50 1.20 ms, p99 3.40 ms`, when
/// any session did (warm-up included, as the session counts of the reports are; the
/// handshake's figures are the measured sessions').
pub(crate) fn starttls_text(summary: &Summary) -> Option<String> {
    let (t, w) = (&summary.totals, &summary.warmup_totals);
    let tls = t.starttls_sessions + w.starttls_sessions;
    if tls == 0 {
        return None;
    }
    let sessions = t.sessions + w.sessions;
    let mut text = format!(
        "{} of {} sessions ({}%) used STARTTLS",
        fmt_count(tls),
        fmt_count(sessions),
        fmt_num(100.0 * tls as f64 / sessions.max(1) as f64)
    );
    if let Some(l) = summary
        .latency_us
        .get(Phase::TlsHandshake.name())
        .filter(|l| l.count > 0)
    {
        text.push_str(&format!(
            "; TLS handshake p50 {} ms, p99 {} ms",
            fmt_ms(l.p50),
            fmt_ms(l.p99)
        ));
    }
    Some(text)
}

pub(crate) fn latency_rows(summary: &Summary) -> Vec<Vec<String>> {
    Phase::ALL
        .iter()
        .filter_map(|p| summary.latency_us.get(p.name()).map(|l| (p, l)))
        .filter(|(_, l)| l.count > 0)
        .map(|(p, l)| {
            vec![
                p.name().to_owned(),
                fmt_count(l.count),
                fmt_ms_f(l.mean),
                fmt_ms(l.p50),
                fmt_ms(l.p90),
                fmt_ms(l.p99),
                fmt_ms(l.p99_9),
                fmt_ms(l.max),
            ]
        })
        .collect()
}

/// `median (min-max)` of a spread, formatted by `f`.
pub(crate) fn spread_text(spread: &Spread, f: impl Fn(f64) -> String) -> String {
    if spread.min == spread.max {
        f(spread.median)
    } else {
        format!("{} ({}–{})", f(spread.median), f(spread.min), f(spread.max))
    }
}

/// A row of the side-by-side table.
pub(crate) struct ComparisonRow {
    /// What the row shows.
    pub label: String,
    /// The metric key ([`ArmFigures::metric`]).
    pub key: String,
    /// How a value is written.
    pub format: fn(f64) -> String,
}

/// The rows of the side-by-side table, phases with samples in some arm only.
pub(crate) fn comparison_rows(comparison: &Comparison) -> Vec<ComparisonRow> {
    fn num(v: f64) -> String {
        fmt_num(v)
    }
    fn ms(v: f64) -> String {
        fmt_ms_f(v)
    }
    fn mib(v: f64) -> String {
        fmt_mib(v)
    }
    fn count(v: f64) -> String {
        fmt_num(v)
    }
    let row = |label: &str, key: &str, format: fn(f64) -> String| ComparisonRow {
        label: label.to_owned(),
        key: key.to_owned(),
        format,
    };
    let mut rows = vec![
        row("RCPT/s", "rcpt_per_sec", num),
        row("sessions/s", "sessions_per_sec", num),
    ];
    for phase in Phase::ALL {
        if !comparison
            .arms
            .iter()
            .any(|a| a.latency_us.contains_key(phase.name()))
        {
            continue;
        }
        for (stat, label) in [
            ("p50", "p50"),
            ("p99", "p99"),
            ("p99_9", "p99.9"),
            ("max", "max"),
        ] {
            rows.push(ComparisonRow {
                label: format!("{} {label} (ms)", phase.name()),
                key: ArmFigures::latency_key(phase.name(), stat),
                format: ms,
            });
        }
    }
    rows.push(row("server CPU µs/RCPT", "server_cpu_us_per_rcpt", num));
    // A store of its own (Redis, PostgreSQL started for the run) costs CPU beside the
    // server: its row, and the whole, show when some arm has one.
    if comparison
        .arms
        .iter()
        .any(|arm| arm.store_cpu_us_per_rcpt.is_some())
    {
        rows.push(row("store CPU µs/RCPT", "store_cpu_us_per_rcpt", num));
        rows.push(row(
            "server + store CPU µs/RCPT",
            "whole_cpu_us_per_rcpt",
            num,
        ));
    }
    rows.push(row("server peak RSS", "peak_rss_bytes", mib));
    rows.push(row("mismatches", "mismatches", count));
    rows.push(row("failed sessions", "failed_sessions", count));
    if comparison.arms.iter().any(|a| a.listen_overflows.is_some()) {
        rows.push(row("listen-queue overflows", "listen_overflows", count));
    }
    rows
}

/// One cell of the side-by-side table: median (min–max) and the ratio to the baseline.
pub(crate) fn comparison_cell(arm: &ArmFigures, key: &str, f: fn(f64) -> String) -> String {
    match arm.metric(key) {
        None if arm.is_failed() => "failed".to_owned(),
        None if key == "server_cpu_us_per_rcpt" || key == "peak_rss_bytes" => "external".to_owned(),
        None if key == "store_cpu_us_per_rcpt" => "in the server".to_owned(),
        None => "-".to_owned(),
        Some(spread) => {
            let mut cell = spread_text(&spread, f);
            if let Some(ratio) = arm.ratios.get(key) {
                let _ = write!(cell, " {}", fmt_ratio(*ratio));
                cell.push_str(&interval_suffix(arm.intervals.get(key)));
            }
            cell
        }
    }
}

/// ` [0.41–0.52]`, or ` [0.9–1.1] noise` when the interval holds 1; empty without one.
pub(crate) fn interval_suffix(interval: Option<&Interval>) -> String {
    match interval {
        Some(i) => format!(
            " [{}–{}]{}",
            fmt_num(i.low),
            fmt_num(i.high),
            if i.is_noise() { " noise" } else { "" }
        ),
        None => String::new(),
    }
}

/// What the side-by-side table shows, for its introduction.
pub(crate) fn comparison_legend(comparison: &Comparison) -> String {
    let mut text = "Median over repeats (min–max), the ratio of the median to the baseline \
                    arm's, and in brackets the ratio's 95% confidence interval; \"noise\": \
                    the interval holds 1, so the difference is not told apart from \
                    run-to-run noise. Intervals: "
        .to_owned();
    text.push_str(
        comparison
            .interval_method
            .as_deref()
            .unwrap_or(INTERVAL_METHOD),
    );
    text.push('.');
    if comparison.fewest_repeats() == Some(1) {
        let _ = write!(text, " {ONE_REPEAT}.");
    }
    text
}

/// `seed 1: repeat 1: fast, slow; repeat 2: slow, fast`.
pub(crate) fn run_order_text(comparison: &Comparison) -> Option<String> {
    let order = comparison.run_order.as_ref()?;
    let repeats: Vec<String> = order
        .repeats
        .iter()
        .enumerate()
        .map(|(i, arms)| format!("repeat {}: {}", i + 1, arms.join(", ")))
        .collect();
    Some(format!("seed {}: {}", order.seed, repeats.join("; ")))
}

/// The limit of a check, as the bound it applies to: `upper bound >= 0.9`.
pub(crate) fn limit_text(higher_is_better: bool, limit: f64) -> String {
    if higher_is_better {
        format!("upper bound ≥ {}", fmt_num(limit))
    } else {
        format!("lower bound ≤ {}", fmt_num(limit))
    }
}

/// The rows of a verdict's table: arm, figure, baseline, now, ratio, interval, limit,
/// verdict, note.
pub(crate) fn verdict_rows(verdict: &Verdict) -> Vec<Vec<String>> {
    verdict
        .checks
        .iter()
        .map(|c| {
            vec![
                c.arm.clone(),
                c.metric.clone(),
                fmt_num(c.baseline),
                fmt_num(c.current),
                fmt_ratio(c.ratio),
                c.interval_text(),
                limit_text(c.higher_is_better, c.limit),
                c.outcome.text().to_owned(),
                c.note.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

/// The header of [`verdict_rows`].
pub(crate) const VERDICT_HEADER: [&str; 9] = [
    "arm",
    "figure",
    "baseline",
    "now",
    "ratio",
    "95% interval",
    "fails if not",
    "verdict",
    "note",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        let cases = [
            (0.0, "0"),
            (0.001234, "0.00123"),
            (0.5, "0.5"),
            (1.25, "1.25"),
            (12.345, "12.3"),
            (99.99, "100"),
            (1234.4, "1,234"),
            (-2500.0, "-2,500"),
            (f64::NAN, "n/a"),
        ];
        for (v, text) in cases {
            assert_eq!(fmt_num(v), text, "{v}");
        }
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_ms(1234), "1.234");
        assert_eq!(fmt_ms(7), "0.007");
    }

    #[test]
    fn stamps_read_as_dates() {
        assert_eq!(format_stamp("20261127T202405Z"), "2026-11-27 20:24:05 UTC");
        assert_eq!(format_stamp("not a stamp"), "not a stamp");
    }
}
