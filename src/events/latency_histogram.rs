//! The per-route latency histograms every request feeds, counted where they are recorded.
//!
//! The Prometheus exporter's histograms keep each sample until a scrape or the upkeep task folds
//! it into the buckets: about 250 instructions a sample, two samples a request (callgrind,
//! `bench/run --instructions`). A request's latency only ever lands in one of a fixed list of
//! buckets, so it is counted there at once: two relaxed atomic additions.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::metrics::LATENCY_BUCKETS;

/// [`LATENCY_BUCKETS`] in microseconds (the buckets' upper bounds, inclusive as Prometheus'
/// `le` says).
const BOUNDS_US: [u64; LATENCY_BUCKETS.len()] = {
    let mut out = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (LATENCY_BUCKETS[i] * 1e6 + 0.5) as u64;
        i += 1;
    }
    out
};

/// A histogram over [`LATENCY_BUCKETS`] in seconds, with microsecond resolution.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is above every bound (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// The observations' sum in microseconds: at 1,000 requests a second of 100 ms each it
    /// would take millennia to wrap.
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn record(&self, d: Duration) {
        // Rounded up: a bucket holds what is at most its bound, and 5.0004 ms is not.
        let us = u64::try_from(d.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
        // Most requests fall in the first bucket or two: a scan beats a binary search here.
        let i = BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Appends this histogram's samples in the Prometheus text format: the cumulative
    /// `{name}_bucket` lines, `{name}_sum` and `{name}_count`, each with `labels` (already
    /// formatted as `key="value"`, escaped) before `le`. Nothing before its first observation
    /// (and false): a route's upstream histogram stays out of the text until a request reaches
    /// the upstream, and the one for requests no route took never appears; once there, it
    /// stays.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) -> bool {
        let counts = self.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
        if counts.iter().all(|&n| n == 0) {
            return false;
        }
        let mut total = 0u64;
        for (i, n) in counts.into_iter().enumerate() {
            total += n;
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {total}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
        true
    }
}

/// A Prometheus label value with `\`, `"` and line feeds escaped, as the text format requires.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &LatencyHistogram) -> String {
        let mut out = String::new();
        h.render(&mut out, "t_seconds", r#"route="a""#);
        out
    }

    /// Prometheus buckets hold observations less than or equal to their bound: a request of
    /// exactly 5 ms is in `le="0.005"`, one a microsecond longer is not.
    #[test]
    fn bounds_are_inclusive_and_buckets_cumulative() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_millis(5));
        h.record(Duration::from_nanos(5_000_001));
        h.record(Duration::from_secs(61));
        let text = rendered(&h);
        for line in [
            r#"t_seconds_bucket{route="a",le="0.005"} 1"#,
            r#"t_seconds_bucket{route="a",le="0.01"} 2"#,
            r#"t_seconds_bucket{route="a",le="60"} 2"#,
            r#"t_seconds_bucket{route="a",le="+Inf"} 3"#,
            r#"t_seconds_count{route="a"} 3"#,
            r#"t_seconds_sum{route="a"} 61.010001"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert_eq!(text.lines().count(), LATENCY_BUCKETS.len() + 3, "{text}");
    }

    #[test]
    fn nothing_is_rendered_before_the_first_observation() {
        assert_eq!(rendered(&LatencyHistogram::default()), "");
    }

    #[test]
    fn every_bucket_is_listed_in_order() {
        let h = LatencyHistogram::default();
        h.record(Duration::ZERO);
        let text = rendered(&h);
        let les: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("le=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .collect();
        let mut want: Vec<String> = LATENCY_BUCKETS.iter().map(|b| b.to_string()).collect();
        want.push("+Inf".into());
        assert_eq!(les, want);
        assert!(text.contains(r#"t_seconds_sum{route="a"} 0"#), "{text}");
        assert!(
            text.contains(r#"t_seconds_bucket{route="a",le="0.005"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn bounds_in_microseconds_match_the_seconds() {
        assert_eq!(BOUNDS_US[0], 5_000);
        assert_eq!(BOUNDS_US[LATENCY_BUCKETS.len() - 1], 60_000_000);
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        for (us, s) in BOUNDS_US.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*us as f64 / 1e6, *s);
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        assert_eq!(escape_label_value("hook"), "hook");
    }
}
