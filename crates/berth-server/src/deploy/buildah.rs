//! Dockerfiles berth does not build natively (any shape but cargo-chef's)
//! are built with Debian's `buildah`, and the image it makes is deployed
//! like one pushed to the registry.
//!
//! The build sees nothing of this host but its context: the base images
//! come from berth's registry (written out as OCI layouts and pulled from
//! there; `--pull=never`, so nothing is fetched from elsewhere), buildah
//! keeps its store under the data dir, and every `RUN` is an OCI container
//! (`runc`, or `crun`) whose root is an unprivileged host user of a range
//! of the app's own — never root, never berth's or another app's users —
//! with the build limits of a cargo build (memory, CPU, processes, time)
//! and the network of one: a namespace whose proxy opens only the
//! registries and `[build] hosts`. Its output streams like cargo's.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_proto::DeployProgress;
use berth_registry::RepoName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};
use super::image::parse_reference;
use super::sandboxed_build::{BuildLimits, DISK_CHECK_EVERY, build_hosts};

/// Where and how Dockerfiles are built with buildah.
#[derive(Debug, Clone)]
pub struct DockerfileBuilds {
    /// buildah's own store (images, layer cache), under the data dir.
    pub dir: PathBuf,
    /// What a build may use.
    pub limits: BuildLimits,
    /// Whether the server runs as root (buildah needs it).
    pub isolated: bool,
    /// Bytes a build must leave free on the disk of `dir` (the server's
    /// reserve): one that writes the disk down to it is stopped.
    pub disk_reserve: u64,
}

/// The programs a buildah build runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildahTools {
    /// `buildah`.
    pub buildah: PathBuf,
    /// The OCI runtime of its `RUN`s.
    pub runtime: PathBuf,
}

/// Held while a buildah build runs.
static BUILDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest line of build output kept (as an instance's log lines).
const MAX_LINE: usize = 64 * 1024;

/// What to install when a tool is missing.
const INSTALL: &str = "apt install buildah runc";

/// Finds buildah and an OCI runtime in `path_var` (a `PATH`). `runc`
/// comes first: `crun` refuses hosts with both cgroup versions mounted.
pub(crate) fn find_tools(path_var: &OsStr) -> Result<BuildahTools, String> {
    let find = |name: &str| {
        std::env::split_paths(path_var)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    };
    let buildah = find("buildah").ok_or_else(|| {
        format!(
            "building this Dockerfile needs buildah, which this server lacks: install it on the server ({INSTALL}), or write the Dockerfile in the cargo-chef shape berth builds itself (berth export dockerfile prints one)"
        )
    })?;
    let runtime = find("runc").or_else(|| find("crun")).ok_or_else(|| {
        format!("buildah's RUN steps need runc or crun, which this server lacks: install one ({INSTALL})")
    })?;
    Ok(BuildahTools { buildah, runtime })
}

/// The first host user id of the range an app's build containers map
/// their users to: above every app user (see `berth_runtime::users`), one
/// range of 65536 per app.
fn build_uid_base(app_uid: u32) -> u32 {
    const FIRST: u32 = 2_100_000_000;
    FIRST + (app_uid.wrapping_sub(berth_runtime::users::FIRST_APP_UID) % 32_768) * 65_536
}

/// The `nameserver` addresses of a resolv.conf.
fn nameservers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .map(|address| address.trim().to_string())
        .filter(|address| !address.is_empty())
        .collect()
}

