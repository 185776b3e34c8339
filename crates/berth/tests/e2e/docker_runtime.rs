//! End to end: `berth server --runtime docker`. An image's instances run
//! as containers of a real Docker engine (Debian's `docker.io`, started by
//! the test with a data dir and socket of its own and no bridge): pulled
//! from berth's registry, served through the router in a network berth
//! linked, as the app's own user in the image's root, scaled up and down
//! to zero, and removed when they stop.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::{Frame, TerminalSize};
use berth_testkit::TestServer;

use crate::images::{make_images, marker};
use crate::support::{run_tool, skopeo_push, umoci_insert};
use crate::terminal::ApiTerminal;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// A Docker engine of the test's own.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        // Short: the engine's sockets live under it.
        let dir = tempfile::Builder::new()
            .prefix("dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        // No configuration of the host's (/etc/docker/daemon.json).
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        // Debian's engine, with its own containerd, runc and init, whatever
        // else PATH holds.
        let child = Command::new("/usr/sbin/dockerd")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .args(["--config-file", &path("daemon.json")])
            .args(["--shutdown-timeout", "5"])
            .args(["--data-root", &path("root")])
            .args(["--exec-root", &path("exec")])
            .args(["--pidfile", &path("dockerd.pid")])
            .args(["--host", &format!("unix://{}", path("docker.sock"))])
            // No bridge, no firewall rules: berth links every container's
            // network itself.
            .args(["--bridge", "none", "--iptables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/dockerd (apt install docker.io)");
        let mut dockerd = Dockerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.answers() {
            let log = || {
                std::fs::read_to_string(dockerd.dir.path().join("dockerd.log")).unwrap_or_default()
            };
            let exited = dockerd.child.try_wait().unwrap();
            assert!(exited.is_none(), "dockerd exited ({exited:?}):\n{}", log());
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dockerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut answer = String::new();
        stream.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.ends_with("OK")
    }

    /// `docker ARGS` against this engine.
    fn docker(&self, args: &[&str]) -> String {
        let host = format!("unix://{}", self.socket().display());
        let mut all = vec!["--host", &host];
        all.extend_from_slice(args);
        run_tool("/usr/bin/docker", &all)
    }

    /// The containers berth made, running or not.
    fn containers(&self) -> Vec<String> {
        self.docker(&[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            "label=dev.berth.server",
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: the engine stops its containers and unmounts.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // An engine killed before it cleaned up leaves its mounts.
        let dir = self.dir.path().display().to_string();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount_point in mounted
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&dir))
        {
            let _ = Command::new("umount").args(["-l", mount_point]).status();
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn healthy(status: &serde_json::Value) -> usize {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|instance| instance["healthy"] == true)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_image_runs_as_docker_containers_with_runtime_docker() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "berth links containers' networks: root"
    );
    let dockerd = Dockerd::start();
    let socket = format!("unix://{}", dockerd.socket().display());
    let mut server =
        TestServer::start_with(&["--runtime", "docker", "--docker-host", &socket]).await;
    let work = tempfile::tempdir().unwrap();
    let layout = make_images(work.path());
    // A shell and stty too, for a one-off command with a terminal.
    let mut shell = vec![
        (PathBuf::from("/bin/dash"), "/bin/sh".to_string()),
        (PathBuf::from("/usr/bin/stty"), "/bin/stty".to_string()),
    ];
    for program in ["/bin/dash", "/usr/bin/stty"] {
        for library in run_tool("ldd", &[program])
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
        {
            shell.push((std::fs::canonicalize(library).unwrap(), library.to_string()));
        }
    }
    umoci_insert(&format!("{}:v1", layout.display()), &shell);
    skopeo_push(&server, &format!("{}:v1", layout.display()), "plain:v1");

    let empty = tempfile::tempdir().unwrap();
    server
        .ok_in(
            empty.path(),
            &["deploy", "--image", "plain:v1", "--app", "dock"],
        )
        .await;
    let home = server.get("dock", "/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(marker(&server, "dock").await, "one");

    // It is the engine's container: pulled by digest from berth's
    // registry, the app's user, no capabilities, a read-only root.
    let status = server.status("dock").await;
    let instance = status["instances"][0]["id"].as_str().unwrap().to_string();
    let inspected: serde_json::Value =
        serde_json::from_str(&dockerd.docker(&["inspect", &format!("berth-dock-{instance}")]))
            .unwrap();
    let container = &inspected[0];
    assert_eq!(container["State"]["Running"], true, "{container:#}");
    let image = container["Config"]["Image"].as_str().unwrap();
    assert!(image.contains("/plain@sha256:"), "{image}");
    let uid = server.get("dock", "/whoami").await.body;
    assert_ne!(uid.trim(), "0", "never root");
    assert!(
        container["Config"]["User"]
            .as_str()
            .unwrap()
            .starts_with(uid.trim()),
        "{container:#}"
    );
    assert_eq!(container["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(container["HostConfig"]["CapDrop"][0], "ALL");
    // Its root is the image's: its files, none of the host's.
    let own = server.get("dock", "/read?path=/app/marker").await;
    assert_eq!(own.body, "from the image\n");
    let hidden = server.get("dock", "/read?path=/usr/bin/env").await;
    assert_ne!(hidden.status, 200, "{}", hidden.body);
    // What it uses is read from the engine's cgroup, for status and
    // metering.
    let status = server
        .wait_for_status("dock", Duration::from_secs(30), |status| {
            status["instances"][0]["memory_bytes"].as_u64() > Some(100_000)
        })
        .await;
    assert!(
        status["instances"][0]["cpu_seconds"].as_f64() > Some(0.0),
        "{status:#}"
    );
    // Its output is the app's log, as any instance's.
    let logs = server.ok(&["logs", "--app", "dock"]).await.stdout;
    assert!(logs.contains("plain is listening"), "{logs}");

    // A one-off command runs the image's program too, in a container of
    // its own (then removed), its output and exit code passed back.
    let before = unix_now().to_string();
    let fetched = server
        .berth(&[
            "run",
            "--app",
            "dock",
            "--",
            "/app/plain",
            "fetch",
            "127.0.0.1:9",
            "/",
        ])
        .run()
        .await;
    assert_eq!(fetched.code, 1, "{}", fetched.stderr);
    assert!(
        fetched.stderr.contains("connect 127.0.0.1:9"),
        "{}",
        fetched.stderr
    );
    assert_eq!(dockerd.containers().len(), 2, "{:?}", dockerd.containers());
    // Events up to now: `docker events` then ends instead of following.
    let until = (unix_now() + 1).to_string();
    let created = dockerd.docker(&[
        "events",
        "--since",
        &before,
        "--until",
        &until,
        "--filter",
        "event=create",
        "--filter",
        "label=dev.berth.server",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    let one_off: Vec<&str> = created
        .lines()
        .filter(|name| !name.contains(&instance))
        .collect();
    assert_eq!(one_off.len(), 2, "its network's and its own: {created}");

    // With a terminal: the container's own, relayed to the client's —
    // a terminal on its stdin and stdout, the client's window size, the
    // typed lines, the exit code.
    let typed = server
        .berth(&["run", "--tty", "--app", "dock", "--", "/bin/sh"])
        .run_with_input(
            b"test -t 0 && test -t 1 && echo on-a-$((6*7))-terminal; stty size; exit 3\n",
        )
        .await;
    assert_eq!(typed.code, 3, "{} / {}", typed.stdout, typed.stderr);
    assert!(
        typed.stdout.contains("on-a-42-terminal"),
        "{}",
        typed.stdout
    );
    assert!(typed.stdout.contains("24 80"), "{}", typed.stdout);
    // Piped input's end is the shell's end, as on berth's own terminal.
    let piped = server
        .berth(&["run", "--tty", "--app", "dock", "--", "/bin/sh"])
        .run_with_input(b"echo piped-$((2+3))\n")
        .await;
    assert_eq!(piped.code, 0, "{} / {}", piped.stdout, piped.stderr);
    assert!(piped.stdout.contains("piped-5"), "{}", piped.stdout);
    // Through the API: a size, a resize, Ctrl-C at a `read`.
    let mut terminal = ApiTerminal::open(&server, "dock", "/bin/sh", (100, 30)).await;
    let wait = Duration::from_secs(20);
    terminal.send(Frame::Input(b"stty size\n".to_vec())).await;
    terminal.read_until("30 100", wait).await;
    terminal
        .send(Frame::Resize(TerminalSize {
            cols: 120,
            rows: 40,
        }))
        .await;
    // Followed by polling: asked again until the new size shows.
    let resized = Instant::now();
    loop {
        terminal.send(Frame::Input(b"stty size\n".to_vec())).await;
        if terminal
            .read_for("40 120", Duration::from_millis(500))
            .await
        {
            break;
        }
        assert!(resized.elapsed() < wait, "never resized: {}", terminal.text);
    }
    // Ctrl-C interrupts the `read`: the next line is a command again,
    // not the line read.
    terminal
        .send(Frame::Input(b"read line; echo got-$line\n".to_vec()))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminal.send(Frame::Input(vec![0x03])).await;
    terminal
        .send(Frame::Input(b"echo after-$((40+2)); exit 5\n".to_vec()))
        .await;
    terminal.read_until("after-42", wait).await;
    assert!(!terminal.text.contains("got-echo"), "{}", terminal.text);
    // Sent once both its containers are removed.
    let (code, _) = terminal.read_exit(Duration::from_secs(60)).await;
    assert_eq!(code, 5, "{}", terminal.text);

    // Scaled to 2: two instances, each two containers (its network's and
    // the app's); each serves.
    server.ok(&["scale", "web=2", "--app", "dock"]).await;
    server
        .wait_for_status("dock", Duration::from_secs(60), |status| {
            healthy(status) == 2
        })
        .await;
    for _ in 0..4 {
        assert_eq!(server.get("dock", "/").await.status, 200);
    }
    assert_eq!(dockerd.containers().len(), 4, "{:?}", dockerd.containers());

    // To zero: every container is removed; back to one, it serves again.
    server.ok(&["scale", "web=0", "--app", "dock"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dockerd.containers().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", dockerd.containers());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.ok(&["scale", "web=1", "--app", "dock"]).await;
    server
        .wait_for_status("dock", Duration::from_secs(60), |status| {
            healthy(status) == 1
        })
        .await;
    assert_eq!(marker(&server, "dock").await, "one");

    // A server that stops stops its containers and removes them.
    server.stop().await;
    assert!(
        dockerd.containers().is_empty(),
        "{:?}",
        dockerd.containers()
    );
    // What a crashed server left (a container with its label) is removed
    // when it starts again; its instances run again.
    let owner = format!("dev.berth.server={}", server.data_dir().display());
    dockerd.docker(&["create", "--label", &owner, "berth-pause:1", "/pause"]);
    assert_eq!(dockerd.containers().len(), 1);
    server.restart().await;
    server
        .wait_for_status("dock", Duration::from_secs(60), |status| {
            healthy(status) == 1
        })
        .await;
    assert_eq!(dockerd.containers().len(), 2, "{:?}", dockerd.containers());
    assert_eq!(server.get("dock", "/").await.status, 200);
}

/// `berth server` with `ARGS` (a data dir of its own, ports of the
/// system's choice): it must refuse to start; what it said.
fn server_refuses(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--api", "127.0.0.1:0", "--router", "127.0.0.1:0"])
        .args(args)
        .env("BERTH_DATA", data.path())
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_docker_engine_that_cannot_be_reached_is_said_before_the_server_starts() {
    let refused = server_refuses(&[
        "--runtime",
        "docker",
        "--docker-host",
        "tcp://127.0.0.1:2375",
    ]);
    assert!(
        refused.contains("--docker-host tcp://127.0.0.1:2375")
            && refused.contains("on a unix socket"),
        "{refused}"
    );
    let missing = server_refuses(&[
        "--runtime",
        "docker",
        "--docker-host",
        "unix:///nonexistent/docker.sock",
    ]);
    // Without root, what is missing is said first.
    let expected = if berth_runtime::can_isolate() {
        "cannot reach the Docker engine at /nonexistent/docker.sock"
    } else {
        "--runtime docker needs berth running as root"
    };
    assert!(missing.contains(expected), "{missing}");
    let unknown = server_refuses(&["--runtime", "podman"]);
    assert!(unknown.contains("invalid value 'podman'"), "{unknown}");
}
