//! Shuttle projects, deployed unchanged.
//!
//! A Shuttle project is a package that depends on `shuttle-runtime` and has
//! a bin target whose source carries `#[shuttle_runtime::main]`. berth builds
//! it as cargo-shuttle does (that bin, plus the package's `shuttle` feature
//! when it defines one) and runs it as Shuttle's platform did: the server
//! sets the `SHUTTLE_*` variables and answers the runtime's provisioning
//! calls (see berth-server's `shuttle` module).
//!
//! `Shuttle.toml` is read for `name`, `[deploy] include` (ignored files that
//! are uploaded anyway) and `[build] assets` (files the running app reads;
//! berth's slug keeps the whole uploaded tree, so they are where the app
//! looks). `instance_size` — in `#[shuttle_runtime::main(instance_size =
//! "m")]` or in `Shuttle.toml` — becomes a `[[vm]]` size. `Secrets.toml` (or,
//! when it is missing, `Secrets.dev.toml`) becomes the app's berth secrets at
//! deploy.

use serde::{Deserialize, Serialize};

use crate::error::{Location, SpecError};
use crate::raw::toml_error;
use crate::tree::ProjectTree;
use crate::{ParsedSpec, VmSpec};

/// The Shuttle config file.
pub const SHUTTLE_TOML: &str = "Shuttle.toml";

/// Secrets files, in the order berth uses them for a deploy.
pub const SHUTTLE_SECRETS_FILES: &[&str] = &["Secrets.toml", "Secrets.dev.toml"];

/// The attribute that marks a Shuttle entry point.
const MAIN_ATTRIBUTE: &str = "#[shuttle_runtime::main";

/// Shuttle's compute tiers: name, CPUs, memory in MiB.
pub const SHUTTLE_INSTANCE_SIZES: &[(&str, f64, u32)] = &[
    ("xs", 0.25, 512),
    ("s", 0.5, 1024),
    ("m", 1.0, 2048),
    ("l", 2.0, 4096),
    ("xl", 4.0, 8192),
    ("xxl", 8.0, 16384),
];

