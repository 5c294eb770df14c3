//! `mlx-hub perf-plot` (hidden; `scripts/perf-report` runs it): reads the report's
//! raw numbers (`target/perf/report.json`) and draws one PNG bar chart per section,
//! stock or baseline beside ours.
//!
//! Shapes are drawn by `plotters`' bitmap backend; text by `ab_glyph` from a TrueType
//! file, through [`TextBackend`]. Not via plotters' own `ab_glyph` feature: features
//! unify across the binary, and that one would make the admin UI's SVG charts (same
//! `plotters`, no font registered in `serve`) fail to lay out their labels.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use anyhow::{Context, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};
use serde::Deserialize;

/// DejaVu Sans, from Debian's `fonts-dejavu-core` (scripts/setup-test-deps.sh).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(clap::Args)]
pub struct Args {
    /// The raw numbers written by scripts/perf-report.
    #[arg(long, default_value = "target/perf/report.json")]
    input: PathBuf,
    /// Folder for the PNGs (default: the input's folder).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// A TrueType/OpenType font file for the text.
    #[arg(long, env = "MLX_HUB_PLOT_FONT", default_value = DEFAULT_FONT)]
    font: PathBuf,
}

// ---- report.json (sections are optional: a partial run still plots what it has)

#[derive(Deserialize, Debug, Default)]
pub struct Report {
    pub matmul: Option<Matmul>,
    pub generation: Option<Generation>,
    pub serving: Option<Serving>,
    pub lora: Option<Lora>,
    pub registry: Option<Registry>,
}

#[derive(Deserialize, Debug)]
pub struct Matmul {
    pub bits: i32,
    pub group_size: i32,
    pub linked_blas: String,
    pub stock_blas: Option<String>,
    pub quantized_kernel: String,
    pub rows: Vec<MatmulRow>,
}

#[derive(Deserialize, Debug)]
pub struct MatmulRow {
    pub shape: String,
    pub f32_stock_gflops: Option<f64>,
    pub f32_ours_gflops: f64,
    pub quantized_mlx_gflops: f64,
    pub quantized_ours_gflops: f64,
}

#[derive(Deserialize, Debug)]
pub struct Generation {
    pub read_bandwidth_gb_per_s: f64,
    pub rows: Vec<GenerationRow>,
}

#[derive(Deserialize, Debug)]
pub struct GenerationRow {
    pub weights: String,
    pub engine: String,
    pub prompt_tps: f64,
    pub generation_tps: f64,
    pub bandwidth_fraction: f64,
}

#[derive(Deserialize, Debug)]
pub struct Serving {
    pub tokens_per_stream: u32,
    pub rows: Vec<ServingRow>,
}

#[derive(Deserialize, Debug)]
pub struct ServingRow {
    pub engine: String,
    pub single_tps: f64,
    pub single_ttft_ms: f64,
    pub concurrent_tps: f64,
    pub concurrent_ttft_p50_ms: f64,
}

#[derive(Deserialize, Debug)]
pub struct Lora {
    pub rows: Vec<LoraRow>,
}

#[derive(Deserialize, Debug)]
pub struct LoraRow {
    pub weights: String,
    pub engine: String,
    pub tokens_per_second: f64,
}

#[derive(Deserialize, Debug)]
pub struct Registry {
    pub target_rps: u32,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

// ---- charts: groups along x, one bar per series in each group

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub value: f64,
    /// Printed above the bar.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// One per group; `None` leaves a gap.
    pub bars: Vec<Option<Bar>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub file: &'static str,
    pub title: String,
    pub y_desc: String,
    pub groups: Vec<String>,
    pub series: Vec<Series>,
}

fn bar(value: f64) -> Option<Bar> {
    value.is_finite().then(|| Bar {
        value,
        label: short(value),
    })
}

/// 3 significant digits, no exponent for the ranges we plot.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Axis ticks: whole numbers bare, small ones with the digits they need.
fn tick(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else {
        let s = short(v);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// Rows keyed by (group, series) into a chart, groups and series in first-seen order.
fn pivot<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, Option<Bar>)>) -> Chart {
    let mut groups: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut cells = BTreeMap::new();
    for (g, s, b) in rows {
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
        if !names.iter().any(|x| x == s) {
            names.push(s.to_string());
        }
        cells.insert((g.to_string(), s.to_string()), b);
    }
    let series = names
        .into_iter()
        .map(|name| Series {
            bars: groups
                .iter()
                .map(|g| cells.get(&(g.clone(), name.clone())).cloned().flatten())
                .collect(),
            name,
        })
        .collect();
    Chart {
        file: "",
        title: String::new(),
        y_desc: String::new(),
        groups,
        series,
    }
}

