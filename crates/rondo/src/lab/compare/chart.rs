//! The comparison as SVG charts, drawn with `plotters`' SVG backend.
//!
//! Text goes into the SVG as `<text>` elements and the viewer's fonts render it, so nothing
//! here reads a font file or needs fontconfig (plotters is built without its `ttf` feature
//! and measures text with its built-in estimate). Two charts:
//!
//! - `latency.svg`: p50, p95 and p99 of every algorithm as grouped bars on a logarithmic
//!   axis, since one overloaded backend can put an algorithm's p99 orders of magnitude above
//!   the others' and a linear axis would flatten the rest;
//! - `share.svg`: each backend's share of the requests under every algorithm, as grouped
//!   bars, with each backend's weight in the legend.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged, ValueFormatter};
use plotters::prelude::*;

use super::report::AlgorithmResult;

/// Size of both charts, pixels.
const SIZE: (u32, u32) = (1100, 600);

/// File name of the latency chart.
pub const LATENCY_FILE: &str = "latency.svg";

/// File name of the share chart.
pub const SHARE_FILE: &str = "share.svg";

/// Bar colours, in series order: a colour-blind-safe palette (Okabe and Ito).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// Writes both charts into `dir` (created if missing) and returns their paths.
pub fn write_charts(results: &[AlgorithmResult], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut paths = Vec::new();
    for (file, svg) in [
        (LATENCY_FILE, latency_svg(results)?),
        (SHARE_FILE, share_svg(results)?),
    ] {
        let path = dir.join(file);
        fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// One group of bars per algorithm: `series` are (legend label, value of each algorithm).
struct Bars<'a> {
    caption: &'a str,
    y_desc: &'a str,
    algorithms: Vec<&'static str>,
    series: Vec<(String, Vec<f64>)>,
    log: bool,
}

/// The latency chart as SVG text.
pub fn latency_svg(results: &[AlgorithmResult]) -> anyhow::Result<String> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let series = [
        ("p50", results.iter().map(|r| ms(r.latency.p50)).collect()),
        ("p95", results.iter().map(|r| ms(r.latency.p95)).collect()),
        ("p99", results.iter().map(|r| ms(r.latency.p99)).collect()),
    ]
    .into_iter()
    .map(|(l, v)| (l.to_owned(), v))
    .collect();
    draw(&Bars {
        caption: "Latency by algorithm (same traffic for each)",
        y_desc: "latency, ms (log scale)",
        algorithms: results.iter().map(|r| r.algorithm.name()).collect(),
        series,
        log: true,
    })
}

/// The share chart as SVG text.
pub fn share_svg(results: &[AlgorithmResult]) -> anyhow::Result<String> {
    let backends = results.first().map_or(&[][..], |r| &r.backends[..]);
    let series = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("{} (weight {})", b.id, b.weight),
                results
                    .iter()
                    .map(|r| r.backends.get(i).map_or(0.0, |x| x.share * 100.0))
                    .collect(),
            )
        })
        .collect();
    draw(&Bars {
        caption: "Share of requests per backend, by algorithm",
        y_desc: "share of requests, %",
        algorithms: results.iter().map(|r| r.algorithm.name()).collect(),
        series,
        log: false,
    })
}

