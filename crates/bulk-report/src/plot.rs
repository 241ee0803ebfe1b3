//! Plots of a run, each written as SVG and PNG, drawn with plotters and the embedded DejaVu
//! font.
//!
//! Why no system fonts: plotters' default `ttf` feature finds fonts through fontconfig and
//! renders them with FreeType, so it needs two C libraries and fails at run time
//! (`NoSuchFont`) on a machine without fonts installed, a CI container or a bare server.
//! The workspace instead enables plotters' pure-Rust `ab_glyph` feature and embeds the
//! DejaVu fonts (the `dejavu` crate); [`register_fonts`] registers them before any drawing
//! (SVG output measures text too). Turning `ttf` on in any crate of the workspace would
//! turn it on here as well, since a dependency's features are merged across the build, and
//! it would then take precedence over `ab_glyph` without an error. The same merging is why
//! the benches build criterion without its default features: its own plots would draw
//! with this build of plotters, where no font is found until one is registered.
//!
//! A [`Plot`] holds its figures already extracted from the run (plain numbers, no
//! histograms), so plots are independent tasks: [`render_plots`] draws them in parallel
//! (rayon, one task per plot). [`run_plots`] builds the five plots of a run:
//!
//! - `latency_spectrum`: latency by percentile per phase, on HdrHistogram's log "nines" axis;
//! - `throughput`: RCPT replies per second over time, warm-up shaded;
//! - `rcpt_latency_over_time`: RCPT p50 and p99 per interval;
//! - `verdicts`: RCPT replies by class;
//! - `phase_breakdown`: mean latency of each step of a session beside the session's mean.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bulk_loadgen::{Phase, ReplyClass};
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rayon::prelude::*;

use crate::format::{fmt_count, fmt_ms, fmt_num};
use crate::{ReportError, RunData};

/// Width of every plot in pixels (PNG) or user units (SVG).
pub const WIDTH: u32 = 1200;
/// Height of every plot.
pub const HEIGHT: u32 = 700;

/// The names of a run's plots, in report order; each is written as `NAME.svg` and `NAME.png`.
pub const RUN_PLOTS: [&str; 5] = [
    "latency_spectrum",
    "throughput",
    "rcpt_latency_over_time",
    "verdicts",
    "phase_breakdown",
];

/// The font family every plot uses; [`register_fonts`] maps it to DejaVu Sans.
const FONT: &str = "sans-serif";

/// The longest series of seconds whose gaps are drawn as zero (a week).
const MAX_FILLED_SECONDS: u64 = 7 * 86_400;

/// Width of the legend column beside a chart of many lines.
const SIDE_LEGEND_WIDTH: i32 = 190;

/// Points per halving of the distance to 100% in the spectrum: HdrHistogram's default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Intervals shorter than this share of the series' interval length (a run's last, partial
/// interval) are left out of rates: a few replies in a few milliseconds would show as a
/// spike that never happened.
const MIN_RATE_INTERVAL_SHARE: f64 = 0.2;

/// Registers DejaVu Sans (regular and bold) as plotters' `sans-serif`, once per process.
///
/// Every drawing needs it, SVG included: plotters measures text with the font to lay out
/// labels. Called by every render function; callable directly to fail early.
pub fn register_fonts() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // `InvalidFont` has no Debug: only whether it failed is kept.
        let regular =
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .is_ok();
        let bold =
            plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok();
        regular && bold
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// Tableau 10: distinct on screen and in grey print.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const GRID: RGBColor = RGBColor(225, 225, 225);
const MUTED: RGBColor = RGBColor(90, 90, 90);

/// A phase's color, the same in every plot.
pub(crate) fn phase_color(phase: Phase) -> RGBColor {
    // The STARTTLS phases came later: they take two light tones of their own, so that
    // every other phase keeps the color it had in earlier reports.
    let tls = |p: &Phase| matches!(p, Phase::Starttls | Phase::TlsHandshake);
    match phase {
        Phase::Starttls => RGBColor(255, 152, 150),
        Phase::TlsHandshake => RGBColor(197, 176, 213),
        _ => {
            let index = Phase::ALL
                .iter()
                .filter(|p| !tls(p))
                .position(|p| *p == phase)
                .unwrap_or(0);
            PALETTE[index % PALETTE.len()]
        }
    }
}

/// A reply class's color: green accepted, red other, in between the refusals.
fn class_color(name: &str) -> RGBColor {
    match name {
        "accepted" => RGBColor(44, 160, 44),
        "opted_out" => RGBColor(255, 127, 14),
        "unknown" => RGBColor(148, 103, 189),
        "not_local" => RGBColor(140, 86, 75),
        "tempfail" => RGBColor(188, 189, 34),
        _ => RGBColor(214, 39, 40),
    }
}

/// An arm's color in comparison plots.
pub(crate) fn arm_color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// One line of a [`LineChart`].
pub(crate) struct Series {
    pub label: String,
    pub color: RGBColor,
    /// Data coordinates (x as the axis says; y in the chart's unit, before any log).
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Mark each point (sparse series, where a lone point would draw no line).
    pub markers: bool,
}

/// What the x axis of a line chart shows.
pub(crate) enum XAxis {
    /// `log10(1 / (1 - q))` for quantile q, labelled 0%, 90%, 99%, ...
    Nines,
    /// Seconds since the run's start.
    Seconds,
}

