//! The SVG chart `cargo bench` draws: highest sustainable deliveries/s and p99 latency (at half
//! that rate) against the number of clients, one line per I/O model.
//!
//! Drawn with `plotters`' SVG backend, which needs no fonts or system libraries.

use plotters::prelude::*;

/// One I/O model's points: (clients, deliveries per second, p99 in milliseconds).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// Draws both panels side by side into an SVG file.
pub fn draw(path: &std::path::Path, title: &str, series: &[Series]) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(500);
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(10.0, f64::max) * 1.5;
    let x_min = all().map(|p| p.0).fold(x_max, f64::min).max(1.0) / 1.5;
    let d_max = all().map(|p| p.1).fold(10.0, f64::max) * 2.0;
    let d_min = all().map(|p| p.1).fold(d_max, f64::min).max(1.0) / 2.0;
    let l_max = all().map(|p| p.2).fold(1.0, f64::max) * 2.0;
    let l_min = all().map(|p| p.2).fold(l_max, f64::min).max(0.01) / 2.0;
    panel(
        &left,
        series,
        "highest sustainable deliveries/s",
        "deliveries/s (log scale)",
        (x_min, x_max, d_min, d_max),
        |p| p.1,
    )?;
    panel(
        &right,
        series,
        "p99 latency at half that rate",
        "p99 in ms (log scale)",
        (x_min, x_max, l_min, l_max),
        |p| p.2,
    )?;
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Series],
    caption: &str,
    y_desc: &str,
    (x_min, x_max, y_min, y_max): (f64, f64, f64, f64),
    y: impl Fn(&(f64, f64, f64)) -> f64,
) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("clients in the room (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v >= 1e6 {
                format!("{:.1}M", v / 1e6)
            } else if *v >= 1e4 {
                format!("{:.0}k", v / 1e3)
            } else if *v >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, y(p))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg() {
        let path = std::env::temp_dir().join(format!("pollchat-chart-{}.svg", std::process::id()));
        let series = [
            Series {
                name: "poll".into(),
                points: vec![(30.0, 5e5, 0.4), (100.0, 1e6, 0.8)],
            },
            Series {
                name: "threads".into(),
                points: vec![(30.0, 2e5, 2.0), (100.0, 3e5, 9.0)],
            },
        ];
        draw(&path, "test", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        assert!(svg.contains("threads"));
    }
}
