//! End to end: `berth run` with a terminal. The command runs on a real
//! pseudo-terminal in its sandbox; keys typed reach it, Ctrl-C interrupts
//! what runs in the foreground and not the shell, the window size follows
//! the client's, the exit code comes back, and a client that goes away
//! takes its command with it. `berth console` runs `console_command`.

use std::time::Duration;

use berth_proto::{Frame, FrameReader, RunCommand, TerminalSize};
use berth_testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::deploy_plain;

/// `line` ending with a newline.
trait AddLine {
    fn add_line(self) -> String;
}

impl AddLine for String {
    fn add_line(mut self) -> String {
        self.push('\n');
        self
    }
}

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// A command on a terminal through the API, as a client program runs
/// one: frames sent, the screen read back.
pub(crate) struct ApiTerminal {
    from_server: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    to_server: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    frames: FrameReader,
    /// The output so far.
    pub(crate) text: String,
    /// The exit, once it came.
    pub(crate) exit: Option<(i32, String)>,
    /// The execution it runs as.
    pub(crate) execution: i64,
}

impl ApiTerminal {
    /// Runs `command` in `app` on a terminal of `cols`×`rows`.
    pub(crate) async fn open(
        server: &TestServer,
        app: &str,
        command: &str,
        (cols, rows): (u16, u16),
    ) -> ApiTerminal {
        let client = berth_client::Client::new(&server.api_url, &server.token);
        let request = RunCommand {
            command: command.into(),
            terminal: Some(TerminalSize { cols, rows }),
            ..RunCommand::default()
        };
        let connection = client.run_on_terminal(app, &request).await.unwrap();
        let (from_server, to_server) = tokio::io::split(connection.stream);
        ApiTerminal {
            from_server: Box::new(from_server),
            to_server: Box::new(to_server),
            frames: FrameReader::new(),
            text: String::new(),
            exit: None,
            execution: connection.execution,
        }
    }

    /// Sends `frame` to the server.
    pub(crate) async fn send(&mut self, frame: Frame) {
        self.to_server.write_all(&frame.encode()).await.unwrap();
    }

    /// Reads until `text` has appeared in the output (or the command
    /// exited); panics after `within`.
    pub(crate) async fn read_until(&mut self, text: &str, within: Duration) {
        if !self.read_for(text, within).await {
            panic!("no {text:?} in time; the screen: {:?}", self.text);
        }
    }

    /// [`ApiTerminal::read_until`], saying whether `text` (or the exit)
    /// came in time.
    pub(crate) async fn read_for(&mut self, text: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buffer = vec![0u8; 8192];
        loop {
            while let Some(frame) = self.frames.next_frame().unwrap() {
                match frame {
                    Frame::Output(bytes) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                    Frame::Exit { code, message } => self.exit = Some((code, message)),
                    other => panic!("a client frame from the server: {other:?}"),
                }
            }
            if self.text.contains(text) || self.exit.is_some() {
                return true;
            }
            let Ok(read) =
                tokio::time::timeout_at(deadline, self.from_server.read(&mut buffer)).await
            else {
                return false;
            };
            let read = read.unwrap();
            assert!(read > 0, "closed before {text:?}: {:?}", self.text);
            self.frames.push(&buffer[..read]);
        }
    }

