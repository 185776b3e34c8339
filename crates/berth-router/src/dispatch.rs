//! Getting a routed request to an instance: at once when one has room,
//! else held for a cold start or a free slot, and tried once more when the
//! instance it was sent to turned out dead.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::balance::{InFlight, pick};
use crate::pages;
use crate::route::AppRoute;
use crate::router_state::RouterState;
use crate::upstream::{ConnectionCache, Forwarded, ProxyBody};

/// A request for `app` that is not a static file: forwarded when an
/// instance has room, else held.
pub(crate) async fn to_app(
    state: &RouterState,
    app: &str,
    host: &str,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    let table = state.table.borrow().clone();
    let Some(route) = table.apps.get(app) else {
        return pages::unknown_app(host);
    };
    if let Some(guard) = admit(&route.backends, turn, route.admission.hard_limit) {
        let forwarded = state
            .upstream
            .forward(app, route, request, guard, turn, cache)
            .await;
        drop(table);
        return after_forward(state, app, forwarded, cache, turn).await;
    }
    drop(table);
    hold(state, app, host, request, cache, turn).await
}

/// The answer of a request that is not held again: an unreachable
/// instance is the router's 502.
fn last_try(route: &AppRoute, app: &str, forwarded: Forwarded) -> Response<ProxyBody> {
    match forwarded {
        Forwarded::Answered(response) => response,
        Forwarded::Unreached { instance, why, .. } => {
            route.traffic.count_router_error();
            pages::bad_gateway(app, &instance, &why)
        }
    }
}

/// How long a request that found its instance dead waits for another.
const UNREACHED_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// The answer, or — when the instance could not be reached and nothing
/// was sent (it just died) — the request held until the reconciler's next
/// route table brings an instance (the dead one out, a replacement in),
/// then tried once more, as a cold start is held.
pub(crate) async fn after_forward(
    state: &RouterState,
    app: &str,
    forwarded: Forwarded,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    let (request, instance, why) = match forwarded {
        Forwarded::Answered(response) => return response,
        Forwarded::Unreached {
            request,
            instance,
            why,
        } => (request, instance, why),
    };
    let mut changes = state.table.clone();
    let hold = changes
        .borrow_and_update()
        .apps
        .get(app)
        .map_or(UNREACHED_HOLD, |route| {
            route.admission.hold_timeout.min(UNREACHED_HOLD)
        });
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            break;
        }
        let table = changes.borrow_and_update().clone();
        let Some(route) = table.apps.get(app) else {
            break;
        };
        let Some(guard) = admit(&route.backends, turn, route.admission.hard_limit) else {
            continue;
        };
        let forwarded = state
            .upstream
            .forward(app, route, request, guard, turn, cache)
            .await;
        return last_try(route, app, forwarded);
    }
    if let Some(route) = state.table.borrow().apps.get(app) {
        route.traffic.count_router_error();
    }
    pages::bad_gateway(app, &instance, &why)
}

/// The slow path: no instance can take the request now. It waits (for a
/// cold start or a free slot) or gets the router's answer.
pub(crate) async fn hold(
    state: &RouterState,
    app: &str,
    host: &str,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    let mut table_changes = state.table.clone();
    let started = std::time::Instant::now();
    let mut held: Option<Held> = None;
    loop {
        let table = table_changes.borrow_and_update().clone();
        let Some(route) = table.apps.get(app) else {
            return pages::unknown_app(host);
        };
        let limit = route.admission.hard_limit;
        if let Some(guard) = admit(&route.backends, turn, limit) {
            drop(held);
            let forwarded = state
                .upstream
                .forward(app, route, request, guard, turn, cache)
                .await;
            return last_try(route, app, forwarded);
        }
        let live = route.backends.iter().any(|backend| !backend.is_retired());
        let cold = !live;
        if cold {
            let Some(wake) = &route.admission.wake else {
                route.traffic.count_router_error();
                return pages::unavailable(app, route.unavailable_reason.as_deref());
            };
            if route.failing {
                route.traffic.count_router_error();
                return pages::start_failed(app, route.unavailable_reason.as_deref());
            }
            if held.as_ref().is_none_or(|held| !held.woke) {
                (wake.0)(app);
            }
        } else if limit.is_none() {
            // Every live instance was retired between the table and the pick.
            tokio::task::yield_now().await;
            continue;
        }
        if held.is_none() {
            let waiting = route.traffic.waiting.fetch_add(1, Ordering::Relaxed) + 1;
            held = Some(Held {
                traffic: route.traffic.clone(),
                woke: false,
            });
            if waiting > route.admission.queue_limit {
                route.traffic.count_router_error();
                return pages::busy(app, "too many requests are already waiting");
            }
        }
        let held = held.as_mut().expect("held above");
        held.woke |= cold;
        let left = route
            .admission
            .hold_timeout
            .saturating_sub(started.elapsed());
        if left.is_zero() {
            route.traffic.count_router_error();
            return if cold {
                pages::start_failed(
                    app,
                    Some(&format!(
                        "no instance started within {}s",
                        route.admission.hold_timeout.as_secs()
                    )),
                )
            } else {
                pages::busy(app, "every instance is at its hard limit")
            };
        }
        // Slots free up without a table change: poll for them briefly; a
        // start shows as a new table.
        let poll = if cold {
            std::time::Duration::from_millis(50)
        } else {
            std::time::Duration::from_millis(2)
        };
        tokio::select! {
            _ = table_changes.changed() => {}
            () = tokio::time::sleep(poll.min(left)) => {}
        }
    }
}

/// A request held at the router, counted in the app's `waiting` until it
/// is sent on or answered.
struct Held {
    traffic: Arc<crate::route::AppTraffic>,
    woke: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.traffic.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot on the least busy instance under the hard limit.
pub(crate) fn admit(
    backends: &[Arc<crate::balance::Backend>],
    turn: usize,
    limit: Option<usize>,
) -> Option<crate::balance::InFlight> {
    for attempt in 0..backends.len().max(1) {
        let backend = pick(backends, turn + attempt, None)?;
        if let Some(guard) = InFlight::try_start_limited(backend, limit) {
            return Some(guard);
        }
        if limit.is_none() {
            // Retired between the pick and the count; try the next one.
            continue;
        }
    }
    // Under a limit the least busy one was full; the others may not be.
    backends
        .iter()
        .filter(|backend| !backend.is_retired())
        .find_map(|backend| InFlight::try_start_limited(backend.clone(), limit))
}
