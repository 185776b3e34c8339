//! Builds run as the app, in a sandbox like its instances'.
//!
//! A dependency's `build.rs` and proc macros are the app's code running at
//! build time, so a build gets what an instance gets and no more: the app's
//! own user, its own mount, IPC, pid and network namespaces, a private
//! `/tmp` and `/dev`, and a cgroup of its own (memory, CPU, pids; a time
//! limit and the server's disk reserve besides). It sees its build directory at [`BUILD_MOUNT`] (the synced
//! source, cargo's target dir, and a `HOME` with its own cargo home, so no
//! app's downloads are another's) and the Rust toolchain, read-only, at
//! `/tmp/berth-toolchain` when the host's lives where an app cannot reach it
//! (under `/root` with rustup). Berth's data dir, keys and token, and other
//! apps' build directories, are out of its reach: they belong to root and
//! are private. Its network has no route out: an HTTP proxy inside
//! (`HTTPS_PROXY`, which cargo and npm honour) opens only the registries
//! ([`BUILD_HOSTS`]) and the hosts `[build] hosts` adds — never this host,
//! its LAN or the cloud's metadata address.
//!
//! The build is started through the reconciler like a release command, so it
//! is journaled and killed with the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_build::{BuildError, CargoJob, CargoRunner, CargoStream};
use berth_runtime::{BindMount, ExitCause, InstanceSpec, OutputStream};

use super::toolchain::{TOOLCHAIN_MOUNT, Toolchain, pinned_channel};
use crate::reconciler::ReconcilerHandle;
use crate::services::Resources;

/// Where a build sees its build directory.
pub const BUILD_MOUNT: &str = "/tmp/berth-build";

/// The hosts a build may reach through its proxy: crates.io, GitHub (git
/// dependencies), the npm registry (a `[build] command`'s front end), and
/// the ones its spec adds (`[build] hosts`).
pub const BUILD_HOSTS: &[&str] = &[
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "github.com",
    "codeload.github.com",
    "*.githubusercontent.com",
    "registry.npmjs.org",
];

pub(super) fn build_hosts(extra: &[String]) -> Vec<String> {
    BUILD_HOSTS
        .iter()
        .map(|host| host.to_string())
        .chain(extra.iter().map(|host| host.to_ascii_lowercase()))
        .collect()
}

/// How often a running build's disk is looked at.
pub(super) const DISK_CHECK_EVERY: Duration = Duration::from_millis(250);

/// How much a build may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildLimits {
    /// Memory, in MiB (the linker of a large app wants a few GiB).
    pub memory_mib: u64,
    /// CPU cores.
    pub cpus: f64,
    /// Processes and threads.
    pub pids: u64,
    /// Wall-clock time before the build is stopped.
    pub timeout: Duration,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            memory_mib: 4096,
            cpus: std::thread::available_parallelism().map_or(1.0, |cores| cores.get() as f64),
            pids: 4096,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Runs cargo as the app, sandboxed (see the module docs).
pub struct SandboxedCargo {
    resources: Arc<Resources>,
    reconciler: ReconcilerHandle,
    runtime: tokio::runtime::Handle,
    toolchain: Result<Toolchain, String>,
    limits: BuildLimits,
    /// Bytes the build must leave free on its disk (the server's reserve).
    disk_reserve: u64,
}

impl SandboxedCargo {
    /// A runner whose builds start through `reconciler`, in networks and as
    /// users from `resources`. Must be made inside the server's runtime.
    pub fn new(
        resources: Arc<Resources>,
        reconciler: ReconcilerHandle,
        limits: BuildLimits,
        disk_reserve: u64,
    ) -> SandboxedCargo {
        let toolchain = Toolchain::detect();
        if let Err(err) = &toolchain {
            tracing::warn!("builds will fail: {err}");
        }
        SandboxedCargo {
            resources,
            reconciler,
            runtime: tokio::runtime::Handle::current(),
            toolchain,
            limits,
            disk_reserve,
        }
    }

