//! Images deployed end to end, made on this machine: examples/plain is
//! built with cargo, put with the libraries `ldd` names into an OCI image
//! by `umoci`, pushed to berth's registry by `skopeo`, and run in berth's
//! sandbox with the image as its root — by `berth deploy --image` and by
//! a fly.toml's `[build] image`; scaled, woken from zero, rolled back after
//! its tag is gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{run_tool, skopeo_push, umoci_insert};
use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// examples/plain built with cargo: its binary.
pub(crate) fn plain_binary() -> PathBuf {
    let source = example("plain");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-plain");
    let built = Command::new("cargo")
        .args(["build", "--release", "--quiet"])
        .current_dir(source.path())
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(built.success());
    target.join("release/plain")
}

/// An OCI layout with `plain:v1` (env `MARKER=one`), `v2` (`MARKER=two`)
/// and `riscv` (the same image, said to be for riscv64): the binary at
/// `/app/plain` with its libraries, a marker file, and its entrypoint.
pub(crate) fn make_images(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let binary = plain_binary();
    let image = format!("{}:v1", layout.display());
    run_tool(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    run_tool("umoci", &["new", "--image", &image]);
    let mut inserts = vec![(binary.clone(), "/app/plain".to_string())];
    let ldd = run_tool("ldd", &[&binary.display().to_string()]);
    for library in ldd.split_whitespace().filter(|word| word.starts_with('/')) {
        let real = std::fs::canonicalize(library).unwrap();
        inserts.push((real, library.to_string()));
    }
    std::fs::write(files.join("marker"), "from the image\n").unwrap();
    inserts.push((files.join("marker"), "/app/marker".into()));
    umoci_insert(&image, &inserts);
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/app/plain",
            "--config.workingdir",
            "/app",
            "--config.env",
            "MARKER=one",
        ],
    );
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--tag",
            "v2",
            "--config.env",
            "MARKER=two",
        ],
    );
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--tag",
            "port80",
            "--config.exposedports",
            "80/tcp",
        ],
    );
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--tag",
            "riscv",
            "--architecture",
            "riscv64",
        ],
    );
    layout
}

fn push(server: &TestServer, layout: &Path, tag: &str) {
    skopeo_push(
        server,
        &format!("{}:{tag}", layout.display()),
        &format!("plain:{tag}"),
    );
}