/// What berth keeps of a Shuttle project in the app model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShuttleSpec {
    /// The package whose bin has `#[shuttle_runtime::main]`.
    pub package: String,
    /// That bin target.
    pub bin: String,
    /// The secrets file berth imports at deploy, if the project has one.
    #[serde(default)]
    pub secrets_file: Option<String>,
    /// `Shuttle.toml` `[deploy] include`.
    #[serde(default)]
    pub include: Vec<String>,
    /// `Shuttle.toml` `[build] assets`.
    #[serde(default)]
    pub assets: Vec<String>,
    /// Shuttle resources the code asks for that berth provides (`database::shared::postgres`).
    #[serde(default)]
    pub resources: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawShuttleToml {
    name: Option<String>,
    #[serde(default)]
    deploy: RawShuttleDeploy,
    #[serde(default)]
    build: RawShuttleBuild,
    instance_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawShuttleDeploy {
    #[serde(default)]
    include: Vec<String>,
    instance_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawShuttleBuild {
    #[serde(default)]
    assets: Vec<String>,
}

/// One package of the folder, as far as Shuttle detection needs it.
struct Package {
    /// Folder of the package, relative to the project root ("" for the root).
    dir: String,
    name: String,
    manifest: toml::Table,
}

/// Shuttle resource types in code and whether berth provides them.
const RESOURCE_ATTRIBUTES: &[(&str, Option<&str>)] = &[
    (
        "shuttle_shared_db::Postgres",
        Some("database::shared::postgres"),
    ),
    ("shuttle_shared_db::MongoDb", None),
    ("shuttle_aws_rds::", None),
    ("shuttle_turso::", None),
    ("shuttle_qdrant::", None),
    ("shuttle_metadata::", None),
];

/// Shuttle services that listen on no port: they run as a worker.
const NO_HTTP_SERVICES: &[&str] = &["shuttle_serenity::", "shuttle_poise::"];

/// Whether the code implements `shuttle_runtime::Service` itself with a
/// `bind` whose address parameter is unused (`_addr`, `_`): a service that
/// listens on no port, such as a bot or a queue consumer.
fn binds_no_port(source: &str) -> bool {
    let custom = source.contains("impl shuttle_runtime::Service for")
        || (source.contains("shuttle_runtime::Service") && source.contains("impl Service for"));
    custom
        && source.match_indices("fn bind(").any(|(at, found)| {
            let rest = &source[at + found.len()..];
            let params = &rest[..rest.find(')').unwrap_or(rest.len())];
            params
                .split(',')
                .nth(1)
                .is_some_and(|param| param.trim_start().starts_with('_'))
        })
}

/// The process group a Shuttle service without HTTP runs as.
const WORKER_PROCESS: &str = "worker";

/// Detects a Shuttle project in `tree` and turns it into a spec: the app
/// named as Shuttle names it, the bin and features cargo-shuttle would
/// build, the instance size, a database when the code asks for one. `None`
/// when the folder is not a Shuttle project.
pub fn detect_shuttle(tree: &dyn ProjectTree) -> Result<Option<ParsedSpec>, SpecError> {
    detect(tree, true)
}

/// [`detect_shuttle`] for a folder that has a spec file too: a legacy
/// `shuttle-service` package there is not what berth deploys, so it is no
/// error.
pub(crate) fn detect_shuttle_beside_spec(
    tree: &dyn ProjectTree,
) -> Result<Option<ParsedSpec>, SpecError> {
    detect(tree, false)
}

fn detect(tree: &dyn ProjectTree, refuse_legacy: bool) -> Result<Option<ParsedSpec>, SpecError> {
    let Some(root_text) = tree.read("Cargo.toml") else {
        return Ok(None);
    };
    let root: toml::Table =
        toml::from_str(&root_text).map_err(|err| toml_error("Cargo.toml", &root_text, &err))?;
    let mut packages = Vec::new();
    if root.contains_key("package") {
        packages.push(package_of("", "Cargo.toml".into(), root.clone())?);
    }
    for member in workspace_members(&root, tree) {
        let manifest_file = format!("{member}/Cargo.toml");
        let Some(text) = tree.read(&manifest_file) else {
            continue;
        };
        let manifest: toml::Table =
            toml::from_str(&text).map_err(|err| toml_error(&manifest_file, &text, &err))?;
        if manifest.contains_key("package") {
            packages.push(package_of(&member, manifest_file, manifest)?);
        }
    }

    let mut warnings = Vec::new();
    let mut found: Vec<(&Package, String, String)> = Vec::new();
    for package in packages.iter().filter(|p| depends_on_shuttle(p)) {
        for (bin, path) in bin_targets(package, tree) {
            if let Some(source) = tree.read(&path)
                && source.contains(MAIN_ATTRIBUTE)
            {
                found.push((package, bin, source));
            }
        }
    }
    let Some((package, bin, source)) = found.first() else {
        if let Some(legacy) = packages
            .iter()
            .find(|p| refuse_legacy && depends_on(p, "shuttle-service"))
        {
            let manifest = if legacy.dir.is_empty() {
                "Cargo.toml".to_string()
            } else {
                format!("{}/Cargo.toml", legacy.dir)
            };
            return Err(SpecError::single(
                &manifest,
                None,
                "depends on `shuttle-service`, Shuttle's runtime before 0.13 (a library loaded by Shuttle's deployer), which berth cannot run: move to `shuttle-runtime` (`cargo shuttle init` shows the shape: a bin with #[shuttle_runtime::main]) and deploy again".into(),
            ));
        }
        return Ok(None);
    };
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(_, bin, _)| bin.as_str()).collect();
        warnings.push(format!(
            "several bins have #[shuttle_runtime::main] ({}); berth runs `{bin}`",
            names.join(", ")
        ));
    }

    let shuttle_toml = match tree.read(SHUTTLE_TOML) {
        Some(text) => {
            let mut unknown = Vec::new();
            let raw: RawShuttleToml = serde_ignored::deserialize(
                toml::de::Deserializer::parse(&text)
                    .map_err(|err| toml_error(SHUTTLE_TOML, &text, &err))?,
                |path| unknown.push(path.to_string()),
            )
            .map_err(|err| toml_error(SHUTTLE_TOML, &text, &err))?;
            for key in unknown {
                warnings.push(format!("{SHUTTLE_TOML}: `{key}` is ignored"));
            }
            Some((raw, text))
        }
        None => None,
    };

    let mut parsed = ParsedSpec {
        spec: crate::AppSpec::default(),
        warnings,
    };
    let spec = &mut parsed.spec;
    let name = shuttle_toml
        .as_ref()
        .and_then(|(raw, _)| raw.name.clone())
        .unwrap_or_else(|| package.name.clone());
    spec.app = Some(crate::app_name_from_package(&name));
    spec.build.bin = Some(bin.clone());
    if package
        .manifest
        .get("features")
        .and_then(|features| features.as_table())
        .is_some_and(|features| features.contains_key("shuttle"))
    {
        spec.build.features = vec!["shuttle".into()];
    }

    let mut resources = Vec::new();
    for (attribute, provided) in RESOURCE_ATTRIBUTES {
        if !source.contains(attribute) {
            continue;
        }
        match provided {
            Some(kind) => resources.push((*kind).to_string()),
            None => parsed.warnings.push(format!(
                "the code asks for `{}`, which berth does not provide: the app will fail to start until it uses a database::shared::postgres or its own connection string",
                attribute.trim_end_matches("::")
            )),
        }
    }
    if resources
        .iter()
        .any(|kind| kind == "database::shared::postgres")
    {
        spec.resources.postgres = true;
    }

    let no_http = NO_HTTP_SERVICES
        .iter()
        .find(|marker| source.contains(*marker))
        .map(|kind| format!("`{}`", kind.trim_end_matches("::")))
        .or_else(|| {
            binds_no_port(source).then(|| {
                "custom shuttle_runtime::Service whose `bind` leaves its address unused".into()
            })
        });
    if let Some(kind) = no_http {
        spec.processes
            .insert(WORKER_PROCESS.to_string(), bin.clone());
        spec.http.processes = Some(Vec::new());
        parsed.warnings.push(format!(
            "a {kind} service serves no HTTP: it runs as the `{WORKER_PROCESS}` process, with no URL and no HTTP health check"
        ));
    }

    let size_in_code = instance_size_in(source);
    let size_in_toml = shuttle_toml.as_ref().and_then(|(raw, _)| {
        raw.instance_size
            .clone()
            .or_else(|| raw.deploy.instance_size.clone())
    });
    if let Some(size) = size_in_code.or(size_in_toml) {
        match SHUTTLE_INSTANCE_SIZES
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(&size))
        {
            Some((name, cpus, memory_mb)) => spec.vms.push(VmSpec {
                memory_mb: *memory_mb,
                cpus: *cpus,
                size: Some(format!("shuttle-{name}")),
                processes: None,
                pids: None,
            }),
            None => {
                let known: Vec<&str> = SHUTTLE_INSTANCE_SIZES.iter().map(|s| s.0).collect();
                return Err(SpecError::single(
                    SHUTTLE_TOML,
                    None,
                    format!(
                        "instance_size `{size}` is not a Shuttle size ({})",
                        known.join(", ")
                    ),
                ));
            }
        }
    }

    let secrets_file = SHUTTLE_SECRETS_FILES
        .iter()
        .find(|file| tree.read(file).is_some())
        .map(|file| (*file).to_string());
    if secrets_file.as_deref() == Some("Secrets.dev.toml") {
        parsed.warnings.push(
            "no Secrets.toml: the secrets of Secrets.dev.toml are used for this deploy".into(),
        );
    }
    let (include, assets) = shuttle_toml
        .map(|(raw, _)| (raw.deploy.include, raw.build.assets))
        .unwrap_or_default();
    spec.shuttle = Some(ShuttleSpec {
        package: package.name.clone(),
        bin: bin.clone(),
        secrets_file,
        include,
        assets,
        resources,
    });
    Ok(Some(parsed))
}

