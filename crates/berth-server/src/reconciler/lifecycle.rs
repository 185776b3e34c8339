//! What happened to each process group's instances since the server
//! started, for `/metrics`: unexpected exits (each restarted), the ones the
//! kernel killed for memory, and starts from zero with how long each took
//! from the request that woke the group to a healthy instance.

use std::collections::HashMap;
use std::time::Duration;

use berth_router::LATENCY_BOUNDS;

/// One group's counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupLifecycle {
    /// Instances that exited unexpectedly (and were restarted).
    pub restarts: u64,
    /// Of those, the ones killed for exceeding their memory.
    pub oom_kills: u64,
    /// Starts from zero that became healthy.
    pub cold_starts: u64,
    /// Their durations, one count per [`LATENCY_BOUNDS`] bucket and one
    /// for longer (not cumulative).
    pub cold_start_buckets: Vec<u64>,
    /// The sum of their durations, in seconds.
    pub cold_start_seconds: f64,
}

impl GroupLifecycle {
    /// Counts a start from zero that took `took`.
    pub(super) fn cold_start(&mut self, took: Duration) {
        if self.cold_start_buckets.len() != LATENCY_BOUNDS.len() + 1 {
            self.cold_start_buckets = vec![0; LATENCY_BOUNDS.len() + 1];
        }
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.cold_start_buckets[bucket] += 1;
        self.cold_starts += 1;
        self.cold_start_seconds += seconds;
    }
}

/// Per (app, group).
pub(super) type Lifecycles = HashMap<(String, String), GroupLifecycle>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_starts_fall_in_their_buckets() {
        let mut group = GroupLifecycle::default();
        group.cold_start(Duration::from_millis(3));
        group.cold_start(Duration::from_secs(30));
        assert_eq!(group.cold_starts, 2);
        assert_eq!(group.cold_start_buckets[1], 1, "≤ 5 ms");
        assert_eq!(*group.cold_start_buckets.last().unwrap(), 1, "over 10 s");
        assert!((group.cold_start_seconds - 30.003).abs() < 1e-9);
    }
}