/// Where a chart's legend goes.
#[derive(Clone, Copy)]
pub(crate) enum Legend {
    UpperLeft,
    UpperRight,
}

/// Lines over a shared x axis.
pub(crate) struct LineChart {
    pub x_axis: XAxis,
    pub x_desc: String,
    pub y_desc: String,
    /// A log y axis (decades), for data spanning orders of magnitude.
    pub y_log: bool,
    pub series: Vec<Series>,
    /// A shaded x range with its label (the warm-up).
    pub band: Option<(f64, f64, String)>,
    pub legend: Legend,
}

/// One bar of a [`BarChart`].
pub(crate) struct Bar {
    pub label: String,
    /// None: no bar, only the text (an arm that failed, a figure not measured).
    pub value: Option<f64>,
    /// A min-max whisker.
    pub range: Option<(f64, f64)>,
    pub color: RGBColor,
    /// Written at the end of the bar.
    pub text: String,
}

/// Bars by category.
pub(crate) struct BarChart {
    /// Bars run left to right, categories top to bottom.
    pub horizontal: bool,
    pub value_desc: String,
    /// What the categories are (`reply class`, `session step`).
    pub category_desc: String,
    pub bars: Vec<Bar>,
    /// A dashed reference line at this value, with its label.
    pub reference: Option<(f64, String)>,
}

/// The kinds of chart.
pub(crate) enum Chart {
    Lines(LineChart),
    Bars(BarChart),
}

/// One plot, its figures extracted, ready to draw.
pub struct Plot {
    /// File stem: the plot is written as `NAME.svg` and `NAME.png`.
    pub name: String,
    /// Drawn on top of the plot.
    pub title: String,
    /// Drawn under the title (smaller); may be empty.
    pub subtitle: String,
    /// What the plot shows and how to read it, for the reports (not drawn).
    pub caption: String,
    /// Alternative text for the report's `<img>`.
    pub alt: String,
    pub(crate) chart: Chart,
}

/// A plot written to a folder.
#[derive(Clone, Debug)]
pub struct RenderedPlot {
    /// File stem.
    pub name: String,
    /// Title.
    pub title: String,
    /// Caption for the reports.
    pub caption: String,
    /// Alternative text.
    pub alt: String,
    /// The SVG document, for embedding.
    pub svg: String,
    /// `NAME.svg`.
    pub svg_path: PathBuf,
    /// `NAME.png`.
    pub png_path: PathBuf,
}

fn draw_error(plot: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Plot {
        plot: plot.to_owned(),
        message,
    }
}

fn text<E: Display>(error: E) -> String {
    error.to_string()
}

impl Plot {
    /// Draws the plot into a `WIDTH` x `HEIGHT` RGB buffer (3 bytes per pixel, rows top
    /// to bottom), as the PNG is drawn.
    pub fn render_rgb(&self) -> Result<Vec<u8>, ReportError> {
        register_fonts()?;
        let mut buffer = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
        self.render_on(BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)))?;
        Ok(buffer)
    }

    /// The plot as an SVG document.
    pub fn render_svg(&self) -> Result<String, ReportError> {
        register_fonts()?;
        let mut svg = String::new();
        self.render_on(SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)))?;
        Ok(svg)
    }

    /// Draws the plot on `backend` and finishes it.
    fn render_on<DB: DrawingBackend>(&self, backend: DB) -> Result<(), ReportError> {
        let root = backend.into_drawing_area();
        self.draw(&root).map_err(draw_error(&self.name))?;
        root.present().map_err(text).map_err(draw_error(&self.name))
    }

    /// Writes `NAME.svg` and `NAME.png` into `dir`.
    pub fn render_files(&self, dir: &Path) -> Result<RenderedPlot, ReportError> {
        let svg = self.render_svg()?;
        let svg_path = dir.join(format!("{}.svg", self.name));
        std::fs::write(&svg_path, &svg).map_err(|source| ReportError::Io {
            path: svg_path.clone(),
            source,
        })?;
        let png_path = dir.join(format!("{}.png", self.name));
        {
            let root = BitMapBackend::new(&png_path, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root).map_err(draw_error(&self.name))?;
            // Encoding and writing the PNG happen here; an error names the file.
            root.present().map_err(|e| ReportError::Plot {
                plot: self.name.clone(),
                message: format!("cannot write {}: {e}", png_path.display()),
            })?;
        }
        Ok(RenderedPlot {
            name: self.name.clone(),
            title: self.title.clone(),
            caption: self.caption.clone(),
            alt: self.alt.clone(),
            svg,
            svg_path,
            png_path,
        })
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(text)?;
        let area = root
            .margin(10, 0, 0, 0)
            .titled(
                &self.title,
                (FONT, 30).into_font().style(FontStyle::Bold).color(&BLACK),
            )
            .map_err(text)?;
        let area = if self.subtitle.is_empty() {
            area
        } else {
            area.titled(&self.subtitle, (FONT, 17).into_font().color(&MUTED))
                .map_err(text)?
        };
        match &self.chart {
            Chart::Lines(chart) => draw_lines(&area, chart),
            Chart::Bars(chart) => draw_bars(&area, chart),
        }
    }
}

