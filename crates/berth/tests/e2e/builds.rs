//! End to end, as root: a build is the app's code running (build scripts,
//! proc macros), so it runs as the app's user in a sandbox with limits.
//! A build script probes what it can reach; the build fails (and with it
//! the test) if it reads berth's key or token, another app's build, or
//! reaches the API.

use berth_testkit::{TestServer, example, shared_build_cache};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// The plain example with `build_rs` as its build script.
fn app_with_build_script(app: &str, build_rs: &str) -> tempfile::TempDir {
    let dir = example("plain");
    std::fs::write(dir.path().join("berth.toml"), format!("app = \"{app}\"\n")).unwrap();
    std::fs::write(dir.path().join("build.rs"), build_rs).unwrap();
    dir
}

const PROBE: &str = r#"
use std::io::Write;

fn report(what: &str, result: std::io::Result<String>, must_fail: bool) {
    match (result, must_fail) {
        (Ok(got), true) => panic!("ESCAPE: {what} succeeded: {got}"),
        (Err(err), true) => println!("cargo:warning=probe {what}: refused ({err})"),
        (Ok(got), false) => println!("cargo:warning=probe {what}: {got}"),
        (Err(err), false) => panic!("probe {what} should work: {err}"),
    }
}

fn main() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status.lines().find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()).unwrap_or("").to_string()
        });
    report("uid", uid, false);
    report("read own source", std::fs::read_to_string("Cargo.toml").map(|text| format!("{} bytes", text.len())), false);
    report("read key", std::fs::read("@DATA@/secrets.key").map(|bytes| format!("{} bytes", bytes.len())), true);
    report("read token", std::fs::read_to_string("@DATA@/token"), true);
    report("read store", std::fs::read("@DATA@/berth.db").map(|bytes| format!("{} bytes", bytes.len())), true);
    report("list other build", std::fs::read_dir("@CACHE@/victim-build/src").map(|dir| format!("{} entries", dir.count())), true);
    report("write data dir", std::fs::write("@DATA@/escape", "x").map(|_| "written".to_string()), true);
    report("write tmp", std::fs::File::create("/tmp/@MARKER@").and_then(|mut file| file.write_all(b"x")).map(|_| "written".to_string()), false);
    report("connect api", std::net::TcpStream::connect("@API@").map(|_| "connected".to_string()), true);
    // Out only through the proxy, and only to the registries.
    let proxy = std::env::var("HTTPS_PROXY").unwrap_or_default();
    let through_proxy = std::net::TcpStream::connect(proxy.trim_start_matches("http://").trim_end_matches('/'))
        .and_then(|mut stream| {
            use std::io::Read;
            stream.write_all(b"CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: elsewhere.example:443\r\n\r\n")?;
            let mut answer = [0u8; 12];
            stream.read_exact(&mut answer)?;
            let answer = String::from_utf8_lossy(&answer).into_owned();
            if answer.starts_with("HTTP/1.1 200") { Ok(answer) } else { Err(std::io::Error::other(answer)) }
        });
    report("proxy to another host", through_proxy, true);
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_build_runs_as_the_app_and_cannot_read_berths_secrets() {
    setup();
    assert!(berth_runtime::can_isolate(), "isolation needs root");
    let server = TestServer::start().await;
    // Another app's build directory, for the probe to look for.
    let victim = app_with_build_script("victim-build", "fn main() {}\n");
    server.ok_in(victim.path(), &["up"]).await;

    let marker = format!("berth-build-escape-{}", std::process::id());
    let probe = PROBE
        .replace("@DATA@", &server.data_dir().display().to_string())
        .replace("@CACHE@", &shared_build_cache().display().to_string())
        .replace("@MARKER@", &marker)
        .replace("@API@", server.api_url.trim_start_matches("http://"));
    let dir = app_with_build_script("prober", &probe);
    let deployed = server.ok_in(dir.path(), &["up"]).await;
    let output = format!("{}{}", deployed.stdout, deployed.stderr);
    for refused in [
        "read key: refused",
        "read token: refused",
        "read store: refused",
        "list other build: refused",
        "write data dir: refused",
        "connect api: refused",
        "proxy to another host: refused (HTTP/1.1 403)",
    ] {
        assert!(output.contains(refused), "no `{refused}` in:\n{output}");
    }
    assert!(output.contains("probe read own source: "), "{output}");
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "the build wrote into the host's /tmp"
    );
    assert!(!server.data_dir().join("escape").exists());

    // It ran as the app's own user: the one its instances run as.
    let build_uid: u32 = output
        .lines()
        .find_map(|line| line.split("probe uid: ").nth(1))
        .and_then(|uid| uid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no uid in:\n{output}"));
    let instance_uid: u32 = server.get("prober", "/whoami").await.body.parse().unwrap();
    assert!(build_uid >= 200_000, "{build_uid}");
    assert_eq!(build_uid, instance_uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_build_over_its_memory_or_time_is_stopped_and_the_old_release_serves() {
    setup();
    let server = TestServer::start_with(&["--build-memory", "96", "--build-timeout", "6s"]).await;
    let dir = app_with_build_script("greedy-build", "fn main() {}\n");
    server.ok_in(dir.path(), &["up"]).await;
    assert_eq!(server.get("greedy-build", "/").await.status, 200);

    std::fs::write(
        dir.path().join("build.rs"),
        "fn main() { let mut v: Vec<Vec<u8>> = Vec::new(); for _ in 0..64 { v.push(vec![1u8; 8 << 20]); } println!(\"cargo:warning={}\", v.len()); }\n",
    )
    .unwrap();
    let failed = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        failed.stderr.contains("out of memory") && failed.stderr.contains("96 MiB"),
        "{}",
        failed.stderr
    );
    assert_eq!(server.get("greedy-build", "/").await.status, 200);

    std::fs::write(
        dir.path().join("build.rs"),
        "fn main() { std::thread::sleep(std::time::Duration::from_secs(600)); }\n",
    )
    .unwrap();
    let failed = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        failed.stderr.contains("stopped after 6s"),
        "{}",
        failed.stderr
    );
    assert_eq!(server.get("greedy-build", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_build_that_fills_the_disk_is_stopped_at_the_reserve() {
    use std::os::unix::fs::MetadataExt;
    setup();
    let cache = shared_build_cache();
    std::fs::create_dir_all(&cache).unwrap();
    let data_parent = std::env::temp_dir();
    assert_eq!(
        std::fs::metadata(&cache).unwrap().dev(),
        std::fs::metadata(&data_parent).unwrap().dev(),
        "this test needs the build cache and the data dir on one disk"
    );
    // A reserve that leaves the build 300 MiB of room.
    let free = berth_runtime::free_disk_bytes(&cache).unwrap();
    let reserve_mib = (free / (1024 * 1024)).saturating_sub(300);
    let server = TestServer::start_with(&["--disk-reserve-mib", &reserve_mib.to_string()]).await;
    let dir = app_with_build_script(
        "disk-filler",
        r#"
use std::io::Write;
fn main() {
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("fill");
    let mut file = std::fs::File::create(out).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..(8 << 10) {
        file.write_all(&chunk).unwrap();
        file.sync_data().unwrap();
    }
}
"#,
    );
    let failed = server.fails_in(dir.path(), &["up"]).await;
    let _ = std::fs::remove_dir_all(cache.join("disk-filler/target"));
    assert!(
        failed.stderr.contains("stopped: its disk has")
            && failed.stderr.contains("--disk-reserve-mib"),
        "{}",
        failed.stderr
    );
}

const ENV_PROBE: &str = r#"
fn main() {
    for name in ["GREETING", "SQLX_OFFLINE", "BUILD_TOKEN", "DATABASE_URL"] {
        println!("cargo:rerun-if-env-changed={name}");
    }
    let var = |name: &str| std::env::var(name).ok();
    println!("cargo:warning=probe GREETING={:?}", var("GREETING"));
    println!("cargo:warning=probe SQLX_OFFLINE={:?}", var("SQLX_OFFLINE"));
    println!(
        "cargo:warning=probe BUILD_TOKEN has {} bytes",
        var("BUILD_TOKEN").map_or(0, |token| token.len())
    );
    if let Some(url) = var("DATABASE_URL") {
        let address = url.split('@').nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("");
        match std::net::TcpStream::connect(address) {
            Ok(_) => println!("cargo:warning=probe database: connected"),
            Err(err) => println!("cargo:warning=probe database: {err}"),
        }
    }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_sees_its_env_its_secrets_and_its_database() {
    setup();
    let server = TestServer::start().await;
    let dir = app_with_build_script("build-env", ENV_PROBE);
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"build-env\"\n\n[resources]\npostgres = true\n\n[build]\nsecrets = [\"BUILD_TOKEN\"]\ndatabase = true\n\n[build.env]\nGREETING = \"hello from the spec\"\n",
    )
    .unwrap();
    // A secret the spec names but the app lacks is a clear error.
    server.ok(&["apps", "create", "build-env"]).await;
    let missing = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        missing
            .stderr
            .contains("[build] secrets names `BUILD_TOKEN`"),
        "{}",
        missing.stderr
    );
    let token = "build-secret-3f9a1c";
    server
        .ok(&[
            "secrets",
            "set",
            &format!("BUILD_TOKEN={token}"),
            "--app",
            "build-env",
        ])
        .await;
    // Its migrations go first: the build checks queries against them.
    std::fs::create_dir(dir.path().join("migrations")).unwrap();
    std::fs::write(
        dir.path().join("migrations/1_create_items.sql"),
        "CREATE TABLE items (id INT);",
    )
    .unwrap();
    let deployed = server.ok_in(dir.path(), &["up"]).await;
    for seen in [
        "applied 1 migration(s) before the build: 1 create items",
        "probe GREETING=Some(\"hello from the spec\")",
        &format!("probe BUILD_TOKEN has {} bytes", token.len()),
        "probe database: connected",
        "the build gets the app's DATABASE_URL",
    ] {
        assert!(
            deployed.stderr.contains(seen),
            "no `{seen}` in:\n{}",
            deployed.stderr
        );
    }
    // The secret is nowhere in the release's slug.
    let (_, releases) = server.api_get("/v1/apps/build-env/releases").await;
    let slug = server
        .data_dir()
        .join("slugs")
        .join(releases[0]["slug"].as_str().unwrap());
    let found = std::process::Command::new("grep")
        .args(["-r", "-l", token])
        .arg(&slug)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );

    // sqlx's offline data in the source: SQLX_OFFLINE=true, said so.
    std::fs::write(dir.path().join("berth.toml"), "app = \"build-env\"\n").unwrap();
    std::fs::create_dir(dir.path().join(".sqlx")).unwrap();
    std::fs::write(dir.path().join(".sqlx/query-0.json"), "{}").unwrap();
    let offline = server.ok_in(dir.path(), &["up"]).await;
    assert!(
        offline
            .stderr
            .contains("sqlx's offline query data (.sqlx) is in the source")
            && offline.stderr.contains("probe SQLX_OFFLINE=Some(\"true\")"),
        "{}",
        offline.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_command_runs_before_cargo_and_its_output_ships() {
    setup();
    let server = TestServer::start().await;
    let dir = app_with_build_script("front-end", "fn main() {}\n");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"front-end\"\n\n[build]\ncommand = \"mkdir -p dist && echo built by the command > dist/index.txt\"\n",
    )
    .unwrap();
    let deployed = server.ok_in(dir.path(), &["up"]).await;
    assert!(
        deployed
            .stderr
            .contains("running the build command: mkdir -p dist"),
        "{}",
        deployed.stderr
    );
    // The app finds it beside its source, in the slug.
    let read = server.get("front-end", "/read?path=dist/index.txt").await;
    assert_eq!(read.body, "built by the command\n");

    // A tool the server lacks is named; the running release stays.
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"front-end\"\n\n[build]\ncommand = \"NODE_ENV=production no-such-bundler build\"\n",
    )
    .unwrap();
    let failed = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        failed
            .stderr
            .contains("`no-such-bundler` (or a program it runs) is not installed on the server"),
        "{}",
        failed.stderr
    );
    assert_eq!(server.get("front-end", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_tool_the_build_needs_and_the_server_lacks_is_named_first() {
    setup();
    let server = TestServer::start().await;
    let dir = app_with_build_script("needs-cmake", CMAKE_PROBE);
    std::fs::write(dir.path().join("berth.toml"), "app = \"needs-cmake\"\n").unwrap();
    // As if a dependency built C code with the cmake crate.
    let lock = dir.path().join("Cargo.lock");
    let mut text = std::fs::read_to_string(&lock).unwrap();
    text.push_str("\n[[package]]\nname = \"cmake\"\nversion = \"0.1.54\"\n");
    std::fs::write(&lock, text).unwrap();
    let deployed = server.ok_in(dir.path(), &["up"]).await;
    // As root berth installs it into the build's own root; else it says
    // what to install.
    let said = if berth_runtime::can_isolate() {
        "cmake (in Cargo.lock) needs `cmake`, which this server lacks: adding Debian's cmake to the build's packages"
    } else {
        "cmake (in Cargo.lock) needs `cmake`, which this server lacks: install Debian's cmake"
    };
    let has_cmake = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .chain(["/usr/bin".into()])
        .any(|dir| dir.join("cmake").is_file());
    if has_cmake {
        assert!(!deployed.stderr.contains(said), "{}", deployed.stderr);
        return;
    }
    let at = deployed
        .stderr
        .find(said)
        .unwrap_or_else(|| panic!("{}", deployed.stderr));
    let built = deployed.stderr.find("building with cargo").unwrap();
    assert!(at < built, "said before the build:\n{}", deployed.stderr);
    if berth_runtime::can_isolate() {
        assert!(
            deployed.stderr.contains("probe cmake version 3."),
            "the build ran the cmake berth installed:\n{}",
            deployed.stderr
        );
    }
}

const CMAKE_PROBE: &str = r#"
fn main() {
    match std::process::Command::new("cmake").arg("--version").output() {
        Ok(out) => println!("cargo:warning=probe {}", String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("")),
        Err(err) => println!("cargo:warning=probe no cmake: {err}"),
    }
}
"#;

const RUSTC_PROBE: &str = r#"
fn main() {
    let rustc = std::env::var("RUSTC").unwrap();
    let version = std::process::Command::new(rustc).arg("--version").output().unwrap();
    println!("cargo:warning=probe {}", String::from_utf8_lossy(&version.stdout).trim());
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_pinned_toolchain_is_used_when_the_server_has_it() {
    setup();
    let listed = std::process::Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .expect("rustup");
    let toolchains: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or("").to_string())
        .filter(|name| !name.is_empty())
        .collect();
    // Another than the default when the machine has one.
    let default_line = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|line| line.contains("default"))
        .map(|line| line.split_whitespace().next().unwrap_or("").to_string());
    let pinned = toolchains
        .iter()
        .find(|name| Some(*name) != default_line.as_ref())
        .or(toolchains.first())
        .expect("a toolchain")
        .clone();
    let expected = std::process::Command::new("rustup")
        .args(["run", &pinned, "rustc", "--version"])
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&expected.stdout).trim().to_string();

    let server = TestServer::start().await;
    let dir = app_with_build_script("pinned", RUSTC_PROBE);
    std::fs::write(
        dir.path().join("rust-toolchain.toml"),
        format!("[toolchain]\nchannel = \"{pinned}\"\n"),
    )
    .unwrap();
    let deployed = server.ok_in(dir.path(), &["up"]).await;
    assert!(
        deployed.stderr.contains(&format!("probe {expected}")),
        "{pinned} ({expected}) not used:\n{}",
        deployed.stderr
    );

    // One the server lacks: said, and the default builds it.
    std::fs::write(
        dir.path().join("rust-toolchain.toml"),
        "[toolchain]\nchannel = \"1.60.0\"\n",
    )
    .unwrap();
    let fallback = server.ok_in(dir.path(), &["up"]).await;
    assert!(
        fallback
            .stderr
            .contains("rust-toolchain asks for `1.60.0`: this server has no toolchain `1.60.0`"),
        "{}",
        fallback.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_build_that_swaps_its_source_for_a_link_leaks_and_overwrites_nothing() {
    setup();
    let server = TestServer::start().await;
    // A host folder the build points its source at.
    // (Open to all and outside /tmp, which the build has its own of, so
    // cargo, as the app, can work in it after the swap.)
    let target = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(target.path().join("precious"), "keep").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(target.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let swap = format!(
        r#"
fn main() {{
    let src = std::env::current_dir().unwrap();
    let moved = src.with_file_name("src-moved");
    let _ = std::fs::remove_dir_all(&moved);
    std::fs::rename(&src, &moved).unwrap();
    std::os::unix::fs::symlink("{}", &src).unwrap();
}}
"#,
        target.path().display()
    );
    let dir = app_with_build_script("swapper", &swap);
    // The folder holds the app's source too, so cargo, which reads it
    // through the link after the swap, builds, and a slug would be copied
    // from it.
    std::fs::create_dir(target.path().join("src")).unwrap();
    std::fs::copy(
        dir.path().join("src/main.rs"),
        target.path().join("src/main.rs"),
    )
    .unwrap();
    std::fs::set_permissions(
        target.path().join("src"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let failed = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        failed
            .stderr
            .contains("the build replaced its source folder"),
        "{}",
        failed.stderr
    );
    // The next deploy replaces the link, writing nothing through it.
    std::fs::write(dir.path().join("build.rs"), "fn main() {}\n").unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    assert_eq!(
        std::fs::read_to_string(target.path().join("precious")).unwrap(),
        "keep"
    );
    assert!(!target.path().join("Cargo.toml").exists());
}
