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
    let upload = berth_build::pack(source.path()).unwrap();

    let failure = core
        .deployer(builder)
        .deploy_upload("shop".into(), upload.into(), progress())
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
