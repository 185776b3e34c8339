//! Linked network namespaces made ahead of need, so a cold start does not
//! wait for one.

use std::sync::Arc;

use super::netns::NetNs;

/// start that took one is under way, and both want the CPU).
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// How many linked namespaces the pool keeps ready.
const SPARE_NAMESPACES: usize = 2;

/// Linked namespaces made ahead of need by a thread of their own (one takes
/// about half a millisecond: a veth pair, two addresses, a route).
pub(super) struct NamespacePool {
    ready: std::sync::Mutex<Vec<Arc<NetNs>>>,
    wanted: std::sync::Condvar,
}

impl NamespacePool {
    pub(super) fn start() -> Arc<NamespacePool> {
        let pool = Arc::new(NamespacePool {
            ready: std::sync::Mutex::new(Vec::new()),
            wanted: std::sync::Condvar::new(),
        });
        let filler = Arc::downgrade(&pool);
        let _ = std::thread::Builder::new()
            .name("berth-netns-pool".into())
            .spawn(move || {
                loop {
                    let Some(pool) = filler.upgrade() else { return };
                    let mut ready = pool.ready.lock().unwrap_or_else(|err| err.into_inner());
                    while ready.len() >= SPARE_NAMESPACES {
                        let (guard, _) = pool
                            .wanted
                            .wait_timeout(ready, std::time::Duration::from_secs(5))
                            .unwrap_or_else(|err| err.into_inner());
                        ready = guard;
                        if Arc::strong_count(&pool) == 1 {
                            return; // The server is gone.
                        }
                    }
                    let some_left = !ready.is_empty();
                    drop(ready);
                    if some_left {
                        // A start just took one: let it have the CPU first.
                        std::thread::sleep(REFILL_DELAY);
                    }
                    match NetNs::create_linked() {
                        Ok(netns) => pool
                            .ready
                            .lock()
                            .unwrap_or_else(|err| err.into_inner())
                            .push(netns),
                        Err(err) => {
                            tracing::warn!("cannot make a network namespace ahead: {err}");
                            drop(pool);
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                }
            });
        pool
    }

    /// A ready namespace, or a new one made now when none is.
    pub(super) fn take(&self) -> std::io::Result<Arc<NetNs>> {
        let taken = self
            .ready
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .pop();
        self.wanted.notify_one();
        match taken {
            Some(netns) => Ok(netns),
            None => NetNs::create_linked(),
        }
    }
}