/// The charts of a report, in a fixed order; sections absent from it have none.
pub fn charts(r: &Report) -> Vec<Chart> {
    let mut out = Vec::new();
    if let Some(m) = &r.matmul {
        let stock = format!(
            "stock: MLX wheel, {} BLAS",
            m.stock_blas.as_deref().unwrap_or("its own")
        );
        let ours = format!("ours: MLX + {}", m.linked_blas);
        let rows = m.rows.iter().flat_map(|x| {
            [
                (
                    x.shape.as_str(),
                    stock.as_str(),
                    x.f32_stock_gflops.and_then(bar),
                ),
                (x.shape.as_str(), ours.as_str(), bar(x.f32_ours_gflops)),
            ]
        });
        out.push(Chart {
            file: "matmul-f32.png",
            title: "float32 matmul x·Wᵀ, shape M×K×N (higher is better)".into(),
            y_desc: "GFLOP/s".into(),
            ..pivot(rows)
        });
        let theirs = "stock: MLX quantized_matmul".to_string();
        let ours = format!("ours: HubQuantizedMatmul ({})", m.quantized_kernel);
        let rows = m.rows.iter().flat_map(|x| {
            [
                (
                    x.shape.as_str(),
                    theirs.as_str(),
                    bar(x.quantized_mlx_gflops),
                ),
                (
                    x.shape.as_str(),
                    ours.as_str(),
                    bar(x.quantized_ours_gflops),
                ),
            ]
        });
        out.push(Chart {
            file: "matmul-quantized.png",
            title: format!(
                "{}-bit (groups of {}) quantized matmul, shape M×K×N (higher is better)",
                m.bits, m.group_size
            ),
            y_desc: "GFLOP/s (dense equivalent)".into(),
            ..pivot(rows)
        });
    }
    if let Some(g) = &r.generation {
        let rows = g
            .rows
            .iter()
            .map(|x| (x.weights.as_str(), x.engine.as_str(), bar(x.prompt_tps)));
        out.push(Chart {
            file: "prompt.png",
            title: "SmolLM2-135M prompt processing (higher is better)".into(),
            y_desc: "prompt tokens/s".into(),
            ..pivot(rows)
        });
        let rows = g.rows.iter().map(|x| {
            let b = bar(x.generation_tps).map(|b| Bar {
                label: format!("{} ({:.0}%)", b.label, 100.0 * x.bandwidth_fraction),
                ..b
            });
            (x.weights.as_str(), x.engine.as_str(), b)
        });
        out.push(Chart {
            file: "generation.png",
            title: format!(
                "SmolLM2-135M generation, (share of the bandwidth bound at {:.1} GB/s)",
                g.read_bandwidth_gb_per_s
            ),
            y_desc: "generated tokens/s".into(),
            ..pivot(rows)
        });
    }
    if let Some(s) = &r.serving {
        let rows = s.rows.iter().flat_map(|x| {
            [
                ("1 stream", x.engine.as_str(), bar(x.single_tps)),
                (
                    "8 concurrent streams",
                    x.engine.as_str(),
                    bar(x.concurrent_tps),
                ),
            ]
        });
        out.push(Chart {
            file: "serving-throughput.png",
            title: format!(
                "Serving throughput, {} tokens per stream (higher is better)",
                s.tokens_per_stream
            ),
            y_desc: "tokens/s (all streams)".into(),
            ..pivot(rows)
        });
        let rows = s.rows.iter().flat_map(|x| {
            [
                ("1 stream", x.engine.as_str(), bar(x.single_ttft_ms)),
                (
                    "8 concurrent streams (p50)",
                    x.engine.as_str(),
                    bar(x.concurrent_ttft_p50_ms),
                ),
            ]
        });
        out.push(Chart {
            file: "serving-ttft.png",
            title: "Serving time to first token (lower is better)".into(),
            y_desc: "TTFT (ms)".into(),
            ..pivot(rows)
        });
    }
    if let Some(l) = &r.lora {
        let rows = l.rows.iter().map(|x| {
            (
                x.weights.as_str(),
                x.engine.as_str(),
                bar(x.tokens_per_second),
            )
        });
        out.push(Chart {
            file: "lora.png",
            title: "LoRA training throughput (higher is better)".into(),
            y_desc: "trained tokens/s".into(),
            ..pivot(rows)
        });
    }
    if let Some(g) = &r.registry {
        let name = format!("mlx-hub serve, {} reads/s", g.target_rps);
        let rows = [("p50", g.p50_ms), ("p90", g.p90_ms), ("p99", g.p99_ms)]
            .map(|(p, v)| (p, name.as_str(), bar(v)));
        out.push(Chart {
            file: "registry.png",
            title: "Registry API read latency (lower is better)".into(),
            y_desc: "latency (ms)".into(),
            ..pivot(rows)
        });
    }
    out
}

