//! The validated app model every spec format turns into.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::access::{EdgeSpec, EgressSpec, InternalSpec, RateLimitSpec};
pub use crate::checks::HealthCheck;

/// The process group an app gets when its spec names none.
pub const DEFAULT_PROCESS: &str = "web";

/// A validated app spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    /// The app's name, when the spec gives one.
    pub app: Option<String>,
    /// How to build it.
    pub build: BuildSpec,
    /// How to roll it out.
    pub deploy: DeploySpec,
    /// Environment variables every process gets.
    pub env: BTreeMap<String, String>,
    /// Process groups and their commands. Empty means one `web` group running
    /// the package's binary.
    pub processes: BTreeMap<String, String>,
    /// How HTTP reaches the app.
    pub http: HttpService,
    /// Time between the stop signal and SIGKILL when an instance stops.
    #[serde(with = "duration_ms")]
    pub kill_timeout: Duration,
    /// The signal that asks an instance to stop (fly's `kill_signal`);
    /// `None`: SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<crate::StopSignal>,
    /// Services the router forwards at layer 4 (fly's `[[services]]`
    /// without an `http` handler).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_services: Vec<crate::TcpService>,
    /// Jobs: run by hand, by API or on a schedule.
    #[serde(default)]
    pub jobs: Vec<crate::JobSpec>,
    /// Managed services the app gets (`[resources]`).
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Persistent directories (`[[mounts]]`).
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Instance sizes (`[[vm]]`); the first that names a group (or names
    /// none) applies to it.
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// Folders of the slug the router serves as files (fly's `[[statics]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<StaticSpec>,
    /// The app runs only its jobs (a Render cron job): no long-running process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jobs_only: bool,
    /// The app is a static site the router serves (Render's `runtime:
    /// static`): no process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<crate::SiteSpec>,
    /// Env vars whose values berth makes or looks up (render.yaml's
    /// `generateValue`, `sync: false`, `fromDatabase`, `fromService`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFrom>,
    /// Set when the app is a Shuttle project run the way Shuttle ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuttle: Option<crate::ShuttleSpec>,
    /// Where its instances may connect beyond the public internet.
    #[serde(default, skip_serializing_if = "EgressSpec::is_default")]
    pub egress: EgressSpec,
    /// Who else may reach it at its private names (`[internal]`).
    #[serde(default, skip_serializing_if = "InternalSpec::is_default")]
    pub internal: InternalSpec,
    /// Who may reach it through the router, and how much (`[edge]`).
    #[serde(default, skip_serializing_if = "EdgeSpec::is_default")]
    pub edge: EdgeSpec,
    /// What `berth console` runs (fly's `console_command`), with a terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_command: Option<String>,
    /// How long and how much of its logs are kept (`[logs]`).
    #[serde(default, skip_serializing_if = "crate::LogsSpec::is_default")]
    pub logs: crate::LogsSpec,
    /// The monthly budget and what happens past it (`[budget]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<berth_proto::BudgetSettings>,
}

/// The size an instance is promised: enforced with cgroups when berth runs as root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Memory limit in MiB.
    pub memory_mb: u32,
    /// CPU limit in cores (a quota; shared sizes get the same quota).
    pub cpus: f64,
    /// The size name it came from, if any (`shared-cpu-1x`).
    #[serde(default)]
    pub size: Option<String>,
    /// The groups it applies to; `None` means all.
    #[serde(default)]
    pub processes: Option<Vec<String>>,
    /// Processes and threads an instance may have; `None`: four per MiB of
    /// memory, at least 256 and at most 16,384.
    #[serde(default)]
    pub pids: Option<u32>,
}

impl Default for VmSpec {
    /// fly's default machine: shared-cpu-1x with 256 MB.
    fn default() -> Self {
        VmSpec {
            memory_mb: 256,
            cpus: 1.0,
            size: Some("shared-cpu-1x".into()),
            processes: None,
            pids: None,
        }
    }
}

