//! Metric charts as SVG, drawn by `plotters` (SVG backend only: text is
//! written as SVG `<text>`, so no font files are needed on the server).
//! One chart shows one metric by step, for one run or several (comparison).

use plotters::prelude::*;

use crate::error::ApiResult;
use hub::error::HubError;

/// One line of a chart: a label and its `(step, value)` points.
pub struct Series {
    pub label: String,
    pub points: Vec<(i64, f64)>,
}

/// Colours of the series, readable on white (Okabe–Ito palette).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
];

/// A human title for a metric key.
pub fn metric_title(key: &str) -> String {
    match key {
        "train_loss" => "Train loss".into(),
        "val_loss" => "Validation loss".into(),
        "learning_rate" => "Learning rate".into(),
        "tokens_per_second" => "Tokens/s".into(),
        "iterations_per_second" => "Iterations/s".into(),
        "peak_memory_gb" => "Peak memory (GB)".into(),
        "trained_tokens" => "Trained tokens".into(),
        "val_time" => "Validation time (s)".into(),
        other => other.replace('_', " "),
    }
}

/// Draws `series` (one metric by step) as an SVG document.
pub fn line_chart(title: &str, series: &[Series], size: (u32, u32)) -> ApiResult<String> {
    let mut svg = String::new();
    draw(&mut svg, title, series, size).map_err(|e| HubError::Internal(format!("chart: {e}")))?;
    Ok(svg)
}

fn draw(
    out: &mut String,
    title: &str,
    series: &[Series],
    size: (u32, u32),
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        // no points yet: an empty frame saying so
        root.draw(&Text::new(
            format!("{title}: no points yet"),
            (20, size.1 as i32 / 2),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
        root.present()?;
        return Ok(());
    }
    if x0 == x1 {
        x0 -= 1;
        x1 += 1;
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.08
    } else {
        y0.abs().max(1e-9) * 0.1
    };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20).into_font().color(&BLACK))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .axis_style(RGBColor(90, 90, 90))
        .label_style(("sans-serif", 14).into_font().color(&RGBColor(40, 40, 40)))
        .y_label_formatter(&|v| format_tick(*v, y1 - y0))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(
            s.points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 13).into_font().color(&BLACK))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A tick label with enough digits to tell ticks `span / 10` apart.
fn format_tick(v: f64, span: f64) -> String {
    let step = span / 10.0;
    if step > 0.0 && v != 0.0 && v.abs() < 1e-3 {
        // scientific, with as many digits as the tick step needs
        let digits = (v.abs() / step).log10().ceil().clamp(1.0, 6.0) as usize;
        return format!("{v:.digits$e}");
    }
    if step > 0.0 && step < 0.01 && v.abs() < 1e5 && v.abs() >= 1e-3 {
        let decimals = (-step.log10()).ceil().clamp(0.0, 8.0) as usize + 1;
        return format!("{v:.decimals$}");
    }
    format_value(v)
}

/// Short tick labels: `0.25`, `1.2e-5`, `1500`.
fn format_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_circle_per_point_and_the_title() {
        let s = Series {
            label: "run 1".into(),
            points: vec![(2, 3.5), (4, 2.25), (6, 1.75)],
        };
        let svg = line_chart("Train loss", &[s], (640, 320)).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("Train loss"));
        assert!(svg.contains("<polyline"), "{svg}");
    }

    #[test]
    fn empty_and_single_point_charts_render() {
        let svg = line_chart("Validation loss", &[], (400, 200)).unwrap();
        assert!(svg.contains("no points yet"), "{svg}");
        let one = Series {
            label: "r".into(),
            points: vec![(5, 1.0)],
        };
        let svg = line_chart("x", &[one], (400, 200)).unwrap();
        assert_eq!(svg.matches("<circle").count(), 1);
    }

    #[test]
    fn compare_chart_has_a_legend() {
        let a = Series {
            label: "run 1".into(),
            points: vec![(1, 1.0), (2, 0.5)],
        };
        let b = Series {
            label: "run 2".into(),
            points: vec![(1, 1.2), (2, 0.7)],
        };
        let svg = line_chart("Train loss", &[a, b], (640, 320)).unwrap();
        assert!(svg.contains("run 1") && svg.contains("run 2"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(format_value(1.5e-5), "1.5e-5");
        assert_eq!(format_value(0.25), "0.25");
        // a nearly flat learning rate still gets distinct tick labels
        assert_ne!(format_tick(0.00100, 0.0001), format_tick(0.00101, 0.0001));
        assert_ne!(format_tick(1.0e-5, 2e-6), format_tick(1.02e-5, 2e-6));
    }
}