/// Renders `plots` into `dir` in parallel (one rayon task per plot), calling `done` after
/// each; returns them in the order given.
pub fn render_plots(
    plots: &[Plot],
    dir: &Path,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<RenderedPlot>, ReportError> {
    register_fonts()?;
    plots
        .par_iter()
        .map(|plot| {
            let rendered = plot.render_files(dir);
            done();
            rendered
        })
        .collect()
}

/// `0%`, `90%`, `99%`, `99.9%`, ... for `nines` = 0, 1, 2, 3, ...
pub fn nines_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// Ticks at multiples of 1, 2 or 5 x 10^k covering `0..=max` with at most about `count`
/// steps; returns (ticks, the last tick, at least `max`).
fn nice_ticks(max: f64, count: usize) -> (Vec<f64>, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let steps = (max / step - 1e-9).ceil().max(1.0) as usize;
    let ticks: Vec<f64> = (0..=steps).map(|i| i as f64 * step).collect();
    let top = ticks.last().copied().unwrap_or(max);
    (ticks, top)
}

/// Log-space ticks (log10 of the value) between whole decades `lo..=hi`: every decade,
/// and 2 and 5 within each when the range spans few decades.
fn log_ticks(lo: i32, hi: i32) -> Vec<f64> {
    let mut ticks = Vec::new();
    let fine = hi - lo <= 3;
    for decade in lo..=hi {
        ticks.push(f64::from(decade));
        if fine && decade < hi {
            ticks.push(f64::from(decade) + 2f64.log10());
            ticks.push(f64::from(decade) + 5f64.log10());
        }
    }
    ticks
}

/// A linear f64 axis with exactly the given ticks (labels and grid lines), formatted by
/// the mesh's label formatter. plotters' `with_key_points` has no default formatting, which
/// its mesh requires.
#[derive(Clone)]
struct TickedAxis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl TickedAxis {
    fn new(from: f64, to: f64, ticks: Vec<f64>) -> Self {
        // A zero-width range would map every value to NaN.
        let to = if to > from { to } else { from + 1.0 };
        TickedAxis {
            range: from..to,
            ticks: ticks
                .into_iter()
                .filter(|t| *t >= from && *t <= to)
                .collect(),
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = (value - self.range.start) / (self.range.end - self.range.start);
        let pixels = f64::from(limit.1 - limit.0) * share;
        // Far outside values (a whisker past the axis) are clamped, not wrapped.
        (f64::from(limit.0) + pixels).clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points only: light ones would double the grid.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> Result<(), String> {
    // Points as drawn: a log y axis plots log10(y), with labels giving y back.
    let lines: Vec<(&Series, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.y_log || *y > 0.0))
                .map(|&(x, y)| (x, if chart.y_log { y.log10() } else { y }))
                .collect();
            (s, points)
        })
        .collect();
    let has_data = lines.iter().any(|(_, p)| !p.is_empty());
    let (x_axis, y_axis) = line_axes(chart, &lines);

    // Many lines: the legend gets its own column, so it never hides a line.
    let labelled: Vec<&(&Series, Vec<(f64, f64)>)> = lines
        .iter()
        .filter(|(s, p)| !s.label.is_empty() && !p.is_empty())
        .collect();
    let side_legend = labelled.len() > 3;
    let (area, legend_area) = if side_legend {
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w as i32 - SIDE_LEGEND_WIDTH);
        (plot, Some(legend))
    } else {
        (area.clone(), None)
    };
    if let Some(legend) = &legend_area {
        draw_side_legend(legend, &labelled)?;
    }
    let mut ctx = ChartBuilder::on(&area)
        .margin(16)
        .margin_right(if side_legend { 12 } else { 36 })
        .x_label_area_size(64)
        .y_label_area_size(96)
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(text)?;
    let x_format = |x: &f64| match chart.x_axis {
        XAxis::Nines => nines_label(x.round().max(0.0) as u32),
        XAxis::Seconds => fmt_num(*x),
    };
    let y_format = |y: &f64| {
        if chart.y_log {
            fmt_num(10f64.powf(*y))
        } else {
            fmt_num(*y)
        }
    };
    ctx.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(text)?;

    if let Some(band) = &chart.band {
        draw_band(&mut ctx, band)?;
    }

    for (series, points) in &lines {
        if points.is_empty() {
            continue;
        }
        let style = series.color.stroke_width(if series.dashed { 2 } else { 3 });
        let legend_style = style;
        let annotation = if series.dashed {
            ctx.draw_series(DashedLineSeries::new(points.clone(), 10, 6, style))
                .map_err(text)?
        } else {
            ctx.draw_series(LineSeries::new(points.clone(), style))
                .map_err(text)?
        };
        if !series.label.is_empty() {
            annotation
                .label(series.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], legend_style));
        }
        if series.markers {
            ctx.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new(*p, 4, series.color.filled())),
            )
            .map_err(text)?;
        }
    }

    if has_data {
        if !labelled.is_empty() && !side_legend {
            let position = match chart.legend {
                Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                Legend::UpperRight => SeriesLabelPosition::UpperRight,
            };
            draw_legend(&mut ctx, position)?;
        }
    } else {
        no_data_note(ctx.plotting_area())?;
    }
    Ok(())
}

