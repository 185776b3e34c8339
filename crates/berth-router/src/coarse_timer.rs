//! A timer for hyper's header-read deadline that costs next to nothing per
//! request.
//!
//! hyper arms the deadline each time it waits for a request head on a
//! keep-alive connection and drops it once the head is read: once per
//! request. With tokio's timer every arming is an entry put into and taken
//! out of the runtime's timer wheel, under its lock, and often a write to the
//! runtime's eventfd to wake its driver (about one request in four, measured
//! under load). A header-read deadline is tens of seconds and needs no better
//! than a second, so here a deadline is a slot in a list the thread keeps,
//! and one ticker task per list wakes what has expired, once a second, only
//! while something waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// How late a deadline may fire: the ticker's period.
const TICK: Duration = Duration::from_secs(1);

/// hyper's [`Timer`] with one-second resolution (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoarseTimer;

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            deadline,
            slot: None,
        })
    }
}

/// The deadlines one thread waits on.
#[derive(Default)]
struct Waiting {
    sleepers: slab::Slab<(Instant, Waker)>,
    /// A ticker task runs for this list.
    ticking: bool,
}

type Shared = Arc<Mutex<Waiting>>;

fn lock(waiting: &Shared) -> MutexGuard<'_, Waiting> {
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    /// This thread's list: a router runtime keeps to its thread, so the
    /// lock is never contended there.
    static WAITING: Shared = Shared::default();
}

/// A deadline waiting in a thread's list once first polled.
struct CoarseSleep {
    deadline: Instant,
    /// The list it waits in and its key there.
    slot: Option<(Shared, usize)>,
}

impl Sleep for CoarseSleep {}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.leave();
            return Poll::Ready(());
        }
        match &self.slot {
            Some((waiting, key)) => {
                let mut waiting = lock(waiting);
                if let Some((_, waker)) = waiting.sleepers.get_mut(*key)
                    && !waker.will_wake(cx.waker())
                {
                    waker.clone_from(cx.waker());
                }
            }
            None => {
                // (A fresh list if the thread is being torn down.)
                let waiting = WAITING.try_with(Arc::clone).unwrap_or_default();
                let (key, start_ticker) = {
                    let mut list = lock(&waiting);
                    let key = list.sleepers.insert((self.deadline, cx.waker().clone()));
                    let start_ticker = !list.ticking;
                    list.ticking = true;
                    (key, start_ticker)
                };
                if start_ticker {
                    tokio::spawn(tick(waiting.clone()));
                }
                self.slot = Some((waiting, key));
            }
        }
        Poll::Pending
    }
}

impl CoarseSleep {
    fn leave(&mut self) {
        if let Some((waiting, key)) = self.slot.take() {
            lock(&waiting).sleepers.try_remove(key);
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Clears `ticking` when its runtime drops the ticker mid-way, so the next
/// deadline starts another. (A ticker that ends by itself clears it under
/// the same lock that saw the list empty, and disarms this: a deadline
/// added just after then starts the next ticker rather than trusting one
/// that is leaving.)
struct TickerRunning(Option<Shared>);

impl Drop for TickerRunning {
    fn drop(&mut self) {
        if let Some(waiting) = &self.0 {
            lock(waiting).ticking = false;
        }
    }
}

/// Wakes the expired deadlines of `waiting` every [`TICK`] until none
/// wait.
async fn tick(waiting: Shared) {
    let mut running = TickerRunning(Some(waiting.clone()));
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let expired: Vec<Waker> = {
            let mut list = lock(&waiting);
            if list.sleepers.is_empty() {
                list.ticking = false;
                running.0 = None;
                return;
            }
            list.sleepers
                .iter()
                .filter(|(_, (deadline, _))| *deadline <= now)
                .map(|(_, (_, waker))| waker.clone())
                .collect()
        };
        for waker in expired {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(timer: &CoarseTimer, after: Duration) -> Pin<Box<dyn Sleep>> {
        timer.sleep(after)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deadline_fires_within_a_tick_after_it_passes() {
        let timer = CoarseTimer;
        let started = Instant::now();
        pending(&timer, Duration::from_millis(300)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        // A tick late at most, with room for a busy machine.
        assert!(waited < Duration::from_millis(300) + TICK * 2, "{waited:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_deadline_leaves_the_list_and_the_ticker_stops() {
        let timer = CoarseTimer;
        let mut sleep = pending(&timer, Duration::from_secs(30));
        let waker = Waker::noop().clone();
        assert!(
            sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        WAITING.with(|waiting| assert_eq!(lock(waiting).sleepers.len(), 1));
        drop(sleep);
        WAITING.with(|waiting| assert!(lock(waiting).sleepers.is_empty()));
        // The ticker sees the empty list at its next tick and ends.
        tokio::time::sleep(TICK * 2 + Duration::from_millis(100)).await;
        WAITING.with(|waiting| assert!(!lock(waiting).ticking));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_passed_deadline_is_ready_at_once() {
        let timer = CoarseTimer;
        let sleep = timer.sleep_until(Instant::now() - Duration::from_millis(1));
        tokio::time::timeout(Duration::from_millis(100), sleep)
            .await
            .expect("ready without a tick");
    }
}
