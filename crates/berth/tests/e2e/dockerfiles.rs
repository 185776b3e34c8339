//! Dockerfiles of any shape but cargo-chef's, built with Debian's buildah
//! on a base image made here (a shell, `cat` and the libraries
//! examples/plain needs, by `umoci`) and pushed to berth's registry: the
//! `RUN`s run as an unprivileged user of the app's own range, the image
//! is served, and a failing build leaves the old release serving.

use std::path::{Path, PathBuf};

use crate::images::plain_binary;
use crate::support::{run_tool, skopeo_push, umoci_insert};
use berth_testkit::TestServer;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// An OCI layout with `shell:v1`: `/bin/sh` (dash), `/bin/cat`, `/bin/dd`, and the
/// libraries they and `binary` need.
fn make_shell_base(dir: &Path, binary: &Path) -> PathBuf {
    let layout = dir.join("shell");
    let image = format!("{}:v1", layout.display());
    run_tool(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    run_tool("umoci", &["new", "--image", &image]);
    let mut inserts = vec![
        (PathBuf::from("/bin/dash"), "/bin/sh".to_string()),
        (PathBuf::from("/bin/cat"), "/bin/cat".to_string()),
        (PathBuf::from("/bin/dd"), "/bin/dd".to_string()),
    ];
    let mut libraries = Vec::new();
    for program in [
        "/bin/dash",
        "/bin/cat",
        "/bin/dd",
        &binary.display().to_string(),
    ] {
        let ldd = run_tool("ldd", &[program]);
        for library in ldd.split_whitespace().filter(|word| word.starts_with('/')) {
            if !libraries.contains(&library.to_string()) {
                libraries.push(library.to_string());
            }
        }
    }
    for library in libraries {
        inserts.push((std::fs::canonicalize(&library).unwrap(), library));
    }
    umoci_insert(&image, &inserts);
    layout
}

/// Two stages on the shell base: the first records who its `RUN` runs
/// as, the second takes that, the binary from the context, and a file a
/// `RUN` writes.
const DOCKERFILE: &str = r#"ARG BASE=shell:v1
FROM ${BASE} AS probe
RUN cat /proc/self/uid_map > /uid_map
FROM ${BASE}
COPY plain /app/plain
COPY --from=probe /uid_map /app/uid_map
RUN echo "written by RUN" > /app/marker
RUN echo "$HTTPS_PROXY" > /app/proxy
ENV MARKER=buildah
WORKDIR /app
ENTRYPOINT ["/app/plain"]
"#;

async fn read(server: &TestServer, path: &str) -> String {
    let answer = server.get("built", &format!("/read?path={path}")).await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_dockerfile_of_another_shape_is_built_with_buildah_and_served() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "buildah and image roots need root"
    );
    let server = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let binary = plain_binary();
    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(&binary, app.join("plain")).unwrap();
    std::fs::write(app.join("Dockerfile"), DOCKERFILE).unwrap();
    let deploy = ["deploy", "--app", "built"];

    // Its base is not in the registry yet: said, with what to do.
    let refused = server.fails_in(&app, &deploy).await;
    assert!(
        refused
            .stderr
            .contains("builds on shell:v1, which is not in berth's registry"),
        "{}",
        refused.stderr
    );

    let base = make_shell_base(work.path(), &binary);
    skopeo_push(&server, &format!("{}:v1", base.display()), "shell:v1");
    let deployed = server.ok_in(&app, &deploy).await;
    assert!(
        deployed
            .stderr
            .contains("building with buildah on shell:v1"),
        "{}",
        deployed.stderr
    );
    // buildah's own output streams as the build's.
    assert!(
        deployed.stderr.contains("STEP 1/")
            && deployed.stderr.contains("RUN cat /proc/self/uid_map"),
        "{}",
        deployed.stderr
    );
    assert_eq!(read(&server, "/app/marker").await, "written by RUN\n");
    let environ = read(&server, "/proc/self/environ").await;
    assert!(environ.contains("MARKER=buildah"), "{environ:?}");
    // The RUNs' way out is the build's proxy, as a cargo build's.
    let proxy = read(&server, "/app/proxy").await;
    assert!(proxy.starts_with("http://"), "{proxy:?}");
    // The RUN's root was a host user far from root and from any app's.
    let uid_map = read(&server, "/app/uid_map").await;
    let host_uid: u64 = uid_map
        .split_whitespace()
        .nth(1)
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("uid_map: {uid_map:?}"));
    assert!(host_uid >= 2_000_000_000, "{uid_map:?}");

    // A RUN that fails: its output is the error, the old release serves.
    std::fs::write(
        app.join("Dockerfile"),
        "FROM shell:v1\nRUN echo about to fail && exit 3\n",
    )
    .unwrap();
    let failed = server.fails_in(&app, &deploy).await;
    assert!(
        failed.stderr.contains("the Dockerfile build failed")
            && failed.stderr.contains("about to fail"),
        "{}",
        failed.stderr
    );
    assert_eq!(read(&server, "/app/marker").await, "written by RUN\n");

    // buildah itself runs on the host: nothing it would fetch is allowed.
    std::fs::write(
        app.join("Dockerfile"),
        format!("FROM shell:v1\nADD {}/v1/apps /apps\n", server.api_url),
    )
    .unwrap();
    let fetch = server.fails_in(&app, &deploy).await;
    assert!(
        fetch
            .stderr
            .contains("fetching from the network outside a RUN is not allowed"),
        "{}",
        fetch.stderr
    );
    assert_eq!(read(&server, "/app/marker").await, "written by RUN\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_dockerfile_build_that_fills_the_disk_is_stopped_at_the_reserve() {
    setup();
    assert!(berth_runtime::can_isolate(), "buildah needs root");
    // The data dir is a disk of its own: 1.5 GiB, 1 GiB of it reserved,
    // and a RUN that writes 4 GiB.
    let server = TestServer::start_on_disk_of(1536, &["--disk-reserve-mib", "1024"]).await;
    let work = tempfile::tempdir().unwrap();
    let binary = plain_binary();
    let base = make_shell_base(work.path(), &binary);
    skopeo_push(&server, &format!("{}:v1", base.display()), "shell:v1");
    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("Dockerfile"),
        "FROM shell:v1\nRUN dd if=/dev/zero of=/fill bs=1M count=4096 conv=fsync\n",
    )
    .unwrap();
    let failed = server.fails_in(&app, &["deploy", "--app", "filler"]).await;
    assert!(
        failed.stderr.contains("stopped: its disk has")
            && failed.stderr.contains("--disk-reserve-mib"),
        "{}",
        failed.stderr
    );
    // What it wrote went with it: the room is back.
    let after = berth_runtime::free_disk_bytes(server.data_dir()).unwrap();
    assert!(after >> 20 > 1024 + 256, "{} MiB free after", after >> 20);
}