impl Deployer {
    /// Builds the Dockerfile `text` (read from `path` of the upload in
    /// `source`) with buildah, stores the image as the app's in the
    /// registry, and returns its pinned reference (`APP@sha256:…`).
    pub(super) async fn buildah_image(
        &self,
        app: &str,
        source: &Path,
        path: &str,
        text: &str,
        hosts: &[String],
        progress: &Progress,
    ) -> Result<String, DeployFailure> {
        let fail = DeployFailure::before_release;
        let settings = self.dockerfile_builds.clone().ok_or_else(|| {
            fail("this server does not build Dockerfiles with buildah".to_string())
        })?;
        if !settings.isolated {
            return Err(fail(format!(
                "{path} is not the cargo-chef shape berth builds natively, and building it with buildah needs the server to run as root"
            )));
        }
        if let Some(refusal) = berth_spec::buildah_refusal(text) {
            return Err(fail(format!("{path}: {refusal}")));
        }
        let tools = find_tools(&std::env::var_os("PATH").unwrap_or_default()).map_err(fail)?;
        let bases = berth_spec::base_images(text);
        let mut found = Vec::new();
        for base in &bases {
            let (repo, tag) = parse_reference(base).map_err(fail)?;
            if self.registry.manifest(&repo, &tag).is_err() {
                return Err(fail(format!(
                    "{path} builds on {base}, which is not in berth's registry: push it there first (skopeo copy docker://{base} docker://SERVER/{repo}:{tag})"
                )));
            }
            found.push((base.clone(), repo, tag));
        }
        say(
            progress,
            format!(
                "{path}: building with buildah on {}",
                if bases.is_empty() {
                    "scratch".to_string()
                } else {
                    bases.join(", ")
                }
            ),
        );
        // One buildah build at a time: they share a store, and the names
        // the bases are given there.
        let _one_at_a_time = BUILDS.lock().await;
        std::fs::create_dir_all(&self.tmp_dir)
            .and_then(|()| std::fs::create_dir_all(&settings.dir))
            .map_err(|err| fail(format!("cannot make buildah's directories: {err}")))?;
        let work = tempfile::Builder::new()
            .prefix("buildah-")
            .tempdir_in(&self.tmp_dir)
            .map_err(|err| fail(format!("cannot make a build directory: {err}")))?;
        // 0711 set after making it: the server's umask would take the x.
        let mounts = tempfile::Builder::new()
            .prefix("berth-buildah-")
            .tempdir()
            .and_then(|dir| {
                std::fs::set_permissions(
                    dir.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o711),
                )
                .map(|()| dir)
            })
            .map_err(|err| fail(format!("cannot make buildah's mount folder: {err}")))?;
        let run = BuildahRun {
            tools,
            storage: settings.dir.clone(),
            work: work.path().to_path_buf(),
            mounts: mounts.path().to_path_buf(),
        };
        std::fs::write(run.registries_conf(), "")
            .and_then(|()| std::fs::write(work.path().join("Dockerfile"), text))
            .map_err(|err| fail(format!("cannot write the build's files: {err}")))?;

        // The bases, from the registry into buildah's store by their names.
        for (index, (base, repo, tag)) in found.into_iter().enumerate() {
            let layout = work.path().join(format!("base-{index}"));
            let registry = self.registry.clone();
            let out = layout.clone();
            tokio::task::spawn_blocking(move || registry.export_layout(&repo, &tag, &out, "base"))
                .await
                .map_err(|err| fail(format!("reading {base} stopped: {err}")))?
                .map_err(|err| fail(format!("cannot read {base} from the registry: {err}")))?;
            // Relative: buildah names the image after the path, which
            // must be lower case.
            let id = run
                .output(&["pull", "--quiet", &format!("oci:base-{index}:base")])
                .await
                .map_err(|err| fail(format!("buildah could not take {base}: {err}")))?;
            // A base named by digest is found by it; buildah tags no digest.
            if !base.contains('@') {
                run.output(&["tag", "--", id.trim(), &base])
                    .await
                    .map_err(|err| fail(format!("buildah could not name {base}: {err}")))?;
            }
            let _ = run
                .output(&["rmi", &format!("localhost/base-{index}:latest")])
                .await;
        }

