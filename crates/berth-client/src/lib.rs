//! A typed client for the berth API: one function per endpoint.
//!
//! Long operations come back as an [`NdjsonStream`] that yields typed lines as
//! the server sends them. This crate knows the wire types and HTTP; it never
//! prints, and it never finds servers or tokens (the CLI does).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use berth_proto::{
    ApiError, AppStatus, AppSummary, CreateApp, DeployProgress, EnvChange, ExecutionInfo, JobInfo,
    ReleaseInfo, RollbackRequest, RunJob, ScaleRequest, ServerHealth,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

mod edge;
mod error;
mod logs;
mod registry;
mod terminal;
mod usage;

pub use error::ClientError;
pub use logs::LogFilter;
pub use terminal::TerminalConnection;

/// What a path segment keeps unescaped: letters, digits and `-._~`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl ClientError {
    /// Whether the server said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to one berth server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for the server at `base` (such as `http://127.0.0.1:8079`).
    pub fn new(base: &str, token: &str) -> Self {
        let http = Self::builder().build().unwrap_or_default();
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// A client for a server whose API is served over TLS, trusting only
    /// the CA certificate `root_pem` (pinned at `berth login`, or the local
    /// server's own).
    pub fn with_root(base: &str, token: &str, root_pem: &str) -> Result<Self> {
        let tls = berth_tls::pinned_client_config(root_pem)
            .map_err(|err| ClientError::Pin(err.to_string()))?;
        let http = Self::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|err| ClientError::Pin(err.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    fn builder() -> reqwest::ClientBuilder {
        // reqwest's rustls has no crypto provider of its own: berth's is
        // aws-lc-rs (a second install is a no-op).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5))
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to the API path made of `segments`, each escaped: a name
    /// can never add a segment, a query or a fragment of its own.
    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder> {
        let mut url = self.base.clone();
        for segment in segments {
            if segment.is_empty() || *segment == "." || *segment == ".." {
                return Err(ClientError::BadName(segment.to_string()));
            }
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        Ok(self.http.request(method, url).bearer_auth(&self.token))
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(Self::failure(response).await)
    }

    /// The error of a request that reached no server.
    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    /// The error a response that is not a success stands for.
    async fn failure(response: reqwest::Response) -> ClientError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiError>(&body) {
            Ok(error) => ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace(' ', "_"),
                message: if body.trim().is_empty() {
                    format!("the server answered {status}")
                } else {
                    format!("the server answered {status}: {}", body.trim())
                },
            },
        }
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        response
            .json()
            .await
            .map_err(|err| ClientError::Read(Box::new(err)))
    }

    async fn stream<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<NdjsonStream<T>> {
        Ok(NdjsonStream {
            response: self.send(request).await?,
            buffer: Vec::new(),
            kind: PhantomData,
        })
    }

    /// `GET /v1/health` (needs no token).
    pub async fn health(&self) -> Result<ServerHealth> {
        self.json(self.request(Method::GET, &["v1", "health"])?)
            .await
    }

    /// `GET /v1/tunnel`: the tunnel to a relay, if the server keeps one.
    pub async fn tunnel(&self) -> Result<Option<berth_proto::TunnelStatus>> {
        self.json(self.request(Method::GET, &["v1", "tunnel"])?)
            .await
    }

    /// `GET /v1/apps`.
    pub async fn apps(&self) -> Result<Vec<AppSummary>> {
        self.json(self.request(Method::GET, &["v1", "apps"])?).await
    }

    /// `POST /v1/apps`.
    pub async fn create_app(&self, name: &str) -> Result<AppSummary> {
        self.json(
            self.request(Method::POST, &["v1", "apps"])?
                .json(&CreateApp { name: name.into() }),
        )
        .await
    }

    /// `DELETE /v1/apps/{app}?confirm=true`.
    pub async fn destroy_app(&self, app: &str) -> Result<()> {
        self.send(
            self.request(Method::DELETE, &["v1", "apps", app])?
                .query(&[("confirm", "true")]),
        )
        .await?;
        Ok(())
    }

    /// `GET /v1/apps/{app}`.
    pub async fn status(&self, app: &str) -> Result<AppStatus> {
        self.json(self.request(Method::GET, &["v1", "apps", app])?)
            .await
    }

    /// `POST /v1/apps/{app}/deploy` with a source tarball.
    pub async fn deploy(
        &self,
        app: &str,
        tarball: Vec<u8>,
        image: Option<&str>,
    ) -> Result<NdjsonStream<DeployProgress>> {
        let mut request = self
            .request(Method::POST, &["v1", "apps", app, "deploy"])?
            .header(reqwest::header::CONTENT_TYPE, "application/zstd")
            .body(tarball);
        if let Some(image) = image {
            request = request.query(&[("image", image)]);
        }
        self.stream(request).await
    }

    /// `GET /v1/apps/{app}/releases`.
    pub async fn releases(&self, app: &str) -> Result<Vec<ReleaseInfo>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "releases"])?)
            .await
    }

    /// `POST /v1/apps/{app}/rollback`.
    pub async fn rollback(
        &self,
        app: &str,
        version: Option<u64>,
    ) -> Result<NdjsonStream<DeployProgress>> {
        let request = self
            .request(Method::POST, &["v1", "apps", app, "rollback"])?
            .json(&RollbackRequest { version });
        self.stream(request).await
    }

    /// `POST /v1/apps/{app}/scale`.
    pub async fn scale(&self, app: &str, counts: BTreeMap<String, u32>) -> Result<AppStatus> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "scale"])?
                .json(&ScaleRequest {
                    counts,
                    ..ScaleRequest::default()
                }),
        )
        .await
    }

    /// `POST /v1/apps/{app}/scale` with autoscaling bounds (and counts).
    pub async fn scale_with(&self, app: &str, request: &ScaleRequest) -> Result<AppStatus> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "scale"])?
                .json(request),
        )
        .await
    }

    /// `GET /v1/apps/{app}/env`.
    pub async fn env(&self, app: &str) -> Result<BTreeMap<String, String>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "env"])?)
            .await
    }

    /// `POST /v1/apps/{app}/env`.
    pub async fn change_env(
        &self,
        app: &str,
        change: &EnvChange,
    ) -> Result<NdjsonStream<DeployProgress>> {
        self.stream(
            self.request(Method::POST, &["v1", "apps", app, "env"])?
                .json(change),
        )
        .await
    }

    /// `GET /v1/apps/{app}/spec`: the target release's model, as JSON.
    pub async fn spec(&self, app: &str) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "spec"])?)
            .await
    }

    /// `GET /v1/apps/{app}/secrets`: names and digests, never values.
    pub async fn secrets(&self, app: &str) -> Result<Vec<berth_proto::SecretInfo>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "secrets"])?)
            .await
    }

    /// `POST /v1/apps/{app}/secrets`.
    pub async fn change_secrets(
        &self,
        app: &str,
        change: &EnvChange,
    ) -> Result<NdjsonStream<DeployProgress>> {
        self.stream(
            self.request(Method::POST, &["v1", "apps", app, "secrets"])?
                .json(change),
        )
        .await
    }

    /// `POST /v1/apps/{app}/{kind}` (`postgres` or `redis`): attach one.
    pub async fn attach(&self, app: &str, kind: &str) -> Result<NdjsonStream<DeployProgress>> {
        self.stream(self.request(Method::POST, &["v1", "apps", app, kind])?)
            .await
    }

    /// `GET /v1/apps/{app}/postgres`.
    pub async fn postgres(&self, app: &str) -> Result<berth_proto::PostgresInfo> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "postgres"])?)
            .await
    }

    /// `GET /v1/apps/{app}/redis`.
    pub async fn redis(&self, app: &str) -> Result<berth_proto::RedisInfo> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "redis"])?)
            .await
    }

    /// `POST /v1/apps/{app}/postgres/backups`.
    pub async fn backup(&self, app: &str) -> Result<berth_proto::BackupInfo> {
        self.json(self.request(Method::POST, &["v1", "apps", app, "postgres", "backups"])?)
            .await
    }

    /// `GET /v1/apps/{app}/postgres/backups`.
    pub async fn backups(&self, app: &str) -> Result<Vec<berth_proto::BackupInfo>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "postgres", "backups"])?)
            .await
    }

    /// `POST /v1/apps/{app}/postgres/migrate`.
    pub async fn migrate(&self, app: &str) -> Result<berth_proto::MigrateResult> {
        self.json(self.request(Method::POST, &["v1", "apps", app, "postgres", "migrate"])?)
            .await
    }

    /// `POST /v1/apps/{app}/postgres/restore`.
    pub async fn restore(
        &self,
        app: &str,
        backup: Option<&str>,
    ) -> Result<berth_proto::BackupInfo> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "postgres", "restore"])?
                .json(&berth_proto::RestoreRequest {
                    backup: backup.map(str::to_string),
                }),
        )
        .await
    }

    /// `GET /v1/apps/{app}/volumes`.
    pub async fn volumes(&self, app: &str) -> Result<Vec<berth_proto::VolumeInfo>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "volumes"])?)
            .await
    }

    /// `DELETE /v1/apps/{app}/volumes/{name}`.
    pub async fn destroy_volume(&self, app: &str, name: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "apps", app, "volumes", name])?)
            .await?;
        Ok(())
    }

    /// `GET /v1/domains`, of one app or all.
    pub async fn domains(&self, app: Option<&str>) -> Result<Vec<berth_proto::DomainInfo>> {
        let mut request = self.request(Method::GET, &["v1", "domains"])?;
        if let Some(app) = app {
            request = request.query(&[("app", app)]);
        }
        self.json(request).await
    }

    /// `GET /v1/certs/root`: berth's own CA certificate, PEM.
    pub async fn certs_root(&self) -> Result<String> {
        let response = self
            .send(self.request(Method::GET, &["v1", "certs", "root"])?)
            .await?;
        response
            .text()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })
    }

    /// `GET /v1/domains/{name}/check`.
    pub async fn check_domain(&self, name: &str) -> Result<berth_proto::DomainCheck> {
        self.json(self.request(Method::GET, &["v1", "domains", name, "check"])?)
            .await
    }

    /// `POST /v1/apps/{app}/domains`.
    pub async fn add_domain(
        &self,
        app: &str,
        name: &str,
        tls_internal: bool,
    ) -> Result<berth_proto::DomainInfo> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "domains"])?
                .json(&berth_proto::AddDomain {
                    name: name.into(),
                    tls_internal,
                }),
        )
        .await
    }

    /// `DELETE /v1/apps/{app}/domains/{name}`.
    pub async fn remove_domain(&self, app: &str, name: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "apps", app, "domains", name])?)
            .await?;
        Ok(())
    }

    /// `GET /v1/apps/{app}/jobs`.
    pub async fn jobs(&self, app: &str) -> Result<Vec<JobInfo>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "jobs"])?)
            .await
    }

    /// `POST /v1/apps/{app}/jobs/{job}/run`.
    pub async fn run_job(&self, app: &str, job: &str, request: &RunJob) -> Result<ExecutionInfo> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "jobs", job, "run"])?
                .json(request),
        )
        .await
    }

    /// `POST /v1/apps/{app}/run`: a one-off command.
    pub async fn run_command(
        &self,
        app: &str,
        request: &berth_proto::RunCommand,
    ) -> Result<ExecutionInfo> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "run"])?
                .json(request),
        )
        .await
    }

    /// `GET /v1/apps/{app}/jobs/{job}/executions`.
    pub async fn job_executions(
        &self,
        app: &str,
        job: &str,
        limit: u32,
    ) -> Result<Vec<ExecutionInfo>> {
        self.json(
            self.request(Method::GET, &["v1", "apps", app, "jobs", job, "executions"])?
                .query(&[("limit", limit)]),
        )
        .await
    }

    /// `GET /v1/apps/{app}/executions/{id}`.
    pub async fn execution(&self, app: &str, id: i64) -> Result<ExecutionInfo> {
        self.json(self.request(
            Method::GET,
            &["v1", "apps", app, "executions", &id.to_string()],
        )?)
        .await
    }

    /// `POST /v1/apps/{app}/executions/{id}/cancel`.
    pub async fn cancel_execution(&self, app: &str, id: i64) -> Result<ExecutionInfo> {
        self.json(self.request(
            Method::POST,
            &["v1", "apps", app, "executions", &id.to_string(), "cancel"],
        )?)
        .await
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, &["v1", "openapi.json"])?)
            .await
    }
}

/// Typed lines of an NDJSON answer, as they arrive.
pub struct NdjsonStream<T> {
    response: reqwest::Response,
    buffer: Vec<u8>,
    kind: PhantomData<T>,
}

impl<T: DeserializeOwned> NdjsonStream<T> {
    /// The next line, or `None` at the end of the answer.
    pub async fn next(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|err| ClientError::Read(Box::new(err)));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                Ok(None) => {
                    let line = std::mem::take(&mut self.buffer);
                    return serde_json::from_slice(&line)
                        .map(Some)
                        .map_err(|err| ClientError::Read(Box::new(err)));
                }
                Err(err) => return Err(ClientError::Read(Box::new(err))),
            }
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_client_builds_with_tls_compiled_in() {
        // reqwest's rustls needs a crypto provider even for http:// URLs.
        let client = Client::new("http://127.0.0.1:9", "token");
        assert!(client.health().await.is_err(), "nothing listens on port 9");
    }
}
