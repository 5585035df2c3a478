//! Latency samples → the summary the bench reports, in the shape of containerd-stress's
//! result (`total`, `failures`, `seconds`, `per_second`) plus percentiles in milliseconds.

use std::time::Duration;

use serde::Serialize;

/// How many distinct error messages a summary keeps (the first ones seen).
const MAX_ERRORS: usize = 3;

/// Outcome of a series of operations (successful latencies and failures).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    ok: Vec<Duration>,
    failures: u64,
    errors: Vec<String>,
}

impl Samples {
    /// Records one successful operation.
    pub fn ok(&mut self, d: Duration) {
        self.ok.push(d);
    }

    /// Records one failed operation and keeps its message if it is one of the first few.
    pub fn fail(&mut self, msg: &str) {
        self.failures += 1;
        let msg = shorten(msg);
        if self.errors.len() < MAX_ERRORS && !self.errors.contains(&msg) {
            self.errors.push(msg);
        }
    }

    /// Merges another series into this one.
    pub fn merge(&mut self, other: Samples) {
        self.ok.extend(other.ok);
        self.failures += other.failures;
        for e in other.errors {
            if self.errors.len() < MAX_ERRORS && !self.errors.contains(&e) {
                self.errors.push(e);
            }
        }
    }

    /// Number of successful operations so far.
    #[must_use]
    pub fn successes(&self) -> usize {
        self.ok.len()
    }

    /// Summarizes; `elapsed` is the wall time of the whole series (for `per_second`).
    #[must_use]
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let mut ms: Vec<f64> = self.ok.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let secs = elapsed.as_secs_f64();
        Summary {
            total: self.ok.len() as u64,
            failures: self.failures,
            seconds: round3(secs),
            per_second: if secs > 0.0 {
                round3(self.ok.len() as f64 / secs)
            } else {
                0.0
            },
            p50_ms: percentile(&ms, 50.0).map(round3),
            p95_ms: percentile(&ms, 95.0).map(round3),
            p99_ms: percentile(&ms, 99.0).map(round3),
            mean_ms: (!ms.is_empty()).then(|| round3(ms.iter().sum::<f64>() / ms.len() as f64)),
            errors: self.errors.clone(),
        }
    }
}

/// containerd-stress style result of one series (latencies of successful operations only).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Successful operations.
    pub total: u64,
    /// Failed operations.
    pub failures: u64,
    /// Wall time of the series.
    pub seconds: f64,
    /// Successful operations per second of wall time.
    pub per_second: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// The first few distinct error messages.
    pub errors: Vec<String>,
}

/// Nearest-rank percentile of sorted values; `None` when empty.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One line, at most 300 characters (ctr's errors can carry whole logs).
fn shorten(msg: &str) -> String {
    let one: String = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 300 {
        one.chars().take(300).collect::<String>() + "…"
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_failures_and_rate() {
        let mut s = Samples::default();
        for ms in [10, 20, 30, 40] {
            s.ok(Duration::from_millis(ms));
        }
        s.fail("boom\n  detail");
        s.fail("boom\n  detail");
        let sum = s.summary(Duration::from_secs(2));
        assert_eq!((sum.total, sum.failures), (4, 2));
        assert!((sum.per_second - 2.0).abs() < 1e-9);
        assert_eq!(sum.p50_ms, Some(20.0));
        assert_eq!(sum.errors, vec!["boom detail".to_string()]);
    }
}
