//! What several suites share: deploying examples/plain under a name.

use berth_testkit::{TestServer, example};

/// Deploys examples/plain as `app`, with `spec` after its `app = …` line;
/// the folder lives as long as the returned guard.
pub async fn deploy_plain(server: &TestServer, app: &str, spec: &str) -> tempfile::TempDir {
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        format!("app = \"{app}\"\n{spec}"),
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    dir
}