fn package_of(
    dir: &str,
    manifest_file: String,
    manifest: toml::Table,
) -> Result<Package, SpecError> {
    let name = manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(|name| name.as_str())
        .ok_or_else(|| {
            SpecError::single(
                &manifest_file,
                Some(Location { line: 1, column: 1 }),
                "[package] has no name".into(),
            )
        })?
        .to_string();
    Ok(Package {
        dir: dir.to_string(),
        name,
        manifest,
    })
}

/// The workspace's member folders: plain paths and `dir/*` globs.
fn workspace_members(root: &toml::Table, tree: &dyn ProjectTree) -> Vec<String> {
    let Some(members) = root
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(|members| members.as_array())
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for member in members.iter().filter_map(|member| member.as_str()) {
        let member = member.trim_end_matches('/');
        if let Some(parent) = member.strip_suffix("/*") {
            let mut children = tree.list(parent);
            children.sort();
            found.extend(
                children
                    .into_iter()
                    .map(|child| format!("{parent}/{child}")),
            );
        } else if member != "." && !member.is_empty() {
            found.push(member.to_string());
        }
    }
    found
}

fn depends_on_shuttle(package: &Package) -> bool {
    depends_on(package, "shuttle-runtime")
}

fn depends_on(package: &Package, crate_name: &str) -> bool {
    package
        .manifest
        .get("dependencies")
        .and_then(|deps| deps.as_table())
        .is_some_and(|deps| deps.contains_key(crate_name))
}

