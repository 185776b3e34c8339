//! `berth server install ssh://…` against a real OpenSSH server that plays
//! a VM in a network namespace of the test's, then `berth context use` and
//! `berth up` against the server it installed, and `berth server upgrade`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::netns::Host;
use berth_testkit::{berth_at_home, example, http_get, shared_build_cache};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// An sshd in `host`'s namespace that lets in the key `client_key` as
/// root; killed when dropped.
struct Sshd {
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl Sshd {
    async fn start(host: &Host) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        for key in ["host_key", "client_key"] {
            let made = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path().join(key))
                .status()
                .unwrap();
            assert!(made.success(), "ssh-keygen");
        }
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let config = format!(
            "ListenAddress {}\nPort 22\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nUsePAM no\nPidFile {dir}/sshd.pid\n",
            host.address,
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = host
            .command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stderr(std::fs::File::create(dir.path().join("sshd.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start sshd (.ci/run installs openssh-server)");
        let addr = std::net::SocketAddr::from((host.address, 22));
        let mut listening = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                listening = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(listening, "sshd never listened on {addr}");
        Sshd { _child: child, dir }
    }

    /// The flags that make berth's ssh use the test's key and known-hosts file.
    fn flags(&self) -> Vec<String> {
        vec![
            "--identity".into(),
            self.dir.path().join("client_key").display().to_string(),
            "--ssh-option".into(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ),
            "--ssh-option".into(),
            "StrictHostKeyChecking=accept-new".into(),
        ]
    }
}

/// Stops the server installed on the "VM" (the same file system as the
/// test's) when the test ends, however it ends.
struct RemoteServer {
    data: PathBuf,
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(berth_testkit::berth_binary())
            .args(["server", "stop", "--timeout", "30s", "--data"])
            .arg(&self.data)
            .status();
    }
}

fn server_pid(data: &Path) -> u64 {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("server.json")).unwrap()).unwrap();
    info["pid"].as_u64().unwrap()
}

