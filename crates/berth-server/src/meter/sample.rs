//! Turning snapshots of what runs into usage: each sample adds the time
//! since the last to every live instance's group, the CPU its cgroup
//! counted since, and the router's counts since, to rows held until the
//! next flush. An instance new since the last sample counts from its
//! start, and one gone since up to its exit, as the reconciler saw it
//! (half the time between the two samples when that is not known).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth_proto::UsageRow;

use crate::reconciler::{ENDED_KEPT, Snapshot};

/// A group at a size: the key of a usage row.
pub(crate) type GroupKey = (String, String, u64, u32);

/// What the sampler needs to know of an app's release: each group's
/// declared size, and which group takes its HTTP requests.
pub(crate) trait Sizes {
    /// `(cpus, memory_mb)` of `process` in `release` of `app`.
    fn size(&mut self, app: &str, release: u64, process: &str) -> (f64, u32);
    /// The group that serves HTTP in `release` of `app`.
    fn web_group(&mut self, app: &str, release: u64) -> Option<String>;
    /// Bytes the instance with process `pid` sent out of its network
    /// namespace so far; `None` without one of its own.
    fn sent_bytes(&mut self, pid: u32) -> Option<u64>;
}

#[derive(Debug)]
struct Seen {
    /// Its group's row.
    key: GroupKey,
    /// Its uptime in the snapshot then: time is counted from one uptime
    /// to the next, so a snapshot published a moment before the sample
    /// neither adds nor loses any.
    uptime: Duration,
    /// Its memory then, for the average over its last stretch.
    memory: Option<u64>,
    cpu_seconds: Option<f64>,
    /// The last reading of its namespace's link (what it sent out).
    link_bytes: Option<u64>,
    /// The last count of its egress proxy.
    proxied_bytes: Option<u64>,
    /// Samples in a row that found no namespace of its own.
    misses: u32,
}

/// Samples without a namespace after which an instance is taken to have
/// none (its app joins it just after the sandbox starts).
const NAMESPACE_TRIES: u32 = 10;

/// Adds `ran` seconds of an instance holding `memory` bytes to `usage`,
/// its memory average weighted by time.
fn add_run(usage: &mut UsageRow, ran: f64, memory: Option<u64>) {
    usage.instance_seconds += ran;
    let Some(memory) = memory else {
        return;
    };
    let weight = usage.instance_seconds;
    if weight > 0.0 {
        usage.memory_avg_bytes = ((usage.memory_avg_bytes as f64 * (weight - ran)
            + memory as f64 * ran)
            / weight) as u64;
    }
}

/// How much a counter grew since the last reading: from 0 for an
/// instance new since the last sample, nothing at the meter's first look
/// (counted from now on), and nothing when it was not read this time.
fn egress_delta(now: Option<u64>, before: Option<u64>, new_since_last: bool) -> u64 {
    match (now, before) {
        (Some(now), Some(before)) => now.saturating_sub(before),
        (Some(now), None) if new_since_last => now,
        _ => 0,
    }
}

/// The router's counters for one app at the last sample.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    busy_seconds: f64,
}

/// Rows being gathered between flushes.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    instances: HashMap<String, Seen>,
    counters: HashMap<String, Counters>,
    last: Option<Instant>,
    pending: BTreeMap<GroupKey, UsageRow>,
    /// Exited instances whose last stretch is counted, and when.
    ended_counted: HashMap<String, Instant>,
}

fn row(pending: &mut BTreeMap<GroupKey, UsageRow>, key: GroupKey) -> &mut UsageRow {
    pending.entry(key.clone()).or_insert_with(|| UsageRow {
        app: key.0,
        process: key.1,
        cpus: f64::from_bits(key.2),
        memory_mb: key.3,
        ..UsageRow::default()
    })
}

