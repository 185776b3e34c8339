//! Volumes under redeploys: examples/notes keeps SQLite on a volume in
//! exclusive mode and commits its last batch at SIGTERM; not one
//! acknowledged write may be lost however often it is redeployed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_testkit::{TestServer, example, http_request};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_twenty_redeploys_under_load() {
    setup();
    let server = TestServer::start().await;
    let app = example("notes");
    server.ok_in(app.path(), &["up"]).await;

    // Four writers post notes as fast as they are answered.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (stop, acknowledged, router) = (stop.clone(), acknowledged.clone(), server.router);
        writers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let body = format!("note {writer}-{sent}");
                match http_request(router, "notes.localhost", "POST", "/notes", &body).await {
                    Ok(answer) if answer.status == 200 => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    // Refused during the stop-first gap: not acknowledged.
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    for round in 1..=20 {
        let out = server
            .ok(&["env", "set", "--app", "notes", &format!("ROUND={round}")])
            .await;
        assert!(
            out.stderr
                .contains("the old instances stop before the new ones start"),
            "{}",
            out.stderr
        );
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    assert!(
        acknowledged > 200,
        "too little load to tell: {acknowledged}"
    );

    // The running instance commits its pending batch within 200 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored: u64 = server
            .get("notes", "/count")
            .await
            .body
            .trim()
            .parse()
            .unwrap();
        if stored == acknowledged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{acknowledged} writes acknowledged, {stored} stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