/// The package's bin targets as cargo finds them: `[[bin]]` entries, then
/// `src/main.rs` and `src/bin/*` unless `autobins = false`.
fn bin_targets(package: &Package, tree: &dyn ProjectTree) -> Vec<(String, String)> {
    let prefix = if package.dir.is_empty() {
        String::new()
    } else {
        format!("{}/", package.dir)
    };
    let mut bins = Vec::new();
    for bin in package
        .manifest
        .get("bin")
        .and_then(|bins| bins.as_array())
        .into_iter()
        .flatten()
    {
        let name = bin.get("name").and_then(|name| name.as_str());
        let path = bin.get("path").and_then(|path| path.as_str());
        match (name, path) {
            (Some(name), Some(path)) => bins.push((name.to_string(), format!("{prefix}{path}"))),
            (Some(name), None) if name == package.name => {
                bins.push((name.to_string(), format!("{prefix}src/main.rs")))
            }
            (Some(name), None) => {
                bins.push((name.to_string(), format!("{prefix}src/bin/{name}.rs")))
            }
            _ => {}
        }
    }
    let autobins = package
        .manifest
        .get("package")
        .and_then(|p| p.get("autobins"))
        .and_then(|value| value.as_bool())
        .unwrap_or(true);
    if autobins {
        let main = format!("{prefix}src/main.rs");
        if !bins.iter().any(|(_, path)| *path == main) {
            bins.push((package.name.clone(), main));
        }
        let mut extra = tree.list(&format!("{prefix}src/bin"));
        extra.sort();
        for entry in extra {
            let (name, path) = match entry.strip_suffix(".rs") {
                Some(stem) => (stem.to_string(), format!("{prefix}src/bin/{entry}")),
                None => (entry.clone(), format!("{prefix}src/bin/{entry}/main.rs")),
            };
            if !bins.iter().any(|(known, _)| *known == name) {
                bins.push((name, path));
            }
        }
    }
    bins
}