/// The shaded x range `band` (the warm-up) with its label at the top.
fn draw_band<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Cartesian2d<TickedAxis, TickedAxis>>,
    (from, to, label): &(f64, f64, String),
) -> Result<(), String> {
    let (x, y) = (ctx.x_range(), ctx.y_range());
    let (x_hi, y_lo, y_hi) = (x.end, y.start, y.end);
    let (from, to) = (from.clamp(0.0, x_hi), to.clamp(0.0, x_hi));
    if to > from {
        ctx.draw_series(std::iter::once(Rectangle::new(
            [(from, y_lo), (to, y_hi)],
            RGBColor(150, 150, 150).mix(0.18).filled(),
        )))
        .map_err(text)?;
        ctx.draw_series(std::iter::once(
            EmptyElement::at(((from + to) / 2.0, y_hi))
                + Text::new(
                    label.clone(),
                    (0, 8),
                    (FONT, 16)
                        .into_font()
                        .color(&MUTED)
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                ),
        ))
        .map_err(text)?;
    }
    Ok(())
}

/// The axes of a line chart drawn from `lines` (points as drawn): x as far as the data goes
/// (or the shaded band), y over the data, in decades when the y axis is logarithmic.
fn line_axes(chart: &LineChart, lines: &[(&Series, Vec<(f64, f64)>)]) -> (TickedAxis, TickedAxis) {
    let all = || lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = all().map(|p| p.0).fold(0f64, f64::max);
    let (x_hi, x_ticks) = match chart.x_axis {
        XAxis::Nines => {
            // As far as the data goes: the next whole nine above the last point.
            let nines = (x_max - 1e-9).ceil().clamp(1.0, 9.0);
            (nines, (0..=nines as u32).map(f64::from).collect::<Vec<_>>())
        }
        XAxis::Seconds => {
            let band_end = chart.band.as_ref().map_or(0.0, |b| b.1);
            let (ticks, top) = nice_ticks(x_max.max(band_end).max(1.0), 12);
            (top, ticks)
        }
    };
    let (y_lo, y_hi, y_ticks) = if chart.y_log {
        let lo = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if all().next().is_some() {
            (lo.floor() as i32, (hi + 1e-9).ceil() as i32)
        } else {
            (-1, 1)
        };
        let hi = hi.max(lo + 1);
        (f64::from(lo), f64::from(hi), log_ticks(lo, hi))
    } else {
        let hi = all().map(|p| p.1).fold(0f64, f64::max);
        let (ticks, top) = nice_ticks(hi * 1.08, 8);
        (0.0, top, ticks)
    };
    (
        TickedAxis::new(0.0, x_hi, x_ticks),
        TickedAxis::new(y_lo, y_hi, y_ticks),
    )
}

