//! The report's charts as standalone SVG, drawn with plotters' SVG backend: line charts, grouped
//! bars (with optional Wilson error bars and data labels) and the cohort heatmap. Every chart has a
//! caption, axis descriptions with units and a legend; text uses the generic `sans-serif` family,
//! so the page loads no font.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::ErrorBar;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// Chart size in SVG pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 420;
const FONT: &str = "sans-serif";

/// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// How a value axis and its labels read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// A share: 0.341 reads 34.1%.
    Percent,
    /// An amount of money, in the currency named in the axis description.
    Money,
    /// A plain number with this many decimals.
    Number(usize),
}

impl Unit {
    /// `value` as the chart prints it.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Percent => format!("{:.1}%", value * 100.0),
            Unit::Money => money(value),
            Unit::Number(d) => format!("{value:.d$}"),
        }
    }
}

/// `value` with thousands separators and two decimals below 1,000 (`1,234`, `56.78`).
fn money(value: f64) -> String {
    if value.abs() < 1000.0 {
        return format!("{value:.2}");
    }
    let whole = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// A chart's words: its caption and what each axis shows, with units.
#[derive(Debug, Clone)]
pub struct Axes {
    pub caption: String,
    pub x: String,
    pub y: String,
    pub unit: Unit,
}

/// One named series over the chart's categories; `None` where it has no value.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// A 95% interval per category, drawn as error bars on a single-series bar chart.
#[derive(Debug, Clone)]
pub struct Intervals {
    pub low: Vec<f64>,
    pub high: Vec<f64>,
}

fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::Export {
        path: "report".into(),
        message: format!("drawing a chart: {e}"),
        source: None,
    }
}

/// The value range to plot, from zero or the lowest value to the highest, with headroom for the
/// data labels and the legend.
fn value_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    // Room above the highest value for its label and the legend, below the lowest for its label.
    let span = hi - lo;
    (if lo < 0.0 { lo - span * 0.1 } else { lo })..(hi + span * 0.3)
}

/// The label of category position `x` (every `step`th category), or nothing between categories.
fn category_label(labels: &[String], step: usize, x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    let i = i as usize;
    match labels.get(i) {
        Some(l) if i.is_multiple_of(step) => l.clone(),
        _ => String::new(),
    }
}

/// Draw into an SVG string of the chart's size.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        draw(&root)?;
        root.present().map_err(chart_error)?;
    }
    Ok(out)
}

/// A chart area over `categories` (one position each, every label shown up to 16 of them) and a
/// value axis over `y_range`, with its caption, axis descriptions and gridlines drawn.
fn category_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    axes: &Axes,
    categories: &[String],
    y_range: std::ops::Range<f64>,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let n = categories.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(&axes.caption, (FONT, 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(78)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y_range)
        .map_err(chart_error)?;
    let (step, unit) = (n.div_ceil(16), axes.unit);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(&axes.x)
        .y_desc(&axes.y)
        .x_labels(n.min(40))
        .x_label_formatter(&|x| category_label(categories, step, *x))
        .y_label_formatter(&|y| unit.format(*y))
        .label_style((FONT, 12))
        .draw()
        .map_err(chart_error)?;
    Ok(chart)
}

/// Lines over ordered categories (months), one per series, with a point at each value.
pub fn lines(axes: &Axes, categories: &[String], series: &[Series]) -> Result<String> {
    let y_range = value_range(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
    );
    svg(|root| {
        let mut chart = category_chart(root, axes, categories, y_range)?;
        for (k, s) in series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let points: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(chart_error)?
                .label(&s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, colour.filled())),
                )
                .map_err(chart_error)?;
        }
        legend(&mut chart)
    })
}

/// The series legend, top right.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| chart_error(format!("{e:?}")))
}

/// Bars per category, one bar per series side by side, each labelled with its value when
/// `labelled`; with `intervals` (single series only) each bar gets its 95% interval as an error bar.
pub fn bars(
    axes: &Axes,
    categories: &[String],
    series: &[Series],
    intervals: Option<&Intervals>,
    labelled: bool,
) -> Result<String> {
    let mut all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .collect();
    if let Some(iv) = intervals {
        all.extend(iv.low.iter().chain(&iv.high));
    }
    let y_range = value_range(all.into_iter());
    svg(|root| {
        let mut chart = category_chart(root, axes, categories, y_range)?;
        let unit = axes.unit;
        let width = 0.8 / series.len().max(1) as f64;
        let above =
            TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        let below = above.pos(Pos::new(HPos::Center, VPos::Top));
        for (k, s) in series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let left = |i: usize| i as f64 - 0.4 + width * k as f64;
            // (category, left edge, value) of each bar with a value.
            let bars: Vec<(usize, f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, left(i), v)))
                .collect();
            chart
                .draw_series(bars.iter().map(|&(_, x, v)| {
                    Rectangle::new(
                        [(x + width * 0.06, 0.0), (x + width * 0.94, v)],
                        colour.filled(),
                    )
                }))
                .map_err(chart_error)?
                .label(&s.name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled())
                });
            if !labelled {
                continue;
            }
            // Data labels past each bar's end (and past the error bar's top when there is one).
            chart
                .draw_series(bars.iter().map(|&(i, x, v)| {
                    let x = x + width / 2.0;
                    if v < 0.0 {
                        return Text::new(unit.format(v), (x, v), below.clone());
                    }
                    let top = intervals
                        .and_then(|iv| iv.high.get(i).copied())
                        .unwrap_or(v)
                        .max(v);
                    Text::new(unit.format(v), (x, top), above.clone())
                }))
                .map_err(chart_error)?;
        }
        if let (Some(iv), Some(s)) = (intervals, series.first()) {
            chart
                .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                    let v = (*v)?;
                    Some(ErrorBar::new_vertical(
                        i as f64,
                        iv.low[i],
                        v,
                        iv.high[i],
                        BLACK.stroke_width(1),
                        10,
                    ))
                }))
                .map_err(chart_error)?;
        }
        legend(&mut chart)
    })
}

