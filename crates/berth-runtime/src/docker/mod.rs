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
mod running;
mod terminal;

/// What detaches from a container's terminal: a sequence nobody types
/// (Ctrl-^ Ctrl-_ Ctrl-^), instead of the engine's Ctrl-P Ctrl-Q.
const DETACH_KEYS: &str = "ctrl-^,ctrl-_,ctrl-^";

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, ListContainersOptions,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::{ContainerImage, Driver, DriverError, InstanceSpec, OutputSink, RunningInstance};
use running::{ContainerControl, argv_of, exit_of, read_lines, remove};

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
    let wait = move || {
        receiver
            .recv()
            .expect("the engine's runtime runs until the process ends")
    };
    // On a worker of the server's runtime, its other tasks move to another
    // thread while this one waits.
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
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
        if !cfg!(target_arch = "x86_64") {
            return Err(
                "--runtime docker runs on x86-64 machines only: its network container's program is x86-64 code".into(),
            );
        }
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

    /// What names the containers of `instance` of `app` (instance ids
    /// repeat across apps: `release-v3`).
    fn key(app: &str, instance: &str) -> String {
        format!("{app}-{instance}")
    }

    fn labels(&self, instance: &str) -> HashMap<String, String> {
        HashMap::from([
            (OWNER_LABEL.to_string(), self.owner.clone()),
            (INSTANCE_LABEL.to_string(), instance.to_string()),
        ])
    }

    /// Starts the network container of `instance` of `app` and returns a
    /// handle on its namespace, for [`crate::net::Networks::adopt`].
    /// Blocks. Unless the instance is then started, call
    /// [`DockerRuntime::discard_sandbox`].
    pub fn make_sandbox(&self, app: &str, instance: &str) -> Result<OwnedFd, String> {
        let docker = self.docker.clone();
        let key = Self::key(app, instance);
        let name = format!("berth-{key}-net");
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
            let created = create(&docker, name, config, "the network container").await?;
            let started = async {
                docker.start_container(&created, None).await?;
                docker.inspect_container(&created, None).await
            }
            .await;
            let pid = match started {
                Ok(inspected) => inspected.state.and_then(|state| state.pid).unwrap_or(0),
                Err(err) => {
                    remove(&docker, &created).await;
                    return Err(format!("cannot start the network container: {err}"));
                }
            };
            if pid <= 0 {
                remove(&docker, &created).await;
                return Err("the network container is not running".to_string());
            }
            Ok((created, pid as u32))
        })?;
        match crate::netns::NetNs::open_of_process(pid) {
            Ok(fd) => {
                self.sandboxes.lock().expect("sandboxes").insert(key, id);
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

    /// Removes the network container made for `instance` of `app`, which
    /// will not be started (its network could not be set up).
    pub fn discard_sandbox(&self, app: &str, instance: &str) {
        let made = self
            .sandboxes
            .lock()
            .expect("sandboxes")
            .remove(&Self::key(app, instance));
        if let Some(id) = made {
            let docker = self.docker.clone();
            wait_for(async move { remove(&docker, &id).await });
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
            .remove(&Self::key(&spec.app, &spec.id))
            .ok_or_else(|| failed("its network container was not made".into()))?;
        let relay_end = match spec.terminal.as_ref().map(|terminal| terminal.relay_end()) {
            Some(Err(err)) => {
                let docker = self.docker.clone();
                wait_for(async move { remove(&docker, &network).await });
                return Err(failed(format!("cannot relay its terminal: {err}")));
            }
            Some(Ok(end)) => Some(end),
            None => None,
        };
        let tty = relay_end.is_some();
        let config = self.container_config(spec, image, &network);
        let docker = self.docker.clone();
        let credentials = DockerCredentials {
            username: Some(image.username.clone()),
            password: Some(image.password.clone()),
            serveraddress: image.reference.split('/').next().map(str::to_string),
            ..Default::default()
        };
        let reference = image.reference.clone();
        let name = format!("berth-{}", Self::key(&spec.app, &spec.id));
        let started = wait_for(async move {
            let made = async {
                // Pinned by digest: one already here is the same image.
                let present = docker.inspect_image(&reference).await.is_ok();
                let mut pull = docker.create_image(
                    Some(CreateImageOptions {
                        from_image: Some(reference.clone()),
                        ..Default::default()
                    }),
                    None,
                    Some(credentials),
                );
                while let Some(step) = pull.next().await {
                    if present {
                        break;
                    }
                    step.map_err(|err| format!("cannot pull {reference}: {err}"))?;
                }
                create(&docker, name, config, "its container").await
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
                        stdin: tty,
                        // The engine's default, Ctrl-P Ctrl-Q, would hold
                        // back every Ctrl-P (a shell's history) and let two
                        // keys cut the command's input off.
                        detach_keys: tty.then(|| DETACH_KEYS.to_string()),
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
        let relayed = container.clone();
        let relaying = docker.clone();
        engine_runtime().spawn(async move {
            let reading = match relay_end {
                Some(end) => tokio::spawn(terminal::relay(relaying, relayed, attached, end)),
                None => tokio::spawn(read_lines(attached.output, output)),
            };
            let cause = exit_of(&docker, &container, limit_mib).await;
            // Every line first, as the process driver does.
            let mut reading = reading;
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut reading).await;
            reading.abort();
            remove(&docker, &container).await;
            remove(&docker, &network).await;
            let _ = exit_sender.send(Some(cause));
        });
        let control = Arc::new(ContainerControl {
            docker: self.docker.clone(),
            container: id,
            stop_signal: spec.stop_signal,
            cgroup: crate::cgroup::InstanceCgroup::of_process(pid),
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
            // berth's base env (as its own sandbox gives), then the spec's.
            env: Some(
                [("HOME", "/tmp"), ("TMPDIR", "/tmp"), ("LANG", "C.UTF-8")]
                    .into_iter()
                    .filter(|(key, _)| !spec.env.iter().any(|(set, _)| set == key))
                    .map(|(key, value)| format!("{key}={value}"))
                    .chain(spec.env.iter().map(|(key, value)| format!("{key}={value}")))
                    .collect(),
            ),
            user: sandbox.map(|sandbox| format!("{}:{}", sandbox.uid, sandbox.gid)),
            working_dir: Some(spec.workdir.display().to_string()),
            labels: Some(self.labels(&spec.id)),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            // A command with a terminal gets one of the engine's, relayed
            // to the client's (see `terminal`).
            tty: Some(spec.terminal.is_some()),
            open_stdin: Some(spec.terminal.is_some()),
            stdin_once: Some(spec.terminal.is_some()),
            attach_stdin: Some(spec.terminal.is_some()),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{network}")),
                // An init as PID 1 passes the stop signal on and reaps: the
                // app is not PID 1, which ignores signals it has no handler
                // for.
                init: Some(true),
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
                // The client's window from the first instant (engines
                // before API 1.42 take it from the resize after start).
                console_size: spec
                    .terminal
                    .as_ref()
                    .and_then(|terminal| terminal.size().ok())
                    .map(|(cols, rows)| vec![usize::from(rows), usize::from(cols)]),
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

/// Creates the container `name` from `config`; its id, or why not (of
/// `what`).
async fn create(
    docker: &Docker,
    name: String,
    config: ContainerCreateBody,
    what: &str,
) -> Result<String, String> {
    let options = CreateContainerOptions {
        name: Some(name),
        ..Default::default()
    };
    docker
        .create_container(Some(options), config)
        .await
        .map(|created| created.id)
        .map_err(|err| format!("cannot create {what}: {err}"))
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
