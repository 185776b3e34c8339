//! `--runtime docker`: instances of image releases run as containers of a
//! Docker Engine (through its API, with `bollard`) instead of in berth's
//! own sandbox over the image's root.
//!
//! Each instance is two containers. The first runs a pausing program (module `pause`)
//! with no network but its own namespace's loopback; berth adopts that
//! namespace as it would one of its own ([`crate::net::Networks::adopt`]:
//! the veth link, the egress rules, bridges to its PostgreSQL and Redis,
//! private names), so the router, health checks and TCP services reach
//! the instance at `127.0.0.1:PORT` inside it as always. The second, the
//! app, joins that network (`container:ID`) only once it is ready, so the
//! app never starts without it. The app's container pulls its image from
//! berth's registry by digest, runs as the app's own user with no
//! capabilities and no new privileges, a read-only root (its `/tmp` and
//! volumes writable), and the instance's memory, CPU and process limits.
//! Its output is read line by line as a process's is, and when it exits
//! both containers are removed. Containers carry a label naming the
//! server, so what a crashed server left is removed when it starts again.

mod pause;

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::{
    ContainerImage, Driver, DriverError, ExitCause, InstanceControl, InstanceSpec, OutputSink,
    OutputStream, RunningInstance,
};

/// The label every container berth makes carries: the server's data dir.
const OWNER_LABEL: &str = "dev.berth.server";
/// The label naming the instance a container is (part of).
const INSTANCE_LABEL: &str = "dev.berth.instance";

/// The engine calls run on a runtime of their own, so the reconciler's
/// synchronous start can wait for them from any thread.
fn engine_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-docker")
            .enable_all()
            .build()
            .expect("a runtime for the Docker engine's calls")
    })
}

/// Runs `work` on the engine's runtime and waits for it, blocking the
/// calling thread (never one of that runtime's own).
fn wait_for<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    engine_runtime().spawn(async move {
        let _ = sender.send(work.await);
    });
    receiver
        .recv()
        .expect("the engine's runtime runs until the process ends")
}

/// A Docker Engine that runs instances.
pub struct DockerRuntime {
    docker: Docker,
    owner: String,
    /// The network container made for each instance whose app container
    /// has not started yet.
    sandboxes: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the engine at `socket` (a path, or `unix://PATH`),
    /// agrees on an API version, imports the network container's image
    /// and removes the containers an earlier run of the server `owner` (its
    /// data dir) left. Blocks the calling thread.
    pub fn connect(socket: &str, owner: &str) -> Result<Arc<DockerRuntime>, String> {
        let socket = socket.to_string();
        let owner = owner.to_string();
        wait_for(async move {
            let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
                .map_err(|err| format!("cannot reach the Docker engine at {socket}: {err}"))?
                .negotiate_version()
                .await
                .map_err(|err| format!("the Docker engine at {socket} does not answer: {err}"))?;
            let runtime = DockerRuntime {
                docker,
                owner,
                sandboxes: Mutex::new(HashMap::new()),
            };
            runtime.import_pause_image().await?;
            runtime.remove_leftovers().await;
            Ok(Arc::new(runtime))
        })
    }

