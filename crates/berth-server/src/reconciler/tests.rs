//! The reconciler on a fake driver and a paused clock: rolling deploys,
//! failed starts, crash loops, drains and wakes, in milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_runtime::fake::Script;
use berth_spec::AppSpec;
use tokio::time::Instant;

use crate::testing::Core;

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

#[tokio::test(start_paused = true)]
async fn a_rolling_deploy_keeps_serving_and_stops_the_old_release_after_the_new_is_up() {
    let core = Core::start();
    let spec = AppSpec::default();
    let v1 = core.release("shop", &spec);
    core.scale("shop", 2);
    core.until("v1 runs two", secs(5), |core| core.running("shop", v1) == 2)
        .await;
    core.store.finish_release("shop", v1).unwrap();

    // Count the backends in every route table published from now on.
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let mut routes = core.routes.clone();
    let seen = fewest.clone();
    tokio::spawn(async move {
        while routes.changed().await.is_ok() {
            let backends = routes
                .borrow_and_update()
                .apps
                .get("shop")
                .map_or(0, |route| route.backends.len());
            seen.fetch_min(backends, Ordering::SeqCst);
        }
    });
    // The new release takes 2 s to answer its health check.
    let warm_up = secs(2);
    core.driver.script_release(
        "shop",
        2,
        Script {
            ready_after: warm_up,
            ..Script::default()
        },
    );
    let v2 = core.release("shop", &spec);
    core.until("v2 runs two and v1 none", secs(10), |core| {
        core.running("shop", v2) == 2
            && core
                .driver
                .running("shop")
                .iter()
                .all(|instance| instance.env("BERTH_RELEASE") == Some("2"))
    })
    .await;

    let started = core.driver.started();
    let first_new_up = started
        .iter()
        .filter(|instance| instance.env("BERTH_RELEASE") == Some("2"))
        .map(|instance| instance.at + warm_up)
        .min()
        .unwrap();
    for old in started
        .iter()
        .filter(|instance| instance.env("BERTH_RELEASE") == Some("1"))
    {
        let stopped = old.terminated_at.expect("the old instance was stopped");
        assert!(
            stopped >= first_new_up,
            "{} stopped before any new instance was up",
            old.id
        );
    }
    assert!(
        fewest.load(Ordering::SeqCst) >= 2,
        "the route table never fell below the wanted two instances"
    );
    assert_eq!(core.backends("shop").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_release_that_cannot_start_leaves_the_old_one_serving() {
    let core = Core::start();
    let spec = AppSpec::default();
    let v1 = core.release("shop", &spec);
    core.until("v1 runs", secs(5), |core| core.running("shop", v1) == 1)
        .await;
    core.store.finish_release("shop", v1).unwrap();
    core.driver
        .script_release("shop", 2, Script::cannot_start("exec format error"));
    let mut failures = core.handle.start_failures();
    let v2 = core.release("shop", &spec);

    let failure = tokio::time::timeout(secs(5), failures.recv())
        .await
        .expect("a start failure")
        .unwrap();
    assert_eq!((failure.app.as_str(), failure.release), ("shop", v2));
    assert!(failure.reason.contains("exec format error"), "{failure:?}");
    assert!(
        failure
            .reason
            .contains("failed: the app; retrying will not help"),
        "{failure:?}"
    );
    // A while later the old instance still serves, alone.
    tokio::time::sleep(secs(35)).await;
    let running = core.driver.running("shop");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].env("BERTH_RELEASE"), Some("1"));
    assert_eq!(core.backends("shop").len(), 1);
    assert_eq!(core.backends("shop")[0].instance, running[0].id);
    // A start that cannot work is tried again only at the longest back-off.
    let refused = core.driver.refused();
    assert!(refused.len() >= 2, "{refused:?}");
    assert!(refused[1] - refused[0] >= secs(30), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn a_start_the_host_was_too_busy_for_is_retried_soon() {
    let core = Core::start();
    core.driver
        .script_release("shop", 1, Script::host_short_of(11 /* EAGAIN */));
    let mut failures = core.handle.start_failures();
    core.release("shop", &AppSpec::default());
    let failure = tokio::time::timeout(secs(5), failures.recv())
        .await
        .expect("a start failure")
        .unwrap();
    assert!(
        failure
            .reason
            .contains("failed: the host; a later try may work"),
        "{failure:?}"
    );
    core.until("a second try", secs(5), |core| {
        core.driver.refused().len() >= 2
    })
    .await;
    let refused = core.driver.refused();
    assert!(refused[1] - refused[0] < secs(1), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn a_release_that_never_gets_healthy_fails_after_its_wait_timeout() {
    let core = Core::start();
    let mut spec = AppSpec::default();
    spec.deploy.wait_timeout = secs(20);
    let v1 = core.release("shop", &spec);
    core.until("v1 runs", secs(5), |core| core.running("shop", v1) == 1)
        .await;
    core.store.finish_release("shop", v1).unwrap();
    core.driver
        .script_release("shop", 2, Script::never_healthy());
    let mut failures = core.handle.start_failures();
    let began = Instant::now();
    core.release("shop", &spec);

    let failure = tokio::time::timeout(secs(60), failures.recv())
        .await
        .expect("a start failure")
        .unwrap();
    assert!(
        failure.reason.contains("did not pass its health check"),
        "{failure:?}"
    );
    let waited = began.elapsed();
    assert!(
        waited >= secs(20) && waited < secs(21),
        "failed after {waited:?}"
    );
    assert_eq!(core.backends("shop").len(), 1, "v1 still serves");
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_restarts_with_doubling_back_off() {
    let core = Core::start();
    core.driver
        .script(|_| Some(Script::exits(1, Duration::from_millis(100))));
    core.release("flaky", &AppSpec::default());
    core.until("six starts", secs(60), |core| {
        core.driver.started().len() >= 6
    })
    .await;

    let starts: Vec<Instant> = core
        .driver
        .started()
        .iter()
        .map(|started| started.at)
        .collect();
    for (failures, pair) in starts.windows(2).enumerate() {
        // Each gap is its run (100 ms) and the back-off: 250 ms, doubling.
        let back_off = Duration::from_millis(250) * 2u32.pow(failures as u32);
        let expected = Duration::from_millis(100) + back_off;
        let gap = pair[1] - pair[0];
        assert!(
            gap >= expected && gap < expected + Duration::from_millis(20),
            "restart {} came after {gap:?}, not {expected:?}",
            failures + 1
        );
    }
    tokio::time::sleep(secs(1)).await;
    let events = core.store.events("flaky", 0, 100).unwrap();
    assert!(
        events
            .iter()
            .any(|event| event.message.contains("exited unexpectedly")
                && event.message.contains("exit code 1")),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopping_instance_drains_its_requests_and_is_stopped_when_the_last_ends() {
    let core = Core::start();
    let v1 = core.release("api", &AppSpec::default());
    core.until("one backend", secs(5), |core| {
        core.running("api", v1) == 1 && core.backends("api").len() == 1
    })
    .await;
    let backend = core.backends("api")[0].clone();
    let request = berth_router::InFlight::try_start(backend).expect("a request in flight");

    core.scale("api", 0);
    core.until("out of the route table", secs(5), |core| {
        core.backends("api").is_empty()
    })
    .await;
    tokio::time::sleep(secs(10)).await;
    assert!(
        core.driver.started()[0].terminated_at.is_none(),
        "stopped while a request was in flight"
    );
    // Off any 10 ms tick a polling drain would look on.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let last_request_ended = Instant::now();
    drop(request);
    core.until("stopped", secs(1), |core| {
        core.driver.started()[0].terminated_at.is_some()
    })
    .await;
    let stopped = core.driver.started()[0].terminated_at.unwrap();
    assert_eq!(
        stopped, last_request_ended,
        "the stop follows the last request at once, not a poll later"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_gives_up_after_thirty_seconds() {
    let core = Core::start();
    let v1 = core.release("api", &AppSpec::default());
    core.until("one backend", secs(5), |core| {
        core.running("api", v1) == 1 && core.backends("api").len() == 1
    })
    .await;
    let _stuck = berth_router::InFlight::try_start(core.backends("api")[0].clone());
    let scaled = Instant::now();
    core.scale("api", 0);
    core.until("stopped", secs(60), |core| {
        core.driver.started()[0].terminated_at.is_some()
    })
    .await;
    let waited = core.driver.started()[0].terminated_at.unwrap() - scaled;
    assert!(waited >= secs(30) && waited < secs(31), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_request_at_zero_starts_one_instance_at_once() {
    let mut core = Core::start();
    let mut spec = AppSpec::default();
    spec.http.scaling.auto_stop = true;
    spec.http.scaling.auto_start = true;
    spec.http.scaling.min = 0;
    let v1 = core.release("idle", &spec);
    core.store.finish_release("idle", v1).unwrap();
    core.scale("idle", 0);
    core.until("a route that wakes", secs(5), |core| {
        core.routes
            .borrow()
            .apps
            .get("idle")
            .is_some_and(|route| route.admission.wake.is_some())
    })
    .await;
    tokio::time::sleep(secs(5)).await;
    assert!(core.driver.started().is_empty(), "nothing runs at zero");

    let wake = core.routes.borrow().apps["idle"].admission.wake.clone();
    (wake.unwrap().0)("idle");
    core.until("one instance", secs(2), |core| {
        core.running("idle", v1) == 1
    })
    .await;
    assert_eq!(core.driver.started().len(), 1);
    let woken = core.woken.recv().await.unwrap();
    assert_eq!((woken.app.as_str(), woken.group.as_str()), ("idle", "web"));
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_exits_on_its_own_is_replaced() {
    let core = Core::start();
    let v1 = core.release("web", &AppSpec::default());
    core.until("one running", secs(5), |core| core.running("web", v1) == 1)
        .await;
    let first = core.driver.started()[0].id.clone();
    tokio::time::sleep(secs(3)).await;
    core.driver
        .crash(&first, berth_runtime::ExitCause::Signal(11));
    core.until("a new one running", secs(5), |core| {
        core.driver.running("web").len() == 1 && core.driver.running("web")[0].id != first
    })
    .await;
    core.until("healthy again", secs(5), |core| {
        core.running("web", v1) == 1
    })
    .await;
    // The meter learns how long it ran, for a while.
    let ended = core.handle.snapshot().ended.clone();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].id, first);
    assert!(ended[0].ran >= secs(3), "{ended:?}");
    tokio::time::sleep(super::ENDED_KEPT + secs(1)).await;
    core.handle.nudge();
    core.until("forgotten", secs(5), |core| {
        core.handle.snapshot().ended.is_empty()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_release_whose_stored_spec_is_unreadable_runs_nothing_and_says_so() {
    let core = Core::start();
    let v1 = core.release("shop", &AppSpec::default());
    core.until("v1 runs", secs(5), |core| core.running("shop", v1) == 1)
        .await;
    core.store.finish_release("shop", v1).unwrap();
    let v1_release = core.store.release("shop", v1).unwrap();
    let damaged = core
        .store
        .begin_release(
            "shop",
            berth_store::NewRelease {
                cause: "test".into(),
                slug: crate::testing::SLUG.into(),
                spec_json: "{\"http\": {\"internal_port\": \"eighty\"}}".into(),
                processes: v1_release.processes.clone(),
                env: Default::default(),
                secrets: Default::default(),
            },
        )
        .unwrap();
    core.handle.nudge();
    tokio::time::sleep(secs(10)).await;

    assert_eq!(core.driver.started().len(), 1, "nothing of v2 started");
    assert!(core.driver.started()[0].is_running(), "v1 keeps running");
    let events = core.store.events("shop", 0, 100).unwrap();
    let said = events
        .iter()
        .find(|event| event.kind == berth_store::EventKind::ReleaseUnreadable)
        .expect("an event says why");
    assert!(
        said.message.contains(&format!("shop v{}", damaged.version)),
        "{}",
        said.message
    );
    assert_eq!(
        events
            .iter()
            .filter(|event| event.kind == berth_store::EventKind::ReleaseUnreadable)
            .count(),
        1,
        "said once, not once per pass"
    );
}

#[tokio::test(start_paused = true)]
async fn a_one_off_is_journaled_while_it_runs_and_stopped_with_the_server() {
    let mut core = Core::start();
    let v1 = core.release("shop", &AppSpec::default());
    core.until("v1 runs", secs(5), |core| core.running("shop", v1) == 1)
        .await;
    let release = core.store.release("shop", v1).unwrap();
    let spec = core
        .launcher
        .instance_spec(
            &release,
            &AppSpec::default(),
            "release",
            "release-v1",
            "shop migrate",
            &[],
        )
        .unwrap();
    let output: berth_runtime::OutputSink = Arc::new(|_, _| {});
    let running = core.handle.run_once(spec, output).await.unwrap();
    core.until("journaled", secs(5), |core| {
        core.store
            .journaled_instances()
            .unwrap()
            .iter()
            .any(|entry| entry.id == "release-v1" && entry.pid == running.pid)
    })
    .await;

    core.shut_down().await;
    assert!(running.has_exited(), "the server's stop stopped it");
    let one_off = core
        .driver
        .started()
        .into_iter()
        .find(|started| started.id == "release-v1")
        .unwrap();
    assert!(one_off.terminated_at.is_some());
    assert!(core.store.journaled_instances().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_instance_knows_its_apps_public_url() {
    let core = Core::start();
    let mut spec = AppSpec::default();
    spec.env
        .insert("APP_URL".into(), "https://shop.example".into());
    let v1 = core.release("shop", &spec);
    core.until("running", secs(5), |core| core.running("shop", v1) == 1)
        .await;
    let instance = &core.driver.started()[0];
    assert_eq!(instance.env("BERTH_URL"), Some("http://shop.localhost"));
    assert_eq!(
        instance.env("RENDER_EXTERNAL_URL"),
        Some("http://shop.localhost")
    );
    assert_eq!(
        instance.env("APP_URL"),
        Some("https://shop.example"),
        "the app's own value wins"
    );
}