    /// The toolchain for the source in `job`: the one it pins when this
    /// server has it, else the default (saying so on `line`).
    fn toolchain_for(
        &self,
        job: &CargoJob<'_>,
        line: &mut dyn FnMut(CargoStream, String),
    ) -> Result<Toolchain, BuildError> {
        let default = self.toolchain.clone().map_err(BuildError::Sandbox);
        let Some(channel) = pinned_channel(&job.build_dir.join("src")) else {
            return default;
        };
        match Toolchain::installed(&channel) {
            Ok(pinned) => Ok(pinned),
            Err(why) => {
                line(
                    CargoStream::Stderr,
                    format!(
                        "warning: rust-toolchain asks for `{channel}`: {why}; building with the server's default toolchain"
                    ),
                );
                default
            }
        }
    }

    fn instance_spec(
        &self,
        job: &CargoJob<'_>,
        uid: u32,
        toolchain: &Toolchain,
    ) -> Result<InstanceSpec, BuildError> {
        let build = Path::new(BUILD_MOUNT);
        let mut words = match &job.shell {
            Some(line) => {
                let mut words = berth_build::run::low_priority_argv("/bin/sh");
                words.extend(["-c".to_string(), line.clone()]);
                words
            }
            None => berth_build::run::low_priority_argv("cargo"),
        };
        words.extend(job.args.iter().cloned());
        let mut binds = vec![BindMount {
            source: job.build_dir.to_path_buf(),
            destination: build.to_path_buf(),
            writable: true,
        }];
        if let Some(usr) = job.system_usr {
            binds.push(BindMount {
                source: usr.to_path_buf(),
                destination: "/usr".into(),
                writable: false,
            });
        }
        if toolchain.mounted {
            binds.push(BindMount {
                source: toolchain.root.clone(),
                destination: TOOLCHAIN_MOUNT.into(),
                writable: false,
            });
        }
        let path = |relative: &str| build.join(relative).display().to_string();
        let limits = self.limits;
        Ok(InstanceSpec {
            id: format!("build-{}", unique_suffix()),
            app: job.app.to_string(),
            command: words
                .iter()
                .map(|word| shell_quote(word))
                .collect::<Vec<_>>()
                .join(" "),
            workdir: build.join("src"),
            bin_dir: toolchain.bin_dir(),
            env: job
                .env
                .iter()
                .cloned()
                .chain([
                    ("HOME".into(), path("home")),
                    ("CARGO_HOME".into(), path("home/.cargo")),
                    ("CARGO_TARGET_DIR".into(), path("target")),
                    ("CARGO_TERM_COLOR".into(), "never".into()),
                ])
                .collect(),
            binds,
            sandbox: Some(berth_runtime::Sandbox {
                uid,
                gid: uid,
                limits: Some(berth_runtime::cgroup::Limits {
                    memory_bytes: limits.memory_mib * 1024 * 1024,
                    cpus: limits.cpus,
                    pids: limits.pids,
                }),
                private_tmp: true,
                network: None,
                root: None,
            }),
            stop_signal: berth_spec::StopSignal::Sigterm.number(),
            terminal: None,
            container: None,
        })
    }

