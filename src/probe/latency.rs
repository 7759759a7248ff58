//! What the control API's `/metrics` shows of the checks: per (address, template, vantage
//! point), a histogram of how long passed checks took (fixed buckets from 1 ms to 10 s,
//! Prometheus' `le` convention) and counts of passed and failed checks. Kept in the shared
//! [`Reports`] beside each check's last result, carried from result to result.

use std::time::Duration;

use super::{Report, Reports};

/// Upper bounds of the latency buckets, seconds (the last bucket, `+Inf`, is implied).
pub const BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Results of one check so far.
#[derive(Debug, Clone, Default)]
pub struct CheckStats {
    /// Passed checks per bucket of [`BUCKETS`] (not cumulative); the last: above 10 s.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Seconds taken by the passed checks, summed.
    pub sum: f64,
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
}

impl CheckStats {
    /// Counts one result; a passed check's duration goes to its bucket.
    pub fn record(&mut self, ok: bool, took: Duration) {
        if !ok {
            self.failed += 1;
            return;
        }
        let secs = took.as_secs_f64();
        let b = BUCKETS.partition_point(|&le| le < secs);
        self.buckets[b] += 1;
        self.sum += secs;
        self.passed += 1;
    }
}

/// Stores `report` as the last result of its check (template and vantage point) of
/// `address`, with the check's stats carried over and this result counted.
pub(super) fn store(
    reports: &Reports,
    address: &str,
    mut report: Report,
    ok: bool,
    took: Duration,
) {
    let mut r = reports.lock().expect("reports lock");
    let v = r.entry(address.to_string()).or_default();
    match v
        .iter_mut()
        .find(|x| x.check == report.check && x.source == report.source)
    {
        Some(x) => {
            report.stats = std::mem::take(&mut x.stats);
            report.stats.record(ok, took);
            *x = report;
        }
        None => {
            report.stats.record(ok, took);
            v.push(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_upper_bound() {
        let mut s = CheckStats::default();
        for ms in [0, 1, 2, 3, 999, 1000, 10_000, 20_000] {
            s.record(true, Duration::from_millis(ms));
        }
        s.record(false, Duration::from_millis(5));
        // le=0.001 holds 0 and 1 ms; le=0.002 2 ms; le=0.005 3 ms; le=1 999 and 1000 ms.
        assert_eq!(s.buckets, [2, 1, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 1, 1]);
        assert_eq!((s.passed, s.failed), (8, 1));
        assert!((s.sum - 32.005).abs() < 1e-9, "{}", s.sum);
    }
}