    /// Reads until the command's exit; panics after `within`.
    pub(crate) async fn read_exit(&mut self, within: Duration) -> (i32, String) {
        while self.exit.is_none() {
            self.read_until("\u{0}", within).await;
        }
        self.exit.clone().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_a_terminal_gets_keys_ctrl_c_and_window_sizes() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(
        &server,
        "terminal",
        "console_command = \"sh -c 'echo console-of-$BERTH_APP'\"\n",
    )
    .await;

    // The CLI, its stdin piped: the command's stdio is a terminal all the same.
    let typed = server
        .berth(&["run", "--tty", "--app", "terminal", "--", "sh"])
        .run_with_input(b"test -t 0 && test -t 1 && echo on-a-terminal; stty size; exit 3\n")
        .await;
    assert_eq!(typed.code, 3, "{} / {}", typed.stdout, typed.stderr);
    assert!(typed.stdout.contains("on-a-terminal"), "{}", typed.stdout);
    assert!(typed.stdout.contains("24 80"), "{}", typed.stdout);

    // A megabyte typed in while the terminal echoes it all back: input
    // and output flow at once, nothing waits on the other.
    let many_lines = "x".repeat(63).add_line().repeat(16_384);
    let counted = server
        .berth(&["run", "--tty", "--app", "terminal", "--", "wc", "-l"])
        .run_with_input(many_lines.as_bytes())
        .await;
    assert_eq!(counted.code, 0, "{}", counted.stderr);
    assert!(
        counted.stdout.trim_end().ends_with("16384"),
        "{}",
        &counted.stdout[counted.stdout.len().saturating_sub(200)..]
    );

    // A stop (here its timeout) reaches the command on its terminal with
    // SIGTERM, as it would any instance, before any SIGKILL.
    let stopped = server
        .berth(&[
            "run",
            "--tty",
            "--timeout",
            "2s",
            "--app",
            "terminal",
            "--",
            "trap 'echo got-term; exit 9' TERM; sleep 100 & wait",
        ])
        .run_with_input(b"")
        .await;
    assert!(stopped.stdout.contains("got-term"), "{}", stopped.stdout);
    assert!(stopped.stderr.contains("timed out"), "{}", stopped.stderr);

    // `berth console` runs the spec's console_command.
    let console = server.ok(&["console", "--app", "terminal"]).await;
    assert!(
        console.stdout.contains("console-of-terminal"),
        "{}",
        console.stdout
    );

    // Through the API: a size, a resize, Ctrl-C.
    let mut terminal = ApiTerminal::open(&server, "terminal", "sh", (100, 30)).await;
    terminal.send(Frame::Input(b"stty size\n".to_vec())).await;
    let wait = Duration::from_secs(20);
    terminal.read_until("30 100", wait).await;
    terminal
        .send(Frame::Resize(TerminalSize {
            cols: 120,
            rows: 40,
        }))
        .await;
    terminal.send(Frame::Input(b"stty size\n".to_vec())).await;
    terminal.read_until("40 120", wait).await;
    // Ctrl-C ends the foreground `sleep`, not the shell: the next line
    // runs long before the sleep would have ended.
    terminal.send(Frame::Input(b"sleep 120\n".to_vec())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminal.send(Frame::Input(vec![0x03])).await;
    terminal
        .send(Frame::Input(b"echo after-$((40+2))\n".to_vec()))
        .await;
    terminal.read_until("after-42", wait).await;
    // Ctrl-C at the command itself: it dies of SIGINT, and its code is
    // a shell's, 128 + 2.
    terminal
        .send(Frame::Input(b"exec sleep 120\n".to_vec()))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminal.send(Frame::Input(vec![0x03])).await;
    assert_eq!(
        terminal.read_exit(wait).await,
        (130, "killed by SIGINT".to_string()),
        "{}",
        terminal.text
    );

    // It ran as an execution of `berth run`'s job, recorded with its code.
    let client = berth_client::Client::new(&server.api_url, &server.token);
    let info = client
        .execution("terminal", terminal.execution)
        .await
        .unwrap();
    assert_eq!(info.attempts.last().unwrap().exit_code, Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_client_that_leaves_takes_its_command_along() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(&server, "leaving", "").await;
    let client = berth_client::Client::new(&server.api_url, &server.token);
    let request = RunCommand {
        command: "sleep 300".into(),
        ..RunCommand::default()
    };
    let connection = client.run_on_terminal("leaving", &request).await.unwrap();
    let id = connection.execution;
    drop(connection);
    let mut info = client.execution("leaving", id).await.unwrap();
    for _ in 0..200 {
        if info.finished_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = client.execution("leaving", id).await.unwrap();
    }
    assert_eq!(
        info.status,
        berth_proto::ExecutionStatus::Cancelled,
        "{info:?}"
    );

    // Bad input: no console_command, a command beside --console, no upgrade.
    let none = server.fails(&["console", "--app", "leaving"]).await;
    assert!(
        none.stderr.contains("has no console_command"),
        "{}",
        none.stderr
    );
    let both = client
        .run_on_terminal(
            "leaving",
            &RunCommand {
                command: "true".into(),
                console: true,
                ..RunCommand::default()
            },
        )
        .await
        .unwrap_err();
    assert!(both.to_string().contains("give no command"), "{both}");
    let plain = reqwest::Client::new()
        .post(format!("{}/v1/apps/leaving/run/terminal", server.api_url))
        .bearer_auth(&server.token)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(
        plain
            .text()
            .await
            .unwrap()
            .contains("Upgrade: berth-terminal")
    );
    let unknown = server
        .fails(&["run", "--tty", "--app", "nope", "--", "true"])
        .await;
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_command_on_a_terminal_is_in_its_cgroup_from_its_first_instruction() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(&server, "confined", "").await;
    // The shell forks `cat` at once, within a millisecond of its exec: a
    // cgroup joined after the exec (about 10 ms on cgroup v1) would miss it.
    let mut terminal = ApiTerminal::open(
        &server,
        "confined",
        "cat /proc/self/cgroup; echo end-of-cgroups",
        (80, 24),
    )
    .await;
    let (code, why) = terminal.read_exit(Duration::from_secs(60)).await;
    let text = terminal.text.clone();
    assert_eq!(code, 0, "{why}: {text}");
    assert!(text.contains("end-of-cgroups"), "{text}");
    // cgroup v1: the memory and pids hierarchies; v2: the one hierarchy.
    let v1: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(":memory:") || line.contains(":pids:"))
        .collect();
    let limited = if v1.is_empty() {
        text.lines()
            .filter(|line| line.starts_with("0::"))
            .collect()
    } else {
        v1
    };
    assert!(!limited.is_empty(), "{text}");
    for line in limited {
        assert!(
            line.contains("/berth/"),
            "outside its cgroup: {line}\n{text}"
        );
    }
}