/// A legend in a column of its own, one labelled line per series.
fn draw_side_legend<DB: DrawingBackend>(
    legend: &DrawingArea<DB, Shift>,
    labelled: &[&(&Series, Vec<(f64, f64)>)],
) -> Result<(), String> {
    for (i, (series, _)) in labelled.iter().enumerate() {
        let y = 40 + 28 * i as i32;
        let style = series.color.stroke_width(3);
        legend
            .draw(&PathElement::new(vec![(4, y), (32, y)], style))
            .map_err(text)?;
        legend
            .draw(&Text::new(
                series.label.clone(),
                (40, y),
                (FONT, 16)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(text)?;
    }
    Ok(())
}

/// The legend of the labelled series, boxed, at `position` inside the plotting area.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    ctx: &mut ChartContext<'a, DB, Cartesian2d<TickedAxis, TickedAxis>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    ctx.configure_series_labels()
        .position(position)
        .margin(12)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(text)
}

/// "no samples" in the middle of an empty plotting area.
fn no_data_note<DB: DrawingBackend, C: CoordTranslate>(
    area: &DrawingArea<DB, C>,
) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    area.strip_coord_spec()
        .draw(&Text::new(
            "no samples",
            (w as i32 / 2, h as i32 / 2),
            (FONT, 24)
                .into_font()
                .color(&MUTED)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(text)
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &BarChart,
) -> Result<(), String> {
    let n = chart.bars.len().max(1);
    let top = chart
        .bars
        .iter()
        .flat_map(|b| b.value.into_iter().chain(b.range.map(|r| r.1)))
        .chain(chart.reference.as_ref().map(|r| r.0))
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max);
    // Room beyond the longest bar for its text.
    let headroom = if chart.horizontal { 1.55 } else { 1.15 };
    let (value_ticks, value_hi) = nice_ticks(top * headroom, 8);
    let categories = TickedAxis::new(-0.5, n as f64 - 0.5, (0..n).map(|i| i as f64).collect());
    let values = TickedAxis::new(0.0, value_hi, value_ticks);
    let category_label = |v: &f64| {
        let i = v.round();
        if i < 0.0 {
            return String::new();
        }
        let index = if chart.horizontal {
            (n - 1).checked_sub(i as usize)
        } else {
            Some(i as usize)
        };
        index
            .and_then(|i| chart.bars.get(i))
            .map(|b| b.label.clone())
            .unwrap_or_default()
    };
    let value_label = |v: &f64| fmt_num(*v);

    let builder = &mut ChartBuilder::on(area);
    builder.margin(16).margin_right(36);
    if chart.horizontal {
        builder.x_label_area_size(64).y_label_area_size(170);
    } else {
        builder.x_label_area_size(64).y_label_area_size(110);
    }
    let (x_spec, y_spec) = if chart.horizontal {
        (values, categories)
    } else {
        (categories, values)
    };
    let mut ctx = builder.build_cartesian_2d(x_spec, y_spec).map_err(text)?;
    {
        let mut mesh = ctx.configure_mesh();
        mesh.axis_desc_style((FONT, 20))
            .label_style((FONT, 16))
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT);
        if chart.horizontal {
            mesh.disable_y_mesh()
                .x_desc(chart.value_desc.as_str())
                .y_desc(chart.category_desc.as_str())
                .x_label_formatter(&value_label)
                .y_label_formatter(&category_label);
        } else {
            mesh.disable_x_mesh()
                .y_desc(chart.value_desc.as_str())
                .x_desc(chart.category_desc.as_str())
                .x_label_formatter(&category_label)
                .y_label_formatter(&value_label);
        }
        mesh.draw().map_err(text)?;
    }

    draw_bar_marks(&mut ctx, chart)?;
    if let Some((value, label)) = &chart.reference {
        let style = BLACK.stroke_width(2);
        let (from, to) = (-0.5, n as f64 - 0.5);
        ctx.draw_series(DashedLineSeries::new(
            vec![chart.point(from, *value), chart.point(to, *value)],
            8,
            6,
            style,
        ))
        .map_err(text)?
        .label(label.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        draw_legend(&mut ctx, SeriesLabelPosition::LowerRight)?;
    }
    if chart.bars.is_empty() {
        no_data_note(ctx.plotting_area())?;
    }
    Ok(())
}

/// Each bar, its whisker and its text.
fn draw_bar_marks<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Cartesian2d<TickedAxis, TickedAxis>>,
    chart: &BarChart,
) -> Result<(), String> {
    let half = 0.34;
    for (i, bar) in chart.bars.iter().enumerate() {
        let c = chart.slot(i);
        if let Some(value) = bar.value.filter(|v| v.is_finite()) {
            ctx.draw_series(std::iter::once(Rectangle::new(
                [
                    chart.point(c - half, 0.0),
                    chart.point(c + half, value.max(0.0)),
                ],
                bar.color.filled(),
            )))
            .map_err(text)?;
        }
        let whisker = RGBColor(30, 30, 30).stroke_width(2);
        if let Some((lo, hi)) = bar.range.filter(|r| r.0.is_finite() && r.1.is_finite()) {
            let cap = half / 3.0;
            ctx.draw_series([
                PathElement::new(vec![chart.point(c, lo), chart.point(c, hi)], whisker),
                PathElement::new(
                    vec![chart.point(c - cap, lo), chart.point(c + cap, lo)],
                    whisker,
                ),
                PathElement::new(
                    vec![chart.point(c - cap, hi), chart.point(c + cap, hi)],
                    whisker,
                ),
            ])
            .map_err(text)?;
        }
        if !bar.text.is_empty() {
            let end = bar
                .value
                .into_iter()
                .chain(bar.range.map(|r| r.1))
                .filter(|v| v.is_finite())
                .fold(0f64, f64::max);
            let (offset, pos) = if chart.horizontal {
                ((8, 0), Pos::new(HPos::Left, VPos::Center))
            } else {
                ((0, -6), Pos::new(HPos::Center, VPos::Bottom))
            };
            ctx.draw_series(std::iter::once(
                EmptyElement::at(chart.point(c, end))
                    + Text::new(
                        bar.text.clone(),
                        offset,
                        (FONT, 16).into_font().color(&BLACK).pos(pos),
                    ),
            ))
            .map_err(text)?;
        }
    }
    Ok(())
}

impl BarChart {
    /// Where category `i` sits: at i on a vertical chart; top to bottom on a horizontal one.
    fn slot(&self, i: usize) -> f64 {
        if self.horizontal {
            (self.bars.len().max(1) - 1 - i) as f64
        } else {
            i as f64
        }
    }

    /// A point of the chart from its category and value coordinates.
    fn point(&self, category: f64, value: f64) -> (f64, f64) {
        if self.horizontal {
            (value, category)
        } else {
            (category, value)
        }
    }
}

/// The percentile spectrum of `histogram` (values in microseconds) as (nines, ms) points:
/// x = log10(1 / (1 - q)), as HdrHistogram's plotters draw `.hgrm` files. The 100% row
/// has no finite x and is left out, as there.
pub(crate) fn spectrum_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|step| (step.quantile_iterated_to(), step.value_iterated_to()))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, v)| ((1.0 / (1.0 - q)).log10(), v as f64 / 1000.0))
        .collect();
    if points.is_empty() {
        // A single distinct value: one point at 0%.
        points.push((0.0, histogram.min() as f64 / 1000.0));
    }
    points
}

/// The latency spectrum series of `(label, color, histogram)` triples with samples.
pub(crate) fn spectrum_chart<'a>(
    lines: impl IntoIterator<Item = (String, RGBColor, &'a Histogram<u64>)>,
) -> LineChart {
    LineChart {
        x_axis: XAxis::Nines,
        x_desc: "percentile (log scale of 1 / (1 - percentile))".to_owned(),
        y_desc: "latency (ms, log scale)".to_owned(),
        y_log: true,
        series: lines
            .into_iter()
            .filter(|(_, _, h)| !h.is_empty())
            .map(|(label, color, h)| {
                let points = spectrum_points(h);
                Series {
                    label,
                    color,
                    markers: points.len() <= 2,
                    points,
                    dashed: false,
                }
            })
            .collect(),
        band: None,
        legend: Legend::UpperLeft,
    }
}

