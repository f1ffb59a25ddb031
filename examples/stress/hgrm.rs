//! A latency histogram as an `.hgrm` file: one writer shared by
//! `examples/stress` and `examples/floor` (included there by path).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The distribution in HdrHistogram's percentile format, in ms, so
/// `examples/plot` reads what stress and floor write.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in histogram.iter_quantiles(1) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - q))
        } else {
            "inf".into()
        };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:>14}",
            v.value_iterated_to() as f64 / 1e6,
            q,
            v.count_since_last_iteration(),
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.mean() / 1e6,
        histogram.stdev() / 1e6,
        histogram.max() as f64 / 1e6,
        histogram.len()
    );
    out
}
