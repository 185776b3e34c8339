//! What the dashboard's charts show: each app's requests, 5xx answers,
//! p50/p99 latency, CPU and memory over the last hour (10-second points),
//! day (5-minute points) and week (hourly points), sampled from the
//! router's counts and the instances' cgroups and kept in memory (a
//! restart starts them over). Charts are SVG drawn here: no script needed
//! to read them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_router::{HttpFigures, LATENCY_BOUNDS};
use tokio_util::sync::CancellationToken;

use crate::reconciler::ReconcilerHandle;

/// How often the counts are read.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One point of a series: what happened in its interval.
#[derive(Debug, Clone, Default)]
struct Point {
    /// The interval's start, unix seconds.
    at: u64,
    requests: u64,
    errors: u64,
    /// Answers per latency bucket (not cumulative).
    buckets: Vec<u64>,
    /// CPU time the app's instances used in the interval.
    cpu_seconds: f64,
    /// The most memory its instances held together at a sample.
    memory_bytes: u64,
}

impl Point {
    fn add(&mut self, other: &Point) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.cpu_seconds += other.cpu_seconds;
        self.memory_bytes = self.memory_bytes.max(other.memory_bytes);
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    /// The latency under which `quantile` of the answers fell, in
    /// milliseconds (the upper bound of its bucket); `None` without answers.
    fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (total as f64 * quantile).ceil() as u64;
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                let bound = LATENCY_BOUNDS.get(index).copied().unwrap_or(20.0);
                return Some(bound * 1000.0);
            }
        }
        None
    }
}

/// A series at one resolution, bounded.
#[derive(Debug)]
struct Tier {
    step: u64,
    keep: usize,
    points: VecDeque<Point>,
}

impl Tier {
    fn new(step: u64, keep: usize) -> Tier {
        Tier {
            step,
            keep,
            points: VecDeque::new(),
        }
    }

    fn add(&mut self, point: &Point) {
        let slot = point.at - point.at % self.step;
        match self.points.back_mut() {
            Some(last) if last.at == slot => last.add(point),
            _ => {
                let mut fresh = Point {
                    at: slot,
                    ..Point::default()
                };
                fresh.add(point);
                self.points.push_back(fresh);
                while self.points.len() > self.keep {
                    self.points.pop_front();
                }
            }
        }
    }
}

/// One app's series.
#[derive(Debug)]
struct AppSeries {
    last: HttpFigures,
    /// The CPU seconds its instances had used at the last sample.
    last_cpu: f64,
    tiers: [Tier; 3],
}

/// What an app's instances use at a sample: CPU seconds since each
/// started, summed, and memory held now, summed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InstancesUsage {
    pub(crate) cpu_seconds: f64,
    pub(crate) memory_bytes: u64,
}

impl InstancesUsage {
    fn of(instances: &[berth_proto::InstanceInfo]) -> InstancesUsage {
        InstancesUsage {
            cpu_seconds: instances
                .iter()
                .filter_map(|instance| instance.cpu_seconds)
                .sum(),
            memory_bytes: instances
                .iter()
                .filter_map(|instance| instance.memory_bytes)
                .sum(),
        }
    }
}

/// The ranges a chart can show.
pub(crate) const RANGES: [(&str, u64); 3] = [("1h", 3600), ("24h", 86_400), ("7d", 604_800)];

/// Every app's series.
#[derive(Default)]
pub(crate) struct History {
    apps: Mutex<HashMap<String, AppSeries>>,
}

