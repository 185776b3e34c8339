use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// The sandboxed tests run one at a time: each measures a cgroup limit
/// (memory, pids) on a machine with two cores, and two at once under a
/// memory limit made one of them fail now and then (Signal 9, no output).
pub(super) static SANDBOXED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(super) fn spec(command: &str) -> InstanceSpec {
    InstanceSpec {
        id: "web-test".into(),
        app: "test".into(),
        command: command.into(),
        workdir: std::env::temp_dir(),
        bin_dir: std::env::temp_dir(),
        env: vec![("GREETING".into(), "hi there".into())],
        binds: Vec::new(),
        sandbox: None,
        stop_signal: libc::SIGTERM,
        terminal: None,
        container: None,
    }
}

/// A sandbox as user `nobody` with `memory_mib` of memory and `pids` processes.
pub(super) fn nobody(memory_mib: u64, pids: u64) -> crate::Sandbox {
    crate::Sandbox {
        uid: 65534,
        gid: 65534,
        limits: Some(crate::cgroup::Limits {
            memory_bytes: memory_mib * 1024 * 1024,
            cpus: 0.5,
            pids,
        }),
        private_tmp: true,
        network: None,
        root: None,
    }
}

/// A sink that keeps every line, and the lines it kept.
pub(super) fn collected() -> (Arc<Mutex<Vec<String>>>, OutputSink) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let sink: OutputSink = Arc::new(move |_, line| sink_lines.lock().unwrap().push(line));
    (lines, sink)
}

