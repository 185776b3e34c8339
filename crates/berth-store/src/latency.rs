//! How long the store's write transactions take (each one fsyncs), for
//! `/metrics`: counted in buckets with atomics, so measuring costs a
//! write nothing that waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last, `+Inf`, implied).
pub const WRITE_BOUNDS: [f64; 9] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// Write durations since the store was opened.
#[derive(Debug, Default)]
pub(crate) struct WriteLatency {
    buckets: [AtomicU64; WRITE_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl WriteLatency {
    pub(crate) fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = WRITE_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(WRITE_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts per [`WRITE_BOUNDS`] bucket and one for longer (not
    /// cumulative), and the sum in seconds.
    pub(crate) fn figures(&self) -> (Vec<u64>, f64) {
        (
            self.buckets
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_fall_in_their_buckets() {
        let latency = WriteLatency::default();
        latency.observe(Duration::from_micros(50));
        latency.observe(Duration::from_millis(3));
        latency.observe(Duration::from_secs(2));
        let (buckets, sum) = latency.figures();
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[3], 1);
        assert_eq!(*buckets.last().unwrap(), 1);
        assert!((sum - 2.00305).abs() < 1e-9);
    }
}
