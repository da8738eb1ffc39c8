//! Latencies in an HDR histogram (microseconds, 3 significant digits) and
//! the percentiles a report shows.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one measurement.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram from 1 µs to one hour.
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records one latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles, or `None` if nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.histogram.is_empty() {
            return None;
        }
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        Some(Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: self.histogram.max() as f64 / 1000.0,
            count: self.count(),
        })
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut l = Latencies::new();
        assert!(l.percentiles().is_none());
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let p = l.percentiles().unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p}");
        assert!((p.p99 - 990.0).abs() < 1.5, "{p}");
        assert!((p.max - 1000.0).abs() < 1.5, "{p}");
    }
}
