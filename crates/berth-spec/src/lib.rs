//! The app spec: what an app is made of and how it runs.
//!
//! `berth.toml` is a superset of `fly.toml`: both parse into one [`AppSpec`].
//! Parsing is two-stage: the text is read into lenient raw structs (numbers or
//! strings where fly takes either, unknown keys collected as warnings), then
//! validated into a typed model that cannot be invalid, reporting every problem
//! at once with file, line and column. Parsers take texts; only
//! [`FolderTree`] reads a folder, for detecting what kind of project it holds.

mod access;
mod appjson;
mod checks;
mod converted;
mod dockerfile;
mod duration;
mod error;
mod export;
mod jobs;
mod json_keys;
mod kube;
mod logs;
mod model;
mod project;
mod raw;
mod render;
mod secrets;
mod shuttle;
mod site;
mod tree;
mod workspace;

pub use appjson::{APP_JSON, HEROKU_DYNO_SIZES, parse_app_json};
pub use checks::{HealthCheck, StopSignal, TcpPort, TcpService};
pub use dockerfile::{ChefPlan, base_images, buildah_refusal, chef_plan};
pub use duration::{format_duration, parse_duration};
pub use error::{Location, SpecError, SpecProblem};
pub use export::{to_dockerfile, to_fly_toml};
pub use jobs::{JobSpec, OverlapPolicy, Schedule};
pub use kube::{Manifests, parse_manifests, to_manifests};
pub use logs::{DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_RETAIN, LogsSpec};
pub use model::{
    AppSpec, BuildSpec, BuilderKind, DEFAULT_PROCESS, DeploySpec, DeployStrategy, EdgeSpec,
    EgressSpec, EnvFrom, EnvSource, HttpService, InternalSpec, MountSpec, RateLimitSpec,
    ResourcesSpec, Scaling, StaticSpec, VM_SIZES, VmSpec,
};
pub use project::{
    PROCFILE, PROJECT_FILE_NAMES, find_blueprint, is_blueprint, load_blueprint, load_project,
    load_project_for, parse_procfile, parse_project,
};
pub use raw::shell_join;
pub use render::{Blueprint, RENDER_PLANS, RENDER_YAML, parse_render, to_render_yaml};
pub use secrets::parse_secrets_file;
pub use shuttle::{
    SHUTTLE_INSTANCE_SIZES, SHUTTLE_SECRETS_FILES, SHUTTLE_TOML, ShuttleSpec, detect_shuttle,
};
pub use site::{SiteHeader, SiteRule, SiteSpec, match_path};
pub use tree::{FolderTree, MemoryTree, ProjectTree};
pub use workspace::{WorkspaceBuild, WorkspaceMember, choose_packages, workspace_members};

/// Bytes from a size as berth.toml writes them: `512kb`, `10mb`, `1gb`
/// (powers of 1024), or a bare number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    raw::size_text_bytes(text)
}

/// The most instances one process group may run (by count, `min` or `max`).
pub const MAX_INSTANCES_PER_GROUP: u32 = 64;

/// The longest value of one env var, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;

/// The most env vars a spec may set in one place.
pub const MAX_ENV_VARS: usize = 1000;

/// Whether `key` is a name a process can be given: letters, digits and
/// `_`, not starting with a digit.
pub fn check_env_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid env var name (letters, digits and _, not starting with a digit)",
            key.escape_debug()
        ))
    }
}

/// Files that hold an app spec, in the order berth looks for them.
pub const SPEC_FILE_NAMES: &[&str] = &["berth.toml", "fly.toml", "fly.json", "fly.yaml", "fly.yml"];

/// A spec that parsed, with what berth ignores or assumes about it.
#[derive(Debug, Clone)]
pub struct ParsedSpec {
    /// The validated spec.
    pub spec: AppSpec,
    /// Unknown keys and keys berth accepts but does not act on.
    pub warnings: Vec<String>,
}

/// Parses a `berth.toml` or `fly.toml` text — or, by its name, a
/// `fly.json` or `fly.yaml`, which flyctl reads as the same keys;
/// `file_name` is used in messages.
pub fn parse_spec(file_name: &str, text: &str) -> Result<ParsedSpec, SpecError> {
    if file_name.ends_with(".json") || file_name.ends_with(".yaml") || file_name.ends_with(".yml") {
        return converted::parse(file_name, text);
    }
    raw::parse(file_name, text)
}

/// What berth needs from a `Cargo.toml`: the package name and declared binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CargoPackage {
    /// `[package] name`.
    pub name: String,
    /// Names of `[[bin]]` targets declared in the manifest (the implicit
    /// `src/main.rs` binary is named after the package and not listed here).
    pub declared_bins: Vec<String>,
}

/// Reads the package name and binaries from a `Cargo.toml` text.
pub fn parse_cargo_manifest(file_name: &str, text: &str) -> Result<CargoPackage, SpecError> {
    raw::parse_cargo_manifest(file_name, text)
}

/// Whether `name` is a Debian package name (Debian policy §5.6.1:
/// lowercase letters, digits, `+`, `-` and `.`, starting alphanumeric).
pub fn valid_debian_package(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// Turns a package name into a valid app name (`my_app` → `my-app`).
pub fn app_name_from_package(package: &str) -> String {
    let mut name: String = package
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.ends_with('-') {
        name.pop();
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        name.insert_str(0, "app-");
    }
    name.truncate(63);
    name
}

#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod tests;