fn draw(bars: &Bars<'_>) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let groups = bars.algorithms.len().max(1);
        let x = Slots(groups);
        let values = bars.series.iter().flat_map(|(_, v)| v.iter().copied());
        let top = values.clone().fold(0.0f64, f64::max);
        let names = &bars.algorithms;
        let label = move |v: &f64| {
            let i = v.floor();
            if i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].to_owned()
            } else {
                String::new()
            }
        };
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(bars.caption, ("sans-serif", 24))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(80);
        let n = bars.series.len().max(1) as f64;
        // Each group fills 80 % of its slot; each bar 90 % of its share of that.
        let width = 0.8 / n;
        if bars.log {
            let low = values
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min)
                .min(top);
            let (lo, hi) = decades(low, top);
            let chart = builder.build_cartesian_2d(x, (lo..hi).log_scale())?;
            draw_series(chart, bars, lo, width, &label)?;
        } else {
            // Head room above the tallest bar for the legend.
            let hi = (top * 1.3).max(1.0);
            let chart = builder.build_cartesian_2d(x, 0.0..hi)?;
            draw_series(chart, bars, 0.0, width, &label)?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// Draws the axes, one bar per series in each slot (from `floor` up, `width` wide), and the
/// legend, on a linear or a logarithmic y axis alike.
fn draw_series<'a, DB, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<Slots, Y>>,
    bars: &Bars<'_>,
    floor: f64,
    width: f64,
    label: &dyn Fn(&f64) -> String,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(label)
        .x_label_style(("sans-serif", 16))
        .y_label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .y_label_formatter(&tick)
        .y_desc(bars.y_desc)
        .draw()
        .map_err(|e| anyhow::anyhow!("cannot draw the axes: {e}"))?;
    for (k, (name, vals)) in bars.series.iter().enumerate() {
        let c = colour(k);
        chart
            .draw_series(vals.iter().enumerate().map(|(i, &v)| {
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Rectangle::new([(x0, floor), (x0 + width * 0.9, v.max(floor))], c.filled())
            }))
            .map_err(|e| anyhow::anyhow!("cannot draw the bars: {e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], c.filled()));
    }
    legend(&mut chart)
}

fn legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("cannot draw the legend: {e}"))
}

/// A y-axis tick: whole numbers without decimals, small ones as they are.
fn tick(v: &f64) -> String {
    if v.abs() >= 1.0 || *v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_owned()
    }
}

/// The x axis: one slot of width 1 per algorithm, `0.0..n`, with a tick at the centre of
/// each slot, where the algorithm's name goes. (plotters' own `f64` axis picks "nice" tick
/// values and cannot be told to format them with the default formatter.)
#[derive(Debug, Clone, Copy)]
struct Slots(usize);

impl Ranged for Slots {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.0 as f64 * span).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        (0..self.0).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

/// The whole decades around `[low, high]`, for a log axis: (10^floor(log low), 10^ceil(log
/// high)), at least one decade apart; (1, 10) when there is nothing positive to show.
fn decades(low: f64, high: f64) -> (f64, f64) {
    if !(low.is_finite() && high.is_finite() && low > 0.0 && high > 0.0) {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(low.log10().floor());
    let hi = 10f64.powf(high.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::compare::report::Tally;
    use balance::Algorithm;
    use std::time::Duration;

    fn results() -> Vec<AlgorithmResult> {
        Algorithm::ALL
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let mut t = Tally::new(a, [("b0".into(), 1.0), ("b1".into(), 1.5)]);
                for k in 0..100u64 {
                    t.sent((k % 2) as usize, 1);
                    t.completed(
                        (k % 2) as usize,
                        Duration::from_millis(10 + k * (i as u64 + 1)),
                    );
                }
                t.finish(Duration::from_secs(1))
            })
            .collect()
    }

    #[test]
    fn charts_are_svg_naming_every_algorithm_and_backend() {
        let rs = results();
        for svg in [latency_svg(&rs).unwrap(), share_svg(&rs).unwrap()] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
            assert!(svg.trim_end().ends_with("</svg>"));
            for a in Algorithm::NAMES {
                // plotters puts each label on a line of its own inside <text>.
                assert!(svg.contains(&format!("\n{a}\n")), "{a} missing");
            }
        }
        assert!(share_svg(&rs).unwrap().contains("b1 (weight 1.5)"));
        assert!(latency_svg(&rs).unwrap().contains("p99"));
    }

    #[test]
    fn empty_and_zero_results_still_draw() {
        assert!(latency_svg(&[]).unwrap().starts_with("<svg"));
        assert!(share_svg(&[]).unwrap().starts_with("<svg"));
        let zero = Tally::new(Algorithm::P2c, [("b0".into(), 1.0)]).finish(Duration::ZERO);
        assert!(latency_svg(&[zero]).unwrap().contains("p2c"));
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        assert_eq!(decades(3.0, 420.0), (1.0, 1000.0));
        assert_eq!(decades(10.0, 10.0), (10.0, 100.0));
        assert_eq!(decades(0.0, 0.0), (1.0, 10.0));
    }
}
