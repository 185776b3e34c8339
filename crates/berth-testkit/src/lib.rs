//! Test harness: a real `berth server` process in a temp dir on free loopback
//! ports, the real `berth` CLI pointed at it, copies of the example apps to
//! change, and a bounded load generator.
//!
//! Tests read like a user's session:
//!
//! ```ignore
//! let server = TestServer::start().await;
//! let app = example("hello");
//! server.berth(&["up"]).current_dir(app.path()).run().await.success();
//! assert_eq!(server.get("hello", "/").await.body, "Hello from berth!\n");
//! ```
//!
//! All servers share one cargo build cache (`target/berth-test-build-cache`),
//! so an example is compiled from scratch once per machine, not once per test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

mod http;
mod load;
pub mod netns;
mod own_disk;
mod pebble;
mod sink;
mod tls;

pub use http::{Answer, free_ports, http_get, http_request};
pub use load::{Load, LoadReport};
pub use pebble::{Pebble, PebblePlan};
pub use sink::{HttpSink, Received, SyslogSink};
pub use tls::{HttpsAnswer, https_get, tls_connect};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Tells the harness which `berth` binary to run (tests of the `berth`
/// package pass `env!("CARGO_BIN_EXE_berth")`).
pub fn use_binary(path: &str) {
    let _ = BINARY.set(PathBuf::from(path));
    crypto_ready();
}

/// Installs the crypto provider reqwest's rustls needs before any client is
/// built (even for http:// URLs); a second call changes nothing.
pub fn crypto_ready() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The `berth` binary under test: the one given to [`use_binary`], else
/// `BERTH_BIN`, else `target/debug/berth`.
pub fn berth_binary() -> PathBuf {
    if let Some(path) = BINARY.get() {
        return path.clone();
    }
    if let Some(path) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug/berth")
}

/// The build cache every test server shares.
pub fn shared_build_cache() -> PathBuf {
    std::env::var_os("BERTH_TEST_BUILD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/berth-test-build-cache"))
}

/// A directory a test and the apps it deploys both write to. Not under
/// /tmp (instances of a server running as root get a private /tmp) and
/// open to every user (they run as their app's own user).
pub fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    // /var/tmp, not the workspace: a clone may itself live under /tmp.
    let parent = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp/berth-test-shared")
    } else {
        workspace_root().join("target/berth-test-shared")
    };
    std::fs::create_dir_all(&parent).expect("shared dir parent");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755))
        .expect("open the shared dir parent");
    let dir = tempfile::Builder::new()
        .prefix("shared-")
        .tempdir_in(&parent)
        .expect("shared dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("open the shared dir");
    dir
}

/// A copy of `examples/NAME` in a temp dir, to change freely.
pub fn example(name: &str) -> tempfile::TempDir {
    let source = workspace_root().join("examples").join(name);
    let copy = tempfile::Builder::new()
        .prefix(&format!("berth-example-{name}-"))
        .tempdir()
        .expect("temp dir");
    copy_dir(&source, copy.path());
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read example") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy file");
        }
    }
}

/// `berth ARGS` with `HOME` and `XDG_CONFIG_HOME` at `home` (where `berth
/// login` keeps contexts) and no data dir of its own: a user's machine.
pub fn berth_at_home(home: &Path, args: &[&str]) -> Cli {
    let mut command = Command::new(berth_binary());
    command
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("BERTH_DATA", home.join("no-data"))
        .env_remove("BERTH_SERVER")
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CONTEXT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Cli { command }
}

/// Replaces `from` with `to` in a file; panics if `from` is absent.
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read file to edit");
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).expect("write edited file");
}

/// A running `berth server` in a temp dir.
pub struct TestServer {
    data: tempfile::TempDir,
    child: Option<Child>,
    /// The API's base URL.
    pub api_url: String,
    /// The router's address.
    pub router: SocketAddr,
    /// The router's HTTPS address, when started with `--https`.
    pub https: Option<SocketAddr>,
    /// The API token.
    pub token: String,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (`-1` when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Asserts success and returns self.
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(
            self.code, 0,
            "berth failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts failure and returns self.
    #[track_caller]
    pub fn failure(self) -> Self {
        assert_ne!(
            self.code, 0,
            "berth should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}):\n{}", self.stdout))
    }
}

/// A CLI invocation being built.
pub struct Cli {
    command: Command,
}

impl Cli {
    /// `command` (a `berth` run some other way, such as in a network
    /// namespace), run like the others.
    pub fn from_command(mut command: Command) -> Cli {
        command.stdin(Stdio::null()).kill_on_drop(true);
        Cli { command }
    }

