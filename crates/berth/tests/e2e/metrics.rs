//! End to end: `GET /metrics` in the OpenMetrics text format, behind the
//! token: requests counted per app, instances per process group, edge
//! refusals by reason.

use std::time::Duration;

use berth_testkit::TestServer;

use crate::support::deploy_plain;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// The value of the sample `name{labels}` in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_instances_and_refusals_per_app() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(&server, "measured", "[edge]\ndeny = [\"10.9.9.9\"]\n").await;
    for _ in 0..5 {
        assert_eq!(server.get("measured", "/").await.status, 200);
    }
    // The counts are published with the reconciler's next pass.
    let mut text = String::new();
    for _ in 0..100 {
        let (status, content_type, body) = server.api_get_text("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        text = body;
        if sample(&text, "berth_http_requests_total{app=\"measured\"}").is_some_and(|n| n >= 5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sample(&text, "berth_http_requests_total{app=\"measured\"}").is_some_and(|n| n >= 5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "berth_instances_running{app=\"measured\",group=\"web\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "berth_instances_desired{app=\"measured\",group=\"web\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "berth_edge_refused_total{app=\"measured\",reason=\"denied\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE berth_http_requests counter"),
        "{text}"
    );
    assert!(text.contains("berth_build_info{version=\""), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    // Without the token: refused, like any route of the API.
    let anonymous = reqwest::get(format!("{}/metrics", server.api_url))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}
