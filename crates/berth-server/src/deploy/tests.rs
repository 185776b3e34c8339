//! Deploys on a fake driver and builder, on a paused clock: whatever fails
//! (the build, the release command, the new release's start), the release
//! that was serving keeps serving, and the failure says why.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::ReleaseStatus;
use berth_runtime::fake::Script;
use berth_spec::AppSpec;

use super::ConfigChange;
use super::failure::Progress;
use crate::testing::{Core, FakeBuilder};

/// `shop` v1 serving one instance.
async fn serving(spec: &AppSpec) -> Core {
    let core = Core::start();
    let v1 = core.release("shop", spec);
    core.until("v1 runs", Duration::from_secs(5), |core| {
        core.running("shop", v1) == 1
    })
    .await;
    core.store.finish_release("shop", v1).unwrap();
    core
}

fn progress() -> Progress {
    let (progress, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while lines.recv().await.is_some() {} });
    progress
}

fn env_change() -> ConfigChange {
    ConfigChange {
        env_set: [("GREETING".to_string(), "hello".to_string())].into(),
        ..ConfigChange::default()
    }
}

/// v1 is the active release, and its one instance still runs, never asked
/// to stop.
fn v1_still_serves(core: &Core) {
    let active = core.store.active_release("shop").unwrap().unwrap();
    assert_eq!(active.version, 1);
    let v1: Vec<_> = core
        .driver
        .started()
        .into_iter()
        .filter(|started| started.env("BERTH_RELEASE") == Some("1"))
        .collect();
    assert_eq!(v1.len(), 1);
    assert!(v1[0].is_running() && v1[0].terminated_at.is_none());
    assert_eq!(core.backends("shop").len(), 1);
    assert_eq!(core.backends("shop")[0].instance, v1[0].id);
}

