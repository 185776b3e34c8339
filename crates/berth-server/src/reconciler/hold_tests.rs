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
    let state = BudgetState {
        period: "2026-12".into(),
        hold: action.map(|action| BudgetHold {
            period: "2026-12".into(),
            actions: [("*".to_string(), action)].into(),
            since: 1,
            reason: "requests 3 (made 4)".into(),
            throttle_rps: 2,
            server_wide: false,
        }),
        ..BudgetState::default()
    };
    core.store.save_budget_state(app, &state, &[]).unwrap();
    core.handle.nudge();
}

#[tokio::test(start_paused = true)]
async fn scale_to_zero_stops_and_pages_and_lifting_restores_the_scale() {
    let core = Core::start();
    let v1 = core.release("shop", &AppSpec::default());
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
