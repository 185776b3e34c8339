//! What several suites share: deploying examples/plain under a name,
//! checking a systemd unit.

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

/// Checks a unit file with systemd's own checker, where it is installed.
pub fn verify_unit(path: &std::path::Path) {
    let analyze = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("systemd-analyze"))
        .find(|path| path.is_file());
    let Some(analyze) = analyze else {
        return;
    };
    let verified = std::process::Command::new(analyze)
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        verified.status.success() && !said.contains(name.as_ref()),
        "systemd-analyze verify: {said}"
    );
}

/// Waits until `berth usage` shows at least `at_least` bytes of egress for
/// `app` (the server meters every 2 s: `--meter-interval 2s`), and
/// returns what it shows then.
pub async fn wait_metered_egress(server: &TestServer, app: &str, at_least: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let report = server
            .ok(&[
                "usage", "--app", app, "--by", "minute", "--since", "1d", "--json",
            ])
            .await
            .json();
        let egress: u64 = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["egress_bytes"].as_u64().unwrap())
            .sum();
        if egress >= at_least {
            return egress;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "egress of {app} metered as {egress} bytes, expected at least {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Runs a tool the tests need (`umoci`, `skopeo`, `ldd`…); its stdout.
/// A failure fails the test with what the tool said.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program} ({err}): .ci/run installs it"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pushes `source` (an OCI layout `DIR:TAG`) to berth's registry of
/// `server` as `name` (`REPO:TAG`), with skopeo and the API token.
pub fn skopeo_push(server: &TestServer, source: &str, name: &str) {
    let host = server.api_url.trim_start_matches("http://");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-creds",
            &format!("x:{}", server.token),
            "--dest-tls-verify=false",
            &format!("oci:{source}"),
            &format!("docker://{host}/{name}"),
        ],
    );
}

/// `umoci insert`s each `(host path, path in the image)` into `image`
/// (`LAYOUT:TAG`), a layer each.
pub fn umoci_insert(image: &str, inserts: &[(std::path::PathBuf, String)]) {
    for (source, target) in inserts {
        run_tool(
            "umoci",
            &[
                "insert",
                "--image",
                image,
                &source.display().to_string(),
                target,
            ],
        );
    }
}