impl History {
    /// Samples the router's counts every [`SAMPLE_EVERY`] until `shutdown`.
    pub(crate) async fn run(
        self: Arc<Self>,
        reconciler: ReconcilerHandle,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
            let snapshot = reconciler.snapshot();
            let now = unix_now();
            for (app, actual) in &snapshot.apps {
                let usage = InstancesUsage::of(&actual.instances);
                self.sample(app, &actual.traffic.http, usage, now);
            }
            // A destroyed app's series go; a new app of its name starts afresh.
            self.apps
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .retain(|app, _| snapshot.apps.contains_key(app));
        }
    }

    fn sample(&self, app: &str, figures: &HttpFigures, usage: InstancesUsage, now: u64) {
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let series = apps.entry(app.to_string()).or_insert_with(|| AppSeries {
            last: figures.clone(),
            last_cpu: usage.cpu_seconds,
            tiers: [
                Tier::new(10, 360),
                Tier::new(300, 288),
                Tier::new(3600, 168),
            ],
        });
        let requests = |figures: &HttpFigures| figures.status.iter().sum::<u64>();
        let per_bucket = |figures: &HttpFigures| -> Vec<u64> {
            let mut previous = 0;
            figures
                .latency_cumulative
                .iter()
                .map(|cumulative| {
                    let count = cumulative - previous;
                    previous = *cumulative;
                    count
                })
                .collect()
        };
        // Counts that went down were started over (the app left the route
        // table and came back): what they are now is all that happened.
        let restarted =
            requests(figures) < requests(&series.last) || figures.status[4] < series.last.status[4];
        if restarted {
            series.last = HttpFigures::default();
        }
        let (now_buckets, last_buckets) = (per_bucket(figures), per_bucket(&series.last));
        let point = Point {
            at: now,
            requests: requests(figures).saturating_sub(requests(&series.last)),
            errors: figures.status[4].saturating_sub(series.last.status[4]),
            buckets: now_buckets
                .iter()
                .zip(last_buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, before)| now.saturating_sub(*before))
                .collect(),
            // An instance that stopped takes its CPU time out of the sum:
            // that interval shows what the others used, or nothing.
            cpu_seconds: (usage.cpu_seconds - series.last_cpu).max(0.0),
            memory_bytes: usage.memory_bytes,
        };
        series.last = figures.clone();
        series.last_cpu = usage.cpu_seconds;
        for tier in &mut series.tiers {
            tier.add(&point);
        }
    }

    /// The charts of `app` over the range `range` (`1h`, `24h`, `7d`):
    /// requests, 5xx answers, p50 and p99 latency, CPU (percent of a core)
    /// and memory, each an SVG.
    pub(crate) fn charts(&self, app: &str, range: &str) -> Vec<(String, String)> {
        let (tier, span) = match range {
            "24h" => (1, 86_400),
            "7d" => (2, 604_800),
            _ => (0, 3600),
        };
        let apps = self
            .apps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let points: Vec<Point> = apps
            .get(app)
            .map(|series| series.tiers[tier].points.iter().cloned().collect())
            .unwrap_or_default();
        let step = [10.0, 300.0, 3600.0][tier];
        let since = unix_now().saturating_sub(span);
        let points: Vec<&Point> = points.iter().filter(|point| point.at >= since).collect();
        let series = |value: &dyn Fn(&Point) -> Option<f64>| -> Vec<(u64, f64)> {
            points
                .iter()
                .filter_map(|point| Some((point.at, value(point)?)))
                .collect()
        };
        vec![
            (
                "requests".to_string(),
                svg(
                    &series(&|point| Some(point.requests as f64)),
                    since,
                    span,
                    "",
                ),
            ),
            (
                "5xx answers".to_string(),
                svg(&series(&|point| Some(point.errors as f64)), since, span, ""),
            ),
            (
                "p50 latency".to_string(),
                svg(&series(&|point| point.quantile_ms(0.5)), since, span, " ms"),
            ),
            (
                "p99 latency".to_string(),
                svg(
                    &series(&|point| point.quantile_ms(0.99)),
                    since,
                    span,
                    " ms",
                ),
            ),
            (
                "CPU".to_string(),
                svg(
                    &series(&|point| Some(point.cpu_seconds / step * 100.0)),
                    since,
                    span,
                    "% of a core",
                ),
            ),
            (
                "memory".to_string(),
                svg(
                    &series(&|point| Some(point.memory_bytes as f64 / 1_048_576.0)),
                    since,
                    span,
                    " MiB",
                ),
            ),
        ]
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A line chart of `values` (time, value) over `span` seconds from `since`.
fn svg(values: &[(u64, f64)], since: u64, span: u64, unit: &str) -> String {
    const WIDTH: f64 = 360.0;
    const HEIGHT: f64 = 90.0;
    let top = values
        .iter()
        .map(|(_, value)| *value)
        .fold(0.0f64, f64::max);
    let scale = if top > 0.0 { top } else { 1.0 };
    let points: Vec<String> = values
        .iter()
        .map(|(at, value)| {
            let x = (at.saturating_sub(since)) as f64 / span as f64 * WIDTH;
            let y = HEIGHT - value / scale * (HEIGHT - 4.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let line = if points.is_empty() {
        format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#5b6570\" font-size=\"12\">no data yet</text>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        )
    } else {
        format!(
            "<polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        )
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" viewBox=\"0 0 {WIDTH} {}\" role=\"img\"><rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#f6f8fa\" stroke=\"#d6dbe0\"/>{line}<text x=\"4\" y=\"{}\" fill=\"#5b6570\" font-size=\"11\">max {}{unit}</text></svg>",
        HEIGHT + 14.0,
        HEIGHT + 14.0,
        HEIGHT + 12.0,
        format_value(top)
    )
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(status_2xx: u64, fast: u64, slow: u64) -> HttpFigures {
        let mut cumulative = vec![0; LATENCY_BOUNDS.len() + 1];
        for (index, total) in cumulative.iter_mut().enumerate() {
            *total = if index >= 8 {
                fast + slow
            } else if index >= 1 {
                fast
            } else {
                0
            };
        }
        HttpFigures {
            status: [0, status_2xx, 0, 0, 0],
            latency_cumulative: cumulative,
            ..HttpFigures::default()
        }
    }

    #[test]
    fn samples_become_deltas_and_quantiles_per_interval() {
        let history = History::default();
        let usage = |cpu_seconds, memory_bytes| InstancesUsage {
            cpu_seconds,
            memory_bytes,
        };
        history.sample("shop", &figures(0, 0, 0), usage(1.0, 10), 1_000);
        // 99 fast answers (≤ 5 ms) and one slow (≤ 1 s) in the next ten
        // seconds, using half a second of CPU.
        history.sample("shop", &figures(100, 99, 1), usage(1.5, 30), 1_010);
        let apps = history.apps.lock().unwrap();
        let tier = &apps["shop"].tiers[0];
        let last = tier.points.back().unwrap();
        assert_eq!(last.requests, 100);
        assert_eq!(last.quantile_ms(0.5), Some(5.0));
        assert_eq!(last.quantile_ms(0.99), Some(5.0));
        assert_eq!(last.quantile_ms(1.0), Some(1000.0));
        assert!((last.cpu_seconds - 0.5).abs() < 1e-9);
        assert_eq!(last.memory_bytes, 30);
        // The 5-minute tier gathers both samples in one point.
        assert_eq!(apps["shop"].tiers[1].points.len(), 1);
    }

    #[test]
    fn a_chart_without_points_says_so() {
        let chart = svg(&[], 0, 3600, "");
        assert!(chart.contains("no data yet"));
        let chart = svg(&[(0, 1.0), (1800, 3.0)], 0, 3600, " ms");
        assert!(chart.contains("<polyline"));
        assert!(chart.contains("max 3 ms"));
    }
}
