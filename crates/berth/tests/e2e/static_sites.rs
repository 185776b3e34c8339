//! End to end: a render.yaml with a Rust API, a static site and a Python
//! service — each read with Render's meaning: the site built by its
//! command and served by the router with its rewrites, redirects and
//! headers (a large file streamed, whole or by byte range), the Python service built and run with the server's own
//! python3, and a runtime whose program the server lacks refused by name.

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

const BLUEPRINT: &str = r#"services:
  - type: web
    name: site-api
    runtime: rust
  - type: web
    name: site-front
    runtime: static
    rootDir: front
    buildCommand: mkdir -p dist && cp -r pages/. dist/ && echo built > dist/built.txt && yes abcdefghij | head -c 12582912 > dist/big.bin
    staticPublishPath: ./dist
    routes:
      - type: redirect
        source: /old
        destination: /
      - type: rewrite
        source: /app/*
        destination: /index.html
    headers:
      - path: /*
        name: X-Frame-Options
        value: sameorigin
  - type: web
    name: site-py
    runtime: python
    buildCommand: echo from the build > built.txt
    startCommand: exec python3 -m http.server $PORT --bind 127.0.0.1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blueprint_with_a_static_site_and_a_python_service_serves_all_three() {
    setup();
    let server = TestServer::start().await;
    let project = example("plain");
    std::fs::create_dir_all(project.path().join("front/pages")).unwrap();
    std::fs::write(
        project.path().join("front/pages/index.html"),
        "<h1>front</h1>",
    )
    .unwrap();
    std::fs::write(project.path().join("front/pages/404.html"), "lost").unwrap();
    std::fs::write(project.path().join("render.yaml"), BLUEPRINT).unwrap();
    server.ok_in(project.path(), &["up"]).await;

    assert_eq!(server.get("site-api", "/whoami").await.status, 200);

    let home = server.get("site-front", "/").await;
    assert_eq!((home.status, home.body.as_str()), (200, "<h1>front</h1>"));
    assert!(
        home.head
            .to_ascii_lowercase()
            .contains("x-frame-options: sameorigin"),
        "{}",
        home.head
    );
    assert_eq!(
        server.get("site-front", "/built.txt").await.body.trim(),
        "built"
    );
    let deep = server.get("site-front", "/app/settings/profile").await;
    assert_eq!((deep.status, deep.body.as_str()), (200, "<h1>front</h1>"));
    let moved = server.get("site-front", "/old").await;
    assert_eq!(moved.status, 301, "{}", moved.head);
    assert!(
        moved.head.to_ascii_lowercase().contains("location: /\r"),
        "{}",
        moved.head
    );
    let missing = server.get("site-front", "/nope").await;
    assert_eq!((missing.status, missing.body.as_str()), (404, "lost"));
    // The site runs no process.
    let status = server.ok(&["status", "--app", "site-front"]).await.stdout;
    assert!(!status.contains("PROCESS"), "{status}");

    // A file past 8 MiB streams from disk, whole or by byte range.
    let big: Vec<u8> = b"abcdefghij\n"
        .iter()
        .copied()
        .cycle()
        .take(12_582_912)
        .collect();
    let client = reqwest::Client::new();
    let url = format!("http://{}/big.bin", server.router);
    let whole = client
        .get(&url)
        .header("host", "site-front.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert!(whole.bytes().await.unwrap() == big, "the big file differs");
    let tail = client
        .get(&url)
        .header("host", "site-front.localhost")
        .header("range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.headers()["content-range"],
        "bytes 12582812-12582911/12582912"
    );
    assert_eq!(&tail.bytes().await.unwrap()[..], &big[big.len() - 100..]);

    let python = server.get("site-py", "/built.txt").await;
    assert_eq!((python.status, python.body.trim()), (200, "from the build"));

    // A runtime whose program the server does not have: refused by name,
    // before any build.
    let other = example("plain");
    std::fs::write(
        other.path().join("render.yaml"),
        "services:\n  - type: web\n    name: site-ruby\n    runtime: ruby\n    startCommand: no-such-ruby-server -p $PORT\n",
    )
    .unwrap();
    let refused = server.fails_in(other.path(), &["up"]).await;
    assert!(
        refused.stderr.contains("lacks `no-such-ruby-server`"),
        "{}",
        refused.stderr
    );
}