        let uid = self
            .resources
            .app_uid(app)
            .map_err(|err| fail(format!("the app's user: {err}")))?;
        let network = self
            .resources
            .networks()
            .prepare_build(&[], build_hosts(hosts))
            .map_err(fail)?;
        let limits = settings.limits;
        let uid_base = build_uid_base(uid);
        let uid_map = format!("0:{uid_base}:65536");
        // A RUN in its own user namespace cannot mount a sysfs of a network
        // namespace it does not own (berth's): it gets an empty /sys of
        // its own instead, where runc can still mount the cgroups.
        let sys = mounts.path().join("sys");
        std::fs::create_dir(&sys)
            .and_then(|()| std::os::unix::fs::chown(&sys, Some(uid_base), Some(uid_base)))
            .map_err(|err| fail(format!("cannot make the build's /sys: {err}")))?;
        let sys_volume = format!("{}:/sys", sys.display());
        let tag = format!(
            "localhost/berth-build/{app}:{}",
            work.path()
                .file_name()
                .map(|name| name.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .trim_start_matches("buildah-")
        );
        let dockerfile = work.path().join("Dockerfile").display().to_string();
        let mut args: Vec<String> = [
            "bud",
            "--runtime",
            &run.tools.runtime.display().to_string(),
            "--pull=never",
            "--no-cache",
            "--force-rm",
            // No `--layers`: buildah 1.28 cannot then copy between stages
            // whose users are mapped (`COPY --from`: "host ID 65534 cannot
            // be mapped").
            "--isolation",
            "oci",
            "--userns-uid-map",
            &uid_map,
            "--userns-gid-map",
            &uid_map,
            "--memory",
            &format!("{}m", limits.memory_mib),
            "--cpu-period",
            "100000",
            "--cpu-quota",
            &format!("{}", (limits.cpus * 100_000.0).max(1000.0) as u64),
            "--ulimit",
            &format!("nproc={0}:{0}", limits.pids),
            "--volume",
            &sys_volume,
            "--file",
            &dockerfile,
            "--tag",
            &tag,
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let mut env = Vec::new();
        match &network {
            Some(network) => {
                args.push(format!("--network=ns:{}", network.netns.path().display()));
                env.extend(network.env.iter().cloned());
                let resolv = self
                    .resources
                    .networks()
                    .resolv_conf()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default();
                for server in nameservers(&resolv) {
                    args.push(format!("--dns={server}"));
                }
            }
            // RUN steps never get the host's network.
            None => args.push("--network=none".into()),
        }
        args.push("--".into());
        args.push(source.display().to_string());
        let built = run
            .stream(
                &args,
                &env,
                (limits.timeout, settings.disk_reserve),
                progress,
            )
            .await;
        drop(network);
        if built.is_err() {
            // A stopped buildah may leave its working containers, and what
            // their RUNs wrote, in the store: it is berth's alone, and
            // builds run one at a time.
            let _ = run.output(&["rm", "--all"]).await;
        }
        built.map_err(|err| fail(format!("the Dockerfile build failed: {err}")))?;

        // The image, from buildah's store into the registry.
        let out = work.path().join("image");
        run.output(&[
            "push",
            "--quiet",
            &tag,
            &format!("oci:{}:built", out.display()),
        ])
        .await
        .map_err(|err| fail(format!("buildah could not write the image: {err}")))?;
        let _ = run.output(&["rmi", &tag]).await;
        let registry = self.registry.clone();
        let app = app.to_string();
        let build_tag = format!("build-{}", tag.rsplit(':').next().unwrap_or("image"));
        tokio::task::spawn_blocking(move || {
            let repo = RepoName::parse(&app).map_err(|err| err.to_string())?;
            let digest = registry
                .import_layout(&out, "built", &repo, &build_tag)
                .map_err(|err| err.to_string())?;
            // The release pins it by digest (as a cargo-chef build's).
            let _ = registry.delete_manifest(&repo, &build_tag);
            Ok::<_, String>(format!("{app}@{digest}"))
        })
        .await
        .map_err(|err| fail(format!("storing the image stopped: {err}")))?
        .map_err(|err| fail(format!("cannot store the built image: {err}")))
    }
}

/// buildah run over berth's own store and an empty registries.conf.
struct BuildahRun {
    tools: BuildahTools,
    storage: PathBuf,
    work: PathBuf,
    /// buildah's `TMPDIR`, where it mounts each `RUN`'s root: a folder
    /// the container's unprivileged root can pass through, so outside the
    /// data dir (which no one but berth may enter).
    mounts: PathBuf,
}

impl BuildahRun {
    fn registries_conf(&self) -> PathBuf {
        self.work.join("registries.conf")
    }

    fn command(&self, args: &[String], env: &[(String, String)]) -> Command {
        let mut command = Command::new(&self.tools.buildah);
        command
            .arg("--root")
            .arg(self.storage.join("storage"))
            .arg("--runroot")
            .arg(self.storage.join("run"))
            .args(["--storage-driver", "overlay"])
            .arg("--registries-conf")
            .arg(self.registries_conf())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.work)
            .env("TMPDIR", &self.mounts)
            .current_dir(&self.work)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            // Its own process group: stopping it stops its runc and RUNs.
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// Runs buildah with `args`; its standard output, or why it failed.
    async fn output(&self, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let done = self
            .command(&args, &[])
            .output()
            .await
            .map_err(|err| format!("cannot run buildah: {err}"))?;
        if done.status.success() {
            Ok(String::from_utf8_lossy(&done.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&done.stderr).trim().to_string())
        }
    }