pub(crate) async fn marker(server: &TestServer, app: &str) -> String {
    let environ = server.get(app, "/read?path=/proc/self/environ").await;
    assert_eq!(environ.status, 200, "{}", environ.body);
    environ
        .body
        .split('\0')
        .find_map(|pair| pair.strip_prefix("MARKER="))
        .unwrap_or_else(|| panic!("no MARKER in {:?}", environ.body))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_image_is_deployed_scaled_rolled_back_and_woken() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "images run in a root of their own: root"
    );
    let mut server = TestServer::start_with(&["--registry-grace", "0s"]).await;
    let host = server.api_url.trim_start_matches("http://").to_string();
    let work = tempfile::tempdir().unwrap();
    let layout = make_images(work.path());
    for tag in ["v1", "v2", "riscv", "port80"] {
        push(&server, &layout, tag);
    }

    // An image alone, in a folder with nothing: the app is named after it.
    let empty = tempfile::tempdir().unwrap();
    let deployed = server
        .ok_in(
            empty.path(),
            &["deploy", "--image", &format!("{host}/plain:v1")],
        )
        .await;
    assert!(
        deployed.stderr.contains("image plain:v1"),
        "{}",
        deployed.stderr
    );
    let home = server.get("plain", "/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(marker(&server, "plain").await, "one");
    // Its root is the image's: its own files, none of the host's.
    let own = server.get("plain", "/read?path=/app/marker").await;
    assert_eq!(own.body, "from the image\n");
    for host_only in ["/usr/bin/env", "/etc/passwd"] {
        let hidden = server
            .get("plain", &format!("/read?path={host_only}"))
            .await;
        assert_eq!(hidden.status, 403, "{host_only}: {}", hidden.body);
    }
    let uid = server.get("plain", "/whoami").await.body;
    assert_ne!(uid.trim(), "0", "never root");

    // Scaled to 3, each serves.
    server.ok(&["scale", "web=3", "--app", "plain"]).await;
    server
        .wait_for_status("plain", Duration::from_secs(60), |status| {
            status["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["healthy"] == true)
                .count()
                == 3
        })
        .await;
    for _ in 0..6 {
        assert_eq!(server.get("plain", "/").await.status, 200);
    }
    server.ok(&["scale", "web=1", "--app", "plain"]).await;
    let layers_on_disk = || {
        std::fs::read_dir(server.data_dir().join("images/layers"))
            .unwrap()
            .count()
    };
    let layers_of_v1 = layers_on_disk();
    assert!(layers_of_v1 >= 3, "one folder per layer: {layers_of_v1}");

    // v2, then v1's manifest is deleted from the registry and collected:
    // the rollback needs neither.
    server
        .ok_in(
            empty.path(),
            &[
                "deploy",
                "--image",
                &format!("{host}/plain:v2"),
                "--app",
                "plain",
            ],
        )
        .await;
    assert_eq!(marker(&server, "plain").await, "two");
    // v2 differs from v1 in its config only: its layers are v1's, not
    // unpacked again.
    assert_eq!(layers_on_disk(), layers_of_v1);
    let creds = format!("x:{}", server.token);
    run_tool(
        "skopeo",
        &[
            "delete",
            "--creds",
            &creds,
            "--tls-verify=false",
            &format!("docker://{host}/plain:v1"),
        ],
    );
    let collected = server.ok(&["registry", "gc", "--json"]).await.json();
    assert!(
        collected["blobs_removed"].as_u64().unwrap() >= 1,
        "{collected}"
    );
    server.ok(&["rollback", "--app", "plain"]).await;
    assert_eq!(marker(&server, "plain").await, "one");
    // What releases run is kept: v2's image survives a collection untagged.
    run_tool(
        "skopeo",
        &[
            "delete",
            "--creds",
            &creds,
            "--tls-verify=false",
            &format!("docker://{host}/plain:v2"),
        ],
    );
    server.ok(&["registry", "gc"]).await;
    server.ok(&["rollback", "--app", "plain"]).await;
    assert_eq!(marker(&server, "plain").await, "two");

    // fly.toml's [build] image, scaled to zero when idle and woken.
    push(&server, &layout, "v2");
    let fly = tempfile::tempdir().unwrap();
    std::fs::write(
        fly.path().join("fly.toml"),
        format!(
            "app = \"flyimg\"\n[build]\nimage = \"{host}/plain:v2\"\n[http_service]\nauto_stop_machines = true\nmin_machines_running = 0\nidle_timeout = \"1s\"\n"
        ),
    )
    .unwrap();
    server.ok_in(fly.path(), &["deploy"]).await;
    server
        .wait_for_status("flyimg", Duration::from_secs(30), |status| {
            status["instances"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(marker(&server, "flyimg").await, "two");

    // An image that exposes port 80 is served there by the app's user,
    // which may bind it in its own network namespace.
    server
        .ok_in(
            empty.path(),
            &[
                "deploy",
                "--image",
                &format!("{host}/plain:port80"),
                "--app",
                "web80",
            ],
        )
        .await;
    let on_80 = server.get("web80", "/read?path=/proc/self/environ").await;
    assert!(on_80.body.contains("PORT=80\0"), "{}", on_80.body);

    // Bad input: a tag that does not exist, another registry, another
    // architecture — each a clear error, and the app keeps serving.
    for (reference, said) in [
        (format!("{host}/plain:nope"), "manifest unknown"),
        ("docker.io/library/postgres:16".to_string(), "own registry"),
        (format!("{host}/plain:riscv"), "riscv64"),
    ] {
        let refused = server
            .fails_in(
                empty.path(),
                &["deploy", "--image", &reference, "--app", "plain"],
            )
            .await;
        assert!(
            refused.stderr.contains(said),
            "{reference}: {}",
            refused.stderr
        );
    }
    assert_eq!(marker(&server, "plain").await, "two");

    // A stopped server leaves no image root mounted; the next one stacks
    // the layers again for the instances it starts.
    let images = server.data_dir().join("images").display().to_string();
    let mounted_roots = || {
        let data = images.clone();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|line| {
                line.split(' ')
                    .nth(4)
                    .is_some_and(|at| at.starts_with(&data))
            })
            .count()
    };
    assert!(mounted_roots() >= 1);
    server.stop().await;
    assert_eq!(mounted_roots(), 0, "roots left mounted by a stopped server");
    server.restart().await;
    server
        .wait_for_status("plain", Duration::from_secs(30), |status| {
            status["instances"][0]["healthy"] == true
        })
        .await;
    assert_eq!(marker(&server, "plain").await, "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_app_built_from_source_becomes_an_image_that_runs_anywhere() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "images run in a root of their own: root"
    );
    let server = TestServer::start().await;
    let host = server.api_url.trim_start_matches("http://").to_string();
    let source = example("plain");
    server.ok_in(source.path(), &["up"]).await;
    let built = server
        .ok(&["image", "build", "--app", "plain", "--json"])
        .await
        .json();
    assert_eq!(built["repository"], "plain");
    assert_eq!(built["tag"], "v1");
    // Any registry client can take it out.
    let out = tempfile::tempdir().unwrap();
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-creds",
            &format!("x:{}", server.token),
            "--src-tls-verify=false",
            &format!("docker://{host}/plain:v1"),
            &format!("oci:{}:v1", out.path().join("layout").display()),
        ],
    );
    // It carries what it needs (the slug and its binary's libraries, no
    // base image): run as another app, in a root of its own.
    let empty = tempfile::tempdir().unwrap();
    server
        .ok_in(
            empty.path(),
            &["deploy", "--image", "plain:v1", "--app", "copy"],
        )
        .await;
    let home = server.get("copy", "/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    let binary = server.get("copy", "/read?path=/app/.berth/app").await;
    assert_eq!(binary.body, "plain", "the slug is at /app");
    let hidden = server.get("copy", "/read?path=/usr/bin/env").await;
    assert_eq!(hidden.status, 403, "not the host's root: {}", hidden.body);
    // An image release is its image: built again, it is tagged, not rebuilt.
    let again = server
        .ok(&["image", "build", "--app", "copy", "--tag", "same", "--json"])
        .await
        .json();
    assert_eq!(again["digest"], built["digest"]);
    let refused = server
        .fails(&["image", "build", "--app", "plain", "--tag", "no good"])
        .await;
    assert!(
        refused.stderr.contains("is not a tag"),
        "{}",
        refused.stderr
    );
}

/// The guide's Dockerfile (cargo-chef's README) for examples/hello.
const CHEF_DOCKERFILE: &str = r#"FROM lukemathwalker/cargo-chef:latest-rust-1 AS chef
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --bin hello

FROM debian:bookworm-slim AS runtime
WORKDIR /app
COPY --from=builder /app/target/release/hello /usr/local/bin
ENV GREETING_FROM=dockerfile
ENTRYPOINT ["/usr/local/bin/hello"]
"#;

/// A stand-in for `debian:bookworm-slim`, made here: the libraries a Rust
/// binary needs (this test's own, by `ldd`) and `/usr/local/bin`.
fn make_base(dir: &Path) -> PathBuf {
    let layout = dir.join("base");
    let image = format!("{}:bookworm-slim", layout.display());
    run_tool(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    run_tool("umoci", &["new", "--image", &image]);
    let me = std::env::current_exe().unwrap();
    let ldd = run_tool("ldd", &[&me.display().to_string()]);
    let keep = dir.join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join(".keep"), "").unwrap();
    run_tool(
        "umoci",
        &[
            "insert",
            "--image",
            &image,
            &keep.display().to_string(),
            "/usr/local/bin",
        ],
    );
    for library in ldd.split_whitespace().filter(|word| word.starts_with('/')) {
        let real = std::fs::canonicalize(library).unwrap();
        run_tool(
            "umoci",
            &[
                "insert",
                "--image",
                &image,
                &real.display().to_string(),
                library,
            ],
        );
    }
    layout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn the_guides_cargo_chef_dockerfile_is_built_natively_on_its_base() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "images run in a root of their own: root"
    );
    let server = TestServer::start().await;
    let app = example("hello");
    std::fs::write(app.path().join("Dockerfile"), CHEF_DOCKERFILE).unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"hello\"\n[build]\ndockerfile = \"Dockerfile\"\n",
    )
    .unwrap();
    // Without its base in the registry: said, and what to do.
    let refused = server.fails_in(app.path(), &["up"]).await;
    assert!(
        refused
            .stderr
            .contains("debian:bookworm-slim is not in berth's registry"),
        "{}",
        refused.stderr
    );
    let work = tempfile::tempdir().unwrap();
    let base = make_base(work.path());
    skopeo_push(
        &server,
        &format!("{}:bookworm-slim", base.display()),
        "debian:bookworm-slim",
    );
    let deployed = server.ok_in(app.path(), &["deploy"]).await;
    assert!(
        deployed.stderr.contains("a cargo-chef build, run natively"),
        "{}",
        deployed.stderr
    );
    let home = server.get("hello", "/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    // The runtime stage's ENV, in a root made of the base and the binary.
    let env = server.get("hello", "/env/GREETING_FROM").await;
    assert_eq!(env.body, "dockerfile");
    // A Dockerfile of another shape goes to buildah; its base is not in
    // the registry: a clear error, the app keeps serving.
    std::fs::write(
        app.path().join("Dockerfile"),
        "FROM rust\nRUN cargo build --release\n",
    )
    .unwrap();
    let other = server.fails_in(app.path(), &["deploy"]).await;
    assert!(
        other.stderr.contains("not the cargo-chef shape")
            && other
                .stderr
                .contains("builds on rust, which is not in berth's registry"),
        "{}",
        other.stderr
    );
    assert_eq!(server.get("hello", "/").await.status, 200);
}
