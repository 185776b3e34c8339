//! Per-app HTTP figures the router counts: answers by status class, a
//! latency histogram and bytes, read by `/metrics`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether the router counts busy time and request bytes for the meter
/// (on unless the server runs with `--no-meter`).
static METERING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the meter's counting at the router on or off (for the whole
/// process: one server runs per process).
pub fn set_metering(on: bool) {
    METERING.store(on, Ordering::Relaxed);
}

fn metering() -> bool {
    METERING.load(Ordering::Relaxed)
}

/// Upper bounds of the latency histogram's buckets, in seconds (the last
/// bucket, `+Inf`, is implied).
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Per-app HTTP figures since the server started.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Answers by status class: 1xx … 5xx.
    status: [AtomicU64; 5],
    /// Answers by duration, one count per [`LATENCY_BOUNDS`] bucket and
    /// one for longer (not cumulative).
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    /// The sum of all durations, in microseconds.
    latency_sum_micros: AtomicU64,
    /// Body bytes sent to clients.
    bytes_out: AtomicU64,
    /// Request body bytes received and passed on to instances.
    bytes_in: AtomicU64,
    /// Time with at least one request in flight.
    busy: Busy,
}

/// Requests in flight now (an atomic, so the router threads of a busy app
/// never wait on each other), and under a lock taken only when the count
/// leaves or reaches zero (and by readers): since when the app is busy and
/// the busy time so far. A reader never sees a busy period without its
/// start, so the figure never jumps.
#[derive(Debug, Default)]
struct Busy {
    in_flight: AtomicU64,
    periods: std::sync::Mutex<BusyPeriods>,
}

#[derive(Debug, Default)]
struct BusyPeriods {
    /// The open period's start (nanoseconds after [`clock`]'s start).
    open_since: Option<u64>,
    /// Closed periods, in nanoseconds.
    total: u64,
}

impl Busy {
    fn periods(&self) -> std::sync::MutexGuard<'_, BusyPeriods> {
        self.periods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Nanoseconds since the first call.
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A snapshot of [`HttpStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpFigures {
    /// Answers by status class, 1xx first.
    pub status: [u64; 5],
    /// Cumulative counts per [`LATENCY_BOUNDS`] bucket, then all answers.
    pub latency_cumulative: Vec<u64>,
    /// The sum of all durations, in seconds.
    pub latency_sum_seconds: f64,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// Request body bytes passed on to instances.
    pub bytes_in: u64,
    /// Seconds with at least one request in flight.
    pub busy_seconds: f64,
}

impl HttpStats {
    /// A request to the app began (see [`HttpStats::end`]).
    pub(crate) fn begin(&self) {
        if !metering() {
            return;
        }
        if self.busy.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            let mut periods = self.busy.periods();
            periods.open_since.get_or_insert_with(clock);
        }
    }

    /// A request begun with [`HttpStats::begin`] ended.
    pub(crate) fn end(&self) {
        if !metering() {
            return;
        }
        // `begin` was skipped while metering was off: nothing to end.
        let ended =
            self.busy
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                    count.checked_sub(1)
                });
        if ended == Ok(1) {
            let mut periods = self.busy.periods();
            // A request that began since (the count is up again) keeps the
            // period open.
            if self.busy.in_flight.load(Ordering::Acquire) == 0
                && let Some(since) = periods.open_since.take()
            {
                periods.total += clock().saturating_sub(since);
            }
        }
    }

    pub(crate) fn count_bytes_in(&self, bytes: u64) {
        if !metering() {
            return;
        }
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    fn busy_seconds(&self) -> f64 {
        let periods = self.busy.periods();
        let open = periods
            .open_since
            .map_or(0, |since| clock().saturating_sub(since));
        (periods.total + open) as f64 / 1e9
    }

    pub(crate) fn record(&self, status: u16, took: Duration, bytes_out: u64) {
        if let Some(class) = (status / 100).checked_sub(1)
            && let Some(counter) = self.status.get(usize::from(class))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn figures(&self) -> HttpFigures {
        let mut running = 0;
        let latency_cumulative = self
            .latency
            .iter()
            .map(|count| {
                running += count.load(Ordering::Relaxed);
                running
            })
            .collect();
        HttpFigures {
            status: std::array::from_fn(|class| self.status[class].load(Ordering::Relaxed)),
            latency_cumulative,
            latency_sum_seconds: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            busy_seconds: self.busy_seconds(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_count_classes_buckets_and_bytes() {
        let stats = HttpStats::default();
        stats.record(200, Duration::from_millis(3), 100);
        stats.record(204, Duration::from_millis(30), 0);
        stats.record(503, Duration::from_secs(20), 5);
        stats.record(99, Duration::ZERO, 0);
        let figures = stats.figures();
        assert_eq!(figures.status, [0, 2, 0, 0, 1]);
        // ≤1ms: 1 (the 99), ≤5ms: +1, ≤50ms: +1, +Inf: +1.
        assert_eq!(figures.latency_cumulative[0], 1);
        assert_eq!(figures.latency_cumulative[1], 2);
        assert_eq!(figures.latency_cumulative[4], 3);
        assert_eq!(*figures.latency_cumulative.last().unwrap(), 4);
        assert_eq!(figures.latency_cumulative.len(), LATENCY_BOUNDS.len() + 1);
        assert!((figures.latency_sum_seconds - 20.033).abs() < 1e-6);
        assert_eq!(figures.bytes_out, 105);
    }

    #[test]
    fn overlapping_requests_are_busy_time_once() {
        let stats = HttpStats::default();
        stats.begin();
        stats.begin();
        std::thread::sleep(Duration::from_millis(30));
        stats.end();
        std::thread::sleep(Duration::from_millis(30));
        stats.end();
        let busy = stats.figures().busy_seconds;
        assert!((0.06..0.5).contains(&busy), "{busy}");
        std::thread::sleep(Duration::from_millis(50));
        // Idle time does not count.
        assert_eq!(stats.figures().busy_seconds, busy);
        // Read while busy, the figure grows with the open period and
        // never goes back.
        stats.begin();
        let mut last = stats.figures().busy_seconds;
        for _ in 0..50 {
            let now = stats.figures().busy_seconds;
            assert!(now >= last);
            last = now;
        }
        stats.end();
        assert!(stats.figures().busy_seconds >= last);
        stats.count_bytes_in(7);
        assert_eq!(stats.figures().bytes_in, 7);
    }
}