    /// Runs buildah with `args`, each line it prints a build line of the
    /// deploy, stopped at `timeout` or when the disk of its store has less
    /// than `disk_reserve` bytes free.
    async fn stream(
        &self,
        args: &[String],
        env: &[(String, String)],
        (timeout, disk_reserve): (Duration, u64),
        progress: &Progress,
    ) -> Result<(), String> {
        let mut child = self
            .command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run buildah: {err}"))?;
        let mut last_lines: Vec<String> = Vec::new();
        let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        for reader in [
            child
                .stdout
                .take()
                .map(|out| Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|err| Box::new(err) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    // Read on past a line too long (kept cut) and bytes
                    // that are not UTF-8, so buildah's pipe never closes.
                    match (&mut reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut line)
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line);
                            let _ = sender.send(text.trim_end_matches(['\n', '\r']).to_string());
                        }
                    }
                }
            });
        }
        drop(sender);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // Its layers and each RUN's writes land in its store, on the data
        // dir's disk: a build that fills it down to the reserve is stopped.
        let mut disk_check = tokio::time::interval(DISK_CHECK_EVERY);
        loop {
            tokio::select! {
                _ = disk_check.tick() => {
                    let free = berth_runtime::free_disk_bytes(&self.storage).unwrap_or(u64::MAX);
                    if free < disk_reserve {
                        stop(&mut child).await;
                        return Err(format!(
                            "stopped: its disk has {} MiB free, less than the {} MiB berth keeps (berth server --disk-reserve-mib)",
                            free / (1024 * 1024),
                            disk_reserve / (1024 * 1024)
                        ));
                    }
                }
                line = lines.recv() => match line {
                    Some(line) => {
                        last_lines.push(line.clone());
                        if last_lines.len() > 20 {
                            last_lines.remove(0);
                        }
                        let _ = progress.send(DeployProgress::Build { line });
                    }
                    None => break,
                },
                () = &mut deadline => {
                    stop(&mut child).await;
                    return Err(format!(
                        "stopped after {}, the build time limit (berth server --build-timeout)",
                        berth_spec::format_duration(timeout)
                    ));
                }
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|err| format!("buildah: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(last_lines.join("\n"))
        }
    }
}

/// Stops buildah and what it started (its process group) the way it
/// cleans up after itself (SIGTERM), then kills them if they linger.
async fn stop(child: &mut tokio::process::Child) {
    let group = child.id().map(|pid| format!("-{pid}"));
    let signal = |name: &'static str| {
        let group = group.clone();
        async move {
            if let Some(group) = group {
                let _ = Command::new("kill")
                    .args([name, "--", &group])
                    .status()
                    .await;
            }
        }
    };
    signal("-TERM").await;
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        signal("-KILL").await;
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let missing = find_tools(empty.path().as_os_str()).unwrap_err();
        assert!(missing.contains("needs buildah"), "{missing}");
        assert!(missing.contains("apt install buildah runc"), "{missing}");

        let bin = empty.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("buildah"), "").unwrap();
        let no_runtime = find_tools(bin.as_os_str()).unwrap_err();
        assert!(no_runtime.contains("runc or crun"), "{no_runtime}");

        std::fs::write(bin.join("crun"), "").unwrap();
        assert_eq!(
            find_tools(bin.as_os_str()).unwrap().runtime,
            bin.join("crun")
        );
        std::fs::write(bin.join("runc"), "").unwrap();
        assert_eq!(
            find_tools(bin.as_os_str()).unwrap().runtime,
            bin.join("runc")
        );
    }

    #[test]
    fn each_app_builds_as_users_of_its_own_above_every_app_user() {
        let first = build_uid_base(berth_runtime::users::FIRST_APP_UID);
        let second = build_uid_base(berth_runtime::users::FIRST_APP_UID + 1);
        assert!(first > berth_runtime::users::LAST_APP_UID);
        assert_eq!(second - first, 65_536);
        let last = build_uid_base(berth_runtime::users::LAST_APP_UID);
        assert!(last.checked_add(65_535).is_some());
        assert!(last > berth_runtime::users::LAST_APP_UID);
    }

    #[test]
    fn nameservers_are_read_from_a_resolv_conf() {
        let text = "# relayed\nnameserver 10.255.255.53\nsearch lan\nnameserver ::1\n";
        assert_eq!(nameservers(text), vec!["10.255.255.53", "::1"]);
    }
}
