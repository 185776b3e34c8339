//! `--runtime docker`: the Docker engine image instances run in, and how
//! it pulls their images from berth's registry (see
//! [`berth_runtime::docker`]).

use std::path::Path;

/// Where image instances run with `--runtime docker`: the engine, and
/// how it pulls from berth's registry.
#[derive(Clone)]
pub struct DockerImages {
    /// The engine.
    pub runtime: std::sync::Arc<berth_runtime::docker::DockerRuntime>,
    /// berth's registry as the engine reaches it (`127.0.0.1:PORT`): a
    /// loopback address, which Docker reads over plain HTTP.
    pub registry: String,
    /// The token it signs in with.
    pub token: String,
}

impl DockerImages {
    /// Connects to the engine at `socket` for the server whose data dir is
    /// `data` (see [`berth_runtime::docker::DockerRuntime::connect`]).
    pub async fn connect(
        socket: &str,
        data: &Path,
        registry: std::net::SocketAddr,
        token: &str,
    ) -> Result<DockerImages, String> {
        let (socket, owner) = (socket.to_string(), data.display().to_string());
        let runtime = tokio::task::spawn_blocking(move || {
            berth_runtime::docker::DockerRuntime::connect(&socket, &owner)
        })
        .await
        .map_err(|err| format!("connecting to the Docker engine stopped: {err}"))??;
        Ok(DockerImages {
            runtime,
            registry: registry.to_string(),
            token: token.to_string(),
        })
    }

    /// How the engine pulls `repository@manifest` from berth's registry.
    pub(crate) fn image(&self, repository: &str, manifest: &str) -> berth_runtime::ContainerImage {
        berth_runtime::ContainerImage {
            reference: format!("{}/{repository}@{manifest}", self.registry),
            username: "berth".into(),
            password: self.token.clone(),
        }
    }
}
