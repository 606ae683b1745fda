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

/// Chart size in pixels, and the height of the legend row under the title.
const SIZE: (u32, u32) = (1000, 440);
const LEGEND_HEIGHT: u32 = 28;

/// Draws both panels side by side into an SVG file, with one legend for both above them (a
/// legend inside a panel would hide whatever points fall under it).
pub fn draw(path: &std::path::Path, title: &str, series: &[Series]) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let (legend, body) = root.split_vertically(LEGEND_HEIGHT);
    draw_legend(&legend, series)?;
    let (left, right) = body.split_horizontally(SIZE.0 / 2);
    let all = || series.iter().flat_map(|s| s.points.iter());
    let mut xs: Vec<f64> = all().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let x_max = xs.last().copied().unwrap_or(10.0).max(10.0) * 1.5;
    let x_min = xs.first().copied().unwrap_or(x_max).max(1.0) / 1.5;
    let d_max = all().map(|p| p.1).fold(10.0, f64::max) * 2.0;
    let d_min = all().map(|p| p.1).fold(d_max, f64::min).max(1.0) / 2.0;
    let l_max = all().map(|p| p.2).fold(1.0, f64::max) * 2.0;
    let l_min = all().map(|p| p.2).fold(l_max, f64::min).max(0.01) / 2.0;
    panel(
        &left,
        series,
        "highest sustainable deliveries/s",
        "deliveries/s (log scale)",
        (&xs, x_min, x_max, d_min, d_max),
        |p| p.1,
        count_label,
    )?;
    panel(
        &right,
        series,
        "p99 latency at half that rate",
        "p99 in ms (log scale)",
        (&xs, x_min, x_max, l_min, l_max),
        |p| p.2,
        plain_label,
    )?;
    root.present().map_err(|e| e.to_string())
}

fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Series],
) -> Result<(), String> {
    const ENTRY: i32 = 150;
    let y = LEGEND_HEIGHT as i32 / 2;
    let start = (SIZE.0 as i32 - ENTRY * series.len() as i32).max(0) / 2;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let x = start + ENTRY * i as i32;
        area.draw(&PathElement::new(
            [(x, y), (x + 24, y)],
            colour.stroke_width(2),
        ))
        .and_then(|()| area.draw(&Circle::new((x + 12, y), 3, colour.filled())))
        .and_then(|()| {
            area.draw(&Text::new(
                s.name.clone(),
                (x + 30, y - 7),
                ("sans-serif", 14),
            ))
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Series],
    caption: &str,
    y_desc: &str,
    (xs, x_min, x_max, y_min, y_max): (&[f64], f64, f64, f64, f64),
    y: impl Fn(&(f64, f64, f64)) -> f64,
    y_label: fn(f64) -> String,
) -> Result<(), String> {
    let (y_bold, y_light) = log_ticks(y_min, y_max);
    // The x axis is labelled at exactly the client counts measured; the y axis at 1, 10, 100...
    // (and 2 and 5 between them when the range is short), with faint lines at 2 and 5 otherwise.
    let x_axis = (x_min..x_max).log_scale().with_key_points(xs.to_vec());
    let y_axis = (y_min..y_max)
        .log_scale()
        .with_key_points(y_bold)
        .with_light_points(y_light);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("clients in the room (log scale)")
        .y_desc(y_desc)
        .bold_line_style(BLACK.mix(0.15))
        .light_line_style(BLACK.mix(0.05))
        .x_label_formatter(&|v| plain_label(*v))
        .y_label_formatter(&|v| y_label(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, y(p))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `m × 10^k` computed so that it prints as written (0.05, not 0.05000000000000001).
fn times_power_of_ten(m: f64, k: i32) -> f64 {
    if k >= 0 {
        m * 10f64.powi(k)
    } else {
        m / 10f64.powi(-k)
    }
}

/// Labelled and faint tick values of a log axis over `min..=max`: the powers of ten, with 2 and
/// 5 times them either labelled too (when fewer than three powers of ten fall in the range) or
/// as faint lines.
fn log_ticks(min: f64, max: f64) -> (Vec<f64>, Vec<f64>) {
    if !(min > 0.0 && max > min && max.is_finite()) {
        return (Vec::new(), Vec::new());
    }
    let (first, last) = (min.log10().floor() as i32, max.log10().ceil() as i32);
    let decades = (first..=last)
        .filter(|&k| (min..=max).contains(&times_power_of_ten(1.0, k)))
        .count();
    let short = decades < 3;
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    for k in first..=last {
        for m in [1.0, 2.0, 5.0] {
            let v = times_power_of_ten(m, k);
            if v < min || v > max {
                continue;
            }
            if m == 1.0 || short {
                bold.push(v);
            } else {
                light.push(v);
            }
        }
    }
    (bold, light)
}

/// A tick value as plain decimals, as short as it prints exactly: 0.05, 2, 300.
fn plain_label(v: f64) -> String {
    // Ticks are 1, 2 or 5 times a power of ten (or a client count): three significant digits
    // cover them, and `{}` then drops the float noise and trailing zeros.
    let digits = 2 - v.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits.clamp(-15, 15));
    format!("{}", (v * scale).round() / scale)
}

/// A count: 500, 20k, 1M, 2.5M.
fn count_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", plain_label(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", plain_label(v / 1e3))
    } else {
        plain_label(v)
    }
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
        // Every client count measured is a labelled tick.
        assert!(svg.contains("\n30\n") && svg.contains("\n100\n"), "{svg}");
    }

    #[test]
    fn log_ticks_are_decades_with_2_and_5_faint_or_labelled() {
        let (bold, light) = log_ticks(0.4, 40.0);
        assert_eq!(bold, [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        assert!(light.is_empty());
        let (bold, light) = log_ticks(0.05, 400.0);
        assert_eq!(bold, [0.1, 1.0, 10.0, 100.0]);
        assert_eq!(light, [0.05, 0.2, 0.5, 2.0, 5.0, 20.0, 50.0, 200.0]);
        assert_eq!(log_ticks(0.0, 1.0), (vec![], vec![]));
    }

    #[test]
    fn tick_labels_are_distinct_and_short() {
        let (bold, _) = log_ticks(0.01, 1e8);
        let labels: Vec<String> = bold.iter().map(|&v| plain_label(v)).collect();
        assert_eq!(
            labels,
            [
                "0.01",
                "0.1",
                "1",
                "10",
                "100",
                "1000",
                "10000",
                "100000",
                "1000000",
                "10000000",
                "100000000"
            ]
        );
        let (bold, _) = log_ticks(50_000.0, 1.2e7);
        let counts: Vec<String> = bold.iter().map(|&v| count_label(v)).collect();
        assert_eq!(counts, ["100k", "1M", "10M"]);
        assert_eq!(count_label(2.5e6), "2.5M");
        assert_eq!(plain_label(300.0), "300");
        assert_eq!(plain_label(0.05), "0.05");
    }
}