/// How much a counter grew (all of it when it went back: a new app of
/// the same name).
fn grown(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

impl Sampler {
    /// Adds what happened since the last sample.
    pub(crate) fn sample(&mut self, snapshot: &Snapshot, sizes: &mut dyn Sizes, now: Instant) {
        let since_last = self.last.map(|last| now - last);
        self.last = Some(now);
        let mut live = HashMap::new();
        for (app, actual) in &snapshot.apps {
            let mut memory_by_group: BTreeMap<GroupKey, u64> = BTreeMap::new();
            for instance in &actual.instances {
                if instance.pid.is_none() {
                    continue;
                }
                let (cpus, memory_mb) = sizes.size(app, instance.release, &instance.process);
                let key = (
                    app.clone(),
                    instance.process.clone(),
                    cpus.to_bits(),
                    memory_mb,
                );
                let seen = self.instances.get(&instance.id);
                let lookup = seen
                    .is_none_or(|seen| seen.link_bytes.is_some() || seen.misses < NAMESPACE_TRIES);
                let on_link = instance
                    .pid
                    .filter(|_| lookup)
                    .and_then(|pid| sizes.sent_bytes(pid));
                // Found later than its start, a namespace's counters start
                // at 0 then; at the meter's first look, from now on.
                let new_since_last = since_last.is_some();
                let sent = egress_delta(
                    on_link,
                    seen.and_then(|seen| seen.link_bytes),
                    new_since_last,
                ) + egress_delta(
                    instance.proxied_bytes,
                    seen.and_then(|seen| seen.proxied_bytes),
                    new_since_last,
                );
                let kept = Seen {
                    key: key.clone(),
                    uptime: Duration::from_millis(instance.uptime_ms),
                    memory: instance.memory_bytes.or(seen.and_then(|seen| seen.memory)),
                    cpu_seconds: instance.cpu_seconds,
                    // A reading that failed keeps the last good one, so the
                    // next is not counted from 0 again.
                    link_bytes: on_link.or(seen.and_then(|seen| seen.link_bytes)),
                    proxied_bytes: instance
                        .proxied_bytes
                        .or(seen.and_then(|seen| seen.proxied_bytes)),
                    misses: match on_link {
                        Some(_) => 0,
                        None => seen.map_or(0, |seen| seen.misses) + 1,
                    },
                };
                let (ran, cpu_before) = match self.instances.get(&instance.id) {
                    Some(seen) => (
                        Duration::from_millis(instance.uptime_ms)
                            .saturating_sub(seen.uptime)
                            .as_secs_f64(),
                        seen.cpu_seconds,
                    ),
                    None => match since_last {
                        // New since the last sample: it ran since it started,
                        // but not for longer than the time between samples.
                        Some(gap) => {
                            let up = instance.uptime_ms as f64 / 1000.0;
                            (up.min(gap.as_secs_f64()), Some(0.0))
                        }
                        // The meter's first look: counted from now on.
                        None => (0.0, instance.cpu_seconds),
                    },
                };
                let usage = row(&mut self.pending, key.clone());
                add_run(usage, ran, instance.memory_bytes);
                if let (Some(now_cpu), Some(before)) = (instance.cpu_seconds, cpu_before) {
                    usage.cpu_seconds += (now_cpu - before).max(0.0);
                }
                usage.egress_bytes += sent;
                if let Some(memory) = instance.memory_bytes {
                    *memory_by_group.entry(key).or_default() += memory;
                }
                live.insert(instance.id.clone(), kept);
            }
            for (key, memory) in memory_by_group {
                let usage = row(&mut self.pending, key);
                usage.memory_peak_bytes = usage.memory_peak_bytes.max(memory);
            }
            let http = &actual.traffic.http;
            let counters = Counters {
                requests: actual.traffic.requests,
                bytes_in: http.bytes_in,
                bytes_out: http.bytes_out,
                busy_seconds: http.busy_seconds,
            };
            // Counted once the app has a release: until then its counts wait.
            let Some(release) = actual.release else {
                continue;
            };
            let before = self
                .counters
                .insert(app.clone(), counters)
                .unwrap_or_default();
            let requests = grown(counters.requests, before.requests);
            // Only a request count that went back means new counters (the
            // app was made again); busy time that seems to go back is 0.
            let busy = if counters.requests < before.requests {
                counters.busy_seconds
            } else {
                (counters.busy_seconds - before.busy_seconds).max(0.0)
            };
            if requests == 0 && busy == 0.0 && counters.bytes_out == before.bytes_out {
                continue;
            }
            let web = sizes
                .web_group(app, release)
                .unwrap_or_else(|| "web".to_string());
            let (cpus, memory_mb) = sizes.size(app, release, &web);
            let usage = row(
                &mut self.pending,
                (app.clone(), web, cpus.to_bits(), memory_mb),
            );
            usage.requests += requests;
            usage.bytes_in += grown(counters.bytes_in, before.bytes_in);
            usage.bytes_out += grown(counters.bytes_out, before.bytes_out);
            usage.busy_seconds += busy;
        }
        self.count_ended(snapshot, sizes, &live, since_last, now);
        self.instances = live;
        self.counters
            .retain(|app, _| snapshot.apps.contains_key(app));
    }

    /// Adds the last stretch of instances gone since the last sample: up
    /// to their exit, as the reconciler saw it (half the time between the
    /// samples when it is not known yet), and the whole run of those that
    /// started and exited between two samples. Each is counted once; an
    /// app no longer in the snapshot (destroyed, its usage deleted with
    /// it) gets nothing.
    fn count_ended(
        &mut self,
        snapshot: &Snapshot,
        sizes: &mut dyn Sizes,
        live: &HashMap<String, Seen>,
        since_last: Option<Duration>,
        now: Instant,
    ) {
        self.ended_counted
            .retain(|_, at| now.duration_since(*at) <= 2 * ENDED_KEPT);
        let Some(gap) = since_last else {
            // The meter's first look: what ended before it is not counted.
            for ended in &snapshot.ended {
                self.ended_counted.insert(ended.id.clone(), now);
            }
            return;
        };
        for (id, seen) in &self.instances {
            if live.contains_key(id) || !snapshot.apps.contains_key(&seen.key.0) {
                continue;
            }
            let ran = match snapshot.ended.iter().find(|ended| &ended.id == id) {
                Some(ended) => ended.ran.saturating_sub(seen.uptime),
                None => gap / 2,
            };
            add_run(
                row(&mut self.pending, seen.key.clone()),
                ran.as_secs_f64(),
                seen.memory,
            );
            self.ended_counted.insert(id.clone(), now);
        }
        for ended in &snapshot.ended {
            if self.ended_counted.contains_key(&ended.id)
                || self.instances.contains_key(&ended.id)
                || !snapshot.apps.contains_key(&ended.app)
            {
                continue;
            }
            // Never seen running: it started after the last sample.
            let (cpus, memory_mb) = sizes.size(&ended.app, ended.release, &ended.process);
            let key = (
                ended.app.clone(),
                ended.process.clone(),
                cpus.to_bits(),
                memory_mb,
            );
            row(&mut self.pending, key).instance_seconds += ended.ran.min(gap).as_secs_f64();
            self.ended_counted.insert(ended.id.clone(), now);
        }
    }

    /// The rows gathered since the last take.
    pub(crate) fn take(&mut self) -> Vec<UsageRow> {
        std::mem::take(&mut self.pending).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::{InstanceInfo, InstanceState};

    use super::*;
    use crate::reconciler::AppActual;

    struct TwoSizes;

    impl Sizes for TwoSizes {
        fn size(&mut self, _app: &str, _release: u64, process: &str) -> (f64, u32) {
            if process == "web" {
                (1.0, 256)
            } else {
                (2.0, 1024)
            }
        }
        fn web_group(&mut self, _app: &str, _release: u64) -> Option<String> {
            Some("web".into())
        }
        fn sent_bytes(&mut self, pid: u32) -> Option<u64> {
            (pid > 1).then_some(u64::from(pid) * 10)
        }
    }

    fn instance(id: &str, process: &str, uptime: u64, cpu: f64, memory: u64) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            process: process.into(),
            release: 1,
            state: InstanceState::Running,
            healthy: true,
            restarts: 0,
            uptime_secs: uptime,
            uptime_ms: uptime * 1000,
            pid: Some(1),
            port: None,
            cpu_seconds: Some(cpu),
            memory_bytes: Some(memory),
            proxied_bytes: None,
        }
    }

    fn snapshot(instances: Vec<InstanceInfo>, requests: u64, bytes_out: u64) -> Snapshot {
        let mut actual = AppActual {
            release: Some(1),
            instances,
            ..AppActual::default()
        };
        actual.traffic.requests = requests;
        actual.traffic.http.bytes_out = bytes_out;
        actual.traffic.http.bytes_in = requests * 3;
        actual.traffic.http.busy_seconds = requests as f64 / 10.0;
        Snapshot {
            apps: [("shop".to_string(), actual)].into(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn samples_add_instance_time_cpu_memory_and_router_counts_per_group() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        // An instance up 3 s before the first sample: not counted before
        // the meter saw time pass.
        sampler.sample(
            &snapshot(vec![instance("a", "web", 3, 1.0, 100)], 5, 50),
            &mut TwoSizes,
            start,
        );
        let later = start + Duration::from_secs(2);
        sampler.sample(
            &snapshot(
                vec![instance("a", "web", 5, 1.5, 300), {
                    let mut worker = instance("b", "worker", 1, 0.2, 1000);
                    worker.pid = Some(7);
                    // And 30 bytes through its egress proxy.
                    worker.proxied_bytes = Some(30);
                    worker
                }],
                12,
                120,
            ),
            &mut TwoSizes,
            later,
        );
        let rows = sampler.take();
        let web = rows.iter().find(|row| row.process == "web").unwrap();
        assert_eq!((web.cpus, web.memory_mb), (1.0, 256));
        assert_eq!(web.instance_seconds, 2.0);
        assert!((web.cpu_seconds - 0.5).abs() < 1e-9);
        assert_eq!(web.memory_peak_bytes, 300);
        assert_eq!(web.memory_avg_bytes, 300);
        // Router counts go to the web group, all of them since the start.
        assert_eq!(web.requests, 12);
        assert_eq!(web.bytes_out, 120);
        assert_eq!(web.bytes_in, 36);
        assert!((web.busy_seconds - 1.2).abs() < 1e-9);
        let worker = rows.iter().find(|row| row.process == "worker").unwrap();
        assert_eq!((worker.cpus, worker.memory_mb), (2.0, 1024));
        // New since the last sample, up 1 s: 1 s, and its CPU since start.
        assert_eq!(worker.instance_seconds, 1.0);
        assert!((worker.cpu_seconds - 0.2).abs() < 1e-9);
        // Its namespace sent 70 bytes on its link and 30 through the proxy
        // since it started; web has no namespace.
        assert_eq!(worker.egress_bytes, 100);
        assert_eq!(web.egress_bytes, 0);
        assert!(sampler.take().is_empty());
        // Counters that went back (the app was made again) count from zero.
        // Both instances are gone: web exited 0.3 s after the last sample,
        // up 5.3 s; worker's exit is not known: half the gap.
        let mut gone = snapshot(vec![], 4, 40);
        gone.ended.push(ended("a", "web", 5300));
        sampler.sample(&gone, &mut TwoSizes, later + Duration::from_secs(1));
        let rows = sampler.take();
        assert_eq!(rows[0].requests, 4);
        assert!((rows[0].instance_seconds - 0.3).abs() < 1e-9);
        // Its last stretch held the memory it last had.
        assert_eq!(rows[0].memory_avg_bytes, 300);
        assert_eq!(rows[1].process, "worker");
        assert_eq!(rows[1].instance_seconds, 0.5);
        // Gone once is counted once.
        sampler.sample(
            &snapshot(vec![], 4, 40),
            &mut TwoSizes,
            later + Duration::from_secs(2),
        );
        assert!(sampler.take().is_empty());
    }

    fn ended(id: &str, process: &str, ran_ms: u64) -> crate::reconciler::EndedInstance {
        crate::reconciler::EndedInstance {
            id: id.into(),
            app: "shop".into(),
            process: process.into(),
            release: 1,
            ran: Duration::from_millis(ran_ms),
        }
    }

    #[test]
    fn an_instance_that_lived_between_two_samples_is_counted_once() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        sampler.sample(&snapshot(vec![], 0, 0), &mut TwoSizes, start);
        // A worker crashed 0.4 s after it started, between two samples.
        let mut crashed = snapshot(vec![], 0, 0);
        crashed.ended.push(ended("c", "worker", 400));
        sampler.sample(&crashed, &mut TwoSizes, start + Duration::from_secs(1));
        let rows = sampler.take();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].process.as_str(), rows[0].cpus), ("worker", 2.0));
        assert!((rows[0].instance_seconds - 0.4).abs() < 1e-9);
        // Still listed at the next samples: not counted again.
        sampler.sample(&crashed, &mut TwoSizes, start + Duration::from_secs(2));
        assert!(sampler.take().is_empty());
    }

    #[test]
    fn a_destroyed_apps_instances_add_nothing_once_it_is_gone() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        sampler.sample(
            &snapshot(vec![instance("a", "web", 3, 1.0, 100)], 0, 0),
            &mut TwoSizes,
            start,
        );
        sampler.take();
        // The app is destroyed: no longer in the snapshot, its instance
        // still draining and then gone.
        let mut destroyed = Snapshot::default();
        destroyed.ended.push(ended("a", "web", 3500));
        sampler.sample(&destroyed, &mut TwoSizes, start + Duration::from_secs(1));
        assert!(sampler.take().is_empty());
    }

    /// Link readings given one per sample.
    struct Readings(std::collections::VecDeque<Option<u64>>);

    impl Sizes for Readings {
        fn size(&mut self, _app: &str, _release: u64, _process: &str) -> (f64, u32) {
            (1.0, 256)
        }
        fn web_group(&mut self, _app: &str, _release: u64) -> Option<String> {
            None
        }
        fn sent_bytes(&mut self, _pid: u32) -> Option<u64> {
            self.0.pop_front().flatten()
        }
    }

    #[test]
    fn egress_found_late_or_missed_once_is_counted_once() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        // Not yet in its namespace, then found (its counters from 0), then
        // a reading that fails, then one more.
        let mut readings = Readings([None, None, Some(100), None, Some(150)].into());
        sampler.sample(&snapshot(vec![], 0, 0), &mut readings, start);
        for second in 1..=5 {
            let at = start + Duration::from_secs(second);
            sampler.sample(
                &snapshot(vec![instance("a", "web", second, 0.0, 1)], 0, 0),
                &mut readings,
                at,
            );
        }
        let rows = sampler.take();
        assert_eq!(rows[0].egress_bytes, 150);
    }
}