    async fn import_pause_image(&self) -> Result<(), String> {
        let tar =
            pause::image_tar().map_err(|err| format!("cannot make the pause image: {err}"))?;
        let (repo, tag) = pause::PAUSE_IMAGE.split_once(':').expect("NAME:TAG");
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            ..Default::default()
        };
        let mut progress =
            self.docker
                .create_image(Some(options), Some(bollard::body_full(tar.into())), None);
        while let Some(step) = progress.next().await {
            step.map_err(|err| format!("cannot import the pause image into Docker: {err}"))?;
        }
        Ok(())
    }

    /// Removes every container of this server's: none of its instances
    /// runs yet.
    async fn remove_leftovers(&self) {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{OWNER_LABEL}={}", self.owner)],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let Ok(leftovers) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for container in leftovers {
            if let Some(id) = container.id {
                tracing::info!(container = %id, "removing a container an earlier run left");
                remove(&self.docker, &id).await;
            }
        }
    }

    fn labels(&self, instance: &str) -> HashMap<String, String> {
        HashMap::from([
            (OWNER_LABEL.to_string(), self.owner.clone()),
            (INSTANCE_LABEL.to_string(), instance.to_string()),
        ])
    }

    /// Starts the network container of `instance` and returns a handle on
    /// its namespace, for [`crate::net::Networks::adopt`]. Blocks.
    pub fn make_sandbox(&self, instance: &str) -> Result<OwnedFd, String> {
        let docker = self.docker.clone();
        let name = format!("berth-{instance}-net");
        let config = ContainerCreateBody {
            image: Some(pause::PAUSE_IMAGE.into()),
            entrypoint: Some(vec![pause::PAUSE_PATH.into()]),
            labels: Some(self.labels(instance)),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                // Any port may be bound inside by the app's user, as in
                // berth's own namespaces.
                sysctls: Some(HashMap::from([(
                    "net.ipv4.ip_unprivileged_port_start".to_string(),
                    "0".to_string(),
                )])),
                pids_limit: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (id, pid) = wait_for(async move {
            let created = docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name),
                        ..Default::default()
                    }),
                    config,
                )
                .await
                .map_err(|err| format!("cannot create the network container: {err}"))?;
            let started = async {
                docker.start_container(&created.id, None).await?;
                docker.inspect_container(&created.id, None).await
            }
            .await;
            let pid = match started {
                Ok(inspected) => inspected.state.and_then(|state| state.pid).unwrap_or(0),
                Err(err) => {
                    remove(&docker, &created.id).await;
                    return Err(format!("cannot start the network container: {err}"));
                }
            };
            if pid <= 0 {
                remove(&docker, &created.id).await;
                return Err("the network container is not running".to_string());
            }
            Ok((created.id, pid as u32))
        })?;
        match crate::netns::NetNs::open_of_process(pid) {
            Ok(fd) => {
                self.sandboxes
                    .lock()
                    .expect("sandboxes")
                    .insert(instance.to_string(), id);
                Ok(fd)
            }
            Err(err) => {
                let docker = self.docker.clone();
                wait_for(async move { remove(&docker, &id).await });
                Err(format!(
                    "cannot open the network container's namespace: {err}"
                ))
            }
        }
    }

    /// Starts the app's container of `spec` in the network made for it.
    fn start_container(
        &self,
        spec: &InstanceSpec,
        image: &ContainerImage,
        output: OutputSink,
    ) -> Result<RunningInstance, DriverError> {
        let failed = |message: String| DriverError::Spawn {
            command: spec.command.clone(),
            source: std::io::Error::other(message),
        };
        let network = self
            .sandboxes
            .lock()
            .expect("sandboxes")
            .remove(&spec.id)
            .ok_or_else(|| failed("its network container was not made".into()))?;
        if spec.terminal.is_some() {
            let docker = self.docker.clone();
            wait_for(async move { remove(&docker, &network).await });
            return Err(failed("a terminal is not given to a container".into()));
        }
        let config = self.container_config(spec, image, &network);
        let docker = self.docker.clone();
        let credentials = DockerCredentials {
            username: Some(image.username.clone()),
            password: Some(image.password.clone()),
            serveraddress: image.reference.split('/').next().map(str::to_string),
            ..Default::default()
        };
        let reference = image.reference.clone();
        let name = format!("berth-{}", spec.id);
        let started = wait_for(async move {
            let made = async {
                let mut pull = docker.create_image(
                    Some(CreateImageOptions {
                        from_image: Some(reference.clone()),
                        ..Default::default()
                    }),
                    None,
                    Some(credentials),
                );
                while let Some(step) = pull.next().await {
                    step.map_err(|err| format!("cannot pull {reference}: {err}"))?;
                }
                let created = docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: Some(name),
                            ..Default::default()
                        }),
                        config,
                    )
                    .await
                    .map_err(|err| format!("cannot create its container: {err}"))?;
                Ok::<_, String>(created.id)
            }
            .await;
            let id = match made {
                Ok(id) => id,
                Err(err) => {
                    remove(&docker, &network).await;
                    return Err(err);
                }
            };
            let attached = docker
                .attach_container(
                    &id,
                    Some(AttachContainerOptions {
                        stdout: true,
                        stderr: true,
                        stream: true,
                        ..Default::default()
                    }),
                )
                .await;
            let started = match attached {
                Ok(attached) => match docker.start_container(&id, None).await {
                    Ok(()) => docker
                        .inspect_container(&id, None)
                        .await
                        .map(|inspected| (attached, inspected)),
                    Err(err) => Err(err),
                },
                Err(err) => Err(err),
            };
            match started {
                Ok((attached, inspected)) => {
                    let pid = inspected.state.and_then(|state| state.pid).unwrap_or(0);
                    Ok((id, network, attached, pid.max(0) as u32))
                }
                Err(err) => {
                    remove(&docker, &id).await;
                    remove(&docker, &network).await;
                    Err(format!("cannot start its container: {err}"))
                }
            }
        })
        .map_err(failed)?;
        let (id, network, attached, pid) = started;
        let (exit_sender, exit) = watch::channel(None);
        let limit_mib = spec
            .sandbox
            .as_ref()
            .and_then(|sandbox| sandbox.limits.as_ref())
            .map(|limits| limits.memory_bytes / (1024 * 1024));
        let docker = self.docker.clone();
        let container = id.clone();
        engine_runtime().spawn(async move {
            let reading = tokio::spawn(read_lines(attached.output, output));
            let cause = exit_of(&docker, &container, limit_mib).await;
            // Every line first, as the process driver does.
            let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
            remove(&docker, &container).await;
            remove(&docker, &network).await;
            let _ = exit_sender.send(Some(cause));
        });
        let control = Arc::new(ContainerControl {
            docker: self.docker.clone(),
            container: id,
            stop_signal: spec.stop_signal,
        });
        Ok(RunningInstance::new(pid, exit, control))
    }

    fn container_config(
        &self,
        spec: &InstanceSpec,
        image: &ContainerImage,
        network: &str,
    ) -> ContainerCreateBody {
        let argv = argv_of(&spec.command);
        let sandbox = spec.sandbox.as_ref();
        let limits = sandbox.and_then(|sandbox| sandbox.limits.as_ref());
        ContainerCreateBody {
            image: Some(image.reference.clone()),
            entrypoint: Some(argv[..1].to_vec()),
            cmd: Some(argv[1..].to_vec()),
            env: Some(
                spec.env
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect(),
            ),
            user: sandbox.map(|sandbox| format!("{}:{}", sandbox.uid, sandbox.gid)),
            working_dir: Some(spec.workdir.display().to_string()),
            labels: Some(self.labels(&spec.id)),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{network}")),
                binds: Some(
                    spec.binds
                        .iter()
                        .map(|bind| {
                            format!(
                                "{}:{}:{}",
                                bind.source.display(),
                                bind.destination.display(),
                                if bind.writable { "rw" } else { "ro" }
                            )
                        })
                        .collect(),
                ),
                memory: limits.map(|limits| limits.memory_bytes as i64),
                memory_swap: limits.map(|limits| limits.memory_bytes as i64),
                nano_cpus: limits.map(|limits| (limits.cpus * 1e9) as i64),
                pids_limit: limits.map(|limits| limits.pids as i64),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    "rw,nosuid,nodev,mode=1777".to_string(),
                )])),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The words a command runs as: exec form (`["a", "b c"]`), plain words,
