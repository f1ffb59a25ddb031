//! `plot`: draws benchmark results as SVG with `plotters`, for
//! `scripts/bench.sh`.
//!
//! Two charts:
//! - `curves`: latency percentile curves read from `.hgrm` files (the
//!   format `examples/stress` and `examples/floor` write), one line per
//!   `LABEL=FILE`, on the usual HdrHistogram axes (percentile as
//!   1/(1-p) on a log scale, latency on a log scale).
//! - `sweep`: one value against offered load, one line per
//!   `LABEL=X:Y,X:Y,...` (e.g. p99 against msg/s for each server).
//!
//! ```sh
//! cargo run --release --example plot -- curves --out fanout.svg --title "400 msg/s" \
//!     nexus=nexus.hgrm baseline=baseline.hgrm floor=floor.hgrm
//! ```

use std::error::Error;

use argh::FromArgs;
use plotters::prelude::*;

/// Draws latency percentile curves or a sweep as SVG (see the module docs).
#[derive(FromArgs, Debug)]
struct Args {
    #[argh(subcommand)]
    chart: Chart,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Chart {
    Curves(Curves),
    Sweep(Sweep),
}

/// latency percentile curves from .hgrm files
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "curves")]
struct Curves {
    /// the SVG file to write
    #[argh(option)]
    out: String,
    /// the chart's title
    #[argh(option, default = "String::new()")]
    title: String,
    /// LABEL=FILE.hgrm, one per line of the chart
    #[argh(positional)]
    series: Vec<String>,
}

/// one value against offered load, one line per server
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sweep")]
struct Sweep {
    /// the SVG file to write
    #[argh(option)]
    out: String,
    /// the chart's title
    #[argh(option, default = "String::new()")]
    title: String,
    /// the x axis's name (default offered load, msg/s)
    #[argh(option, default = "String::from(\"offered load (msg/s)\")")]
    x_desc: String,
    /// the y axis's name (default p99 latency, ms)
    #[argh(option, default = "String::from(\"p99 latency (ms)\")")]
    y_desc: String,
    /// LABEL=X:Y,X:Y,... one per line of the chart
    #[argh(positional)]
    series: Vec<String>,
}

/// One labelled line.
type Series = (String, Vec<(f64, f64)>);

fn main() {
    let args: Args = argh::from_env();
    let result = match args.chart {
        Chart::Curves(c) => curves(&c),
        Chart::Sweep(s) => sweep(&s),
    };
    if let Err(e) = result {
        eprintln!("plot: {e}");
        std::process::exit(2);
    }
}

fn split_label(arg: &str) -> Result<(&str, &str), String> {
    arg.split_once('=')
        .ok_or_else(|| format!("expected LABEL=VALUE, got {arg:?}"))
}

/// Reads an .hgrm file as (1/(1-percentile), latency ms) points; the 100th
/// percentile (infinite on this axis) is left out.
fn read_hgrm(path: &str) -> Result<Vec<(f64, f64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut points = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() != 4 || line.starts_with('#') {
            continue;
        }
        let (Ok(value), Ok(q)) = (cols[0].parse::<f64>(), cols[1].parse::<f64>()) else {
            continue;
        };
        if q < 1.0 && value > 0.0 {
            points.push((1.0 / (1.0 - q), value));
        }
    }
    if points.is_empty() {
        return Err(format!("{path}: no percentile lines"));
    }
    Ok(points)
}

fn curves(args: &Curves) -> Result<(), Box<dyn Error>> {
    let mut series = Vec::new();
    for arg in &args.series {
        let (label, path) = split_label(arg)?;
        series.push((label.to_string(), read_hgrm(path)?));
    }
    // 1/(1-p) = 1000 is the 99.9th percentile: one decimal per nine past 99.
    let percentile = |x: &f64| {
        let p = 100.0 * (1.0 - 1.0 / x);
        let decimals = (x.log10().round() as i64 - 2).max(0) as usize;
        format!("{p:.decimals$}%")
    };
    draw(
        &args.out,
        &args.title,
        "percentile",
        "latency (ms)",
        &series,
        &percentile,
    )
}

fn sweep(args: &Sweep) -> Result<(), Box<dyn Error>> {
    let mut series = Vec::new();
    for arg in &args.series {
        let (label, list) = split_label(arg)?;
        let mut points = Vec::new();
        for pair in list.split(',').filter(|p| !p.is_empty()) {
            let (x, y) = pair
                .split_once(':')
                .ok_or_else(|| format!("expected X:Y, got {pair:?}"))?;
            points.push((x.parse::<f64>()?, y.parse::<f64>()?));
        }
        points.retain(|&(x, y)| x > 0.0 && y > 0.0);
        if !points.is_empty() {
            series.push((label.to_string(), points));
        }
    }
    draw(
        &args.out,
        &args.title,
        &args.x_desc,
        &args.y_desc,
        &series,
        &|x: &f64| format!("{x}"),
    )
}

/// Draws `series` on log-log axes into the SVG file `out`.
fn draw(
    out: &str,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x_label: &dyn Fn(&f64) -> String,
) -> Result<(), Box<dyn Error>> {
    let all = || series.iter().flat_map(|(_, points)| points.iter());
    if all().next().is_none() {
        return Err("nothing to draw".into());
    }
    let (x_min, x_max) = all().fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y_min, y_max) = all().fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let root = SVGBackend::new(out, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x_min.max(1e-9)..x_max * 1.2).log_scale(),
            (y_min * 0.8..y_max * 1.25).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(x_label)
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
