//! Draws a replay as an SVG timeline (`drainguard replay --plot`).
//!
//! Two panels share one time axis (scenario time, UTC). The upper one is
//! the cumulative outflow in USD of each chain, one colour a chain: a solid
//! line for everything not labelled attack and, where the scenario labels
//! an attack, a dashed line of the same colour for it. The lower one is
//! the findings, a row per severity, each a marker in its chain's colour
//! (grey without a chain). Every freeze is a red vertical line through
//! both; the first is thicker and carries its time and scope as text.
//!
//! Only the SVG backend is used: it needs no font files (the SVG names a
//! generic font family and whatever shows it draws the text), so neither
//! the build nor a run depends on system libraries. Integer micro-dollars
//! become `f64` dollars here, for drawing only.

use std::collections::HashSet;

use drainguard_model::{Finding, Freeze, Severity, Timestamp};
use drainguard_replay::{Flow, Series, Timeline};
use std::ops::Range;

use plotters::{
    coord::ranged1d::{DefaultFormatting, KeyPointHint},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The scenario had no records: there is no time axis to draw.
    #[error("nothing to plot: the scenario has no records")]
    Empty,
    /// plotters refused a drawing step.
    #[error("drawing the plot: {message}")]
    Draw {
        /// plotters' description of what failed.
        message: String,
    },
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw {
            message: e.to_string(),
        }
    }
}

/// The picture's size in pixels.
pub const SIZE: (u32, u32) = (1200, 720);

/// The colour of freeze lines and of the first freeze's text.
pub const FREEZE_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// The text that marks the first freeze starts with this.
pub const FIRST_FREEZE_TEXT: &str = "first freeze";

/// Chain colours, in order of declaration (red is kept for freezes).
const PALETTE: [RGBColor; 9] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x1a, 0x1a, 0x6e),
];
const NO_CHAIN: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);

/// Pixel columns of the plotting area, about: a series with more steps is
/// drawn from one sample per column, so a day of withdrawals stays a small
/// file and looks the same.
const COLUMNS: usize = 1000;

/// What the picture shows besides the timeline.
#[derive(Debug, Clone, Copy)]
pub struct Marks<'a> {
    /// Every finding, in time order.
    pub findings: &'a [Finding],
    /// Every freeze, in time order.
    pub freezes: &'a [Freeze],
}

/// Draws the timeline, findings and freezes of a replay as an SVG document.
pub fn svg(timeline: &Timeline, marks: Marks<'_>, title: &str) -> Result<String, PlotError> {
    let (start, end) = timeline.span().ok_or(PlotError::Empty)?;
    let axis = TimeAxis::new(start, end);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let (upper, lower) = root.split_vertically(SIZE.1 as i32 * 7 / 10);
        draw_outflow(&upper, timeline, &axis, marks.freezes)?;
        draw_findings(&lower, timeline, &axis, marks)?;
        root.present()?;
    }
    Ok(out)
}

/// Scenario time as seconds since the first record, and where the ticks go.
#[derive(Debug)]
struct TimeAxis {
    start: Timestamp,
    span: f64,
    ticks: Vec<f64>,
}

impl TimeAxis {
    fn new(start: Timestamp, end: Timestamp) -> Self {
        let span = end.seconds_since(start).max(1.0);
        // Ticks on round UTC times, at most a dozen of them.
        const STEPS: [i64; 11] = [
            60, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400,
        ];
        let step = STEPS
            .iter()
            .copied()
            .find(|s| span / *s as f64 <= 12.0)
            .unwrap_or_else(|| ((span / 12.0 / 86_400.0).ceil() as i64).max(1) * 86_400);
        let start_s = start.0.div_euclid(1_000_000_000);
        let first = start_s.div_euclid(step) * step + if start_s % step == 0 { 0 } else { step };
        let ticks = (0..)
            .map(|i| first + i * step)
            .map(|s| Timestamp::from_unix_secs(s).seconds_since(start))
            .take_while(|x| *x <= span)
            .collect();
        TimeAxis { start, span, ticks }
    }