/// Named sizes: fly's machine presets (CPUs, MiB of memory).
pub const VM_SIZES: &[(&str, f64, u32)] = &[
    ("shared-cpu-1x", 1.0, 256),
    ("shared-cpu-2x", 2.0, 512),
    ("shared-cpu-4x", 4.0, 1024),
    ("shared-cpu-8x", 8.0, 2048),
    ("performance-1x", 1.0, 2048),
    ("performance-2x", 2.0, 4096),
    ("performance-4x", 4.0, 8192),
    ("performance-8x", 8.0, 16384),
    ("performance-16x", 16.0, 32768),
];

impl AppSpec {
    /// The size of instances of `process`.
    pub fn vm_for(&self, process: &str) -> VmSpec {
        self.vms
            .iter()
            .find(|vm| {
                vm.processes
                    .as_ref()
                    .is_none_or(|groups| groups.iter().any(|group| group == process))
            })
            .cloned()
            .unwrap_or_default()
    }
}

/// `[resources]`: the managed services berth provides the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcesSpec {
    /// A database and role of its own on berth's PostgreSQL (`DATABASE_URL`).
    #[serde(default)]
    pub postgres: bool,
    /// A Redis of its own (`REDIS_URL`).
    #[serde(default)]
    pub redis: bool,
    /// Use this app's database instead of one of its own (the owner must
    /// list this app in its `shared_with`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_from: Option<String>,
    /// Use this app's Redis instead of one of its own (same rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_from: Option<String>,
    /// Apps allowed to use this app's database and Redis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

/// Files the router serves itself: requests under `url_prefix` are
/// answered from `guest_path` (fly's `[[statics]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticSpec {
    /// Where the files are in the image (`/app/public`): berth reads it in
    /// the slug, where the app's folder is the image's `/app` (or `/`).
    pub guest_path: String,
    /// The URL path they are served under (`/static`).
    pub url_prefix: String,
}

impl StaticSpec {
    /// `guest_path` relative to the slug: `/app/public` and `/public` are
    /// `public`. `None` if it climbs out.
    pub fn slug_relative(&self) -> Option<std::path::PathBuf> {
        let path = self.guest_path.trim();
        let path = path
            .strip_prefix("/app/")
            .or_else(|| path.strip_prefix('/'))
            .unwrap_or(path);
        let relative = std::path::Path::new(path);
        relative
            .components()
            .all(|part| {
                matches!(
                    part,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
            .then(|| relative.to_path_buf())
    }
}

/// An env var whose value berth makes or looks up at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFrom {
    /// The variable's name.
    pub key: String,
    /// Where its value comes from.
    pub source: EnvSource,
}

/// Where an [`EnvFrom`] value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvSource {
    /// A random value made at the first deploy and kept as a secret.
    Generated,
    /// A secret the user sets once (`berth secrets set`); a deploy without it fails.
    AskOnce,
    /// A part of the app's database: `connectionString`, `host`, `port`,
    /// `database`, `user` or `password`.
    Postgres {
        /// Which part.
        property: String,
    },
    /// A part of the app's Redis: `connectionString`, `host`, `port`, `hostport`.
    Redis {
        /// Which part.
        property: String,
    },
    /// Where another app is reached: `host`, `port`, `hostport`.
    AppAddress {
        /// The app.
        app: String,
        /// Which part.
        property: String,
    },
}

/// One `[[mounts]]` entry: a persistent directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// The volume's name (fly's `source`): lowercase letters, digits, `_`.
    pub source: String,
    /// Where the instance sees it: an absolute path.
    pub destination: String,
    /// The process groups that get it; `None` means all.
    #[serde(default)]
    pub processes: Option<Vec<String>>,
    /// Two instances may use it at once (the app coordinates its writes):
    /// its groups may then roll over as the deploy strategy says. Not
    /// shared (the default), a group that mounts it is replaced stop-first,
    /// so no two processes ever write it together.
    #[serde(default)]
    pub shared: bool,
    /// Its size in MiB (`size`, fly's `initial_size`, render's `sizeGB`):
    /// as root, a file system of that size of its own, so a full volume
    /// stops at its size, never at the host's disk. `None`: a directory
    /// on the data dir's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
}

