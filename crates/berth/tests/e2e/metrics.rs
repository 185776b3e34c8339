//! End to end: `GET /metrics` in the OpenMetrics text format (read back by
//! the Prometheus project's own OpenMetrics parser), behind the token:
//! requests counted per app, by status class and in a duration histogram,
//! instances per process group, edge refusals by reason; and the router's
//! access log lines, stored with the app's logs.

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

/// The exposition as the Prometheus client library's OpenMetrics parser
/// reads it: each sample as `name{labels} value`, sorted; a text it
/// refuses fails the test.
fn parsed(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        print(f"{sample.name}{{{labels}}} {float(sample.value)}")
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (.ci/run installs it and prometheus_client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused it: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    samples.sort();
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_instances_and_refusals_per_app() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(
        &server,
        "measured",
        "[edge]\ndeny = [\"10.9.9.9\"]\n[[edge.rate_limits]]\nrequests = 1\nper = \"1m\"\npath = \"/limited\"\n",
    )
    .await;
    for _ in 0..5 {
        assert_eq!(server.get("measured", "/").await.status, 200);
    }
    assert_eq!(server.get("measured", "/limited").await.status, 200);
    assert_eq!(server.get("measured", "/limited").await.status, 429);
    // One-off commands are job executions, counted by outcome.
    server
        .ok(&["run", "--no-tty", "--app", "measured", "--", "true"])
        .await;
    server
        .berth(&["run", "--no-tty", "--app", "measured", "--", "false"])
        .run()
        .await;
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
        if sample(
            &text,
            "berth_http_request_duration_seconds_count{app=\"measured\"}",
        )
        .is_some_and(|n| n >= 7.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let samples = parsed(&text);
    let has = |sample: &str| samples.iter().any(|line| line == sample);
    // Exactly the requests sent: six routed to the app, and one the edge
    // refused (429), each answer counted once in its class and in the
    // histogram.
    assert!(
        has("berth_http_requests_total{app=\"measured\"} 6.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_http_responses_total{app=\"measured\",class=\"2xx\"} 6.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_http_responses_total{app=\"measured\",class=\"4xx\"} 1.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_edge_refused_total{app=\"measured\",reason=\"rate_limited\"} 1.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_http_request_duration_seconds_count{app=\"measured\"} 7.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_http_request_duration_seconds_bucket{app=\"measured\",le=\"+Inf\"} 7.0"),
        "{samples:#?}"
    );
    assert!(
        samples.iter().any(|line| line
            .starts_with("berth_http_response_bytes_total{app=\"measured\"} ")
            && !line.ends_with(" 0.0")),
        "{samples:#?}"
    );

    // Each request the app answered is in its logs, from the router; the
    // one the edge refused is counted above, not logged.
    let logged = server
        .ok(&[
            "logs",
            "--app",
            "measured",
            "--json",
            "--where",
            "process=router",
        ])
        .await
        .stdout;
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{logged}");
    assert_eq!(lines[0]["fields"]["status"], 200, "{logged}");
    assert_eq!(lines[0]["fields"]["method"], "GET");
    assert!(
        lines[0]["instance"].as_str().unwrap().starts_with("web-"),
        "{logged}"
    );
    assert_eq!(lines[5]["fields"]["path"], "/limited");
    assert_eq!(lines[5]["fields"]["status"], 200);
    assert_eq!(lines[5]["level"], "info");
    let errors = server
        .ok(&[
            "logs",
            "--app",
            "measured",
            "--json",
            "--where",
            "process=router status>=400",
        ])
        .await
        .stdout;
    assert_eq!(errors.lines().count(), 0, "{errors}");
    assert!(has("berth_log_lines_dropped_total{} 0.0"), "{samples:#?}");
    assert!(
        has("berth_releases{app=\"measured\",status=\"active\"} 1.0"),
        "{samples:#?}"
    );
    assert!(
        samples
            .iter()
            .any(|line| line.starts_with("berth_reconcile_passes_total{} ")
                && !line.ends_with(" 0.0")),
        "{samples:#?}"
    );
    // As root each instance has a cgroup: what it uses is measured.
    let memory = samples.iter().find_map(|line| {
        line.strip_prefix("berth_memory_bytes{app=\"measured\",group=\"web\"} ")?
            .parse::<f64>()
            .ok()
    });
    let cpu = samples.iter().find_map(|line| {
        line.strip_prefix("berth_cpu_seconds{app=\"measured\",group=\"web\"} ")?
            .parse::<f64>()
            .ok()
    });
    if berth_runtime::can_isolate() {
        assert!(
            memory.is_some_and(|bytes| bytes > 100_000.0),
            "{samples:#?}"
        );
        assert!(cpu.is_some_and(|seconds| seconds >= 0.0), "{samples:#?}");
        let status = server
            .ok(&["status", "--app", "measured", "--json"])
            .await
            .json();
        assert!(
            status["instances"][0]["memory_bytes"].as_u64() > Some(100_000),
            "{status}"
        );
    } else {
        assert_eq!(
            (memory, cpu),
            (None, None),
            "without cgroups nothing is measured"
        );
    }
    for status in ["succeeded", "failed"] {
        assert!(
            has(&format!(
                "berth_job_executions_total{{app=\"measured\",job=\"berth-run\",status=\"{status}\"}} 1.0"
            )),
            "{samples:#?}"
        );
    }
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

    // An instance killed behind berth's back is a restart; an app woken
    // from zero is a cold start, with its duration.
    let pid = server.status("measured").await["instances"][0]["pid"]
        .as_u64()
        .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _sleepy = deploy_plain(
        &server,
        "sleepy",
        "[http_service]\nauto_stop_machines = true\nauto_start_machines = true\nmin_machines_running = 0\nidle_timeout = \"1s\"\n",
    )
    .await;
    server
        .wait_for_status("sleepy", Duration::from_secs(30), |status| {
            status["instances"]
                .as_array()
                .is_some_and(|all| all.is_empty())
        })
        .await;
    assert_eq!(server.get("sleepy", "/").await.status, 200);
    let mut text = String::new();
    for _ in 0..100 {
        text = server.api_get_text("/metrics").await.2;
        let restarted = sample(
            &text,
            "berth_restarts_total{app=\"measured\",group=\"web\"}",
        );
        let woken = sample(
            &text,
            "berth_cold_start_duration_seconds_count{app=\"sleepy\",group=\"web\"}",
        );
        if restarted == Some(1.0) && woken == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let samples = parsed(&text);
    let has = |sample: &str| samples.iter().any(|line| line == sample);
    assert!(
        has("berth_restarts_total{app=\"measured\",group=\"web\"} 1.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_oom_kills_total{app=\"measured\",group=\"web\"} 0.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_cold_start_duration_seconds_count{app=\"sleepy\",group=\"web\"} 1.0"),
        "{samples:#?}"
    );
    let took = sample(
        &text,
        "berth_cold_start_duration_seconds_sum{app=\"sleepy\",group=\"web\"}",
    )
    .unwrap();
    assert!(took > 0.0 && took < 30.0, "{took}");
    // Each app's one deploy, and its build.
    assert!(
        has("berth_deploy_duration_seconds_count{app=\"measured\",outcome=\"succeeded\"} 1.0"),
        "{samples:#?}"
    );
    assert!(
        has("berth_build_duration_seconds_count{app=\"sleepy\"} 1.0"),
        "{samples:#?}"
    );
    let writes: f64 = samples
        .iter()
        .find_map(|line| {
            line.strip_prefix("berth_store_write_duration_seconds_count{} ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{samples:#?}"));
    assert!(writes > 10.0, "two deploys write the store more: {writes}");

    // Without the token: refused, like any route of the API.
    let anonymous = reqwest::get(format!("{}/metrics", server.api_url))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_listener_serves_metrics_alone_without_the_token() {
    setup();
    let [port] = berth_testkit::free_ports::<1>();
    let address = format!("127.0.0.1:{port}");
    let server = TestServer::start_with(&["--metrics", &address]).await;
    let scraped = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(
        parsed(&text).iter().any(|line| line == "berth_apps{} 0.0"),
        "{text}"
    );
    // Nothing else is served there: not the API, not the dashboard.
    for path in ["/v1/apps", "/ui", "/"] {
        let other = reqwest::get(format!("http://{address}{path}"))
            .await
            .unwrap();
        assert_eq!(other.status(), 404, "{path}");
    }
    // The API's own /metrics still wants the token.
    let anonymous = reqwest::get(format!("{}/metrics", server.api_url))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}
