//! `.hgrm` files: HdrHistogram's percentile distribution text format, as written by
//! `Histogram.outputPercentileDistribution` and read by HdrHistogram's plotters.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Ticks per half distance to 100%: the Java tool's default, giving the familiar
/// 50, 75, 87.5, ... rows.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Renders `histogram` (values in microseconds) as an `.hgrm` text. `scale` divides values
/// for display (1.0 keeps microseconds; 1000.0 gives milliseconds).
pub fn percentile_distribution(histogram: &Histogram<u64>, scale: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if histogram.is_empty() {
        let _ = writeln!(
            out,
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
            0.0, 0.0
        );
        let _ = writeln!(
            out,
            "#[Max     = {:>12.3}, Total count    = {:>12}]",
            0.0, 0
        );
        let _ = writeln!(
            out,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            histogram.buckets(),
            histogram.distinct_values()
        );
        return out;
    }
    let mut total = 0u64;
    for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let value = step.value_iterated_to() as f64 / scale;
        if quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value:>12.3} {quantile:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(out, "{value:>12.3} {quantile:>2.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / scale,
        histogram.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / scale,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_hdrhistogram_text_output() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let text = percentile_distribution(&h, 1.0);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next().unwrap(), "");
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
            .collect();
        // Percentiles rise to 1.0, counts to the total; the last row has no inverse.
        assert!(
            rows.windows(2)
                .all(|w| w[0][1] <= w[1][1] && w[0][2] <= w[1][2])
        );
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2], last.len()), (1.0, 10_000.0, 3));
        let median = rows.iter().find(|r| r[1] >= 0.5).unwrap();
        assert!((4990.0..=5010.0).contains(&median[0]), "{median:?}");
        assert!(text.contains("Total count    =        10000]"));
    }

    #[test]
    fn empty_histogram_still_makes_a_valid_file() {
        let h = Histogram::<u64>::new_with_bounds(1, 1000, 3).unwrap();
        let text = percentile_distribution(&h, 1.0);
        assert!(text.contains("Total count    =            0]"));
    }
}