// ---- drawing

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;

/// Ours in blue (then green), baselines in orange (then purple), whatever the order.
const OURS: [RGBColor; 2] = [RGBColor(41, 98, 186), RGBColor(39, 174, 96)];
const BASELINES: [RGBColor; 2] = [RGBColor(230, 126, 34), RGBColor(142, 68, 173)];

fn is_ours(series: &str) -> bool {
    series.starts_with("ours") || series.starts_with("mlx-hub")
}

/// Colours of the chart's series, in order.
fn colors(chart: &Chart) -> Vec<RGBColor> {
    let (mut ours, mut base) = (0, 0);
    chart
        .series
        .iter()
        .map(|s| {
            if is_ours(&s.name) {
                ours += 1;
                OURS[(ours - 1) % OURS.len()]
            } else {
                base += 1;
                BASELINES[(base - 1) % BASELINES.len()]
            }
        })
        .collect()
}

/// A drawing backend that draws text with `ab_glyph` from the given font and
/// leaves everything else to `inner`.
pub struct TextBackend<'f, B> {
    inner: B,
    font: &'f FontVec,
}

struct Laid {
    width: f32,
    height: f32,
    glyphs: Vec<ab_glyph::Glyph>,
}

impl<B> TextBackend<'_, B> {
    fn lay_out(&self, text: &str, size: f64) -> Laid {
        let scale = PxScale::from(size as f32);
        let f = self.font.as_scaled(scale);
        let mut x = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                x += f.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, ab_glyph::point(x, f.ascent())));
            x += f.h_advance(id);
            prev = Some(id);
        }
        Laid {
            width: x,
            height: f.ascent() - f.descent(),
            glyphs,
        }
    }
}