/// A run's plots, in [`RUN_PLOTS`] order.
pub fn run_plots(data: &RunData) -> Vec<Plot> {
    vec![
        latency_spectrum(data),
        throughput(data),
        rcpt_latency_over_time(data),
        verdicts(data),
        phase_breakdown(data),
    ]
}

fn latency_spectrum(data: &RunData) -> Plot {
    let chart = spectrum_chart(Phase::ALL.iter().filter_map(|p| {
        data.phases
            .get(p)
            .map(|h| (p.name().to_owned(), phase_color(*p), h))
    }));
    let shown: Vec<&str> = chart.series.iter().map(|s| s.label.as_str()).collect();
    let rcpt = data.phases.get(&Phase::Rcpt).filter(|h| !h.is_empty());
    let alt = match rcpt {
        Some(h) => format!(
            "Latency by percentile for {} phases ({}); RCPT p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms.",
            shown.len(),
            shown.join(", "),
            fmt_ms(h.value_at_quantile(0.5)),
            fmt_ms(h.value_at_quantile(0.99)),
            fmt_ms(h.value_at_quantile(0.999)),
            fmt_ms(h.max()),
        ),
        None if shown.is_empty() => "Latency by percentile: no samples.".to_owned(),
        None => format!(
            "Latency by percentile for {} phases ({}); no RCPT samples.",
            shown.len(),
            shown.join(", ")
        ),
    };
    Plot {
        name: "latency_spectrum".to_owned(),
        title: "Latency by percentile, per phase".to_owned(),
        subtitle: "measured sessions after warm-up; one line per phase with samples".to_owned(),
        caption: "Each line is one phase's latency distribution (HdrHistogram, microsecond \
                  resolution) drawn as HdrHistogram's plotters draw .hgrm files: the x axis \
                  is log10(1/(1-percentile)), so 90%, 99%, 99.9%... are evenly spaced and \
                  the tail gets room; the y axis is logarithmic, as phases differ by orders \
                  of magnitude. The line ends at the highest percentile the sample count \
                  resolves (the 100% row, the maximum, is in the latency table). In open \
                  loop, connect and session count from the intended start and schedule_lag \
                  is the wait before a session could start."
            .to_owned(),
        alt,
        chart: Chart::Lines(chart),
    }
}

/// RCPT replies per second in each interval of the series: (interval middle, rate).
/// Intervals in which nothing completed count as zero (a stall shows), from the run's
/// start; a final partial interval shorter than a fifth of the others is left out, its
/// rate being too noisy to draw.
fn interval_rates(data: &RunData) -> Vec<(f64, f64)> {
    // The series' step: its full intervals' length (a merge of runs takes the longest).
    let step = data
        .intervals
        .iter()
        .map(|i| i.duration_secs)
        .filter(|d| d.is_finite())
        .fold(0f64, f64::max);
    if step <= 0.0 {
        return Vec::new();
    }
    let mut by_slot: std::collections::BTreeMap<u64, (f64, u64)> = Default::default();
    for interval in &data.intervals {
        let short = interval.duration_secs < (MIN_RATE_INTERVAL_SHARE * step).min(1.0);
        if short || !interval.start_secs.is_finite() {
            continue;
        }
        let slot = (interval.start_secs.max(0.0) / step).round() as u64;
        let entry = by_slot.entry(slot).or_insert((interval.duration_secs, 0));
        entry.1 += interval.count(Phase::Rcpt);
    }
    let (Some(first), Some(last)) = (
        by_slot.keys().next().copied(),
        by_slot.keys().next_back().copied(),
    ) else {
        return Vec::new();
    };
    let point = |slot: u64, (duration, rcpts): (f64, u64)| {
        (slot as f64 * step + duration / 2.0, rcpts as f64 / duration)
    };
    // Only for a plausible span: a log with absolute timestamps (seconds since 1970) or a
    // gap of days keeps its points as they are.
    let span_secs = (last - first) as f64 * step;
    if span_secs > MAX_FILLED_SECONDS as f64 {
        return by_slot.iter().map(|(slot, v)| point(*slot, *v)).collect();
    }
    let from = if first as f64 * step <= MAX_FILLED_SECONDS as f64 {
        0
    } else {
        first
    };
    (from..=last)
        .map(|slot| point(slot, by_slot.get(&slot).copied().unwrap_or((step, 0))))
        .collect()
}

fn warmup_band(data: &RunData) -> Option<(f64, f64, String)> {
    let warmup = data.summary.window.warmup_secs;
    (warmup.is_finite() && warmup > 0.0).then(|| {
        (
            0.0,
            warmup,
            "warm-up (excluded from the figures)".to_owned(),
        )
    })
}