#[test]
fn plain_commands_skip_the_shell() {
    assert_eq!(
        plain_words("hello serve --port 8080"),
        Some(vec!["hello", "serve", "--port", "8080"])
    );
    assert_eq!(plain_words("./bin/app"), Some(vec!["./bin/app"]));
    assert_eq!(
        command_line(r#"["/app/run", "a b", "it's"]"#),
        ["/app/run", "a b", "it's"]
    );
    assert_eq!(command_line("[ -e x ] && y")[0], "/bin/sh");
    for shell in [
        "echo $PORT",
        "a && b",
        "FOO=1 app",
        "echo 'hi'",
        "ls *.rs",
        "app > out",
    ] {
        assert_eq!(plain_words(shell), None, "{shell}");
    }
}

#[tokio::test]
async fn its_exit_comes_after_its_last_line() {
    let (lines, sink) = collected();
    let running = ProcessDriver::plain()
            .start(
                &spec("i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo line $i; echo err $i >&2; done; echo last"),
                sink,
            )
            .unwrap();
    assert_eq!(running.exited().await, ExitCause::Code(0));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 6001, "every line before the exit");
    assert!(lines.contains(&"last".to_string()));
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_sandboxed_instance_has_its_user_tmp_and_memory_limit() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    // As in the server, whose umask closes what it creates.
    crate::private_umask();
    let driver = ProcessDriver::detect();
    let (lines, sink) = collected();
    let mut sandboxed = spec(
        "id -u; id -G; ls -A /tmp | wc -l; touch /tmp/mine && echo tmp-ok; \
         grep NoNewPrivs /proc/self/status | tr -s '\\t ' ' '; grep CapEff /proc/self/status | tr -s '\\t ' ' '; \
         echo \"$PATH\" | cut -d: -f2-",
    );
    sandboxed.sandbox = Some(nobody(32, 256));
    let instance = driver.start(&sandboxed, sink.clone()).unwrap();
    assert_eq!(instance.exited().await, ExitCause::Code(0));
    assert_eq!(
        *lines.lock().unwrap(),
        [
            "65534",
            "65534",
            "0",
            "tmp-ok",
            "NoNewPrivs: 1",
            "CapEff: 0000000000000000",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    );

    // Past its memory: killed by the kernel, and said so.
    let mut hungry = sandboxed.clone();
    hungry.id = "web-hungry".into();
    hungry.command = "dd if=/dev/zero of=/dev/null bs=200M count=1".into();
    let instance = driver.start(&hungry, sink).unwrap();
    if driver.cgroups.is_some() {
        assert_eq!(
            instance.exited().await,
            ExitCause::OutOfMemory { limit_mib: 32 }
        );
    } else {
        instance.exited().await;
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_sandboxed_instance_writes_only_to_its_scratch_and_writable_mounts() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    let driver = ProcessDriver::detect();
    // Its slug (the working directory), open to it as a slug is, and two
    // mounts, one writable.
    let slug = tempfile::tempdir_in("/var/tmp").unwrap();
    let volume = tempfile::tempdir_in("/var/tmp").unwrap();
    let shown = tempfile::tempdir_in("/var/tmp").unwrap();
    for dir in [slug.path(), volume.path(), shown.path()] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let try_write = |path: &str| {
        format!("(echo x > {path} && echo {path}: written) 2>/dev/null || echo {path}: refused; ")
    };
    let mut command = String::new();
    for path in [
        "./in-slug",
        "/tmp/scratch",
        "/var/tmp/scratch",
        "/dev/shm/scratch",
        "/srv/volume/file",
        "/srv/shown/file",
        "\"$HOME/.cache\"",
    ] {
        command.push_str(&try_write(path));
    }
    command.push_str("ls /tmp");
    let mut sandboxed = spec(&command);
    sandboxed.id = "web-readonly".into();
    sandboxed.workdir = slug.path().to_path_buf();
    sandboxed.binds = vec![
        crate::BindMount {
            source: volume.path().to_path_buf(),
            destination: "/srv/volume".into(),
            writable: true,
        },
        crate::BindMount {
            source: shown.path().to_path_buf(),
            destination: "/srv/shown".into(),
            writable: false,
        },
    ];
    sandboxed.sandbox = Some(nobody(64, 256));
    let (lines, sink) = collected();
    let instance = driver.start(&sandboxed, sink).unwrap();
    assert_eq!(instance.exited().await, ExitCause::Code(0));
    assert_eq!(
        *lines.lock().unwrap(),
        [
            "./in-slug: refused",
            "/tmp/scratch: written",
            "/var/tmp/scratch: refused",
            "/dev/shm/scratch: written",
            "/srv/volume/file: written",
            "/srv/shown/file: refused",
            "/tmp/.cache: written",
            "scratch",
        ]
    );
    assert!(volume.path().join("file").exists());
    assert!(!slug.path().join("in-slug").exists());
    assert!(!std::path::Path::new("/var/tmp/scratch").exists());
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_sandboxed_instance_cannot_make_namespaces_or_mount() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    let driver = ProcessDriver::detect();
    // Any user may make a user namespace on this kernel (the test shows
    // it); a sandboxed app may not. Forks and threads still work.
    let outside = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "unshare",
            "-U",
            "true",
        ])
        .status()
        .unwrap();
    assert!(
        outside.success(),
        "unprivileged user namespaces are off here"
    );
    let mut sandboxed = spec(
        "unshare -U true 2>/dev/null && echo userns: made || echo userns: refused; \
         unshare -r true 2>/dev/null && echo root-map: made || echo root-map: refused; \
         (sleep 0.05 & wait) && echo fork: ok; \
         cat /proc/self/status | grep -c '^Seccomp:.*2'",
    );
    sandboxed.id = "web-seccomp".into();
    sandboxed.sandbox = Some(nobody(64, 256));
    let (lines, sink) = collected();
    let instance = driver.start(&sandboxed, sink).unwrap();
    assert_eq!(instance.exited().await, ExitCause::Code(0));
    assert_eq!(
        *lines.lock().unwrap(),
        ["userns: refused", "root-map: refused", "fork: ok", "1"]
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_sandboxed_instance_sees_no_homes_or_logs() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    // The host has something there (so an empty listing means hidden).
    let host_entries = |dir: &str| std::fs::read_dir(dir).map_or(0, |entries| entries.count());
    assert!(host_entries("/root") > 0 && host_entries("/var/log") > 0);
    let driver = ProcessDriver::detect();
    let mut sandboxed = spec(
        "for dir in /root /var/log /home; do echo \"$dir $(ls -A $dir | wc -l)\"; done; ls /usr/bin | grep -c '^sh$'",
    );
    sandboxed.id = "web-hidden".into();
    sandboxed.sandbox = Some(nobody(64, 256));
    let (lines, sink) = collected();
    let instance = driver.start(&sandboxed, sink).unwrap();
    assert_eq!(instance.exited().await, ExitCause::Code(0));
    assert_eq!(
        *lines.lock().unwrap(),
        ["/root 0", "/var/log 0", "/home 0", "1"]
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_bind_mount_is_seen_by_the_instance_only() {
    assert!(crate::can_isolate(), "bind mounts need root");
    let volume = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let destination = elsewhere.path().join("data");
    let mut spec = spec("echo kept > /dev/null; echo written > \"$DEST/file\"; ls \"$DEST\"");
    spec.env
        .push(("DEST".into(), destination.display().to_string()));
    spec.binds.push(crate::BindMount {
        source: volume.path().to_path_buf(),
        destination: destination.clone(),
        writable: true,
    });
    let sink: OutputSink = Arc::new(|_, _| {});
    let instance = ProcessDriver::plain().start(&spec, sink).unwrap();
    assert_eq!(instance.exited().await, ExitCause::Code(0));
    assert_eq!(
        std::fs::read_to_string(volume.path().join("file")).unwrap(),
        "written\n"
    );
    // The host's directory stays an empty mount point.
    assert!(!destination.join("file").exists());
}

#[tokio::test]
async fn output_is_captured_line_by_line_with_the_env() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let sink: OutputSink =
        Arc::new(move |stream, line| sink_lines.lock().unwrap().push((stream, line)));
    let instance = ProcessDriver::plain()
        .start(&spec("echo \"$GREETING\"; echo oops >&2; exit 3"), sink)
        .unwrap();
    assert_eq!(instance.exited().await, ExitCause::Code(3));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.contains(&(OutputStream::Stdout, "hi there".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(OutputStream::Stderr, "oops".into())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn stop_sends_sigterm_then_sigkill_after_the_grace() {
    let sink: OutputSink = Arc::new(|_, _| {});
    let polite = ProcessDriver::plain()
        .start(&spec("sleep 30"), sink.clone())
        .unwrap();
    assert_eq!(
        polite.stop(Duration::from_secs(5)).await,
        ExitCause::Signal(15)
    );

    let stubborn = ProcessDriver::plain()
        .start(&spec("trap '' TERM; while true; do sleep 0.05; done"), sink)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        stubborn.stop(Duration::from_millis(300)).await,
        ExitCause::Signal(9)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn stop_sends_the_apps_own_stop_signal() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let sink: OutputSink = Arc::new(move |_, line| sink_lines.lock().unwrap().push(line));
    let mut asks_for_int = spec(
        "trap 'echo got INT; exit 0' INT; trap 'echo got TERM; exit 1' TERM; echo ready; while true; do sleep 0.05; done",
    );
    asks_for_int.stop_signal = libc::SIGINT;
    let instance = ProcessDriver::plain().start(&asks_for_int, sink).unwrap();
    while !lines.lock().unwrap().iter().any(|line| line == "ready") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        instance.stop(Duration::from_secs(5)).await,
        ExitCause::Code(0)
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lines = lines.lock().unwrap().clone();
    assert!(lines.contains(&"got INT".to_string()), "{lines:?}");
}

#[test]
fn simple_commands_are_execed_and_compound_ones_kept() {
    assert_eq!(
        shell_line("hello serve --port $PORT"),
        "exec hello serve --port $PORT"
    );
    assert_eq!(shell_line("migrate && serve"), "migrate && serve");
    // Operators inside quotes belong to the argument: still one command.
    assert_eq!(
        shell_line("sh -c 'migrate && serve'"),
        "exec sh -c 'migrate && serve'"
    );
    assert_eq!(shell_line("echo \"a;b\" x"), "exec echo \"a;b\" x");
    assert_eq!(shell_line("echo \"$(date)\""), "echo \"$(date)\"");
    assert_eq!(shell_line("echo 'it''s'; true"), "echo 'it''s'; true");
}

#[test]
fn exit_causes_read_well() {
    assert_eq!(ExitCause::Code(1).to_string(), "exit code 1");
    assert_eq!(ExitCause::Signal(9).to_string(), "killed by SIGKILL");
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_instance_cannot_fork_past_its_pids_limit() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    crate::private_umask();
    let driver = ProcessDriver::detect();
    let (lines, sink) = collected();
    // A fork bomb in miniature: 500 sleepers.
    let mut bomb = spec(
        "echo begun; i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); done; echo all $i started",
    );
    // A cgroup of its own name: tests run side by side.
    bomb.id = "web-pids".into();
    bomb.sandbox = Some(nobody(64, 50));
    let instance = driver.start(&bomb, sink).unwrap();
    // The shell gives up at the first fork the kernel refuses.
    let _ = tokio::time::timeout(Duration::from_secs(20), instance.exited()).await;
    let cause = instance.stop(Duration::from_secs(1)).await;
    let lines = lines.lock().unwrap();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("begun"),
        "{cause:?} {lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line == "all 500 started"),
        "500 processes started past a limit of 50: {lines:?}"
    );
    assert!(
        lines.iter().any(|line| line.contains("fork")),
        "the shell said it could not fork: {lines:?}"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_sandboxed_instance_has_a_dev_and_a_dev_shm_of_its_own() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    crate::private_umask();
    let driver = ProcessDriver::detect();
    let run = |command: &str, memory_mib: u64| {
        let mut spec = spec(command);
        // A cgroup of its own name: tests run side by side.
        spec.id = format!("web-dev-{memory_mib}-{}", command.len());
        spec.sandbox = Some(nobody(memory_mib, 256));
        spec
    };
    let (lines, sink) = collected();
    let marker = format!("berth-test-{}", std::process::id());
    let script = format!(
        "ls -A /dev | tr '\\n' ' '; echo; echo hi > /dev/null && head -c 4 /dev/urandom | wc -c; \
         echo secret > /dev/shm/{marker} && ls /dev/shm"
    );
    let first = driver.start(&run(&script, 64), sink.clone()).unwrap();
    assert_eq!(
        first.exited().await,
        ExitCause::Code(0),
        "{:?}",
        lines.lock().unwrap()
    );
    {
        let lines = lines.lock().unwrap();
        assert_eq!(
            lines[0].trim(),
            "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero",
            "only the usual devices"
        );
        assert_eq!(lines[1].trim(), "4");
        assert_eq!(lines[2], marker);
    }
    // Neither the host nor the next instance sees what it left there.
    assert!(!std::path::Path::new("/dev/shm").join(&marker).exists());
    lines.lock().unwrap().clear();
    let second = driver
        .start(&run("ls -A /dev/shm | wc -l", 64), sink.clone())
        .unwrap();
    assert_eq!(second.exited().await, ExitCause::Code(0));
    assert_eq!(*lines.lock().unwrap(), ["0"]);

    // Shared memory counts against its memory: 48 MiB in /dev/shm does not
    // fit in 32 MiB.
    lines.lock().unwrap().clear();
    let hog = driver
        .start(
            &run(
                "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>&1; echo wrote",
                32,
            ),
            sink,
        )
        .unwrap();
    let cause = hog.exited().await;
    assert!(
        matches!(cause, ExitCause::OutOfMemory { .. } | ExitCause::Signal(9)),
        "48 MiB of /dev/shm within a 32 MiB limit: {cause:?}, {:?}",
        lines.lock().unwrap()
    );
}

#[tokio::test]
async fn a_very_long_line_is_kept_once_in_part_not_split_into_many() {
    let (lines, sink) = collected();
    let running = ProcessDriver::plain()
        .start(
            &spec("head -c 300000 /dev/zero | tr '\\0' x; echo; echo after"),
            sink,
        )
        .unwrap();
    assert_eq!(running.exited().await, ExitCause::Code(0));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 2, "one long line and the next");
    assert_eq!(lines[0].len(), MAX_LINE_BYTES);
    assert_eq!(lines[1], "after");
}