impl<B: DrawingBackend> DrawingBackend for TextBackend<'_, B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<B::ErrorType>> {
        let l = self.lay_out(text, style.size());
        Ok((l.width.ceil() as u32, l.height.ceil() as u32))
    }

    /// As plotters' default (anchor, then rotation about `pos`), with our glyphs.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let l = self.lay_out(text, style.size());
        let (w, h) = (l.width.ceil() as i32, l.height.ceil() as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let trans = style.transform();
        let (width, height) = self.get_size();
        let mut coverage = Vec::new();
        for g in l.glyphs {
            if let Some(o) = self.font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|x, y, c| {
                    coverage.push((b.min.x as i32 + x as i32, b.min.y as i32 + y as i32, c))
                });
            }
        }
        for (x, y, c) in coverage {
            let (x, y) = trans.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if c > 0.0 && x >= 0 && y >= 0 && x < width as i32 && y < height as i32 {
                self.inner.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha: color.alpha * f64::from(c.min(1.0)),
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Draws one chart into an RGB buffer of `WIDTH × HEIGHT`.
pub fn render(chart: &Chart, font: &FontVec) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let backend = TextBackend {
            inner: BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)),
            font,
        };
        let root = backend.into_drawing_area();
        root.fill(&WHITE)?;
        let top = chart
            .series
            .iter()
            .flat_map(|s| s.bars.iter().flatten().map(|b| b.value))
            .fold(0.0f64, f64::max);
        // headroom for the value labels and the legend
        let y_max = if top > 0.0 { top * 1.3 } else { 1.0 };
        let n = chart.groups.len().max(1) as f64;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 22).into_font())
            .margin(14)
            .x_label_area_size(34)
            .y_label_area_size(78)
            .build_cartesian_2d(0.0..n, 0.0..y_max)?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_label_formatter(&|_| String::new())
            .y_desc(&chart.y_desc)
            .y_labels(8)
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE)
            .draw()?;
        let k = chart.series.len().max(1) as f64;
        let slot = 0.8 / k;
        let palette = colors(chart);
        for (si, s) in chart.series.iter().enumerate() {
            let color = palette[si];
            let x0 = |gi: usize| gi as f64 + 0.1 + slot * si as f64;
            let bars = s.bars.iter().enumerate().filter_map(|(gi, b)| {
                b.as_ref().map(|b| {
                    Rectangle::new(
                        [(x0(gi) + slot * 0.06, 0.0), (x0(gi) + slot * 0.94, b.value)],
                        color.filled(),
                    )
                })
            });
            c.draw_series(bars)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            let labels = s.bars.iter().enumerate().filter_map(|(gi, b)| {
                b.as_ref().map(|b| {
                    Text::new(
                        b.label.clone(),
                        (x0(gi) + slot / 2.0, b.value),
                        ("sans-serif", 14)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                })
            });
            c.draw_series(labels)?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 15))
            .draw()?;
        // group names under the axis, centred on each group
        for (gi, g) in chart.groups.iter().enumerate() {
            let (x, y) = c.backend_coord(&(gi as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                g.clone(),
                (x, y + 8),
                ("sans-serif", 16)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
        root.present()?;
    }
    Ok(buf)
}

/// Writes an RGB buffer as a PNG, atomically (temp file, fsync, rename).
fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    {
        let mut enc = png::Encoder::new(BufWriter::new(tmp.as_file()), width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(rgb)?;
        w.finish()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn load_font(path: &Path) -> anyhow::Result<FontVec> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "--font: cannot read {} (install Debian's fonts-dejavu-core, or set \
             MLX_HUB_PLOT_FONT to a .ttf file)",
            path.display()
        )
    })?;
    FontVec::try_from_vec(bytes)
        .map_err(|_| anyhow::anyhow!("--font: {} is not a TrueType/OpenType font", path.display()))
}

