//! The scheduler and overlap policies on a fake driver and a paused clock;
//! schedule times are given, not read from the wall clock.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::Trigger;
use berth_runtime::fake::Script;
use berth_spec::{AppSpec, JobSpec, OverlapPolicy};
use berth_store::EventKind;
use chrono::{DateTime, Timelike, Utc};

use super::JobRunner;
use crate::testing::Core;

fn job(schedule: &str, overlap: OverlapPolicy) -> JobSpec {
    JobSpec {
        name: "report".into(),
        command: "shop report".into(),
        schedule: Some(schedule.into()),
        time_zone: None,
        tasks: 1,
        parallelism: 1,
        max_retries: 0,
        timeout: Duration::from_secs(3600),
        env: Default::default(),
        overlap,
    }
}

/// `shop` with `job` in its active release, and a runner over it.
fn with_job(job: JobSpec) -> (Core, Arc<JobRunner>) {
    let core = Core::start();
    let spec = AppSpec {
        jobs: vec![job],
        ..AppSpec::default()
    };
    let version = core.release("shop", &spec);
    core.store.finish_release("shop", version).unwrap();
    let runner = JobRunner::new(
        core.store.clone(),
        core.logs.clone(),
        core.handle.clone(),
        crate::launch::Launcher::new(core.slugs.clone(), core.resources.clone()),
    )
    .unwrap();
    (core, runner)
}

/// The executions of `report`, oldest first.
fn executions(core: &Core) -> Vec<berth_store::ExecutionRow> {
    let mut rows = core.store.executions("shop", Some("report"), 100).unwrap();
    rows.reverse();
    rows
}

/// The job's task instances, oldest first.
fn tasks(core: &Core) -> Vec<berth_runtime::fake::Started> {
    core.driver
        .started()
        .into_iter()
        .filter(|started| started.command == "shop report")
        .collect()
}

/// The next whole minute after `at`.
fn next_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = at
        .with_nanosecond(0)
        .and_then(|at| at.with_second(0))
        .unwrap();
    floor + chrono::Duration::minutes(1)
}

#[tokio::test(start_paused = true)]
async fn a_schedule_fires_once_per_slot_and_sleeps_until_the_next() {
    let (core, runner) = with_job(job("* * * * *", OverlapPolicy::Skip));
    core.driver.script(|instance| {
        (instance.command == "shop report").then(|| Script::exits(0, Duration::from_secs(1)))
    });
    let now = Utc::now();
    let slot = next_minute(now);

    // Before its first slot: nothing, and a wake-up no later than the slot.
    let wait = runner.fire_due(now);
    assert!(executions(&core).is_empty());
    assert!(wait <= (slot - now).to_std().unwrap(), "{wait:?}");

    // At the slot: one run, however often the scheduler looks.
    runner.fire_due(slot + chrono::Duration::milliseconds(10));
    runner.fire_due(slot + chrono::Duration::milliseconds(500));
    core.until("one run", Duration::from_secs(5), |core| {
        executions(core).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let runs = executions(&core);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, Trigger::Schedule);
    assert_eq!(runs[0].status, "succeeded");

    // The next slot runs again.
    runner.fire_due(slot + chrono::Duration::seconds(60));
    core.until("a second run", Duration::from_secs(5), |core| {
        executions(core).len() == 2
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn slots_missed_while_the_server_was_down_run_once_as_a_catch_up() {
    let (core, runner) = with_job(job("0 * * * *", OverlapPolicy::Skip));
    let now = Utc::now();
    // Last fired five hours ago: four or five hourly slots were missed.
    let last = (now - chrono::Duration::hours(5)).to_rfc3339();
    core.store
        .set_schedule_fired("shop", "report", &last)
        .unwrap();

    runner.fire_due(now);
    runner.fire_due(now + chrono::Duration::seconds(1));
    core.until("one run", Duration::from_secs(5), |core| {
        executions(core).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let runs = executions(&core);
    assert_eq!(runs.len(), 1, "one catch-up, not one per missed slot");
    assert_eq!(runs[0].trigger, Trigger::CatchUp);
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_leaves_the_running_execution_alone() {
    let (core, runner) = with_job(job("* * * * *", OverlapPolicy::Skip));
    let spec = job("* * * * *", OverlapPolicy::Skip);
    runner.fire("shop", &spec, Trigger::Schedule);
    core.until("it runs", Duration::from_secs(5), |core| {
        tasks(core).len() == 1
    })
    .await;
    runner.fire("shop", &spec, Trigger::Schedule);
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(executions(&core).len(), 1);
    assert!(tasks(&core)[0].is_running());
    let events = core.store.events("shop", 0, 100).unwrap();
    assert!(
        events
            .iter()
            .any(|event| event.kind == EventKind::JobSkipped),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_replace_stops_the_running_execution_before_the_next_starts() {
    let (core, runner) = with_job(job("* * * * *", OverlapPolicy::Replace));
    let spec = job("* * * * *", OverlapPolicy::Replace);
    runner.fire("shop", &spec, Trigger::Schedule);
    core.until("it runs", Duration::from_secs(5), |core| {
        tasks(core).len() == 1
    })
    .await;
    runner.fire("shop", &spec, Trigger::Schedule);
    core.until("the second runs", Duration::from_secs(60), |core| {
        tasks(core).len() == 2
    })
    .await;

    let tasks = tasks(&core);
    let first_ended = tasks[0].ended_at.expect("the first was stopped");
    assert!(tasks[1].at >= first_ended, "the two overlapped");
    assert!(tasks[1].is_running());
    core.until(
        "the first is recorded as ended",
        Duration::from_secs(5),
        |core| executions(core)[0].status != "running",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_runs_both() {
    let (core, runner) = with_job(job("* * * * *", OverlapPolicy::Allow));
    let spec = job("* * * * *", OverlapPolicy::Allow);
    runner.fire("shop", &spec, Trigger::Schedule);
    runner.fire("shop", &spec, Trigger::Schedule);
    core.until("both run", Duration::from_secs(5), |core| {
        tasks(core).iter().filter(|task| task.is_running()).count() == 2
    })
    .await;
    assert_eq!(executions(&core).len(), 2);
}
