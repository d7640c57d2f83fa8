//! The bench's SVG plot: throughput and median latency against frame size, one line
//! per path. Text is left to the SVG viewer's fonts, so no font is needed here.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Writes the plot of `report` to `path`.
pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    draw(report, path).map_err(|e| anyhow::anyhow!("cannot write the plot {}: {e}", path.display()))
}

fn draw(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let xmin = report.sizes.iter().copied().min().unwrap_or(64).max(1) as f64;
    let xmax = (report.sizes.iter().copied().max().unwrap_or(1500) as f64).max(xmin * 2.0);
    let x_range = (xmin * 0.8)..(xmax * 1.25);
    type Pick = fn(&super::report::Row) -> Option<f64>;
    let panels: [(&DrawingArea<SVGBackend, _>, &str, &str, Pick); 2] = [
        (&left, "One-way throughput", "Gbit/s", |r| {
            Some(r.throughput.gbps)
        }),
        (&right, "Round-trip latency (median)", "microseconds", |r| {
            r.latency.p50_us
        }),
    ];
    for (area, title, unit, pick) in panels {
        let ymax = report
            .rows
            .iter()
            .filter_map(pick)
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{title} ({} overlay)", report.encap),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.clone().log_scale(), 0.0..ymax)?;
        chart
            .configure_mesh()
            .x_desc("frame size (bytes, log scale)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc(unit)
            .draw()?;
        for (i, name) in report.paths.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = report
                .rows
                .iter()
                .filter(|r| &r.path == name)
                .filter_map(|r| Some((r.size as f64, pick(r)?)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