#[tokio::test(start_paused = true)]
async fn a_failing_build_makes_no_release() {
    let core = serving(&AppSpec::default()).await;
    let builder = Arc::new(FakeBuilder::default());
    *builder.failure.lock().unwrap() = Some(berth_build::BuildError::CargoFailed {
        status: "exit status: 101".into(),
        message: "error[E0425]: cannot find value `x` in this scope".into(),
    });
    let source = tempfile::tempdir().unwrap();
    std::fs::write(
        source.path().join("Cargo.toml"),
        "[package]\nname = \"shop\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let mut upload = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut upload, &berth_build::pack(source.path()).unwrap()).unwrap();

    let failure = core
        .deployer(builder)
        .deploy_upload("shop".into(), upload, None, progress())
        .await
        .unwrap_err();
    assert!(failure.message.contains("E0425"), "{}", failure.message);
    assert_eq!(failure.release, None);
    assert_eq!(core.store.releases("shop").unwrap().len(), 1);
    v1_still_serves(&core);
}

#[tokio::test(start_paused = true)]
async fn a_failing_release_command_leaves_the_old_release_serving() {
    let mut spec = AppSpec::default();
    spec.deploy.release_command = Some("shop migrate".into());
    let core = serving(&spec).await;
    core.driver.script(|instance| {
        (instance.command == "shop migrate").then(|| Script {
            lines: vec!["migration 0042 failed: column `email` already exists".into()],
            ..Script::exits(3, Duration::from_millis(200))
        })
    });

    let failure = core
        .deployer(Arc::default())
        .reconfigure("shop".into(), env_change(), progress())
        .await
        .unwrap_err();
    let message = &failure.message;
    assert!(
        message.contains("the release command `shop migrate` failed (exit code 3)"),
        "{message}"
    );
    assert!(message.contains("v1 keeps serving"), "{message}");
    assert!(
        message.contains("migration 0042 failed: column `email` already exists"),
        "the command's last output is shown: {message}"
    );
    let v2 = core.store.release("shop", 2).unwrap();
    assert_eq!(v2.status, ReleaseStatus::Failed);
    // The release command ran; no instance of v2 did.
    assert!(
        core.driver
            .started()
            .iter()
            .all(|started| started.env("BERTH_RELEASE") == Some("1")
                || started.command == "shop migrate")
    );
    v1_still_serves(&core);
}

#[tokio::test(start_paused = true)]
async fn a_release_that_crashes_on_start_fails_and_the_old_keeps_serving() {
    let core = serving(&AppSpec::default()).await;
    // It panics before it listens.
    core.driver.script_release(
        "shop",
        2,
        Script {
            lines: vec!["thread 'main' panicked at src/main.rs:9: GREETING is not a number".into()],
            healthy: false,
            ..Script::exits(101, Duration::from_millis(50))
        },
    );

    let failure = core
        .deployer(Arc::default())
        .reconfigure("shop".into(), env_change(), progress())
        .await
        .unwrap_err();
    let message = &failure.message;
    assert_eq!(failure.release, Some(2));
    assert!(message.contains("exit code 101"), "{message}");
    assert!(message.contains("v1 keeps serving"), "{message}");
    assert!(
        message.contains("GREETING is not a number"),
        "the instance's last output is shown: {message}"
    );
    // Once the failed instance is gone, only v1 runs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(core.driver.running("shop").len(), 1);
    v1_still_serves(&core);
}

#[tokio::test(start_paused = true)]
async fn a_config_change_rolls_out_and_retires_the_old_release() {
    let core = serving(&AppSpec::default()).await;
    let version = core
        .deployer(Arc::default())
        .reconfigure("shop".into(), env_change(), progress())
        .await
        .unwrap();
    assert_eq!(version, Some(2));
    core.until("v1 stopped", Duration::from_secs(5), |core| {
        core.driver.running("shop").len() == 1
    })
    .await;
    let running = core.driver.running("shop");
    assert_eq!(running[0].env("BERTH_RELEASE"), Some("2"));
    assert_eq!(running[0].env("GREETING"), Some("hello"));
    assert_eq!(
        core.store.active_release("shop").unwrap().unwrap().version,
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_fixed_port_without_namespaces_runs_one_instance_replaced_stop_first() {
    let mut spec = AppSpec::default();
    spec.http.internal_port = Some(8080);
    let core = serving(&spec).await;
    core.scale("shop", 3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(core.driver.running("shop").len(), 1, "one fits the port");

    let version = core
        .deployer(Arc::default())
        .reconfigure("shop".into(), env_change(), progress())
        .await
        .unwrap();
    assert_eq!(version, Some(2), "the deploy waits for the one that fits");
    let started = core.driver.started();
    let old = &started[0];
    let new: Vec<_> = started
        .iter()
        .filter(|instance| instance.env("BERTH_RELEASE") == Some("2"))
        .collect();
    assert_eq!(new.len(), 1);
    assert!(
        new[0].at >= old.ended_at.expect("v1 stopped"),
        "the new instance starts only once the old one has exited"
    );
}

/// A progress channel whose lines can be read afterwards.
fn recorded_progress() -> (Progress, Arc<std::sync::Mutex<Vec<String>>>) {
    let (progress, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let said = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = said.clone();
    tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            if let berth_proto::DeployProgress::Step { message } = line {
                kept.lock().unwrap().push(message);
            }
        }
    });
    (progress, said)
}

/// `shop` on `spec` with `count` instances, redeployed with v2's instances
/// taking 2 s to get healthy; returns the starts of v1 and v2.
async fn redeploy_slow_v2(
    spec: AppSpec,
    count: u32,
) -> (
    Vec<berth_runtime::fake::Started>,
    Vec<berth_runtime::fake::Started>,
    Vec<String>,
) {
    let core = serving(&spec).await;
    core.scale("shop", count);
    core.until("all of v1", Duration::from_secs(5), |core| {
        core.running("shop", 1) == count as usize
    })
    .await;
    core.driver.script_release(
        "shop",
        2,
        Script {
            ready_after: Duration::from_secs(2),
            ..Script::default()
        },
    );
    let (progress, said) = recorded_progress();
    core.deployer(Arc::default())
        .reconfigure("shop".into(), env_change(), progress)
        .await
        .unwrap();
    core.until("v1 gone", Duration::from_secs(10), |core| {
        core.driver
            .running("shop")
            .iter()
            .all(|instance| instance.env("BERTH_RELEASE") == Some("2"))
    })
    .await;
    let of = |version: &str| {
        core.driver
            .started()
            .into_iter()
            .filter(|instance| instance.env("BERTH_RELEASE") == Some(version))
            .collect::<Vec<_>>()
    };
    let said = said.lock().unwrap().clone();
    (of("1"), of("2"), said)
}

fn with_volume(shared: bool) -> AppSpec {
    let mut spec = AppSpec::default();
    spec.mounts.push(berth_spec::MountSpec {
        source: "data".into(),
        destination: "/data".into(),
        processes: None,
        shared,
        size_mib: None,
    });
    spec
}

#[tokio::test(start_paused = true)]
async fn a_group_with_a_volume_is_replaced_stop_first_and_the_deploy_says_so() {
    let (old, new, said) = redeploy_slow_v2(with_volume(false), 1).await;
    let old_exited = old[0].ended_at.expect("v1 exited");
    assert!(
        new[0].at >= old_exited,
        "v2 started before v1 had exited: the two would write the volume together"
    );
    assert!(
        said.iter().any(|line| line
            .contains("web: the old instances stop before the new ones start")
            && line.contains("volume `data`")),
        "{said:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shared_volume_rolls_over_without_a_gap() {
    let (old, new, said) = redeploy_slow_v2(with_volume(true), 1).await;
    let new_up = new[0].at + Duration::from_secs(2);
    assert!(
        old[0].terminated_at.unwrap() >= new_up,
        "v1 was stopped before v2 was healthy"
    );
    assert!(
        !said.iter().any(|line| line.contains("stop before")),
        "{said:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn immediate_stops_every_old_instance_first() {
    let mut spec = AppSpec::default();
    spec.deploy.strategy = berth_spec::DeployStrategy::Immediate;
    let (old, new, _) = redeploy_slow_v2(spec, 2).await;
    let last_old_exit = old.iter().filter_map(|old| old.ended_at).max().unwrap();
    assert!(new.iter().all(|new| new.at >= last_old_exit));
}

#[tokio::test(start_paused = true)]
async fn bluegreen_keeps_every_old_instance_until_every_new_one_is_up() {
    let mut spec = AppSpec::default();
    spec.deploy.strategy = berth_spec::DeployStrategy::Bluegreen;
    let (old, new, _) = redeploy_slow_v2(spec, 3).await;
    assert_eq!(new.len(), 3);
    let all_new_up = new.iter().map(|new| new.at).max().unwrap() + Duration::from_secs(2);
    for old in &old {
        assert!(
            old.terminated_at.unwrap() >= all_new_up,
            "{} left early",
            old.id
        );
    }
}

#[tokio::test(start_paused = true)]
async fn canary_starts_one_new_instance_and_the_rest_once_it_is_up() {
    let mut spec = AppSpec::default();
    spec.deploy.strategy = berth_spec::DeployStrategy::Canary;
    let (old, new, _) = redeploy_slow_v2(spec, 3).await;
    assert_eq!(new.len(), 3);
    let canary = new.iter().map(|new| new.at).min().unwrap();
    for later in new.iter().filter(|new| new.at != canary) {
        assert!(
            later.at >= canary + Duration::from_secs(2),
            "{} started before the canary was up",
            later.id
        );
    }
    // While the canary warmed up, all three old instances served.
    for old in &old {
        assert!(old.terminated_at.unwrap() >= canary + Duration::from_secs(2));
    }
}
