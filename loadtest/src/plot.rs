//! `--plot FILE.svg`: latency percentiles and delivery rate over the run, one point per second.
//!
//! Owns the drawing only; the numbers are the report's timeline. SVG only, so no font or image stack is
//! compiled in (text is left to the SVG viewer).

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// Draws `report`'s timeline to `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let points = &report.timeline;
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(340);
    let seconds = points.len().max(1) as f64;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency_top = points.iter().map(|p| ms(p.max_us)).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("{}: latency per second (ms)", report.scenario),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds, 0f64..latency_top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("second of run")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (label, color, pick) in [
        (
            "p50",
            BLUE,
            (|p: &crate::report::Point| p.p50_us) as fn(&_) -> u64,
        ),
        ("p99", RED, |p| p.p99_us),
        ("max", BLACK, |p| p.max_us),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.second as f64, ms(pick(p)))),
                color,
            ))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;

    let rate_top = points
        .iter()
        .map(|p| p.deliveries as f64)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("deliveries per second", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds, 0f64..rate_top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("second of run")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            points
                .iter()
                .map(|p| (p.second as f64, p.deliveries as f64)),
            GREEN,
        ))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
