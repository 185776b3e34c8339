//! The cargo builder: `cargo build --release` in a persistent per-app
//! workspace, at low CPU and I/O priority.
//!
//! Each app has a build directory (`<cache>/<app>/`) holding `src/` (the
//! last uploaded tree, synced file by file so unchanged files keep their
//! mtimes) and `target/` (cargo's cache). A file lock serialises builds of the
//! same app, even across servers sharing one cache.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::source::sync_tree;

/// What can go wrong building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo ran and failed; `message` holds its errors.
    #[error("cargo build failed ({status}):\n{message}")]
    CargoFailed {
        /// How cargo exited.
        status: String,
        /// The compiler's error lines.
        message: String,
    },
    /// Cargo could not be started.
    #[error("cannot run cargo (is it installed and on PATH?)")]
    CargoMissing(#[source] std::io::Error),
    /// The build produced no binary, or several and none was chosen.
    #[error("{0}")]
    NoBinary(String),
    /// Preparing the build directory failed.
    #[error("cannot prepare the build directory {path}")]
    Workspace {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// Every binary built, by name.
    pub binaries: Vec<(String, PathBuf)>,
    /// The binary that is the default `web` process.
    pub default_binary: String,
    /// The synced source tree the binaries were built from.
    pub source_dir: PathBuf,
}

/// Builds an app's uploaded source tree into binaries: cargo in
/// production, a stand-in in unit tests of the deploy path.
pub trait Builder: Send + Sync {
    /// Builds the tree in `uploaded` for `app` (see [`CargoBuilder::build`]).
    fn build(
        &self,
        app: &str,
        uploaded: &Path,
        bin: Option<&str>,
        features: &[String],
        output: &mut dyn FnMut(String),
    ) -> Result<(BuildOutput, BuildLock), BuildError>;
}

impl Builder for CargoBuilder {
    fn build(
        &self,
        app: &str,
        uploaded: &Path,
        bin: Option<&str>,
        features: &[String],
        output: &mut dyn FnMut(String),
    ) -> Result<(BuildOutput, BuildLock), BuildError> {
        CargoBuilder::build(self, app, uploaded, bin, features, output)
    }
}

/// Builds apps with cargo.
#[derive(Debug, Clone)]
pub struct CargoBuilder {
    cache_dir: PathBuf,
}

impl CargoBuilder {
    /// A builder keeping per-app build directories under `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> Self {
        CargoBuilder { cache_dir }
    }

    /// Builds the tree in `uploaded` for `app`. `bin` picks the default binary
    /// when there are several; `features` are passed to cargo. Every line cargo prints goes to `output`. The
    /// returned output's `source_dir` stays valid until the next build of the
    /// same app; copy what you need while holding the returned guard.
    pub fn build(
        &self,
        app: &str,
        uploaded: &Path,
        bin: Option<&str>,
        features: &[String],
        output: &mut dyn FnMut(String),
    ) -> Result<(BuildOutput, BuildLock), BuildError> {
        let app_dir = self.cache_dir.join(app);
        let workspace_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Workspace { path, source }
        };
        fs::create_dir_all(&app_dir).map_err(workspace_error(&app_dir))?;
        let lock_path = app_dir.join(".lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(workspace_error(&lock_path))?;
        if lock_file.try_lock().is_err() {
            output("waiting for another build of this app to finish".into());
            lock_file.lock().map_err(workspace_error(&lock_path))?;
        }
        let lock = BuildLock {
            _file: Some(lock_file),
        };

        let source_dir = app_dir.join("src");
        sync_tree(uploaded, &source_dir).map_err(workspace_error(&source_dir))?;
        let target_dir = app_dir.join("target");

        let mut command = low_priority_command("cargo");
        command
            .args([
                "build",
                "--release",
                "--message-format=json-render-diagnostics",
            ])
            .args(
                (!features.is_empty())
                    .then(|| ["--features".to_string(), features.join(",")])
                    .into_iter()
                    .flatten(),
            )
            .current_dir(&source_dir)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_TERM_COLOR", "never")
            .env_remove("RUSTFLAGS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(BuildError::CargoMissing)?;

        let stderr = child.stderr.take();
        let (line_sender, line_receiver) = std::sync::mpsc::channel::<String>();
        let stderr_reader = std::thread::spawn(move || {
            if let Some(stderr) = stderr {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line_sender.send(line).is_err() {
                        break;
                    }
                }
            }
        });

        let mut binaries = Vec::new();
        let stdout = child.stdout.take();
        let stdout_reader = std::thread::spawn(move || {
            let mut found = Vec::new();
            if let Some(stdout) = stdout {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(binary) = binary_from_message(&line) {
                        found.push(binary);
                    }
                }
            }
            found
        });

        let mut error_lines: Vec<String> = Vec::new();
        let mut in_error = false;
        for line in line_receiver {
            if line.starts_with("error") {
                in_error = true;
            } else if line.starts_with("warning") {
                in_error = false;
            }
            if in_error && error_lines.len() < 200 {
                error_lines.push(line.clone());
            }
            output(line);
        }
        let _ = stderr_reader.join();
        binaries.extend(stdout_reader.join().unwrap_or_default());
        let status = child.wait().map_err(BuildError::CargoMissing)?;
        if !status.success() {
            return Err(BuildError::CargoFailed {
                status: status.to_string(),
                message: if error_lines.is_empty() {
                    "cargo printed no error; see the build output above".into()
                } else {
                    error_lines.join("\n")
                },
            });
        }
        binaries.sort();
        binaries.dedup();
        let default_binary = choose_default_binary(&binaries, bin)?;
        Ok((
            BuildOutput {
                binaries,
                default_binary,
                source_dir,
            },
            lock,
        ))
    }
}