    fn ranged(&self) -> Ticked {
        Ticked {
            range: 0.0..self.span,
            ticks: self.ticks.clone(),
        }
    }

    fn x(&self, t: Timestamp) -> f64 {
        t.seconds_since(self.start)
    }

    fn at(&self, x: f64) -> Timestamp {
        Timestamp(self.start.0.saturating_add((x * 1e9).round() as i64))
    }

    /// `HH:MM` (or `HH:MM:SS` for a span under ten minutes) in UTC.
    fn label(&self, x: f64) -> String {
        let s = self.at(x).to_rfc3339();
        let len = if self.span < 600.0 { 8 } else { 5 };
        s.get(11..11 + len).unwrap_or_default().to_string()
    }
}

/// A linear `f64` axis whose ticks (and grid lines) are exactly the given
/// points. plotters' own `with_key_points` on an `f64` range loses the
/// label formatter, so the axis is spelled out here.
#[derive(Debug, Clone)]
struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let width = self.range.end - self.range.start;
        if width <= 0.0 {
            return (limit.0 + limit.1) / 2;
        }
        let share = (v - self.range.start) / width;
        limit.0 + (f64::from(limit.1 - limit.0) * share).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Bold points only: the light grid would be a second, finer set.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// `$12.5M`, `$350k`, `$0`.
fn usd_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("${:.1}B", v / 1e9)
    } else if a >= 1e6 {
        format!("${:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("${:.0}k", v / 1e3)
    } else {
        format!("${v:.0}")
    }
}

/// `s` cut to `max` characters, an ellipsis in place of the rest (a
/// 42-character address in a scope would run off the picture).
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn chain_color(timeline: &Timeline, chain: &drainguard_model::Chain) -> RGBColor {
    timeline
        .chains()
        .iter()
        .position(|c| c == chain)
        .map_or(NO_CHAIN, |i| PALETTE[i % PALETTE.len()])
}

/// The points of a cumulative series as a step line, in (seconds, dollars):
/// exact when it has few steps, one sample a pixel column otherwise.
/// `from_start` draws it from zero at the left edge; without it the line
/// starts at its first step (an attack line does not run along the axis
/// for the hours before the attack).
fn step_points(series: &Series, axis: &TimeAxis, from_start: bool) -> Vec<(f64, f64)> {
    let Some(first) = series.steps.first() else {
        return Vec::new();
    };
    let left = if from_start { 0.0 } else { axis.x(first.t) };
    let mut points = Vec::new();
    if series.steps.len() <= COLUMNS {
        let mut prev = 0.0;
        points.push((left, 0.0));
        for s in &series.steps {
            let (x, y) = (axis.x(s.t), s.total.to_f64());
            points.push((x, prev));
            points.push((x, y));
            prev = y;
        }
    } else {
        let col = axis.span / COLUMNS as f64;
        let first_col = (left / col).floor() as usize;
        points.push((left, 0.0));
        points.extend((first_col..=COLUMNS).map(|i| {
            let x = (i as f64 * col).max(left);
            (x, series.at(axis.at(x)).to_f64())
        }));
    }
    points.push((axis.span, series.last().to_f64()));
    points
}