fn throughput(data: &RunData) -> Plot {
    let rates = interval_rates(data);
    let mean = data.summary.throughput.rcpt_per_sec;
    let warmup = data.summary.window.warmup_secs.max(0.0);
    let end = rates
        .last()
        .map_or(0.0, |p| p.0 + 0.5)
        .max(warmup + data.summary.window.measured_secs);
    let mut series = vec![Series {
        label: "RCPT replies per second".to_owned(),
        color: phase_color(Phase::Rcpt),
        markers: rates.len() <= 60,
        points: rates.clone(),
        dashed: false,
    }];
    if mean > 0.0 && !rates.is_empty() {
        series.push(Series {
            label: format!("window mean {} RCPT/s", fmt_num(mean)),
            color: RGBColor(30, 30, 30),
            points: vec![(warmup, mean), (end, mean)],
            dashed: true,
            markers: false,
        });
    }
    let peak = rates.iter().map(|p| p.1).fold(0f64, f64::max);
    Plot {
        name: "throughput".to_owned(),
        title: "Throughput: RCPT replies per second".to_owned(),
        subtitle: format!(
            "window mean {} RCPT/s, {} sessions/s; {} cores shared by server and generator",
            fmt_num(mean),
            fmt_num(data.summary.throughput.sessions_per_sec),
            data.summary.machine.cores
        ),
        caption: "RCPT replies received per second in each interval of the run (by \
                  completion time, warm-up included and shaded), from the interval \
                  histograms: 100 ms intervals, doubled as often as needed to keep at most \
                  600. An interval in which nothing completed is drawn as zero: a stall \
                  shows. The dashed line is the mean over the measurement window, the figure \
                  reported; a final partial interval shorter than a fifth of the others is \
                  left out."
            .to_owned(),
        alt: if rates.is_empty() {
            "RCPT replies per second over time: no samples.".to_owned()
        } else {
            format!(
                "RCPT replies per second in {} intervals: window mean {}, peak {} per second.",
                rates.len(),
                fmt_num(mean),
                fmt_num(peak)
            )
        },
        chart: Chart::Lines(LineChart {
            x_axis: XAxis::Seconds,
            x_desc: "seconds since the run's start".to_owned(),
            y_desc: "RCPT replies per second".to_owned(),
            y_log: false,
            series,
            band: warmup_band(data),
            legend: Legend::UpperRight,
        }),
    }
}

fn rcpt_latency_over_time(data: &RunData) -> Plot {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for interval in &data.intervals {
        let Some(h) = interval.phases.get(&Phase::Rcpt).filter(|h| !h.is_empty()) else {
            continue;
        };
        let x = interval.start_secs + interval.duration_secs / 2.0;
        p50.push((x, h.value_at_quantile(0.5) as f64 / 1000.0));
        p99.push((x, h.value_at_quantile(0.99) as f64 / 1000.0));
    }
    let lo = p50.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = p99.iter().map(|p| p.1).fold(0f64, f64::max);
    // Linear reads best; a log axis only when p99 dwarfs p50 by orders of magnitude.
    let y_log = lo > 0.0 && hi / lo > 50.0;
    let markers = p50.len() <= 60;
    let alt = if p50.is_empty() {
        "RCPT latency over time: no samples.".to_owned()
    } else {
        format!(
            "RCPT latency in {} intervals: p50 between {} and {} ms, p99 up to {} ms.",
            p50.len(),
            fmt_num(lo),
            fmt_num(p50.iter().map(|p| p.1).fold(0f64, f64::max)),
            fmt_num(hi)
        )
    };
    Plot {
        name: "rcpt_latency_over_time".to_owned(),
        title: "RCPT latency over time".to_owned(),
        subtitle: format!(
            "p50 and p99 of the RCPT replies completed in each interval{}",
            if y_log { " (log scale)" } else { "" }
        ),
        caption: "Median and 99th percentile of the RCPT latencies completed in each interval \
                  (interval histograms, 2 significant digits), warm-up shaded. With \
                  pipelining, RCPT k of a batch counts from the batch's write, so it \
                  includes the server's work on the RCPTs before it."
            .to_owned(),
        alt,
        chart: Chart::Lines(LineChart {
            x_axis: XAxis::Seconds,
            x_desc: "seconds since the run's start".to_owned(),
            y_desc: if y_log {
                "RCPT latency (ms, log scale)".to_owned()
            } else {
                "RCPT latency (ms)".to_owned()
            },
            y_log,
            series: vec![
                Series {
                    label: "p99".to_owned(),
                    color: RGBColor(214, 39, 40),
                    points: p99,
                    dashed: false,
                    markers,
                },
                Series {
                    label: "p50".to_owned(),
                    color: RGBColor(31, 119, 180),
                    points: p50,
                    dashed: false,
                    markers,
                },
            ],
            band: warmup_band(data),
            legend: Legend::UpperRight,
        }),
    }
}

