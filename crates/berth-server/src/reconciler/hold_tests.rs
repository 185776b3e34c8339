//! A budget's hold, applied by the reconciler on a fake driver: stopped
//! groups stay stopped and get the budget page, a capped app still wakes
//! from zero, a throttled one gets the rate limit, and lifting the hold
//! restores the stored scale.

use std::time::Duration;

use berth_proto::{BudgetAction, BudgetHold};
use berth_spec::AppSpec;
use berth_store::BudgetState;

use crate::testing::Core;

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn hold(core: &Core, app: &str, action: Option<BudgetAction>) {
    let month = berth_cost::CalendarMonth::of(berth_store::now_unix()).name;
    let state = BudgetState {
        period: month.clone(),
        hold: action.map(|action| BudgetHold {
            period: month,
            actions: [("*".to_string(), action)].into(),
            since: 1,
            reason: "requests 3 (made 4)".into(),
            throttle_rps: 2,
            server_wide: false,
            both: false,
            throttled: false,
        }),
        ..BudgetState::default()
    };
    core.store.save_budget_state(app, &state, &[]).unwrap();
    core.handle.nudge();
}

#[tokio::test(start_paused = true)]
async fn scale_to_zero_stops_and_pages_and_lifting_restores_the_scale() {
    let core = Core::start();
    // Scaling to zero on its own too, so a request could wake it.
    let mut spec = AppSpec::default();
    spec.http.scaling.auto_stop = true;
    spec.http.scaling.auto_start = true;
    spec.http.scaling.min = 0;
    let v1 = core.release("shop", &spec);
    core.store.finish_release("shop", v1).unwrap();
    core.scale("shop", 2);
    core.until("two running", secs(10), |core| {
        core.running("shop", v1) == 2
    })
    .await;
    hold(&core, "shop", Some(BudgetAction::ScaleToZero));
    core.until("none running", secs(30), |core| {
        core.driver.running("shop").is_empty()
    })
    .await;
    let route = core.routes.borrow().apps["shop"].clone();
    assert!(route.admission.wake.is_none(), "a request starts nothing");
    let reason = route.unavailable_reason.unwrap();
    assert!(
        reason.contains("budget was reached") && reason.contains("berth budget resume --app shop"),
        "{reason}"
    );
    hold(&core, "shop", None);
    core.until("two again", secs(10), |core| core.running("shop", v1) == 2)
        .await;
}

#[tokio::test(start_paused = true)]
async fn cap_runs_one_and_still_wakes_from_zero_and_throttle_adds_a_limit() {
    let core = Core::start();
    let mut spec = AppSpec::default();
    spec.http.scaling.auto_stop = true;
    spec.http.scaling.auto_start = true;
    spec.http.scaling.min = 0;
    let v1 = core.release("idle", &spec);
    core.store.finish_release("idle", v1).unwrap();
    core.scale("idle", 3);
    core.until("three running", secs(10), |core| {
        core.running("idle", v1) == 3
    })
    .await;
    hold(&core, "idle", Some(BudgetAction::Cap));
    core.until("one running", secs(30), |core| {
        core.driver.running("idle").len() == 1
    })
    .await;
    // At zero, a capped app still starts for a request.
    core.scale("idle", 0);
    core.until("none running", secs(30), |core| {
        core.driver.running("idle").is_empty()
    })
    .await;
    let wake = core.routes.borrow().apps["idle"].admission.wake.clone();
    (wake.expect("a capped app wakes").0)("idle");
    core.until("woken", secs(5), |core| core.running("idle", v1) == 1)
        .await;

    hold(&core, "idle", Some(BudgetAction::Throttle));
    core.until("a rate limit", secs(5), |core| {
        core.routes.borrow().apps["idle"]
            .edge
            .limits
            .iter()
            .any(|limit| limit.per_second == 2.0)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_budget_on_the_worker_only_leaves_the_web_group_serving() {
    let core = Core::start();
    let spec = AppSpec {
        processes: [
            ("web".to_string(), "hello".to_string()),
            ("worker".to_string(), "hello work".to_string()),
        ]
        .into(),
        ..AppSpec::default()
    };
    let v1 = core.release("shop", &spec);
    core.until("web and worker", secs(10), |core| {
        core.running("shop", v1) == 2
    })
    .await;
    let state = BudgetState {
        period: berth_cost::CalendarMonth::of(berth_store::now_unix()).name,
        hold: Some(BudgetHold {
            period: berth_cost::CalendarMonth::of(berth_store::now_unix()).name,
            actions: [
                ("*".to_string(), BudgetAction::Alert),
                ("worker".to_string(), BudgetAction::Suspend),
            ]
            .into(),
            since: 1,
            reason: "r".into(),
            throttle_rps: 1,
            server_wide: false,
            both: false,
            throttled: false,
        }),
        ..BudgetState::default()
    };
    core.store.save_budget_state("shop", &state, &[]).unwrap();
    core.handle.nudge();
    core.until("the worker stopped", secs(30), |core| {
        core.driver.running("shop").len() == 1
    })
    .await;
    let route = core.routes.borrow().apps["shop"].clone();
    assert_eq!(route.backends.len(), 1, "web still serves");
    assert!(route.unavailable_reason.is_none());
}