/// Holds an app's build directory until dropped.
#[derive(Debug)]
pub struct BuildLock {
    _file: Option<fs::File>,
}

impl BuildLock {
    /// A guard that holds nothing, for builders whose output needs no lock.
    pub fn none() -> BuildLock {
        BuildLock { _file: None }
    }
}

/// A command run under `nice` and `ionice -c3` where those exist, so builds
/// never starve running apps.
fn low_priority_command(program: &str) -> Command {
    let has = |tool: &str| {
        ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists())
    };
    let mut argv: Vec<&str> = Vec::new();
    if has("ionice") {
        argv.extend(["ionice", "-c3"]);
    }
    if has("nice") {
        argv.extend(["nice", "-n", "15"]);
    }
    argv.push(program);
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]);
    command
}

fn binary_from_message(line: &str) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let target = message.get("target")?;
    let is_bin = target
        .get("kind")?
        .as_array()?
        .iter()
        .any(|kind| kind.as_str() == Some("bin"));
    if !is_bin {
        return None;
    }
    let name = target.get("name")?.as_str()?.to_string();
    let executable = PathBuf::from(message.get("executable")?.as_str()?);
    Some((name, executable))
}

fn choose_default_binary(
    binaries: &[(String, PathBuf)],
    bin: Option<&str>,
) -> Result<String, BuildError> {
    let names: Vec<&str> = binaries.iter().map(|(name, _)| name.as_str()).collect();
    match (bin, names.as_slice()) {
        (Some(wanted), _) if names.contains(&wanted) => Ok(wanted.to_string()),
        (Some(wanted), []) => Err(BuildError::NoBinary(format!(
            "[build] bin = \"{wanted}\", but the build produced no binary"
        ))),
        (Some(wanted), _) => Err(BuildError::NoBinary(format!(
            "[build] bin = \"{wanted}\", but the build produced only: {}",
            names.join(", ")
        ))),
        (None, []) => Err(BuildError::NoBinary(
            "the build produced no binary; berth runs a package with a [[bin]] or src/main.rs"
                .into(),
        )),
        (None, [only]) => Ok(only.to_string()),
        (None, several) => Err(BuildError::NoBinary(format!(
            "the build produced several binaries ({}); choose one with [build] bin = \"…\" in berth.toml",
            several.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_come_from_compiler_artifacts() {
        let line = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"hello"},"executable":"/t/release/hello"}"#;
        assert_eq!(
            binary_from_message(line),
            Some(("hello".into(), PathBuf::from("/t/release/hello")))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"x"},"executable":null}"#;
        assert_eq!(binary_from_message(lib), None);
    }

    #[test]
    fn the_default_binary_must_be_unambiguous() {
        let one = vec![("a".to_string(), PathBuf::from("/a"))];
        assert_eq!(choose_default_binary(&one, None).unwrap(), "a");
        let two = vec![
            ("a".to_string(), PathBuf::from("/a")),
            ("b".to_string(), PathBuf::from("/b")),
        ];
        let err = choose_default_binary(&two, None).unwrap_err().to_string();
        assert!(err.contains("a, b") && err.contains("[build] bin"), "{err}");
        assert_eq!(choose_default_binary(&two, Some("b")).unwrap(), "b");
        assert!(choose_default_binary(&two, Some("c")).is_err());
    }
}