    /// Runs it in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Runs it with `input` on its stdin (then closed) and collects its output.
    pub async fn run_with_input(mut self, input: &[u8]) -> CliOutput {
        use tokio::io::AsyncWriteExt;
        self.command.stdin(Stdio::piped());
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("run berth");
        let mut stdin = child.stdin.take().expect("its stdin");
        stdin.write_all(input).await.expect("write its stdin");
        drop(stdin);
        let output = child.wait_with_output().await.expect("wait for berth");
        CliOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs it and collects its output.
    pub async fn run(mut self) -> CliOutput {
        let output = self.command.output().await.expect("run berth");
        CliOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl TestServer {
    /// Starts a server on free loopback ports in a new temp dir.
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `berth server` flags.
    pub async fn start_with(extra_args: &[&str]) -> TestServer {
        Self::start_with_env(extra_args, &[]).await
    }

    /// Starts a server with extra flags and environment variables.
    pub async fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let data = tempfile::Builder::new()
            .prefix("berth-test-data-")
            .tempdir()
            .expect("temp dir");
        Self::start_in(data, extra_args, env).await
    }

    pub(crate) async fn start_in(
        data: tempfile::TempDir,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let mut server = TestServer {
            data,
            child: None,
            api_url: String::new(),
            router: SocketAddr::from(([127, 0, 0, 1], 0)),
            https: None,
            token: String::new(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        server.spawn("127.0.0.1:0", "127.0.0.1:0").await;
        server
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn spawn(&mut self, api: &str, router: &str) {
        let info_path = self.data.path().join("server.json");
        let _ = std::fs::remove_file(&info_path);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .expect("server log");
        let child = Command::new(berth_binary())
            .args(["server", "--api", api, "--router", router])
            .arg("--build-cache")
            .arg(shared_build_cache())
            .args(&self.extra_args)
            .env("BERTH_DATA", self.data.path())
            .env("RUST_LOG", "info")
            .envs(self.extra_env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start berth server (build the workspace first)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&info_path)
                && let Ok(info) = serde_json::from_str::<serde_json::Value>(&text)
            {
                self.api_url = info["api_url"].as_str().expect("api_url").to_string();
                let router = info["router_url"]
                    .as_str()
                    .expect("router_url")
                    .trim_start_matches("http://");
                self.router = router.parse().expect("router address");
                self.https = info["https_url"].as_str().map(|url| {
                    url.trim_start_matches("https://")
                        .parse()
                        .expect("https address")
                });
                break;
            }
            assert!(
                Instant::now() < deadline,
                "berth server did not start:\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.token = std::fs::read_to_string(self.data.path().join("token"))
            .expect("token")
            .trim()
            .to_string();
    }

    /// What the server wrote to its log.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("server running")
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill server");
            let _ = child.wait().await;
        }
    }

    /// Stops the server the way an operator does (SIGTERM: it stops its
    /// instances), waits for it to be gone, and kills it if it lingers.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same data
    /// dir and ports. (A new server started while the old one still holds
    /// the ports would fail to listen.)
    pub async fn restart(&mut self) {
        self.stop().await;
        let api = self
            .api_url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string();
        let router = self.router.to_string();
        self.spawn(&api, &router).await;
    }

    /// A `berth` CLI run against this server.
    pub fn berth(&self, args: &[&str]) -> Cli {
        let mut command = Command::new(berth_binary());
        command
            .args(args)
            .env("BERTH_DATA", self.data.path())
            .env_remove("BERTH_SERVER")
            .env_remove("BERTH_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Cli { command }
    }

    /// `berth ARGS` with `HOME` and `XDG_CONFIG_HOME` at `home` (where
    /// `berth login` keeps contexts) and no data dir of its own.
    pub fn berth_at_home(&self, home: &Path, args: &[&str]) -> Cli {
        berth_at_home(home, args)
    }

    /// Runs `berth ARGS` and asserts it succeeded.
    pub async fn ok(&self, args: &[&str]) -> CliOutput {
        self.berth(args).run().await.success()
    }

    /// Runs `berth ARGS` and asserts it failed.
    pub async fn fails(&self, args: &[&str]) -> CliOutput {
        self.berth(args).run().await.failure()
    }

    /// Runs `berth ARGS` in `dir` and asserts it succeeded.
    pub async fn ok_in(&self, dir: &Path, args: &[&str]) -> CliOutput {
        self.berth(args).current_dir(dir).run().await.success()
    }

    /// Runs `berth ARGS` in `dir` and asserts it failed.
    pub async fn fails_in(&self, dir: &Path, args: &[&str]) -> CliOutput {
        self.berth(args).current_dir(dir).run().await.failure()
    }

    /// `GET path` through the router with `Host: APP.localhost`.
    pub async fn get(&self, app: &str, path: &str) -> Answer {
        http_get(self.router, &format!("{app}.localhost"), path)
            .await
            .expect("GET through the router")
    }

    /// `METHOD path` with `body` through the router with `Host: APP.localhost`.
    pub async fn request(&self, app: &str, method: &str, path: &str, body: &str) -> Answer {
        http_request(self.router, &format!("{app}.localhost"), method, path, body)
            .await
            .expect("request through the router")
    }

    /// `GET path` on the API with the token.
    pub async fn api_get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.authed_get(path).await;
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET path` on the API with the token, as text: status, content
    /// type and body.
    pub async fn api_get_text(&self, path: &str) -> (u16, String, String) {
        let response = self.authed_get(path).await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            status,
            content_type,
            response.text().await.unwrap_or_default(),
        )
    }

    async fn authed_get(&self, path: &str) -> reqwest::Response {
        crypto_ready();
        reqwest::Client::new()
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("API request")
    }

    /// The app's status as JSON.
    pub async fn status(&self, app: &str) -> serde_json::Value {
        self.berth(&["status", "--json", "--app", app])
            .run()
            .await
            .success()
            .json()
    }

    /// Waits until `check` holds for the app's status, or panics after `timeout`.
    pub async fn wait_for_status(
        &self,
        app: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(app).await;
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never matched; last:\n{status:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The server's side of a failing test, for CI logs.
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- last lines of the server log ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if let Some(child) = &mut self.child
            && let Some(pid) = child.id()
        {
            // SIGTERM lets the server stop its instances; kill_on_drop is the backstop.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Volumes with a size are file systems mounted in the data dir: a
        // test that failed before destroying its app leaves them.
        let data = self.data.path().display().to_string();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount_point in mounted
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&data))
        {
            let _ = std::process::Command::new("umount")
                .args(["-l", mount_point])
                .status();
        }
    }
}
