//! The cargo builder: `cargo build --release` in a persistent per-app
//! workspace, at low CPU and I/O priority.
//!
//! Each app has a build directory (`<cache>/<app>/`) holding `src/` (the
//! last uploaded tree, synced file by file so unchanged files keep their
//! mtimes) and `target/` (cargo's cache). A file lock serialises builds of the
//! same app, even across servers sharing one cache.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::error::BuildError;
use crate::run::{CargoJob, CargoRunner, CargoStream, LocalCargo};
use crate::sync::sync_tree;

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
    /// Builds what `request` names (see [`CargoBuilder::build`]).
    fn build(
        &self,
        request: &BuildRequest<'_>,
        output: &mut dyn FnMut(String),
    ) -> Result<(BuildOutput, BuildLock), BuildError>;
}

/// One build: what, where, and with what around it.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The app being built (whose user a sandboxed build runs as).
    pub app: &'a str,
    /// Its build directory's name: the app's, or one that several apps of
    /// a Blueprint share.
    pub build_dir: &'a str,
    /// The uploaded source tree.
    pub uploaded: &'a Path,
    /// The default binary, when the package has several.
    pub bin: Option<&'a str>,
    /// Cargo features (`--features`).
    pub features: &'a [String],
    /// Workspace members to build (`-p`); empty: the package at the root.
    pub packages: Vec<String>,
    /// A command run in the source before cargo (`[build] command`: a
    /// front end's `npm ci && npm run build`); what it writes there is part
    /// of the slug.
    pub command: Option<String>,
    /// The build is `command` alone: cargo does not run and there is no
    /// binary (a static site, a service in another language).
    pub command_only: bool,
    /// Variables the build sees besides cargo's own.
    pub env: Vec<(String, String)>,
    /// Ports on the host's loopback the build may reach (the app's
    /// database, for sqlx's checked queries).
    pub loopback_ports: Vec<u16>,
    /// Hosts the build may reach besides its registries (`[build] hosts`).
    pub hosts: Vec<String>,
    /// A `/usr` the build sees instead of the host's: the host's with the
    /// `[build] packages` laid over it (a sandboxed build only).
    pub system_usr: Option<std::path::PathBuf>,
}

impl Builder for CargoBuilder {
    fn build(
        &self,
        request: &BuildRequest<'_>,
        output: &mut dyn FnMut(String),
    ) -> Result<(BuildOutput, BuildLock), BuildError> {
        CargoBuilder::build(self, request, output)
    }
}

/// Builds apps with cargo.
#[derive(Clone)]
pub struct CargoBuilder {
    cache_dir: PathBuf,
    runner: Arc<dyn CargoRunner>,
}

