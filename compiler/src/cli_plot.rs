//! The tuning curve: best time so far (relative to the default schedule) against trials, one
//! line per task, drawn as a PNG with plotters.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;
use tessera::tune::TuneReport;

/// Lines drawn at most (the tasks with the most weighted default time).
const MAX_LINES: usize = 8;

/// Fonts tried for labels; without one the curve is drawn without text.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a system font for plotters' text once; false when none was found.
fn font() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).is_ok_and(|bytes| {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// One task's curve: name, weighted default time (for picking), (trial, relative time).
type Line = (String, f64, Vec<(f64, f64)>);

/// Writes the tuning curve of `report` to `path`.
pub fn tuning_curve(report: &TuneReport, path: &Path) -> Result<()> {
    let mut lines: Vec<Line> = Vec::new();
    for (t, st) in report.tasks.iter().zip(&report.states) {
        let Some(default) = st.default_ns else {
            continue;
        };
        let points: Vec<(f64, f64)> = st
            .curve
            .iter()
            .enumerate()
            .filter(|(_, ns)| **ns != u64::MAX)
            .map(|(i, &ns)| ((i + 1) as f64, ns as f64 / default as f64))
            .collect();
        if !points.is_empty() {
            lines.push((t.name.clone(), t.weight as f64 * default as f64, points));
        }
    }
    lines.sort_by(|a, b| b.1.total_cmp(&a.1));
    lines.truncate(MAX_LINES);
    let max_x = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let max_y = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.1))
        .fold(1.05, f64::max);
    let text = font();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| anyhow!("{e}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption("best time / default time vs trials", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(56);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..max_x + 1.0, 0.0..max_y)
        .map_err(|x| e(&x))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("trials of the task").y_desc("relative time");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|x| e(&x))?;
    for (i, (name, _, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?;
        if text {
            series
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
    }
    if text && !lines.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