/// or a line for the image's `/bin/sh`.
fn argv_of(command: &str) -> Vec<String> {
    if command.trim_start().starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(command)
        && !words.is_empty()
    {
        return words;
    }
    let plain = command.bytes().all(|b| {
        b.is_ascii_alphanumeric() || b.is_ascii_whitespace() || b"/._-=:,@+%".contains(&b)
    });
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    if plain && !words.is_empty() {
        words
    } else {
        vec!["/bin/sh".into(), "-c".into(), command.into()]
    }
}

/// Hands each line the container writes to `output`, a line cut at its
/// end kept until the rest comes.
async fn read_lines(
    mut frames: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    output: OutputSink,
) {
    let mut pending = [Vec::new(), Vec::new()];
    let emit = |stream: OutputStream, bytes: &[u8], pending: &mut Vec<u8>| {
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            output(stream, text.trim_end_matches('\r').to_string());
        }
    };
    while let Some(Ok(frame)) = frames.next().await {
        match frame {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                emit(OutputStream::Stdout, &message, &mut pending[0]);
            }
            LogOutput::StdErr { message } => emit(OutputStream::Stderr, &message, &mut pending[1]),
            LogOutput::StdIn { .. } => {}
        }
    }
    for (stream, rest) in [OutputStream::Stdout, OutputStream::Stderr]
        .into_iter()
        .zip(pending)
    {
        if !rest.is_empty() {
            output(stream, String::from_utf8_lossy(&rest).into_owned());
        }
    }
}