fn draw_outflow<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    timeline: &Timeline,
    axis: &TimeAxis,
    freezes: &[Freeze],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = timeline
        .all_series()
        .map(|(_, _, s)| s.steps.iter().map(|p| p.total).max().unwrap_or_default())
        .max()
        .unwrap_or_default()
        .to_f64()
        .max(1.0)
        * 1.08;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(8)
        .y_label_area_size(90)
        .build_cartesian_2d(axis.ranged(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| usd_label(*v))
        .y_desc("cumulative outflow (USD)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
        .draw()?;
    let labelled = timeline.labelled();
    for (chain, flow, series) in timeline.all_series() {
        let color = chain_color(timeline, chain);
        match flow {
            Flow::Other => {
                let style = color.stroke_width(2);
                let name = if labelled {
                    format!("{chain} normal")
                } else {
                    chain.to_string()
                };
                chart
                    .draw_series(LineSeries::new(step_points(series, axis, true), style))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
            Flow::Attack => {
                let style = color.stroke_width(3);
                chart
                    .draw_series(DashedLineSeries::new(
                        step_points(series, axis, false),
                        9,
                        5,
                        style,
                    ))?
                    .label(format!("{chain} attack"))
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (9, 0)], style)
                            + PathElement::new(vec![(14, 0), (23, 0)], style)
                    });
            }
        }
    }
    for (i, f) in freezes.iter().enumerate() {
        let x = axis.x(f.t);
        let style = FREEZE_COLOR.stroke_width(if i == 0 { 2 } else { 1 });
        let line = chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, top)],
            style,
        )))?;
        if i == 0 {
            let legend = FREEZE_COLOR.stroke_width(2);
            line.label(format!("freeze ({})", freezes.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x + 12, y - 6), (x + 12, y + 6)], legend)
                });
            // The text goes right of the line, or left of it near the
            // right edge, so that it stays inside the picture.
            let right = x > axis.span * 0.7;
            let anchor = Pos::new(if right { HPos::Right } else { HPos::Left }, VPos::Top);
            let text = format!(
                "{FIRST_FREEZE_TEXT} {} {}",
                f.t.to_rfc3339().get(11..19).unwrap_or_default(),
                shorten(&f.scope.to_string(), 40)
            );
            let font = ("sans-serif", 15)
                .into_font()
                .color(&FREEZE_COLOR)
                .pos(anchor);
            let shift = if right { -6 } else { 6 };
            chart.draw_series(std::iter::once(
                EmptyElement::at((x, top)) + Text::new(text, (shift, 6), font),
            ))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(12)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xb0, 0xb0, 0xb0))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn severity_row(s: Severity) -> f64 {
    match s {
        Severity::Info => 0.0,
        Severity::Warning => 1.0,
        Severity::Critical => 2.0,
    }
}

