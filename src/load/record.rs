//! What a process holding connections reports once a second — to its parent over a pipe as one
//! line of JSON (worker processes), or straight to the merger (a single process) — and the
//! histogram functions both ends share.
//!
//! Histograms travel as their recorded buckets: `(highest value equivalent to the bucket, count)`
//! pairs. Recording each pair into a histogram of the same configuration lands every count in
//! the bucket it came from, so merging is exact and needs no serialization format.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::report::Failures;

/// Latencies are recorded in microseconds, from 1 µs to an hour, to 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

/// A latency histogram as every part of the load generator configures it.
pub fn new_hist() -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// The recorded buckets of `h`.
pub fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds buckets (from [`buckets`]) to `h`.
pub fn add_buckets(h: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(value, count) in buckets {
        h.saturating_record_n(value.min(HIST_MAX_US), count);
    }
}

/// The value at quantile `q`, `None` for an empty histogram.
pub fn quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

/// The largest value recorded, `None` for an empty histogram.
pub fn max(h: &Histogram<u64>) -> Option<u64> {
    (!h.is_empty()).then(|| h.max())
}

/// A process's connection counters. All cumulative, except `open` and `connecting` (now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub attempted: u64,
    pub established: u64,
    pub open: u64,
    pub connecting: u64,
    pub failed: Failures,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.open += other.open;
        self.connecting += other.connecting;
        self.failed.add(&other.failed);
    }
}

/// One second (window) of one process's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Window index: the window covers seconds `[idx, idx + 1)` since the common start, or up to
    /// the close for the last one.
    pub idx: u64,
    /// The last record: sent just before the connections are closed.
    #[serde(default)]
    pub last: bool,
    /// Counters at the end of the window.
    pub counts: Counts,
    /// Events received in the window.
    pub events: u64,
    /// Event delivery latency buckets of the window.
    pub hist: Vec<(u64, u64)>,
    /// `(seq, sent_ns, copies received in the window)`.
    pub seqs: Vec<(u64, u64, u64)>,
    /// The first failure of each cause this process saw, sent in the window it happened:
    /// `(cause, what happened)` — for a refusal, the response head.
    #[serde(default)]
    pub first_failures: Vec<(String, String)>,
    /// Round trips of the window's echoed WebSocket messages (`--ws-send`), as buckets.
    #[serde(default)]
    pub echo_hist: Vec<(u64, u64)>,
    /// Gaps between events on one connection (µs), as buckets: what a server whose events carry
    /// no send time still shows of its delivery.
    #[serde(default)]
    pub gap_hist: Vec<(u64, u64)>,
    /// `(ms since the start, open connections)` whenever the number changed, at 10 ms
    /// resolution: who could have received an event published at a given time.
    pub timeline: Vec<(u64, u64)>,
    /// When this process's ramp was over (µs since the start): every connection attempted and
    /// answered or failed, or the ramp stopped at its limit.
    #[serde(default)]
    pub ramp_done_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_merge_exactly() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in [1u64, 5, 999, 1_000, 1_001, 123_456, 7_000_000] {
            a.record(v).unwrap();
            b.record(v * 3).unwrap();
        }
        let mut direct = a.clone();
        direct.add(&b).unwrap();
        let mut merged = new_hist();
        add_buckets(&mut merged, &buckets(&a));
        add_buckets(&mut merged, &buckets(&b));
        assert_eq!(merged.len(), direct.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(merged.value_at_quantile(q), direct.value_at_quantile(q));
        }
        assert_eq!(quantile(&new_hist(), 0.5), None);
        assert_eq!(max(&merged), Some(direct.max()));
    }

    #[test]
    fn record_round_trips_as_one_line() {
        let r = WorkerRecord {
            idx: 3,
            last: true,
            counts: Counts {
                attempted: 10,
                open: 9,
                ..Counts::default()
            },
            events: 2,
            hist: vec![(100, 2)],
            seqs: vec![(7, 1_000, 2)],
            echo_hist: vec![(250, 1)],
            gap_hist: vec![(1_000_000, 3)],
            first_failures: vec![("http_error".into(), "HTTP/1.1 401 Unauthorized".into())],
            timeline: vec![(3_010, 9)],
            ramp_done_us: Some(2_500_000),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<WorkerRecord>(&line).unwrap(), r);
    }
}