    /// Starts the build and hands its lines to `line` until it exits.
    async fn run_sandboxed(
        &self,
        mut spec: InstanceSpec,
        job: &CargoJob<'_>,
        line: &mut dyn FnMut(CargoStream, String),
    ) -> Result<Result<(), String>, BuildError> {
        let build_dir = job.build_dir;
        let network = self
            .resources
            .networks()
            .prepare_build(job.loopback_ports, build_hosts(job.hosts))
            .map_err(BuildError::Sandbox)?;
        if let (Some(network), Some(sandbox)) = (&network, spec.sandbox.as_mut()) {
            sandbox.network = Some(network.netns.clone());
            spec.env.extend(network.env.iter().cloned());
            if let Some(resolv_conf) = self.resources.networks().resolv_conf() {
                spec.binds.push(BindMount {
                    source: resolv_conf.to_path_buf(),
                    destination: "/etc/resolv.conf".into(),
                    writable: false,
                });
            }
        }
        let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let sink: berth_runtime::OutputSink = Arc::new(move |stream, text| {
            let stream = match stream {
                OutputStream::Stdout => CargoStream::Stdout,
                OutputStream::Stderr => CargoStream::Stderr,
            };
            let _ = sender.send((stream, text));
        });
        let running = self
            .reconciler
            .run_once(spec, sink)
            .await
            .map_err(|err| BuildError::Sandbox(format!("cannot start cargo: {err}")))?;
        let deadline = tokio::time::sleep(self.limits.timeout);
        tokio::pin!(deadline);
        // Its target dir shares a disk with berth's store: a build that
        // writes the disk down to the reserve is stopped.
        let mut disk_check = tokio::time::interval(DISK_CHECK_EVERY);
        let cause = loop {
            tokio::select! {
                Some((stream, text)) = lines.recv() => line(stream, text),
                cause = running.exited() => break cause,
                _ = disk_check.tick() => {
                    let free = berth_runtime::free_disk_bytes(build_dir).unwrap_or(u64::MAX);
                    if free < self.disk_reserve {
                        running.stop(Duration::from_secs(5)).await;
                        return Ok(Err(format!(
                            "stopped: its disk has {} MiB free, less than the {} MiB berth keeps (berth server --disk-reserve-mib)",
                            free / (1024 * 1024),
                            self.disk_reserve / (1024 * 1024)
                        )));
                    }
                }
                () = &mut deadline => {
                    running.stop(Duration::from_secs(5)).await;
                    return Ok(Err(format!(
                        "stopped after {}, the build time limit (berth server --build-timeout)",
                        berth_spec::format_duration(self.limits.timeout)
                    )));
                }
            }
        };
        while let Ok((stream, text)) = lines.try_recv() {
            line(stream, text);
        }
        drop(network);
        Ok(match cause {
            ExitCause::Code(0) => Ok(()),
            ExitCause::OutOfMemory { limit_mib } => Err(format!(
                "out of memory: the kernel stopped the build at its {limit_mib} MiB limit (berth server --build-memory)"
            )),
            other => Err(other.to_string()),
        })
    }
}

impl CargoRunner for SandboxedCargo {
    fn visible_build_dir(&self, _build_dir: &Path) -> PathBuf {
        PathBuf::from(BUILD_MOUNT)
    }

    fn run(
        &self,
        job: &CargoJob<'_>,
        line: &mut dyn FnMut(CargoStream, String),
    ) -> Result<Result<(), String>, BuildError> {
        let uid = self
            .resources
            .app_uid(job.app)
            .map_err(BuildError::Sandbox)?;
        // Its parent, the cache, stays root's and private: no app reaches
        // another's build directory, nor its own from an instance.
        if let Some(cache) = job.build_dir.parent() {
            private_to_root(cache).map_err(|err| {
                BuildError::Sandbox(format!("cannot make {} private: {err}", cache.display()))
            })?;
        }
        crate::services::own_whole_tree(job.build_dir, uid).map_err(|err| {
            BuildError::Sandbox(format!(
                "cannot give {} to the app's user: {err}",
                job.build_dir.display()
            ))
        })?;
        let toolchain = self.toolchain_for(job, line)?;
        let spec = self.instance_spec(job, uid, &toolchain)?;
        self.runtime.block_on(self.run_sandboxed(spec, job, line))
    }
}

fn private_to_root(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::lchown(dir, Some(0), Some(0))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    format!("{millis}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `word` as one shell word.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("--features"), "--features");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("x';rm -rf /;'"), r"'x'\'';rm -rf /;'\'''");
        assert_eq!(shell_quote(""), "''");
    }
}