impl MountSpec {
    /// Whether instances of `process` get this mount.
    pub fn applies_to(&self, process: &str) -> bool {
        self.processes
            .as_ref()
            .is_none_or(|groups| groups.iter().any(|group| group == process))
    }
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            app: None,
            build: BuildSpec::default(),
            deploy: DeploySpec::default(),
            env: BTreeMap::new(),
            processes: BTreeMap::new(),
            http: HttpService::default(),
            kill_timeout: Duration::from_secs(5),
            kill_signal: None,
            tcp_services: Vec::new(),
            jobs: Vec::new(),
            resources: ResourcesSpec::default(),
            mounts: Vec::new(),
            vms: Vec::new(),
            statics: Vec::new(),
            jobs_only: false,
            site: None,
            env_from: Vec::new(),
            shuttle: None,
            egress: EgressSpec::default(),
            internal: InternalSpec::default(),
            edge: EdgeSpec::default(),
            console_command: None,
            logs: crate::LogsSpec::default(),
            budget: None,
        }
    }
}

impl AppSpec {
    /// The process groups with commands, given the binary the build produced
    /// for the default group.
    pub fn process_commands(&self, default_binary: &str) -> BTreeMap<String, String> {
        if self.jobs_only || self.site.is_some() {
            BTreeMap::new()
        } else if self.processes.is_empty() {
            BTreeMap::from([(DEFAULT_PROCESS.to_string(), default_binary.to_string())])
        } else {
            // An empty command (fly's `app = ""`) runs the default binary.
            self.processes
                .iter()
                .map(|(group, command)| {
                    let command = if command.is_empty() {
                        default_binary
                    } else {
                        command
                    };
                    (group.clone(), command.to_string())
                })
                .collect()
        }
    }

    /// Whether instances of `process` receive HTTP from the router.
    pub fn serves_http(&self, process: &str) -> bool {
        if self.processes.is_empty() {
            return process == DEFAULT_PROCESS;
        }
        match &self.http.processes {
            Some(groups) => groups.iter().any(|group| group == process),
            None => {
                process == DEFAULT_PROCESS
                    || (process == "app" && !self.processes.contains_key(DEFAULT_PROCESS))
            }
        }
    }
}

/// How an app is built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// Which builder.
    pub builder: BuilderKind,
    /// Which binary is the default process, when the package has several.
    pub bin: Option<String>,
    /// The workspace member to build (`cargo build -p`), when the source is
    /// a virtual workspace and the processes do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Cargo features to build with (`--features`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// The app whose build directory this one builds in: the services of
    /// one Blueprint share it, so their common source compiles once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_dir: Option<String>,
    /// Variables the build sees (`[build] env`, fly's `[build.args]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of the app's secrets the build sees; their values are never
    /// stored in the slug.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// A shell command run in the source before cargo, in the build's
    /// sandbox (a front end's `npm ci && npm run build`); what it writes
    /// there is part of the slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Hosts the build may reach besides crates.io, GitHub and npm (a
    /// private registry, a git host): names, or `*.` and a domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The build gets the app's `DATABASE_URL` (sqlx's checked queries
    /// against the live schema).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub database: bool,
    /// Debian packages the build needs (`protobuf-compiler`), installed
    /// into a root of its own, not onto the host; its instances see them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// The build is `command` alone, without cargo: a static site, or a
    /// service in another language built with the host's toolchain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub command_only: bool,
}

/// The builders berth knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BuilderKind {
    /// `cargo build --release` with a persistent target dir.
    #[default]
    Cargo,
    /// A Dockerfile, built by the Docker driver.
    Dockerfile {
        /// Path of the Dockerfile in the source tree.
        path: String,
    },
    /// A prebuilt image, run by the Docker driver.
    Image {
        /// The image reference.
        image: String,
    },
}