/// Parses the report and writes its charts into `out_dir`; returns the files written.
pub fn plot(report_json: &str, out_dir: &Path, font: &FontVec) -> anyhow::Result<Vec<PathBuf>> {
    let report: Report = serde_json::from_str(report_json).context("report.json")?;
    let charts = charts(&report);
    if charts.is_empty() {
        bail!("report.json has none of the sections matmul, generation, serving, lora, registry");
    }
    std::fs::create_dir_all(out_dir)?;
    let mut written = Vec::with_capacity(charts.len());
    for chart in &charts {
        let rgb = render(chart, font).with_context(|| format!("drawing {}", chart.file))?;
        let path = out_dir.join(chart.file);
        write_png(&path, &rgb, WIDTH, HEIGHT)?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("--input: reading {}", args.input.display()))?;
    let font = load_font(&args.font)?;
    let out_dir = args.out_dir.clone().unwrap_or_else(|| {
        args.input
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    for p in plot(&text, &out_dir, &font)? {
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/perf-report.json");

    fn font() -> Option<FontVec> {
        let path = std::env::var("MLX_HUB_PLOT_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
        match load_font(Path::new(&path)) {
            Ok(f) => Some(f),
            Err(e) if std::env::var("CI").is_err() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_section_makes_its_charts() {
        let r: Report = serde_json::from_str(FIXTURE).unwrap();
        let files: Vec<_> = charts(&r).iter().map(|c| c.file).collect();
        assert_eq!(
            files,
            [
                "matmul-f32.png",
                "matmul-quantized.png",
                "prompt.png",
                "generation.png",
                "serving-throughput.png",
                "serving-ttft.png",
                "lora.png",
                "registry.png"
            ]
        );
    }

    #[test]
    fn rows_pivot_into_groups_and_series() {
        let r: Report = serde_json::from_str(FIXTURE).unwrap();
        let all = charts(&r);
        let gen_chart = all.iter().find(|c| c.file == "generation.png").unwrap();
        assert_eq!(gen_chart.groups, ["4-bit g32", "float32"]);
        let names: Vec<_> = gen_chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mlx-hub",
                "mlx-lm (stock BLAS)",
                "mlx-lm (OpenBLAS preloaded)"
            ]
        );
        let ours = &gen_chart.series[0].bars;
        assert_eq!(ours[0].as_ref().unwrap().value, 120.4);
        assert_eq!(ours[0].as_ref().unwrap().label, "120 (60%)");
        // the fixture's float32 row has no stock-BLAS mlx-lm figure: a gap, not a zero
        assert_eq!(gen_chart.series[1].bars[1], None);

        let mm = all.iter().find(|c| c.file == "matmul-f32.png").unwrap();
        assert_eq!(mm.groups.len(), 4);
        assert!(
            mm.series[0].name.contains("reference"),
            "{:?}",
            mm.series[0]
        );
        assert_eq!(mm.series[1].bars[3].as_ref().unwrap().value, 61.25);

        let reg = all.iter().find(|c| c.file == "registry.png").unwrap();
        assert_eq!(reg.groups, ["p50", "p90", "p99"]);
        assert_eq!(reg.series.len(), 1);
    }

    #[test]
    fn ticks_and_labels_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(short(1234.6), "1235");
        assert_eq!(short(61.25), "61.2");
        assert_eq!(short(0.8), "0.80");
    }

    #[test]
    fn partial_report_plots_what_it_has() {
        let r: Report = serde_json::from_str(
            r#"{"registry": {"target_rps": 100, "p50_ms": 1.5, "p90_ms": 2, "p99_ms": 4.25},
                "machine": {"cpus": 2}}"#,
        )
        .unwrap();
        let c = charts(&r);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].file, "registry.png");
        assert_eq!(c[0].series[0].bars[2].as_ref().unwrap().label, "4.25");
    }

    #[test]
    fn bad_reports_are_refused_by_name() {
        let Some(font) = font() else { return };
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", plot("{}", dir.path(), &font).unwrap_err());
        assert!(e.contains("none of the sections"), "{e}");
        let e = format!(
            "{:#}",
            plot(r#"{"registry": {"p50_ms": 1}}"#, dir.path(), &font).unwrap_err()
        );
        assert!(e.contains("target_rps"), "{e}");
        assert!(load_font(&dir.path().join("none.ttf")).is_err());
        std::fs::write(dir.path().join("bad.ttf"), b"not a font").unwrap();
        let e = load_font(&dir.path().join("bad.ttf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a TrueType"), "{e}");
    }

    /// The fixture's PNGs decode, have the chart's size, and show bars in both the
    /// baseline's and our colours, and dark text pixels (title, labels).
    #[test]
    fn fixture_renders_pngs_with_bars_and_text() {
        let Some(font) = font() else { return };
        let dir = tempfile::tempdir().unwrap();
        let files = plot(FIXTURE, dir.path(), &font).unwrap();
        assert_eq!(files.len(), 8);
        for f in &files {
            let decoder =
                png::Decoder::new(std::io::BufReader::new(std::fs::File::open(f).unwrap()));
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!(
                (info.width, info.height),
                (WIDTH, HEIGHT),
                "{}",
                f.display()
            );
            assert_eq!(info.color_type, png::ColorType::Rgb);
            let px = &buf[..info.buffer_size()];
            let count = |c: RGBColor| {
                px.chunks_exact(3)
                    .filter(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2))
                    .count()
            };
            let dark = px
                .chunks_exact(3)
                .filter(|p| p.iter().all(|&v| v < 60))
                .count();
            assert!(count(OURS[0]) > 500, "{}: no bars of ours", f.display());
            if !f.ends_with("registry.png") {
                assert!(
                    count(BASELINES[0]) > 500,
                    "{}: no baseline bars",
                    f.display()
                );
            }
            assert!(dark > 2000, "{}: {dark} dark pixels, no text?", f.display());
        }
    }

    /// Text goes where it is anchored and takes the font's width: a wider string
    /// measures wider, rotation swaps the box.
    #[test]
    fn text_is_measured_from_the_font() {
        let Some(font) = font() else { return };
        let mut buf = vec![255u8; 200 * 100 * 3];
        let b = TextBackend {
            inner: BitMapBackend::with_buffer(&mut buf, (200, 100)),
            font: &font,
        };
        let style = TextStyle::from(("sans-serif", 20).into_font());
        let (w1, h1) = b.estimate_text_size("ii", &style).unwrap();
        let (w2, h2) = b.estimate_text_size("WWWW", &style).unwrap();
        assert!(w2 > 3 * w1, "{w1} {w2}");
        assert_eq!(h1, h2);
        assert!((18..=30).contains(&h1), "{h1}");
    }
}
