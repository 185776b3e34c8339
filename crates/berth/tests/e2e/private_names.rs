//! End to end, as root: private names. An app's instances and jobs reach
//! its process groups at `APP.internal` and `GROUP.APP.internal`, other
//! apps only when it lists them, and a target scaled to zero is woken.

use std::time::Duration;

use crate::support::deploy_plain;
use berth_testkit::TestServer;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// What an instance of `app` gets when it fetches `http://ADDR/` itself
/// (not through any proxy): the status of plain's `/fetch` and the response.
async fn fetch_from(server: &TestServer, app: &str, addr: &str) -> (u16, String) {
    let answer = server
        .get(app, &format!("/fetch?addr={addr}&path=/&direct=1"))
        .await;
    (answer.status, answer.body)
}

const API: &str = "[processes]\nweb = \"plain\"\nadmin = \"plain\"\n\
    [http_service]\nprocesses = [\"web\", \"admin\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn apps_reach_the_groups_of_apps_that_allow_them_by_private_name() {
    setup();
    assert!(berth_runtime::can_isolate(), "private names need root");
    let server = TestServer::start().await;
    let api_dir = deploy_plain(
        &server,
        "api",
        &format!(
            "{API}[internal]\nallow = [\"front\"]\n\n[[jobs]]\nname = \"ping\"\n\
             command = \"plain fetch web.api.internal:80 / | grep -q 'hi from web-'\"\n\
             max_retries = 0\n"
        ),
    )
    .await;
    deploy_plain(&server, "front", "").await;
    deploy_plain(&server, "other", "").await;

    // Each group by its own name, and the app by its name (any group).
    let (status, body) = fetch_from(&server, "front", "web.api.internal:80").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("plain says hi from web-"), "{body}");
    let (status, body) = fetch_from(&server, "front", "admin.api.internal:80").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("plain says hi from admin-"), "{body}");
    let (_, body) = fetch_from(&server, "front", "api.internal:80").await;
    assert!(body.contains("plain says hi from "), "{body}");

    // The app's own job reaches it.
    let execution = server
        .ok(&["jobs", "run", "ping", "--wait", "--app", "api", "--json"])
        .await
        .json();
    assert_eq!(execution["status"], "succeeded", "{execution}");

    // An app it does not list gets no such name.
    let (status, body) = fetch_from(&server, "other", "api.internal:80").await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("plain says hi"), "{body}");

    // Connections are balanced over the group's instances.
    server.ok(&["scale", "web=2", "--app", "api"]).await;
    server
        .wait_for_status("api", Duration::from_secs(30), |status| {
            status["instances"].as_array().is_some_and(|all| {
                all.iter()
                    .filter(|instance| instance["process"] == "web" && instance["healthy"] == true)
                    .count()
                    == 2
            })
        })
        .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (_, body) = fetch_from(&server, "front", "web.api.internal:80").await;
        if let Some(instance) = body.split("hi from ").nth(1) {
            seen.insert(instance.trim().to_string());
        }
    }
    assert_eq!(seen.len(), 2, "both web instances answer: {seen:?}");

    // Taken off the list, the caller is refused at once, without a restart.
    std::fs::write(
        api_dir.path().join("berth.toml"),
        format!("app = \"api\"\n{API}"),
    )
    .unwrap();
    server.ok_in(api_dir.path(), &["up"]).await;
    let (_, body) = fetch_from(&server, "front", "web.api.internal:80").await;
    assert!(!body.contains("plain says hi"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_private_name_wakes_an_app_scaled_to_zero() {
    setup();
    assert!(berth_runtime::can_isolate(), "private names need root");
    let server = TestServer::start().await;
    deploy_plain(
        &server,
        "sleepy",
        "[http_service]\ninternal_port = 8080\nauto_stop_machines = true\nauto_start_machines = true\n\
         min_machines_running = 0\nidle_timeout = \"1s\"\n[internal]\nallow = [\"front\"]\n",
    )
    .await;
    deploy_plain(&server, "front", "").await;
    server
        .wait_for_status("sleepy", Duration::from_secs(30), |status| {
            status["instances"]
                .as_array()
                .is_some_and(|all| all.is_empty())
        })
        .await;
    // At its own port too, as Fly apps write it.
    let (status, body) = fetch_from(&server, "front", "sleepy.internal:8080").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("plain says hi from web-"), "{body}");
}
