//! Where cargo runs: [`CargoRunner`] is the seam between the builder (which
//! prepares the app's build directory and reads cargo's output) and the
//! process that runs cargo. [`LocalCargo`] runs it as a plain child of this
//! process, at low priority, with the caller's own cargo home; a server that
//! runs as root gives the builder a runner that confines cargo to a sandbox
//! of the app's own (berth-server's `SandboxedCargo`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::BuildError;

/// One cargo run, in an app's build directory.
#[derive(Debug, Clone)]
pub struct CargoJob<'a> {
    /// The app being built (whose user a sandboxed build runs as).
    pub app: &'a str,
    /// The app's build directory on the host: `src/` (the synced tree, where
    /// cargo runs), `target/` (cargo's target dir), `home/` (the build's
    /// `HOME` and, in a sandbox, its cargo home).
    pub build_dir: &'a Path,
    /// cargo's arguments (`build --release …`).
    pub args: Vec<String>,
    /// A shell command to run instead of cargo (`[build] command`), in the
    /// same place and way.
    pub shell: Option<String>,
    /// Variables the build sees besides cargo's own.
    pub env: &'a [(String, String)],
    /// Ports on the host's loopback the build may reach.
    pub loopback_ports: &'a [u16],
    /// Hosts the build may reach besides its registries (`[build] hosts`);
    /// a sandboxed build reaches nothing else.
    pub hosts: &'a [String],
    /// A `/usr` to see instead of the host's (`[build] packages`).
    pub system_usr: Option<&'a Path>,
}

/// Which stream a line of cargo's output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CargoStream {
    /// Standard output: cargo's JSON messages.
    Stdout,
    /// Standard error: what a person reads.
    Stderr,
}

/// Runs cargo for the builder.
pub trait CargoRunner: Send + Sync {
    /// Where cargo sees `build_dir` (the same path, unless the runner shows
    /// it at another path inside a sandbox). Paths in cargo's messages are
    /// under it.
    fn visible_build_dir(&self, build_dir: &Path) -> PathBuf;

    /// Runs cargo with `job.args` in `<build dir>/src` and
    /// `CARGO_TARGET_DIR=<build dir>/target`, handing every line it prints
    /// to `line`. `Ok(Err(status))` says how a cargo that ran failed.
    fn run(
        &self,
        job: &CargoJob<'_>,
        line: &mut dyn FnMut(CargoStream, String),
    ) -> Result<Result<(), String>, BuildError>;
}

/// Runs cargo as a plain child process under `nice` and `ionice -c3`, as
/// this process's user, with its cargo home: for a server that is not
/// root (it cannot give a build a user of its own), and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalCargo;

impl CargoRunner for LocalCargo {
    fn visible_build_dir(&self, build_dir: &Path) -> PathBuf {
        build_dir.to_path_buf()
    }

    fn run(
        &self,
        job: &CargoJob<'_>,
        line: &mut dyn FnMut(CargoStream, String),
    ) -> Result<Result<(), String>, BuildError> {
        let mut command = match &job.shell {
            Some(line) => {
                let mut command = low_priority_command("/bin/sh");
                command.args(["-c", line]);
                command
            }
            None => {
                let mut command = low_priority_command("cargo");
                command.args(&job.args);
                command
            }
        };
        command
            .current_dir(job.build_dir.join("src"))
            .env("CARGO_TARGET_DIR", job.build_dir.join("target"))
            .env("CARGO_TERM_COLOR", "never")
            .env_remove("RUSTFLAGS")
            .envs(job.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(BuildError::CargoMissing)?;
        let (sender, receiver) = std::sync::mpsc::channel::<(CargoStream, String)>();
        let readers: Vec<_> = [
            child.stdout.take().map(|out| {
                (
                    CargoStream::Stdout,
                    Box::new(out) as Box<dyn std::io::Read + Send>,
                )
            }),
            child.stderr.take().map(|err| {
                (
                    CargoStream::Stderr,
                    Box::new(err) as Box<dyn std::io::Read + Send>,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .map(|(stream, pipe)| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if sender.send((stream, text)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
        drop(sender);
        for (stream, text) in receiver {
            line(stream, text);
        }
        for reader in readers {
            let _ = reader.join();
        }
        let status = child.wait().map_err(BuildError::CargoMissing)?;
        Ok(if status.success() {
            Ok(())
        } else {
            Err(status.to_string())
        })
    }
}

/// A command run under `nice` and `ionice -c3` where those exist, so builds
/// never starve running apps.
pub fn low_priority_command(program: &str) -> Command {
    let argv = low_priority_argv(program);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// The words of [`low_priority_command`].
pub fn low_priority_argv(program: &str) -> Vec<String> {
    let has = |tool: &str| {
        ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists())
    };
    let mut argv: Vec<String> = Vec::new();
    if has("ionice") {
        argv.extend(["ionice".into(), "-c3".into()]);
    }
    if has("nice") {
        argv.extend(["nice".into(), "-n".into(), "15".into()]);
    }
    argv.push(program.to_string());
    argv
}
