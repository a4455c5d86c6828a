//! SVG charts of experiment results: stacked panels sharing one x axis (usually time).

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

/// One line on a panel.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    /// Draw points as crosses instead of a line (e.g. timeouts).
    pub markers: bool,
}

/// One chart of the stack.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    /// Logarithmic y axis (values are clamped to `y_min`).
    pub log_y: bool,
    pub y_min: f64,
    pub series: Vec<Series>,
}

pub const EVENTED: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub const BLOCKING: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// Each server model's name and colour, in the order the experiments run them.
pub const MODELS: [(&str, RGBColor); 2] = [("evented", EVENTED), ("blocking", BLOCKING)];

/// The colour of a model by name (`blocking` for any other).
pub fn model_color(model: &str) -> RGBColor {
    if model == "evented" {
        EVENTED
    } else {
        BLOCKING
    }
}

/// A third server (a blocking pool beside the unbounded one).
pub const POOL: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// A paler shade of `c`, for a series that belongs with another.
pub fn lighter(c: RGBColor) -> RGBColor {
    let mix = |v: u8| v + (255 - v) / 2;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// One line per model of `models` that has points among `rows`: `model_of` says a row's model,
/// `point` its `(x, y)` (`None` leaves the row out), `label` the line's name from the model's.
pub fn per_model<R>(
    rows: &[R],
    models: &[(&str, RGBColor)],
    model_of: impl Fn(&R) -> &str,
    point: impl Fn(&R) -> Option<(f64, f64)>,
    label: impl Fn(&str) -> String,
    pale: bool,
) -> Vec<Series> {
    models
        .iter()
        .filter_map(|&(model, color)| {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| model_of(r) == model)
                .filter_map(&point)
                .collect();
            (!points.is_empty()).then(|| Series {
                label: label(model),
                color: if pale { lighter(color) } else { color },
                points,
                markers: false,
            })
        })
        .collect()
}

/// The probe's latency panel: p99 per second in ms, on a log axis.
pub fn probe_panel(probe_ms: u64, series: Vec<Series>) -> Panel {
    Panel {
        title: format!("probe latency, p99 per second (a fresh GET / every {probe_ms} ms)"),
        y_label: "ms (log)".to_string(),
        log_y: true,
        y_min: 0.01,
        series,
    }
}

/// Draws `panels` one above the other, sharing the x axis described by `x_label`.
pub fn draw(path: &Path, title: &str, x_label: &str, panels: &[Panel]) -> Result<(), String> {
    draw_with_x(path, title, x_label, false, panels)
}

/// [`draw`], with a logarithmic x axis when `log_x` (for counts that grow by factors).
pub fn draw_with_x(
    path: &Path,
    title: &str,
    x_label: &str,
    log_x: bool,
    panels: &[Panel],
) -> Result<(), String> {
    // A lone panel gets a little more room than one of a stack.
    let height = match panels.len() {
        1 => 420,
        n => 60 + 260 * n as u32,
    };
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let xs = || {
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
            .map(|p| p.0)
    };
    let x_max = xs().fold(1.0, f64::max);
    let x = if log_x {
        // A factor of room on each side, as on a log y axis.
        let x_min = xs().filter(|&x| x > 0.0).fold(x_max, f64::min);
        XAxis::Log(x_min / 1.5, x_max * 1.5)
    } else {
        XAxis::Linear(x_max)
    };
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel, x_label, x).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[derive(Clone, Copy)]
enum XAxis {
    /// From 0 to the value.
    Linear(f64),
    /// From the first value to the second, logarithmic.
    Log(f64, f64),
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    x_label: &str,
    x: XAxis,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let y_max = panel
        .series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.1)
        .fold(panel.y_min * 10.0, f64::max)
        // Headroom above the highest point: on a log axis it takes a factor, not a few percent.
        * if panel.log_y { 3.0 } else { 1.15 };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(70);
    let (log_y, y) = (panel.log_y, panel.y_min..y_max);
    // Over time the start of a run is quiet (upper left is free); against counts that grow by
    // factors, the legend goes to whichever right-hand corner has fewer points.
    let upper_left = SeriesLabelPosition::UpperLeft;
    let right_corner = |min: f64, max: f64| {
        let scale = |v: f64, lo: f64, hi: f64, log: bool| {
            if log {
                (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln())
            } else {
                (v - lo) / (hi - lo)
            }
        };
        let (mut upper, mut lower) = (0, 0);
        for &(px, py) in panel.series.iter().flat_map(|s| &s.points) {
            if scale(px, min, max, true) > 0.5 {
                let fy = scale(py, panel.y_min, y_max, log_y);
                upper += usize::from(fy > 0.6);
                lower += usize::from(fy < 0.4);
            }
        }
        if upper <= lower {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        }
    };
    match x {
        XAxis::Linear(max) if log_y => draw_chart(
            builder.build_cartesian_2d(0f64..max, y.log_scale())?,
            panel,
            x_label,
            upper_left,
        ),
        XAxis::Linear(max) => draw_chart(
            builder.build_cartesian_2d(0f64..max, y)?,
            panel,
            x_label,
            upper_left,
        ),
        XAxis::Log(min, max) if log_y => draw_chart(
            builder.build_cartesian_2d((min..max).log_scale(), y.log_scale())?,
            panel,
            x_label,
            right_corner(min, max),
        ),
        XAxis::Log(min, max) => draw_chart(
            builder.build_cartesian_2d((min..max).log_scale(), y)?,
            panel,
            x_label,
            right_corner(min, max),
        ),
    }
}

/// The mesh, the series and their legend, on axes of either scale.
fn draw_chart<'a, DB, X, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
    panel: &Panel,
    x_label: &str,
    legend: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .x_label_formatter(&axis_number)
        .y_label_formatter(&axis_number)
        .light_line_style(WHITE)
        .draw()?;
    draw_series(&mut chart, panel, legend)
}

/// `1,000,000`, `250`, `1.5`, `0.25`: counts grouped by thousands, fractions without trailing zeros.
fn axis_number(v: &f64) -> String {
    if v.abs() >= 1000.0 || (v.abs() >= 1.0 && v.fract() == 0.0) {
        crate::capacity::thousands(v.round() as u64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn draw_series<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    panel: &Panel,
    legend: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    for s in &panel.series {
        let color = s.color;
        let points = s.points.iter().map(|&(x, y)| (x, y.max(panel.y_min)));
        if s.markers {
            chart
                .draw_series(points.map(|p| Cross::new(p, 4, color.stroke_width(2))))?
                .label(&s.label)
                .legend(move |(x, y)| Cross::new((x + 10, y), 4, color.stroke_width(2)));
        } else {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(&s.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
}