impl std::fmt::Debug for CargoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CargoBuilder")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl CargoBuilder {
    /// A builder keeping per-app build directories under `cache_dir`, running
    /// cargo as this process's user ([`LocalCargo`]).
    pub fn new(cache_dir: PathBuf) -> Self {
        CargoBuilder::with_runner(cache_dir, Arc::new(LocalCargo))
    }

    /// A builder whose cargo runs through `runner` (in a sandbox, say).
    pub fn with_runner(cache_dir: PathBuf, runner: Arc<dyn CargoRunner>) -> Self {
        CargoBuilder { cache_dir, runner }
    }

    /// Builds `request.uploaded` for `request.app` (whose user a sandboxed
    /// build runs as) in its build directory, with its features, env and
    /// reachable ports. Every line cargo prints goes to `output`. The
    /// returned output's `source_dir` stays valid until the next build of the
    /// same app; copy what you need while holding the returned guard.
    pub fn build(
        &self,
        request: &BuildRequest<'_>,
        output: &mut dyn FnMut(String),
    ) -> Result<(BuildOutput, BuildLock), BuildError> {
        let BuildRequest {
            app,
            build_dir,
            uploaded,
            bin,
            features,
            ..
        } = *request;
        let app_dir = self.cache_dir.join(build_dir);
        let workspace_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Workspace { path, source }
        };
        fs::create_dir_all(&app_dir).map_err(workspace_error(&app_dir))?;
        let lock_path = app_dir.join(".lock");
        // The build directory may belong to the app's user, who could have
        // left a link here: never follow one.
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
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
        for dir in ["target", "home"] {
            let path = app_dir.join(dir);
            fs::create_dir_all(&path).map_err(workspace_error(&path))?;
        }

        let mut args: Vec<String> = [
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ]
        .map(String::from)
        .into();
        for package in &request.packages {
            args.extend(["-p".to_string(), package.clone()]);
        }
        if !features.is_empty() {
            args.extend(["--features".to_string(), features.join(",")]);
        }
        if let Some(line) = &request.command {
            output(format!("running the build command: {line}"));
            let before = CargoJob {
                app,
                build_dir: &app_dir,
                args: Vec::new(),
                shell: Some(line.clone()),
                env: &request.env,
                loopback_ports: &request.loopback_ports,
                hosts: &request.hosts,
                system_usr: request.system_usr.as_deref(),
            };
            let outcome = self.runner.run(&before, &mut |_, line| output(line))?;
            if let Err(status) = outcome {
                return Err(BuildError::CommandFailed {
                    command: line.clone(),
                    status: command_status(line, &status),
                });
            }
        }
        if request.command_only {
            return self.source_only(source_dir, lock);
        }
        let job = CargoJob {
            app,
            build_dir: &app_dir,
            args,
            shell: None,
            env: &request.env,
            loopback_ports: &request.loopback_ports,
            hosts: &request.hosts,
            system_usr: request.system_usr.as_deref(),
        };
        let mut binaries = Vec::new();
        let mut error_lines: Vec<String> = Vec::new();
        let mut in_error = false;
        let outcome = self.runner.run(&job, &mut |stream, line| match stream {
            CargoStream::Stdout => binaries.extend(binary_from_message(&line)),
            CargoStream::Stderr => {
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
        })?;
        if let Err(status) = outcome {
            return Err(BuildError::CargoFailed {
                status,
                message: if error_lines.is_empty() {
                    "cargo printed no error; see the build output above".into()
                } else {
                    error_lines.join("\n")
                },
            });
        }
        let visible = self.runner.visible_build_dir(&app_dir);
        let binaries = binaries
            .into_iter()
            .map(|(name, path)| Ok((name, host_binary(&app_dir, &visible, &path)?)))
            .collect::<Result<Vec<_>, BuildError>>()?;
        let mut binaries = binaries;
        binaries.sort();
        binaries.dedup();
        let default_binary = choose_default_binary(&binaries, bin)?;
        check_source_folder(&source_dir)?;
        Ok((
            BuildOutput {
                binaries,
                default_binary,
                source_dir,
            },
            lock,
        ))
    }

    /// What a build without cargo leaves: its source folder, no binary.
    fn source_only(
        &self,
        source_dir: PathBuf,
        lock: BuildLock,
    ) -> Result<(BuildOutput, BuildLock), BuildError> {
        check_source_folder(&source_dir)?;
        Ok((
            BuildOutput {
                binaries: Vec::new(),
                default_binary: String::new(),
                source_dir,
            },
            lock,
        ))
    }
}

/// The slug is copied from the source folder, which the build (the app's
/// code) could have swapped for a link to the host's files.
fn check_source_folder(source_dir: &Path) -> Result<(), BuildError> {
    if fs::symlink_metadata(source_dir).is_ok_and(|meta| meta.is_dir()) {
        Ok(())
    } else {
        Err(BuildError::NoBinary(
            "the build replaced its source folder with something else than a folder".into(),
        ))
    }
}

/// How a build command ended, for people: exit 127 is a program the
/// server does not have.
fn command_status(line: &str, status: &str) -> String {
    if status.ends_with("127") || status.contains("exit status: 127") {
        let program = line
            .split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
            .find(|word| !word.is_empty() && !word.contains('='))
            .unwrap_or(line);
        format!("{status}: `{program}` (or a program it runs) is not installed on the server")
    } else {
        status.to_string()
    }
}

/// Where on the host a binary cargo reported at `reported` (a path as cargo
/// saw it, under `visible`) lives: under `<build_dir>/target`, reached through
/// real directories only and a regular file itself. The build ran as the
/// app, which may have swapped any of them for a link to a file of berth's.
fn host_binary(build_dir: &Path, visible: &Path, reported: &Path) -> Result<PathBuf, BuildError> {
    let refuse = |why: &str| {
        BuildError::NoBinary(format!(
            "cargo reported the binary {}, which {why}",
            reported.display()
        ))
    };
    let relative = reported
        .strip_prefix(visible.join("target"))
        .map_err(|_| refuse("is not in the build's target directory"))?;
    if relative
        .components()
        .any(|part| !matches!(part, std::path::Component::Normal(_)))
    {
        return Err(refuse("climbs out of the target directory"));
    }
    let mut path = build_dir.join("target");
    let parts: Vec<_> = relative.components().collect();
    for (index, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = fs::symlink_metadata(&path).map_err(|_| refuse("does not exist"))?;
        let last = index + 1 == parts.len();
        if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
            return Err(refuse("is not a plain file in plain directories"));
        }
    }
    Ok(path)
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