/// Waits for the container to stop; how it ended.
async fn exit_of(docker: &Docker, container: &str, limit_mib: Option<u64>) -> ExitCause {
    let mut waiting = docker.wait_container(
        container,
        Some(WaitContainerOptions {
            condition: "not-running".into(),
        }),
    );
    let code = match waiting.next().await {
        Some(Ok(answer)) => answer.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(err)) => return ExitCause::Unknown(err.to_string()),
        None => return ExitCause::Unknown("the engine stopped answering".into()),
    };
    let killed_for_memory = docker
        .inspect_container(container, None)
        .await
        .ok()
        .and_then(|inspected| inspected.state)
        .and_then(|state| state.oom_killed)
        .unwrap_or(false);
    match (killed_for_memory, limit_mib) {
        (true, Some(limit_mib)) => ExitCause::OutOfMemory { limit_mib },
        // The engine reports a signal's death as 128 + its number.
        _ if (129..=128 + 64).contains(&code) => ExitCause::Signal((code - 128) as i32),
        _ => ExitCause::Code(code as i32),
    }
}

/// Removes a container, running or not, with its anonymous volumes.
async fn remove(docker: &Docker, container: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(err) = docker.remove_container(container, Some(options)).await {
        tracing::warn!(%container, error = %err, "cannot remove a container");
    }
}

/// Signals an instance's container through the engine.
#[derive(Debug)]
struct ContainerControl {
    docker: Docker,
    container: String,
    stop_signal: i32,
}

impl ContainerControl {
    fn send(&self, signal: i32) {
        let docker = self.docker.clone();
        let container = self.container.clone();
        engine_runtime().spawn(async move {
            let options = KillContainerOptions {
                signal: signal.to_string(),
            };
            // One that has just exited is not an error worth a word.
            let _ = docker.kill_container(&container, Some(options)).await;
        });
    }
}

impl InstanceControl for ContainerControl {
    fn terminate(&self) {
        self.send(self.stop_signal);
    }

    fn kill(&self) {
        self.send(libc::SIGKILL);
    }
}

/// The server's driver with `--runtime docker`: instances that name a
/// [`ContainerImage`] run in the engine, everything else (source builds)
/// in berth's own sandbox.
pub struct ContainerOrProcess {
    /// berth's own driver.
    pub process: Arc<dyn Driver>,
    /// The engine.
    pub docker: Arc<DockerRuntime>,
}

impl Driver for ContainerOrProcess {
    fn start(
        &self,
        spec: &InstanceSpec,
        output: OutputSink,
    ) -> Result<RunningInstance, DriverError> {
        match &spec.container {
            Some(image) => self.docker.start_container(spec, image, output),
            None => self.process.start(spec, output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_the_words_they_run() {
        assert_eq!(argv_of("/hello --port=8080"), ["/hello", "--port=8080"]);
        assert_eq!(
            argv_of(r#"["/bin/sh","-c","echo it's"]"#),
            ["/bin/sh", "-c", "echo it's"]
        );
        assert_eq!(
            argv_of("serve > /tmp/log"),
            ["/bin/sh", "-c", "serve > /tmp/log"]
        );
    }
}