/// How a release is rolled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// A command run once per deploy, in a temporary instance of the new
    /// release, before any instance switches; if it fails the deploy fails.
    pub release_command: Option<String>,
    /// How long the release command may run.
    #[serde(with = "duration_ms", default = "default_release_command_timeout")]
    pub release_command_timeout: Duration,
    /// Rollout strategy.
    pub strategy: DeployStrategy,
    /// How long new instances get to pass their health check.
    #[serde(with = "duration_ms")]
    pub wait_timeout: Duration,
    /// A command run once after the release serves (Dokku's `postdeploy`);
    /// if it fails the deploy reports it, the release stays live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy_command: Option<String>,
}

impl Default for DeploySpec {
    fn default() -> Self {
        DeploySpec {
            release_command: None,
            release_command_timeout: default_release_command_timeout(),
            strategy: DeployStrategy::Rolling,
            wait_timeout: Duration::from_secs(60),
            post_deploy_command: None,
        }
    }
}

fn default_release_command_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Rollout strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStrategy {
    /// New instances start and pass health checks before old ones drain.
    #[default]
    Rolling,
    /// All new instances start and pass before all old ones drain at once.
    Bluegreen,
    /// Old instances stop first, then new ones start (downtime).
    Immediate,
    /// One new instance starts and passes its health check first; then the
    /// rest roll.
    Canary,
}

/// How HTTP reaches the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HttpService {
    /// A fixed port the app listens on (fly's `internal_port`); berth sets
    /// `PORT` to it. `None`: berth picks a free port per instance.
    pub internal_port: Option<u16>,
    /// Process groups that serve HTTP; `None` means `web` (or fly's `app`).
    pub processes: Option<Vec<String>>,
    /// Redirect plain HTTP to HTTPS (308), when the server serves HTTPS.
    pub force_https: bool,
    /// Tell browsers to use HTTPS only (`Strict-Transport-Security`), on
    /// answers over HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsts: bool,
    /// Custom domains the router serves for the app (lowercase, checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// `tls = "internal"`: every name of the app is served with berth's
    /// own CA's certificates, even when the server has an ACME CA.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_internal: bool,
    /// How berth decides an instance is healthy: the first check.
    pub check: HealthCheck,
    /// Every other check (fly keeps each `[[services.*_checks]]` and
    /// `[checks]` entry); an instance is healthy when all of its group's pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_checks: Vec<HealthCheck>,
    /// Autoscaling and scale to zero.
    #[serde(default)]
    pub scaling: Scaling,
}

/// How an HTTP group scales: fly's `auto_stop_machines`,
/// `auto_start_machines`, `min/max_machines_running` and `concurrency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Stop instances that are not needed (down to `min`, zero included).
    pub auto_stop: bool,
    /// Start instances when requests need them (from zero included).
    pub auto_start: bool,
    /// Never fewer instances than this.
    pub min: u32,
    /// Never more; `None`: the count set with `berth scale`.
    pub max: Option<u32>,
    /// In-flight requests per instance above which berth scales out.
    pub soft_limit: Option<u32>,
    /// In-flight requests per instance above which requests queue at the router.
    pub hard_limit: Option<u32>,
    /// What the limits count (`requests`; `connections` is counted as requests in flight).
    pub limit_type: String,
    /// No request for this long stops the last instance (with `auto_stop` and `min = 0`).
    #[serde(with = "duration_ms")]
    pub idle_timeout: Duration,
    /// Load must stay low this long before instances are stopped.
    #[serde(with = "duration_ms")]
    pub scale_in_delay: Duration,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            auto_stop: false,
            auto_start: true,
            min: 0,
            max: None,
            soft_limit: None,
            hard_limit: None,
            limit_type: "requests".into(),
            idle_timeout: Duration::from_secs(300),
            scale_in_delay: Duration::from_secs(30),
        }
    }
}

impl Scaling {
    /// Whether berth changes the count by itself (otherwise only `berth
    /// scale` does).
    pub fn is_active(&self) -> bool {
        self.auto_stop || self.max.is_some() || self.soft_limit.is_some()
    }
}

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}
