//! Least-outstanding-requests balancing over an app's healthy instances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The instance that answered a response (a response extension the
/// upstream sets, read by the access log).
#[derive(Debug, Clone)]
pub(crate) struct ServedBy(pub(crate) String);

/// One instance that takes requests.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its instance id (for error pages and logs).
    pub instance: String,
    /// Its process group (`web`), which private names like
    /// `web.APP.internal` pick by; empty when not known.
    pub group: String,
    /// Unique per backend: idle upstream connections are kept under it
    /// (instances in namespaces of their own share an address).
    pub key: u64,
    /// The network namespace `addr` is in, when not the router's own.
    pub netns: Option<Arc<berth_runtime::netns::NetNs>>,
    in_flight: AtomicUsize,
    retired: AtomicBool,
    /// Woken when the last request in flight on a retired backend ends.
    drained: tokio::sync::Notify,
}

impl Backend {
    /// A backend with nothing in flight.
    pub fn new(addr: SocketAddr, instance: String) -> Self {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(1);
        Backend {
            addr,
            instance,
            group: String::new(),
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            netns: None,
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
        }
    }

    /// A backend reached inside the network namespace `netns`.
    pub fn in_namespace(mut self, netns: Arc<berth_runtime::netns::NetNs>) -> Self {
        self.netns = Some(netns);
        self
    }

    /// A backend of process group `group`.
    pub fn in_group(mut self, group: &str) -> Self {
        self.group = group.to_string();
        self
    }

    /// Marks it as leaving: no new request is sent to it from now on, even
    /// by a router thread still holding an older route table.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Whether it is leaving.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Requests sent to it whose responses have not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Returns once it is retired and nothing is in flight: woken by the
    /// last request's end, not by polling.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end in between wakes it.
            notified.as_mut().enable();
            if self.is_retired() && self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a request in flight on a backend until dropped (when the
/// response body has been sent, or the request failed).
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// Starts counting a request on `backend`.
    pub fn start(backend: Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { backend }
    }

    /// Starts counting a request on `backend` unless it is retired. The count
    /// goes up before the check, so a drain that sees zero in flight after
    /// retiring a backend can never miss a request that went to it.
    pub fn try_start(backend: Arc<Backend>) -> Option<Self> {
        let guard = InFlight::start(backend);
        (!guard.backend.is_retired()).then_some(guard)
    }

    /// Starts counting a request on `backend` unless it is retired or
    /// already has `limit` requests in flight (the hard limit): the check
    /// and the count are one atomic step, so concurrent requests never
    /// push an instance past its limit.
    pub fn try_start_limited(backend: Arc<Backend>, limit: Option<usize>) -> Option<Self> {
        let Some(limit) = limit else {
            return InFlight::try_start(backend);
        };
        backend
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                (count < limit).then_some(count + 1)
            })
            .ok()?;
        let guard = InFlight { backend };
        (!guard.backend.is_retired()).then_some(guard)
    }

    /// The backend it counts on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Only a drain waits, and only on a retired backend: the hot path
        // pays one load.
        if before == 1 && self.backend.is_retired() {
            self.backend.drained.notify_waiters();
        }
    }
}

/// Picks the backend with the fewest requests in flight. Ties are broken by
/// rotating the start with `turn`, so idle instances share load evenly.
/// `skip` excludes a backend that just failed.
pub fn pick(
    backends: &[Arc<Backend>],
    turn: usize,
    skip: Option<&Arc<Backend>>,
) -> Option<Arc<Backend>> {
    let count = backends.len();
    let mut best: Option<&Arc<Backend>> = None;
    for offset in 0..count {
        let candidate = &backends[(turn + offset) % count];
        if skip.is_some_and(|skipped| Arc::ptr_eq(skipped, candidate)) || candidate.is_retired() {
            continue;
        }
        if best.is_none_or(|current| candidate.in_flight() < current.in_flight()) {
            best = Some(candidate);
        }
    }
    best.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(count: usize) -> Vec<Arc<Backend>> {
        (0..count)
            .map(|index| {
                Arc::new(Backend::new(
                    ([127, 0, 0, 1], 9000 + index as u16).into(),
                    format!("web-{index}"),
                ))
            })
            .collect()
    }

    #[test]
    fn idle_backends_take_turns() {
        let all = backends(3);
        let picked: Vec<String> = (0..6)
            .map(|turn| pick(&all, turn, None).unwrap().instance.clone())
            .collect();
        assert_eq!(
            picked,
            ["web-0", "web-1", "web-2", "web-0", "web-1", "web-2"]
        );
    }

    #[test]
    fn the_hard_limit_is_never_passed() {
        let all = backends(1);
        let first = InFlight::try_start_limited(all[0].clone(), Some(2)).unwrap();
        let _second = InFlight::try_start_limited(all[0].clone(), Some(2)).unwrap();
        assert!(InFlight::try_start_limited(all[0].clone(), Some(2)).is_none());
        assert_eq!(all[0].in_flight(), 2);
        drop(first);
        assert!(InFlight::try_start_limited(all[0].clone(), Some(2)).is_some());
        all[0].retire();
        assert!(InFlight::try_start_limited(all[0].clone(), None).is_none());
    }

    #[test]
    fn the_least_busy_backend_wins() {
        let all = backends(3);
        let _busy0 = InFlight::start(all[0].clone());
        let _busy1a = InFlight::start(all[1].clone());
        let _busy1b = InFlight::start(all[1].clone());
        for turn in 0..3 {
            assert_eq!(pick(&all, turn, None).unwrap().instance, "web-2");
        }
        assert_eq!(pick(&all, 0, Some(&all[2])).unwrap().instance, "web-0");
    }

    #[test]
    fn retired_backends_take_no_new_requests() {
        let all = backends(2);
        all[0].retire();
        for turn in 0..4 {
            assert_eq!(pick(&all, turn, None).unwrap().instance, "web-1");
        }
        assert!(InFlight::try_start(all[0].clone()).is_none());
        assert_eq!(all[0].in_flight(), 0);
        all[1].retire();
        assert!(pick(&all, 0, None).is_none());
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let all = backends(1);
        let guard = InFlight::start(all[0].clone());
        assert_eq!(all[0].in_flight(), 1);
        drop(guard);
        assert_eq!(all[0].in_flight(), 0);
        assert!(pick(&[], 0, None).is_none());
    }
}