fn draw_findings<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    timeline: &Timeline,
    axis: &TimeAxis,
    marks: Marks<'_>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(24)
        .margin_top(0)
        .x_label_area_size(44)
        .y_label_area_size(90)
        .build_cartesian_2d(
            axis.ranged(),
            Ticked {
                range: -0.6..2.6,
                ticks: vec![0.0, 1.0, 2.0],
            },
        )?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| axis.label(*x))
        .y_label_formatter(&|y| {
            match y.round() as i64 {
                0 => "info",
                1 => "warning",
                2 => "critical",
                _ => "",
            }
            .to_string()
        })
        .x_desc("scenario time (UTC)")
        .y_desc("findings")
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
        .label_style(("sans-serif", 14))
        .draw()?;
    // A finding per pixel column, severity and chain is enough: a burst of
    // findings on one chain is one marker, not hundreds on top of another.
    let col = axis.span / COLUMNS as f64;
    let mut drawn = HashSet::new();
    let shown = marks.findings.iter().filter(|f| {
        let x = axis.x(f.t);
        drawn.insert(((x / col) as i64, f.severity.as_str(), f.chain.clone()))
    });
    chart.draw_series(shown.map(|f| {
        let (x, y) = (axis.x(f.t), severity_row(f.severity));
        let color = f
            .chain
            .as_ref()
            .map_or(NO_CHAIN, |c| chain_color(timeline, c));
        let marker: DynElement<'_, DB, (f64, f64)> = match f.severity {
            Severity::Info => Circle::new((x, y), 3, color.filled()).into_dyn(),
            Severity::Warning => TriangleMarker::new((x, y), 6, color.filled()).into_dyn(),
            Severity::Critical => Cross::new((x, y), 5, color.stroke_width(2)).into_dyn(),
        };
        marker
    }))?;
    for (i, f) in marks.freezes.iter().enumerate() {
        let x = axis.x(f.t);
        let style = FREEZE_COLOR.stroke_width(if i == 0 { 2 } else { 1 });
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, -0.6), (x, 2.6)],
            style,
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

    use super::*;

    #[test]
    fn usd_labels() {
        assert_eq!(usd_label(0.0), "$0");
        assert_eq!(usd_label(950.0), "$950");
        assert_eq!(usd_label(350_000.0), "$350k");
        assert_eq!(usd_label(12_500_000.0), "$12.5M");
        assert_eq!(usd_label(2.25e9), "$2.2B");
    }

    #[test]
    fn long_scopes_are_shortened() {
        assert_eq!(shorten("global", 40), "global");
        let s = shorten(
            "wallet:ethereum:0x7d535a6a6c18988d64a878af797e84c93539e776",
            20,
        );
        assert_eq!(s, "wallet:ethereum:0x7…");
        assert_eq!(s.chars().count(), 20);
    }

    #[test]
    fn ticks_fall_on_round_utc_times() {
        let start = Timestamp::parse_rfc3339("2023-09-12T00:00:30Z").unwrap();
        let end = Timestamp::parse_rfc3339("2023-09-13T00:00:00Z").unwrap();
        let axis = TimeAxis::new(start, end);
        let labels: Vec<String> = axis.ticks.iter().map(|x| axis.label(*x)).collect();
        assert_eq!(labels.first().map(String::as_str), Some("02:00"));
        assert_eq!(labels.last().map(String::as_str), Some("00:00"));
        assert!(labels.len() <= 12, "{labels:?}");
        let short = TimeAxis::new(
            start,
            Timestamp::parse_rfc3339("2023-09-12T00:05:00Z").unwrap(),
        );
        assert_eq!(axis.label(0.0), "00:00");
        assert_eq!(short.label(0.0), "00:00:30");
        let short_labels: Vec<String> = short.ticks.iter().map(|x| short.label(*x)).collect();
        assert_eq!(
            short_labels,
            ["00:01:00", "00:02:00", "00:03:00", "00:04:00", "00:05:00"],
            "a tick a minute, on the minute"
        );
    }

    fn series(steps: &[(i64, u128)]) -> Series {
        Series {
            steps: steps
                .iter()
                .map(|(s, d)| drainguard_replay::Step {
                    t: Timestamp::from_unix_secs(*s),
                    total: drainguard_model::Usd(d * 1_000_000),
                })
                .collect(),
        }
    }

    #[test]
    fn few_steps_are_drawn_exactly_as_a_staircase() {
        let axis = TimeAxis::new(Timestamp::from_unix_secs(0), Timestamp::from_unix_secs(100));
        let s = series(&[(10, 5), (40, 8)]);
        assert_eq!(
            step_points(&s, &axis, true),
            [
                (0.0, 0.0),
                (10.0, 0.0),
                (10.0, 5.0),
                (40.0, 5.0),
                (40.0, 8.0),
                (100.0, 8.0)
            ]
        );
        // Without `from_start` the line begins at its first step.
        assert_eq!(step_points(&s, &axis, false)[0], (10.0, 0.0));
        assert!(step_points(&Series::default(), &axis, true).is_empty());
    }

    #[test]
    fn many_steps_are_sampled_once_a_column() {
        let n = 50_000i64;
        let axis = TimeAxis::new(Timestamp::from_unix_secs(0), Timestamp::from_unix_secs(n));
        let steps: Vec<(i64, u128)> = (1..=n).map(|i| (i, i as u128)).collect();
        let points = step_points(&series(&steps), &axis, true);
        assert!(points.len() <= COLUMNS + 3, "{}", points.len());
        // Each sample is the running total at its time: here, its second.
        for (x, y) in &points[1..points.len() - 1] {
            assert!((y - x.floor()).abs() < 1e-6, "({x}, {y})");
        }
        assert_eq!(points.last(), Some(&(n as f64, n as f64)));
    }

    #[test]
    fn an_empty_timeline_is_an_error() {
        let tl = Timeline::new();
        let marks = Marks {
            findings: &[],
            freezes: &[],
        };
        assert!(matches!(svg(&tl, marks, "x"), Err(PlotError::Empty)));
    }
}
