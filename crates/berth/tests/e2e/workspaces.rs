//! End to end: a Cargo workspace deployed from its root. Path dependencies
//! come along, only the members the app runs are built, and a root that
//! leaves the choice open is told so before anything is built.

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// A virtual workspace: `api` (the plain example's server, using `shared`
/// through a path dependency), `worker` (a loop), `shared` (a library).
fn workspace() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("berth-workspace-")
        .tempdir()
        .unwrap();
    let write = |path: &str, text: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n",
    );
    let plain = example("plain");
    let server = std::fs::read_to_string(plain.path().join("src/main.rs")).unwrap();
    write(
        "crates/api/Cargo.toml",
        "[package]\nname = \"api\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nshared = { path = \"../shared\" }\n",
    );
    write(
        "crates/api/src/main.rs",
        &format!(
            "{server}\n#[allow(dead_code)]\nfn shared_tag() -> &'static str {{ shared::TAG }}\n"
        ),
    );
    write(
        "crates/worker/Cargo.toml",
        "[package]\nname = \"worker\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(
        "crates/worker/src/main.rs",
        "fn main() { loop { std::thread::sleep(std::time::Duration::from_secs(60)); } }\n",
    );
    write(
        "crates/shared/Cargo.toml",
        "[package]\nname = \"shared\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(
        "crates/shared/src/lib.rs",
        "pub const TAG: &str = \"shared\";\n",
    );
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_deploys_from_its_root_building_what_it_runs() {
    setup();
    let server = TestServer::start().await;
    let root = workspace();

    // Two binaries and nothing saying which: refused before any build.
    let open = server
        .fails_in(root.path(), &["up", "--app", "ws-open"])
        .await;
    assert!(
        open.stderr.contains("binaries in several packages")
            && open.stderr.contains("api (api); worker (worker)")
            && !open.stderr.contains("Compiling"),
        "{}",
        open.stderr
    );

    std::fs::write(
        root.path().join("berth.toml"),
        "app = \"ws\"\n\n[processes]\nweb = \"api\"\nworker = \"worker\"\n",
    )
    .unwrap();
    let deployed = server.ok_in(root.path(), &["up"]).await;
    // api builds only with `shared`, its path dependency, uploaded too.
    assert!(
        deployed
            .stderr
            .contains("a Cargo workspace: building api, worker"),
        "{}",
        deployed.stderr
    );
    assert_eq!(server.get("ws", "/").await.status, 200);
    let status = server.status("ws").await;
    let running: Vec<&str> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|instance| instance["process"].as_str())
        .collect();
    assert!(running.contains(&"worker"), "{status}");

    // Named by [build] bin, the app deploys with no berth.toml app name.
    std::fs::write(root.path().join("berth.toml"), "[build]\nbin = \"api\"\n").unwrap();
    let named = server.ok_in(root.path(), &["up"]).await;
    assert!(named.stderr.contains("created app api"), "{}", named.stderr);
    assert!(
        named.stderr.contains("a Cargo workspace: building api"),
        "{}",
        named.stderr
    );
    assert_eq!(server.get("api", "/").await.status, 200);
}