/// `instance_size = "m"` inside `#[shuttle_runtime::main(...)]`.
fn instance_size_in(source: &str) -> Option<String> {
    let start = source.find(MAIN_ATTRIBUTE)? + MAIN_ATTRIBUTE.len();
    let rest = &source[start..];
    let arguments = rest.strip_prefix('(')?;
    let arguments = &arguments[..arguments.find(')')?];
    arguments.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == "instance_size").then(|| value.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemoryTree;

    const MAIN: &str = r#"
#[shuttle_runtime::main]
async fn main(
    #[shuttle_shared_db::Postgres] pool: sqlx::PgPool,
    #[shuttle_runtime::Secrets] secrets: shuttle_runtime::SecretStore,
) -> shuttle_axum::ShuttleAxum { todo!() }
"#;

    fn manifest(extra: &str) -> String {
        format!(
            "[package]\nname = \"notes\"\nversion = \"0.1.0\"\n\n[dependencies]\nshuttle-runtime = \"0.57\"\n{extra}"
        )
    }

    #[test]
    fn a_shuttle_package_becomes_an_app_with_its_bin_database_and_secrets() {
        let tree = MemoryTree::new(&[
            ("Cargo.toml", &manifest("\n[features]\nshuttle = []\n")),
            ("src/main.rs", MAIN),
            ("src/bin/tool.rs", "fn main() {}"),
            ("Secrets.toml", "KEY = \"v\"\n"),
            ("Secrets.dev.toml", "KEY = \"dev\"\n"),
            (
                "Shuttle.toml",
                "name = \"my-notes\"\n[deploy]\ninclude = [\"static/*\"]\n[build]\nassets = [\"templates/*\"]\n",
            ),
        ]);
        let parsed = detect_shuttle(&tree).unwrap().unwrap();
        let spec = parsed.spec;
        assert_eq!(spec.app.as_deref(), Some("my-notes"));
        assert_eq!(spec.build.bin.as_deref(), Some("notes"));
        assert_eq!(spec.build.features, vec!["shuttle".to_string()]);
        assert!(spec.resources.postgres);
        let shuttle = spec.shuttle.unwrap();
        assert_eq!(shuttle.secrets_file.as_deref(), Some("Secrets.toml"));
        assert_eq!(shuttle.include, vec!["static/*".to_string()]);
        assert_eq!(shuttle.assets, vec!["templates/*".to_string()]);
        assert_eq!(
            shuttle.resources,
            vec!["database::shared::postgres".to_string()]
        );
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }

    #[test]
    fn the_entry_point_is_found_in_a_workspace_member_and_sizes_map_to_vms() {
        let tree = MemoryTree::new(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n"),
            (
                "crates/api/Cargo.toml",
                &manifest("\n[[bin]]\nname = \"server\"\npath = \"src/server.rs\"\n")
                    .replace("notes", "api"),
            ),
            (
                "crates/api/src/server.rs",
                "#[shuttle_runtime::main(instance_size = \"l\")]\nasync fn main() -> shuttle_axum::ShuttleAxum { todo!() }",
            ),
            ("crates/lib/Cargo.toml", "[package]\nname = \"lib\"\n"),
            ("Secrets.dev.toml", "KEY = \"dev\"\n"),
        ]);
        let parsed = detect_shuttle(&tree).unwrap().unwrap();
        assert_eq!(parsed.spec.app.as_deref(), Some("api"));
        assert_eq!(parsed.spec.build.bin.as_deref(), Some("server"));
        assert!(parsed.spec.build.features.is_empty());
        assert!(!parsed.spec.resources.postgres);
        let vm = &parsed.spec.vms[0];
        assert_eq!((vm.cpus, vm.memory_mb), (2.0, 4096));
        assert_eq!(
            parsed.spec.shuttle.unwrap().secrets_file.as_deref(),
            Some("Secrets.dev.toml")
        );
        assert!(parsed.warnings[0].contains("Secrets.dev.toml"));
    }

    #[test]
    fn plain_cargo_projects_are_not_shuttle_projects() {
        let tree = MemoryTree::new(&[
            ("Cargo.toml", "[package]\nname = \"hello\"\n"),
            ("src/main.rs", "fn main() {}"),
        ]);
        assert!(detect_shuttle(&tree).unwrap().is_none());
        let without_attribute = MemoryTree::new(&[
            ("Cargo.toml", &manifest("")),
            ("src/main.rs", "fn main() {}"),
        ]);
        assert!(detect_shuttle(&without_attribute).unwrap().is_none());
    }

    #[test]
    fn unsupported_resources_warn_and_bad_sizes_fail_clearly() {
        let tree = MemoryTree::new(&[
            ("Cargo.toml", &manifest("")),
            (
                "src/main.rs",
                "#[shuttle_runtime::main]\nasync fn main(#[shuttle_aws_rds::Postgres] c: String) {}",
            ),
            ("Shuttle.toml", "instance_size = \"huge\"\n"),
        ]);
        let err = detect_shuttle(&tree).unwrap_err().to_string();
        assert!(err.contains("instance_size `huge`"), "{err}");
        let tree = MemoryTree::new(&[
            ("Cargo.toml", &manifest("")),
            (
                "src/main.rs",
                "#[shuttle_runtime::main]\nasync fn main(#[shuttle_aws_rds::Postgres] c: String) {}",
            ),
        ]);
        let parsed = detect_shuttle(&tree).unwrap().unwrap();
        assert!(
            parsed.warnings[0].contains("shuttle_aws_rds"),
            "{:?}",
            parsed.warnings
        );
        let broken = MemoryTree::new(&[("Cargo.toml", "[package\nname = 1")]);
        let err = detect_shuttle(&broken).unwrap_err().to_string();
        assert!(err.starts_with("Cargo.toml:1:"), "{err}");
    }
}
