//! The report's SVG charts, drawn with plotters: connections per instance
//! and the total over time (the upgrade picture operators know from
//! Grafana), and the histogram of disconnects per client.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::summary::Summary;

/// Series colours: the total first, then one per instance.
const TOTAL: RGBColor = RGBColor(40, 40, 40);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const FONT: &str = "sans-serif";

/// The colour of instance number `i` (first seen first).
pub fn instance_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (960, 420);

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Connected clients and connections per instance over time, as SVG.
pub fn connections_svg(s: &Summary) -> String {
    render(|root| draw_connections(root, s))
}

/// Clients by number of disconnects, as SVG.
pub fn histogram_svg(s: &Summary) -> String {
    render(|root| draw_histogram(root, s))
}

fn render(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> DrawResult,
) -> String {
    let mut svg = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        // Inline SVG in HTML needs no namespace; leaving it out keeps the
        // file free of any URL.
        Ok(()) => svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", ""),
        Err(e) => format!(
            "<p class=\"error\">chart failed: {}</p>",
            super::html::escape(&e.to_string())
        ),
    }
}

fn draw_connections(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    s: &Summary,
) -> DrawResult {
    root.fill(&WHITE)?;
    let t_max = s
        .timeline
        .last()
        .map_or(1.0, |x| x.t)
        .max(s.duration_secs)
        .max(0.1);
    let y_top = s
        .timeline
        .iter()
        .flat_map(|x| std::iter::once(x.connected).chain(x.per_instance.values().copied()))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.08;
    let mut chart = ChartBuilder::on(root)
        .caption("Connections over time", (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("connections")
        .light_line_style(RGBColor(235, 235, 235))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let total: Vec<(f64, f64)> = s
        .timeline
        .iter()
        .map(|x| (x.t, x.connected as f64))
        .collect();
    chart
        .draw_series(LineSeries::new(total, TOTAL.stroke_width(3)))?
        .label("clients connected (total)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TOTAL.stroke_width(3)));
    for (i, name) in s.instances.iter().enumerate() {
        let color = instance_color(i);
        // Contiguous runs of samples where the instance was scraped; gaps
        // (instance gone, scrape failed) stay gaps.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for x in &s.timeline {
            match x.per_instance.get(name) {
                Some(v) => runs
                    .last_mut()
                    .map(|r| r.push((x.t, *v as f64)))
                    .unwrap_or(()),
                None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
                None => {}
            }
        }
        for (k, run) in runs.into_iter().filter(|r| !r.is_empty()).enumerate() {
            let series = chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
            if k == 0 {
                series.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

fn draw_histogram(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    s: &Summary,
) -> DrawResult {
    root.fill(&WHITE)?;
    let last = s.disconnect_histogram.len().saturating_sub(1) as u32;
    let y_top = s
        .disconnect_histogram
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.12;
    let mut chart = ChartBuilder::on(root)
        .caption("Clients by number of disconnects", (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..last).into_segmented(), 0f64..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("disconnects per client")
        .y_desc("clients")
        .light_line_style(RGBColor(235, 235, 235))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) | SegmentValue::Exact(k) => k.to_string(),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    let bar = RGBColor(31, 119, 180);
    chart.draw_series(s.disconnect_histogram.iter().enumerate().map(|(k, &n)| {
        let k = k as u32;
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(k), 0.0),
                (SegmentValue::Exact(k + 1), n as f64),
            ],
            bar.filled(),
        );
        r.set_margin(0, 0, 8, 8);
        r
    }))?;
    chart.draw_series(
        s.disconnect_histogram
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(k, &n)| {
                Text::new(
                    n.to_string(),
                    (SegmentValue::CenterOf(k as u32), n as f64 + y_top * 0.02),
                    (FONT, 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }),
    )?;
    Ok(())
}