async fn answer_through(host: &Host, name: &str) -> String {
    let router = std::net::SocketAddr::from((host.address, 8080));
    for _ in 0..100 {
        if let Ok(answer) = http_get(router, name, "/").await
            && answer.status == 200
        {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never answered through {router}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn berth_installs_itself_over_ssh_and_every_command_then_works_against_that_server() {
    setup();
    let vm = Host::new("vm");
    let sshd = Sshd::start(&vm).await;
    let home = tempfile::tempdir().unwrap();
    let remote_files = tempfile::tempdir().unwrap();
    let binary = remote_files.path().join("bin/berth");
    let data = remote_files.path().join("data");
    let remote = RemoteServer { data: data.clone() };
    let target = format!("ssh://root@{}", vm.address);
    let token = format!("{}.{}", "5a".repeat(32), "6b".repeat(32));
    let mut install: Vec<String> = vec!["server".into(), "install".into()];
    install.extend(sshd.flags());
    install.extend([
        "--binary".into(),
        binary.display().to_string(),
        "--remote-data".into(),
        data.display().to_string(),
        "--name".into(),
        "vm".into(),
    ]);
    let server_flags: Vec<String> = vec![
        "--router".into(),
        "0.0.0.0:8080".into(),
        "--domain".into(),
        "vm.test".into(),
        "--build-cache".into(),
        shared_build_cache().display().to_string(),
        // A relay that is not there: the server keeps dialling it. The
        // token must reach the VM's data dir and no command line.
        "--tunnel".into(),
        "127.0.0.1:9".into(),
        "--tunnel-token".into(),
        token.clone(),
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args = install.clone();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args.push(target.clone());
        args.extend(server_flags.clone());
        args
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        berth_at_home(home.path(), &args).run()
    };

    // The VM runs no systemd: without --no-systemd berth says so and
    // changes nothing there.
    let refused = run(args(&[])).await.failure();
    assert!(
        refused.stderr.contains("does not run systemd")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert!(
        !binary.exists() && !data.exists(),
        "the refused install changed the host"
    );
    // A target that is not an ssh:// host is refused before any ssh.
    let bad = berth_at_home(
        home.path(),
        &[
            "server",
            "install",
            "ssh://root@vm;reboot",
            "--domain",
            "x.test",
        ],
    )
    .run()
    .await
    .failure();
    assert!(bad.stderr.contains("not a host name"), "{}", bad.stderr);

    // Installed and started the way the unit would start it.
    let installed = run(args(&["--no-systemd"])).await;
    assert_eq!(installed.code, 0, "{}", installed.stderr);
    assert!(binary.is_file(), "the binary was not installed");
    let unit = std::fs::read_to_string(data.join("berth.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={} server --data {} --router 0.0.0.0:8080 --domain vm.test",
            binary.display(),
            data.display()
        )) && unit.contains("--api 0.0.0.0:8079")
            && unit.contains(&format!("--api-name {}", vm.address)),
        "{unit}"
    );
    crate::support::verify_unit(&data.join("berth.service"));
    assert!(
        unit.contains(&format!(
            "--tunnel-token-file {}/tunnel-token",
            data.display()
        )) && !unit.contains(&token),
        "{unit}"
    );
    let kept = data.join("tunnel-token");
    assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), token);
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let running = std::fs::read(format!("/proc/{}/cmdline", server_pid(&data))).unwrap();
    assert!(!String::from_utf8_lossy(&running).contains(&token[..64]));
    // The context's secrets are the user's alone.
    let context_file = home.path().join(".config/berth/contexts/vm.json");
    assert_eq!(
        std::fs::metadata(&context_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let listed = berth_at_home(home.path(), &["context", "list"])
        .run()
        .await
        .success();
    assert!(
        listed.stdout.contains("* local")
            && listed.stdout.contains(&format!(
                "  vm                   https://{}:8079",
                vm.address
            )),
        "{}",
        listed.stdout
    );
    berth_at_home(home.path(), &["context", "use", "vm"])
        .run()
        .await
        .success();
    let listed = berth_at_home(home.path(), &["context", "list"])
        .run()
        .await
        .success();
    assert!(listed.stdout.contains("* vm"), "{}", listed.stdout);

    // `berth up` with no flags deploys to the VM; its router serves it.
    // (examples/plain needs no crates: the VM has no way to the internet.)
    let app = example("plain");
    std::fs::write(app.path().join("berth.toml"), "app = \"vmhello\"\n").unwrap();
    let up = berth_at_home(home.path(), &["up"])
        .current_dir(app.path())
        .run()
        .await;
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    assert!(up.stdout.contains("vmhello.vm.test"), "{}", up.stdout);
    assert!(
        answer_through(&vm, "vmhello.vm.test")
            .await
            .contains("plain says hi")
    );

    // Upgrade: a new server process on the same binary path, the app back.
    let before = server_pid(&data);
    let upgraded = berth_at_home(home.path(), &["server", "upgrade"])
        .run()
        .await;
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    assert!(
        upgraded.stderr.contains("runs berth"),
        "{}",
        upgraded.stderr
    );
    assert_ne!(server_pid(&data), before, "the server was not restarted");
    assert!(
        answer_through(&vm, "vmhello.vm.test")
            .await
            .contains("plain says hi")
    );
    let apps = berth_at_home(home.path(), &["apps", "--json"])
        .run()
        .await
        .success();
    assert!(apps.stdout.contains("vmhello"), "{}", apps.stdout);

    // Forgotten: commands go back to the local server (none runs here).
    berth_at_home(home.path(), &["context", "remove", "vm"])
        .run()
        .await
        .success();
    let local = berth_at_home(home.path(), &["apps"]).run().await.failure();
    assert!(
        local.stderr.contains("no berth server is running"),
        "{}",
        local.stderr
    );
    assert!(!context_file.exists());
    drop(remote);
}

#[tokio::test]
async fn bad_contexts_tunnels_and_names_get_clear_errors_and_change_nothing() {
    setup();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| berth_at_home(home.path(), args).run();
    for (args, expected) in [
        (&["context", "use", "nope"][..], "no context `nope`"),
        (&["context", "remove", "nope"][..], "no context `nope`"),
        (&["context", "use", "Bad Name"][..], "context name"),
        (
            &["server", "--tunnel", "relay.example.com:7835"][..],
            "--tunnel needs the relay's token",
        ),
        (
            &[
                "server",
                "--tunnel",
                "relay.example.com:7835",
                "--tunnel-token",
                "secret",
            ][..],
            "a tunnel token is two runs of 64 hex digits",
        ),
        (
            &["server", "--api-name", "not a name"][..],
            "neither an IP address nor a usable name",
        ),
        (
            &[
                "server",
                "install",
                "--remote-data",
                "relative",
                "ssh://root@10.0.0.1",
            ][..],
            "must be absolute paths",
        ),
        (
            &["server", "upgrade", "--context", "nope"][..],
            "no context `nope`",
        ),
    ] {
        let failed = run(args).await.failure();
        assert!(
            failed.stderr.contains(expected),
            "berth {args:?}: {}",
            failed.stderr
        );
    }
    // Nothing was written: no default context, no context file.
    assert!(!home.path().join(".config/berth/current-context").exists());
    let listed = run(&["context", "list"]).await.success();
    assert_eq!(
        listed.stdout.trim(),
        "* local                the server of this machine's data dir"
    );
    run(&["context", "use", "local"]).await.success();
    let relay = tempfile::tempdir().unwrap();
    let dir = relay.path().display().to_string();
    let removed = berth_at_home(
        home.path(),
        &["relay", "--dir", &dir, "token", "remove", "nope"],
    )
    .run()
    .await
    .failure();
    assert!(
        removed.stderr.contains("no token named `nope`"),
        "{}",
        removed.stderr
    );
    assert!(!relay.path().join("tokens.json").exists());
}

/// A login on this host (the "VM" shares its file system) that may or may
/// not use sudo; removed with its sudoers entry when dropped.
struct Sudoer {
    name: String,
    sudoers: PathBuf,
}

impl Sudoer {
    fn create() -> Sudoer {
        // Its own per run: two suites on one machine never share it.
        let name = format!("berth-e2e-{}", std::process::id());
        // What a killed run left must not grant sudo before it is asked.
        let _ = std::fs::remove_file(format!("/etc/sudoers.d/{name}"));
        let exists = std::process::Command::new("id")
            .arg(&name)
            .output()
            .is_ok_and(|out| out.status.success());
        if !exists {
            // `*`: no password, and not locked (sshd refuses locked accounts).
            let made = std::process::Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", "-p", "*", &name])
                .status()
                .unwrap();
            assert!(made.success(), "useradd {name}");
        }
        Sudoer {
            sudoers: PathBuf::from(format!("/etc/sudoers.d/{name}")),
            name,
        }
    }

    /// Lets it run anything as root without a password, as cloud images'
    /// default users may.
    fn allow_sudo(&self) {
        std::fs::write(
            &self.sudoers,
            format!("{} ALL=(ALL) NOPASSWD: ALL\n", self.name),
        )
        .unwrap();
        std::fs::set_permissions(&self.sudoers, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
}

impl Drop for Sudoer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sudoers);
        let _ = std::process::Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_user_with_sudo_installs_and_upgrades_berth_and_one_without_is_refused() {
    setup();
    assert!(
        Path::new("/usr/bin/sudo").exists(),
        "needs sudo (.ci/run installs it)"
    );
    let vm = Host::new("sudovm");
    let sshd = Sshd::start(&vm).await;
    // sshd reads a user's authorized keys as that user.
    std::fs::set_permissions(sshd.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        sshd.dir.path().join("authorized_keys"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let user = Sudoer::create();
    let home = tempfile::tempdir().unwrap();
    let remote_files = tempfile::tempdir().unwrap();
    let binary = remote_files.path().join("bin/berth");
    let data = remote_files.path().join("data");
    let remote = RemoteServer { data: data.clone() };
    let mut install: Vec<String> = vec!["server".into(), "install".into()];
    install.extend(sshd.flags());
    install.extend([
        "--binary".into(),
        binary.display().to_string(),
        "--remote-data".into(),
        data.display().to_string(),
        "--name".into(),
        "sudovm".into(),
        "--no-systemd".into(),
        format!("ssh://{}@{}", user.name, vm.address),
        "--domain".into(),
        "sudovm.test".into(),
    ]);
    let install: Vec<&str> = install.iter().map(String::as_str).collect();

    // Neither root nor sudo: refused before anything is written.
    let refused = berth_at_home(home.path(), &install).run().await.failure();
    assert!(
        refused
            .stderr
            .contains("needs root, or sudo without a password prompt")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert!(
        !binary.exists() && !data.exists(),
        "the refused install wrote"
    );

    // With sudo: installed, and the server runs as root.
    user.allow_sudo();
    let installed = berth_at_home(home.path(), &install).run().await;
    assert_eq!(installed.code, 0, "{}", installed.stderr);
    assert!(binary.is_file(), "the binary was not installed");
    let uid_of = |pid: u64| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().next().map(str::to_string))
            .unwrap()
    };
    let first = server_pid(&data);
    assert_eq!(uid_of(first), "0");
    let context: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.path().join(".config/berth/contexts/sudovm.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(context["remote"]["sudo"], true, "{context}");
    // Commands reach it with the token read back through sudo.
    let apps = berth_at_home(home.path(), &["--context", "sudovm", "apps"])
        .run()
        .await;
    assert_eq!(apps.code, 0, "{}", apps.stderr);

    // An upgrade goes through sudo too: a new root server on the same data.
    let upgraded = berth_at_home(home.path(), &["--context", "sudovm", "server", "upgrade"])
        .run()
        .await;
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    let second = server_pid(&data);
    assert_ne!(second, first, "the server was not restarted");
    assert_eq!(uid_of(second), "0");
    let health = berth_at_home(home.path(), &["--context", "sudovm", "apps"])
        .run()
        .await;
    assert_eq!(health.code, 0, "{}", health.stderr);
    drop(remote);
}
