//! End to end: the server killed (SIGKILL) at random moments while
//! clients write, again and again. No write the API acknowledged is lost,
//! and the apps serve again soon after each restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

const KILLS: usize = 50;
const APPS: [&str; 2] = ["steady-a", "steady-b"];

/// A small xorshift: random moments, reproducible from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Creates apps (`w-ROUND-N`) until the server stops answering; each
/// one the API acknowledged (201) is recorded.
async fn write_until_killed(
    api: String,
    token: String,
    round: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 0.. {
        let name = format!("w-{round}-{n}");
        let sent = client
            .post(format!("{api}/v1/apps"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status() == 201 => acked.lock().unwrap().push(name),
            Ok(answer) => panic!("creating {name} answered {}", answer.status()),
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_kills_under_writes_lose_no_acknowledged_write() {
    setup();
    let mut server = TestServer::start().await;
    let mut folders = Vec::new();
    for app in APPS {
        let dir = example("plain");
        std::fs::write(dir.path().join("berth.toml"), format!("app = \"{app}\"\n")).unwrap();
        server.ok_in(dir.path(), &["up"]).await;
        folders.push(dir);
    }
    let mut seed = u64::from(std::process::id()) * 0x9E37_79B9 + 1;
    println!("seed {seed}");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut recoveries = Vec::new();
    for round in 0..KILLS {
        let writer = tokio::spawn(write_until_killed(
            server.api_url.clone(),
            server.token.clone(),
            round,
            acked.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 250)).await;
        server.kill9().await;
        writer.await.expect("the writer");

        let restarted = Instant::now();
        server.restart().await;
        let mut serving = [false; APPS.len()];
        while !serving.iter().all(|up| *up) {
            for (index, app) in APPS.iter().enumerate() {
                serving[index] = serving[index]
                    || berth_testkit::http_get(server.router, &format!("{app}.localhost"), "/")
                        .await
                        .is_ok_and(|answer| answer.status == 200);
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(15),
                "round {round}: apps not serving after the restart: {serving:?}\n{}",
                server.server_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        recoveries.push(restarted.elapsed());

        let (status, apps) = server.api_get("/v1/apps").await;
        assert_eq!(status, 200);
        let stored: std::collections::HashSet<&str> = apps
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|app| app["name"].as_str())
            .collect();
        let lost: Vec<String> = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|name| !stored.contains(name.as_str()))
            .cloned()
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
    }
    recoveries.sort();
    let written = acked.lock().unwrap().len();
    println!(
        "{KILLS} kills, {written} acknowledged writes, 0 lost; serving again after a restart: p50 {:?}, max {:?}",
        recoveries[recoveries.len() / 2],
        recoveries[recoveries.len() - 1]
    );
    assert!(
        written > KILLS,
        "the writes must overlap the kills: {written}"
    );
}
