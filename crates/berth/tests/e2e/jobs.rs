//! End to end: jobs, cron schedules, workers and release commands, on
//! examples/plain (std only, so it builds in a second).

use std::time::Duration;

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Deploys examples/plain with `spec` as its berth.toml.
async fn deploy_plain(server: &TestServer, spec: &str) -> tempfile::TempDir {
    let app = example("plain");
    std::fs::write(
        app.path().join("berth.toml"),
        format!("app = \"plain\"\n{spec}"),
    )
    .unwrap();
    server.ok_in(app.path(), &["up"]).await;
    app
}

async fn history(server: &TestServer, job: &str) -> Vec<serde_json::Value> {
    let out = server
        .ok(&["jobs", "history", job, "--app", "plain", "--json"])
        .await;
    out.json().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_tasks_run_in_parallel_with_their_index_retries_and_timeouts() {
    setup();
    let server = TestServer::start().await;
    // Tasks leave marks on a volume (all they may write besides /tmp).
    let spec = r#"
[[mounts]]
source = "marks"
destination = "/marks"
shared = true

[[jobs]]
name = "fanout"
command = "DIR=$BERTH_VOLUME_MARKS; touch $DIR/running-$BERTH_TASK_INDEX; ls $DIR | grep -c running > $DIR/seen-$BERTH_TASK_INDEX; echo task $BERTH_TASK_INDEX of $BERTH_TASK_COUNT cloud $CLOUD_RUN_TASK_INDEX tag $TAG; sleep 0.6; rm $DIR/running-$BERTH_TASK_INDEX"
tasks = 4
parallelism = 2

[[jobs]]
name = "flaky"
command = "echo attempt $BERTH_TASK_ATTEMPT; [ $BERTH_TASK_ATTEMPT -ge 2 ]"
max_retries = 3

[[jobs]]
name = "slow"
command = "sleep 30"
timeout = "1s"
max_retries = 0
"#;
    deploy_plain(&server, spec).await;
    let marks = server.data_dir().join("volumes/plain/marks");
    let out = server
        .ok(&[
            "jobs", "run", "fanout", "--wait", "--env", "TAG=fan", "--app", "plain", "--json",
        ])
        .await;
    let execution = out.json();
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(execution["succeeded"], 4);
    let mut most_at_once = 0;
    for index in 0..4 {
        let seen: u32 = std::fs::read_to_string(marks.join(format!("seen-{index}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        most_at_once = most_at_once.max(seen);
    }
    assert!(
        most_at_once <= 2,
        "parallelism 2 was exceeded: {most_at_once} tasks at once"
    );
    assert_eq!(most_at_once, 2, "two tasks should have overlapped");
    // Each task's run time is metered for the job's group, at its size:
    // four tasks of at least 0.6 s each.
    let usage = server
        .ok(&["usage", "--app", "plain", "--by", "minute", "--json"])
        .await
        .json();
    let fanout: Vec<&serde_json::Value> = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["process"] == "job-fanout")
        .collect();
    let job_seconds: f64 = fanout
        .iter()
        .map(|row| row["job_seconds"].as_f64().unwrap())
        .sum();
    assert!(job_seconds >= 2.4, "{usage}");
    assert!(
        fanout.iter().all(|row| row["cpus"].as_f64() == Some(1.0)),
        "{usage}"
    );
    let id = execution["id"].as_i64().unwrap().to_string();
    let logs = server.ok(&["jobs", "logs", &id, "--app", "plain"]).await;
    for index in 0..4 {
        assert!(
            logs.stdout
                .contains(&format!("task {index} of 4 cloud {index} tag fan")),
            "{}",
            logs.stdout
        );
    }

    let flaky = server
        .ok(&["jobs", "run", "flaky", "--wait", "--app", "plain", "--json"])
        .await
        .json();
    assert_eq!(flaky["status"], "succeeded");
    let codes: Vec<i64> = flaky["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![1, 1, 0],
        "two failures, then success on the third attempt"
    );

    let started = std::time::Instant::now();
    let out = server
        .fails(&["jobs", "run", "slow", "--wait", "--app", "plain"])
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout killed the task"
    );
    assert!(out.stderr.contains("failed"), "{}", out.stderr);
    let slow = &history(&server, "slow").await[0];
    assert_eq!(slow["failed"], 1);
    assert!(
        slow["attempts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{slow}"
    );

    let table = server
        .ok(&["jobs", "history", "flaky", "--app", "plain"])
        .await;
    assert!(
        table.stdout.contains("1,1,0"),
        "exit codes are listed:\n{}",
        table.stdout
    );
    let out = server
        .fails(&["jobs", "run", "nope", "--app", "plain"])
        .await;
    assert!(
        out.stderr.contains("no job `nope`") && out.stderr.contains("fanout"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_on_time_and_respect_the_overlap_policy() {
    setup();
    let server = TestServer::start().await;
    let spec = r#"
[[jobs]]
name = "tick"
command = "echo tick"
schedule = "*/2 * * * * *"

[[jobs]]
name = "long"
command = "sleep 2.5"
schedule = "* * * * * *"
overlap = "skip"

[[jobs]]
name = "newest"
command = "sleep 30"
schedule = "*/2 * * * * *"
overlap = "replace"
"#;
    deploy_plain(&server, spec).await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let ticks = history(&server, "tick").await;
    assert!(
        (2..=4).contains(&ticks.len()),
        "every 2 s for 6.5 s: {} runs",
        ticks.len()
    );
    assert!(
        ticks
            .iter()
            .all(|run| run["trigger"] == "schedule" || run["trigger"] == "catch-up")
    );
    assert!(
        ticks.iter().skip(1).all(|run| run["status"] == "succeeded"),
        "{ticks:?}"
    );
    let longs = history(&server, "long").await;
    assert!(
        (2..=3).contains(&longs.len()),
        "2.5 s runs due every second never overlap: {} runs",
        longs.len()
    );
    let events = server.ok(&["events", "--app", "plain", "-n", "200"]).await;
    assert!(events.stdout.contains("job.skipped"), "{}", events.stdout);
    let list = server
        .ok(&["jobs", "list", "--app", "plain", "--json"])
        .await
        .json();
    assert!(list[0]["next_run"].is_string(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_an_execution_and_a_restart_marks_it_interrupted() {
    setup();
    let mut server = TestServer::start().await;
    deploy_plain(
        &server,
        "[[jobs]]\nname = \"sleepy\"\ncommand = \"sleep 30\"\n",
    )
    .await;
    let id = server
        .ok(&["jobs", "run", "sleepy", "--app", "plain"])
        .await
        .stdout
        .trim()
        .to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = server.ok(&["jobs", "cancel", &id, "--app", "plain"]).await;
    assert!(out.stdout.contains("cancelled"), "{}", out.stdout);

    let id = server
        .ok(&["jobs", "run", "sleepy", "--app", "plain"])
        .await
        .stdout
        .trim()
        .to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9().await;
    server.restart().await;
    let runs = history(&server, "sleepy").await;
    assert_eq!(runs[0]["id"].as_i64().unwrap().to_string(), id);
    assert_eq!(runs[0]["status"], "interrupted", "{:?}", runs[0]);
    assert_eq!(runs[1]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_command_runs_once_per_deploy_and_a_failing_one_aborts_it() {
    setup();
    let server = TestServer::start().await;
    // It leaves a mark on a volume per run.
    let file = server.data_dir().join("volumes/plain/marks/migrations");
    let spec = "[[mounts]]\nsource = \"marks\"\ndestination = \"/marks\"\n\n[deploy]\nrelease_command = \"echo migrating v$BERTH_RELEASE; echo v$BERTH_RELEASE >> $BERTH_VOLUME_MARKS/migrations\"\n";
    let app = deploy_plain(&server, spec).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "v1\n");
    server.ok(&["scale", "web=2", "--app", "plain"]).await;
    let out = server.ok_in(app.path(), &["deploy"]).await;
    assert!(
        out.stderr.contains("release | migrating v2"),
        "its output streams to the deploy:\n{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "v1\nv2\n",
        "exactly once per deploy"
    );

    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"plain\"\n[deploy]\nrelease_command = \"echo the database is gone; exit 1\"\n",
    )
    .unwrap();
    let out = server.fails_in(app.path(), &["deploy"]).await;
    assert!(
        out.stderr.contains("release | the database is gone"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("release command `echo the database is gone; exit 1` failed (exit code 1)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("v2 keeps serving"), "{}", out.stderr);
    let status = server.status("plain").await;
    assert_eq!(status["release"]["version"], 2);
    assert!(
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|instance| instance["release"] == 2)
    );
    assert_eq!(server.get("plain", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_running_across_a_web_only_scale() {
    setup();
    let server = TestServer::start().await;
    let spec = "[processes]\nweb = \"plain\"\nworker = \"i=0; while true; do i=$((i+1)); echo count $i; sleep 0.1; done\"\n";
    deploy_plain(&server, spec).await;
    let worker_of = |status: &serde_json::Value| {
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|instance| instance["process"] == "worker" && instance["state"] == "running")
            .map(|instance| instance["id"].as_str().unwrap().to_string())
    };
    let before = server
        .wait_for_status("plain", Duration::from_secs(10), |status| {
            worker_of(status).is_some()
        })
        .await;
    let worker = worker_of(&before).unwrap();
    server.ok(&["scale", "web=3", "--app", "plain"]).await;
    let after = server
        .wait_for_status("plain", Duration::from_secs(10), |status| {
            status["processes"][0]["running"] == 3
        })
        .await;
    assert_eq!(
        worker_of(&after).as_deref(),
        Some(worker.as_str()),
        "the worker was not restarted"
    );
    let logs = server
        .ok(&["logs", "--app", "plain", "--instance", &worker, "-n", "1"])
        .await;
    let count: u32 = logs
        .stdout
        .split("count ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(count > 5, "the worker kept counting: {count}");
}

/// Processes whose environment names `instance` in BERTH_INSTANCE, not zombies.
fn processes_of(instance: &str) -> Vec<u32> {
    let marker = format!("BERTH_INSTANCE={instance}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            !zombie
                && environ
                    .split(|byte| *byte == 0)
                    .any(|variable| variable == marker.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_children_of_a_crashed_server_instance_are_killed_at_restart() {
    setup();
    let mut server = TestServer::start().await;
    // A compound command: the app runs as a child of the shell, out of reach
    // of the parent-death signal.
    deploy_plain(&server, "[processes]\nweb = \"true && plain\"\n").await;
    let status = server.status("plain").await;
    let instance = status["instances"][0]["id"].as_str().unwrap().to_string();
    server.kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if berth_runtime::can_isolate() {
        // In a pid namespace the whole tree dies with its init, which dies
        // with the server: nothing outlives the crash.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !processes_of(&instance).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the instance's processes outlived the crash of the server"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        assert!(
            !processes_of(&instance).is_empty(),
            "the app's child outlived the crash (the case under test)"
        );
    }
    server.restart().await;
    let status = server
        .wait_for_status("plain", Duration::from_secs(10), |status| {
            status["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|candidate| candidate["state"] == "running")
        })
        .await;
    assert_ne!(status["instances"][0]["id"].as_str().unwrap(), instance);
    assert!(
        processes_of(&instance).is_empty(),
        "the old instance's processes were killed"
    );
    assert_eq!(server.get("plain", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_missed_while_the_server_was_down_runs_once_when_it_comes_back() {
    setup();
    let mut server = TestServer::start().await;
    deploy_plain(
        &server,
        "[[jobs]]\nname = \"every4\"\ncommand = \"true\"\nschedule = \"*/4 * * * * *\"\n",
    )
    .await;
    server.kill9().await;
    // At least two slots go by while the server is down.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let before = chrono_now();
    server.restart().await;
    tokio::time::sleep(Duration::from_millis(3800)).await;
    let runs = history(&server, "every4").await;
    let since_restart: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|run| run["started_at"].as_str().unwrap() >= before.as_str())
        .collect();
    let catch_ups = since_restart
        .iter()
        .filter(|run| run["trigger"] == "catch-up")
        .count();
    assert_eq!(catch_ups, 1, "the missed slots ran once: {since_restart:?}");
    // Besides the catch-up, at most the one regular slot of the 3.8 s since.
    assert!(since_restart.len() <= 2, "{since_restart:?}");
}

fn chrono_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_jobs_scale_and_logs_gets_a_clear_error() {
    setup();
    let server = TestServer::start().await;
    let app = deploy_plain(&server, "[[jobs]]\nname = \"quick\"\ncommand = \"true\"\n").await;

    let out = server
        .fails(&["jobs", "run", "quick", "--tasks", "0", "--app", "plain"])
        .await;
    assert!(
        out.stderr.contains("tasks must be from 1 to 10000"),
        "{}",
        out.stderr
    );
    let out = server
        .fails(&["jobs", "run", "quick", "--env", "PORT=1", "--app", "plain"])
        .await;
    assert!(out.stderr.contains("set by berth"), "{}", out.stderr);
    let done = server
        .ok(&["jobs", "run", "quick", "--wait", "--app", "plain", "--json"])
        .await
        .json();
    let id = done["id"].as_i64().unwrap().to_string();
    let out = server
        .fails(&["jobs", "cancel", &id, "--app", "plain"])
        .await;
    assert!(
        out.stderr
            .contains(&format!("execution {id} is not running (it succeeded)")),
        "{}",
        out.stderr
    );
    let out = server
        .fails(&["jobs", "cancel", "999", "--app", "plain"])
        .await;
    assert!(
        out.stderr
            .contains("execution 999 of app `plain` not found"),
        "{}",
        out.stderr
    );

    let out = server.fails(&["scale", "web=lots", "--app", "plain"]).await;
    assert!(
        out.stderr.contains("the count must be a whole number"),
        "{}",
        out.stderr
    );
    let out = server
        .fails(&["logs", "--level", "loud", "--app", "plain"])
        .await;
    assert!(
        out.stderr.contains("unknown level `loud`"),
        "{}",
        out.stderr
    );
    let out = server
        .fails(&["logs", "--since", "yesterday", "--app", "plain"])
        .await;
    assert!(
        out.stderr.contains("`yesterday` is neither a time"),
        "{}",
        out.stderr
    );

    // A bad cron expression fails the deploy with its place and reason; v1 stays.
    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"plain\"\n[[jobs]]\nname = \"quick\"\ncommand = \"true\"\nschedule = \"every day\"\n",
    )
    .unwrap();
    let out = server.fails_in(app.path(), &["deploy"]).await;
    assert!(
        out.stderr
            .contains("berth.toml:5:12: schedule `every day` has 2 fields"),
        "{}",
        out.stderr
    );
    assert_eq!(server.status("plain").await["release"]["version"], 1);
}