fn verdicts(data: &RunData) -> Plot {
    let by_class = &data.summary.totals.by_class;
    let total: u64 = by_class.values().sum();
    let mut names: Vec<String> = ReplyClass::ALL
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    names.extend(
        by_class
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let bars: Vec<Bar> = names
        .iter()
        .map(|name| {
            let count = by_class.get(name).copied().unwrap_or(0);
            Bar {
                label: name.clone(),
                value: Some(count as f64),
                range: None,
                color: class_color(name),
                text: if total > 0 {
                    format!(
                        "{} ({:.1}%)",
                        fmt_count(count),
                        count as f64 * 100.0 / total as f64
                    )
                } else {
                    "0".to_owned()
                },
            }
        })
        .collect();
    let alt = format!(
        "RCPT replies by class: {}.",
        names
            .iter()
            .map(|n| format!("{n} {}", by_class.get(n).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Plot {
        name: "verdicts".to_owned(),
        title: "RCPT replies by class".to_owned(),
        subtitle: format!(
            "{} RCPT replies in the measurement window; {} contradicted the population",
            fmt_count(total),
            fmt_count(data.summary.mismatches.total)
        ),
        caption: "Classes: accepted (2xx), opted_out (550 5.7.1), unknown (550 5.1.1), \
                  not_local (554 5.7.1), tempfail (any 4xx, incl. 452 beyond the recipient \
                  limit), other. The counts are what the server answered; whether each \
                  answer was the expected one is in the mismatches section."
            .to_owned(),
        alt,
        chart: Chart::Bars(BarChart {
            horizontal: false,
            value_desc: "RCPT replies".to_owned(),
            category_desc: "reply class".to_owned(),
            bars,
            reference: None,
        }),
    }
}

/// The steps of a session in order, as the breakdown shows them: every phase but the wait
/// before it and the whole (`Phase::ALL` is in session order).
fn session_steps() -> impl Iterator<Item = Phase> {
    Phase::ALL
        .into_iter()
        .filter(|p| !matches!(p, Phase::ScheduleLag | Phase::Session))
}

fn phase_breakdown(data: &RunData) -> Plot {
    let mean_ms = |phase: Phase| {
        data.phases
            .get(&phase)
            .filter(|h| !h.is_empty())
            .map(|h| (h.mean() / 1000.0, h.len()))
    };
    let session = mean_ms(Phase::Session);
    let sessions = session.map_or(0, |s| s.1);
    let mut bars: Vec<Bar> = session_steps()
        .filter_map(|p| mean_ms(p).map(|m| (p, m)))
        .map(|(phase, (mean, count))| {
            let per_session = if sessions > 0 {
                count as f64 / sessions as f64
            } else {
                0.0
            };
            let text = if phase == Phase::Rcpt && sessions > 0 {
                format!(
                    "{} ms per RCPT ({} per session)",
                    fmt_num(mean),
                    fmt_num(per_session)
                )
            } else {
                format!("{} ms", fmt_num(mean))
            };
            Bar {
                label: phase.name().to_owned(),
                value: Some(mean),
                range: None,
                color: phase_color(phase),
                text,
            }
        })
        .collect();
    if let Some((mean, _)) = session {
        bars.push(Bar {
            label: "whole session".to_owned(),
            value: Some(mean),
            range: None,
            color: RGBColor(60, 60, 60),
            text: format!("{} ms", fmt_num(mean)),
        });
    }
    let alt = if bars.is_empty() {
        "Mean latency per session step: no samples.".to_owned()
    } else {
        format!(
            "Mean latency per session step: {}.",
            bars.iter()
                .map(|b| format!("{} {} ms", b.label, fmt_num(b.value.unwrap_or(0.0))))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Plot {
        name: "phase_breakdown".to_owned(),
        title: "Where a session's time goes: mean latency per step".to_owned(),
        subtitle:
            "side by side, not summed: with PIPELINING the FROM, RCPT and DATA replies overlap"
                .to_owned(),
        caption: "Mean latency of each step of a session, per command (RCPT: per recipient, \
                  with the mean number of RCPTs per session), and the whole session's mean \
                  for reference (dark bar, dashed line). The bars are deliberately not \
                  stacked: with PIPELINING, BULK/MAIL FROM, all RCPTs and DATA go out in one \
                  write and their replies arrive together, so their latencies overlap in \
                  time (RCPT k includes the server's work on RCPTs 1..k-1), and the steps do \
                  not add up to the session. Time between steps (the generator's own work) \
                  is in the session but in no step."
            .to_owned(),
        alt,
        chart: Chart::Bars(BarChart {
            horizontal: true,
            value_desc: "mean latency (ms)".to_owned(),
            category_desc: "step of a session".to_owned(),
            bars,
            reference: session
                .map(|(mean, _)| (mean, format!("session mean {} ms", fmt_num(mean)))),
        }),
    }
}

/// Calls `progress(done, total)` as steps finish, from any thread.
pub(crate) struct Progress<'a> {
    done: AtomicUsize,
    total: usize,
    report: &'a (dyn Fn(usize, usize) + Sync),
}

impl<'a> Progress<'a> {
    pub(crate) fn new(total: usize, report: &'a (dyn Fn(usize, usize) + Sync)) -> Self {
        report(0, total);
        Progress {
            done: AtomicUsize::new(0),
            total,
            report,
        }
    }

    pub(crate) fn step(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        (self.report)(done.min(self.total), self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_labels() {
        let labels: Vec<String> = (0..6).map(nines_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn nice_ticks_cover_the_maximum() {
        for (max, count) in [(0.0, 8), (1.0, 8), (7.3, 8), (1234.0, 10), (0.004, 5)] {
            let (ticks, top) = nice_ticks(max, count);
            assert!(top >= max, "{max}: {top}");
            assert!(ticks.len() >= 2 && ticks.len() <= count + 2, "{ticks:?}");
            assert_eq!(ticks[0], 0.0);
        }
    }

    #[test]
    fn spectrum_points_rise_on_the_nines_axis() {
        let mut h = crate::new_full_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let points = spectrum_points(&h);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(points[0].0, 0.0);
        let last = points.last().unwrap();
        assert!(last.0 > 3.0 && last.0 < 4.5, "{last:?}");
        assert!(spectrum_points(&crate::new_full_histogram()).is_empty());
    }
}