/// The heatmap colour of `value` on a white-to-blue scale from 0 to `max`.
fn shade(value: f64, max: f64) -> RGBColor {
    let t = (value / max).clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 69.0), mix(255.0, 148.0))
}

/// One heatmap cell: its row and column positions, its value and the text printed in it.
#[derive(Debug, Clone)]
pub struct HeatCell {
    pub row: usize,
    pub column: usize,
    pub value: f64,
    pub label: String,
}

/// Rows (cohorts, oldest at the top) by columns (months since the first order); only the cells
/// given are coloured, so the observed triangle shows. The colour scale runs from 0 to the
/// largest value outside column 0 (column 0 is 100% by definition) and is drawn on the right.
pub fn heatmap(
    axes: &Axes,
    rows: &[String],
    columns: &[String],
    cells: &[HeatCell],
) -> Result<String> {
    let (nr, nc) = (rows.len().max(1), columns.len().max(1));
    let max = cells
        .iter()
        .filter(|c| c.column > 0)
        .map(|c| c.value)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut out = String::new();
    {
        let height = (nr as u32 * 22 + 130).max(HEIGHT);
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let (left, right) = root.split_horizontally(WIDTH - 110);
        let mut chart = ChartBuilder::on(&left)
            .caption(&axes.caption, (FONT, 20))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(-0.5f64..(nc as f64 - 0.5), -0.5f64..(nr as f64 - 0.5))
            .map_err(chart_error)?;
        // Row 0 (the oldest cohort) is drawn at the top.
        let flip = |r: usize| (nr - 1 - r) as f64;
        let row_labels: Vec<String> = rows.iter().rev().cloned().collect();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&axes.x)
            .y_desc(&axes.y)
            .x_labels(nc.min(40))
            .y_labels(nr.min(60))
            .x_label_formatter(&|x| category_label(columns, nc.div_ceil(24), *x))
            .y_label_formatter(&|y| category_label(&row_labels, 1, *y))
            .label_style((FONT, 11))
            .draw()
            .map_err(chart_error)?;
        chart
            .draw_series(cells.iter().map(|c| {
                let (x, y) = (c.column as f64, flip(c.row));
                Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    shade(c.value, max).filled(),
                )
            }))
            .map_err(chart_error)?;
        let centred =
            TextStyle::from((FONT, 9).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series(cells.iter().map(|c| {
                let colour: &'static RGBColor = if c.value / max > 0.55 { &WHITE } else { &BLACK };
                Text::new(
                    c.label.clone(),
                    (c.column as f64, flip(c.row)),
                    centred.color(colour),
                )
            }))
            .map_err(chart_error)?;
        colour_scale(&right, max, axes.unit)?;
        root.present().map_err(chart_error)?;
    }
    Ok(out)
}

/// The heatmap's legend: the colour scale from 0 to `max`, labelled in `unit`.
fn colour_scale(area: &DrawingArea<SVGBackend, Shift>, max: f64, unit: Unit) -> Result<()> {
    let mut scale = ChartBuilder::on(area)
        .margin_top(60)
        .margin_bottom(70)
        .margin_right(10)
        .y_label_area_size(52)
        .caption("retention", (FONT, 12))
        .build_cartesian_2d(0f64..1f64, 0f64..max)
        .map_err(chart_error)?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|y| unit.format(*y))
        .label_style((FONT, 11))
        .draw()
        .map_err(chart_error)?;
    let steps = 40;
    scale
        .draw_series((0..steps).map(|i| {
            let (a, b) = (
                max * i as f64 / steps as f64,
                max * (i + 1) as f64 / steps as f64,
            );
            Rectangle::new([(0.0, a), (1.0, b)], shade((a + b) / 2.0, max).filled())
        }))
        .map_err(chart_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_format_as_the_axes_read() {
        assert_eq!(Unit::Percent.format(0.3269), "32.7%");
        assert_eq!(Unit::Money.format(1234567.891), "1,234,568");
        assert_eq!(Unit::Money.format(-2061.86), "-2,062");
        assert_eq!(Unit::Money.format(44.694), "44.69");
        assert_eq!(Unit::Number(2).format(8.82194), "8.82");
    }

    #[test]
    fn category_labels_fall_on_whole_positions_only() {
        let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(category_label(&labels, 1, 2.0), "c");
        assert_eq!(category_label(&labels, 2, 1.0), "");
        assert_eq!(category_label(&labels, 1, 1.5), "");
        assert_eq!(category_label(&labels, 1, 7.0), "");
    }

    #[test]
    fn a_bar_chart_carries_its_caption_axes_legend_and_data_labels() {
        let axes = Axes {
            caption: "Churn by root cause".into(),
            x: "first order".into(),
            y: "churn rate (%)".into(),
            unit: Unit::Percent,
        };
        let svg = bars(
            &axes,
            &["perfect".into(), "late".into()],
            &[Series {
                name: "churn rate".into(),
                values: vec![Some(0.6916), Some(0.7012)],
            }],
            Some(&Intervals {
                low: vec![0.6837, 0.6769],
                high: vec![0.6995, 0.7244],
            }),
            true,
        )
        .unwrap();
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim())
            .collect();
        for text in [
            "Churn by root cause",
            "first order",
            "churn rate (%)",
            "69.2%",
            "70.1%",
            "perfect",
            "late",
            "churn rate",
        ] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        assert!(
            !svg.contains("http://") || svg.matches("http://").count() == 1,
            "only the xmlns"
        );
    }
}
