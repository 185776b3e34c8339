//! Cargo workspaces deployed from their root. A virtual workspace (a root
//! `Cargo.toml` with `[workspace]` and no `[package]`) is uploaded whole, so
//! path dependencies come along, and only the packages the app runs are
//! built (`cargo build -p …`): the ones whose binaries its processes name,
//! or `[build] package`, or `[build] bin`'s, or the only one with a binary.
//! The choice is made before the build, from the manifests.

use crate::{AppSpec, ProjectTree, SpecError};

/// A package of a workspace and its binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceMember {
    /// Its folder, relative to the workspace root.
    pub path: String,
    /// Its package name.
    pub package: String,
    /// Its binaries: `[[bin]]` names, `src/main.rs` (the package's name) and
    /// `src/bin/*.rs`.
    pub bins: Vec<String>,
}

/// What to build of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceBuild {
    /// The packages, for `cargo build -p`.
    pub packages: Vec<String>,
    /// The binary that is `web` by default, when the choice says.
    pub bin: Option<String>,
}

/// The members of the virtual workspace at the root of `tree`; `None` when
/// the root `Cargo.toml` is a package (or there is none).
pub fn workspace_members(
    tree: &dyn ProjectTree,
) -> Result<Option<Vec<WorkspaceMember>>, SpecError> {
    let Some(text) = tree.read("Cargo.toml") else {
        return Ok(None);
    };
    let root: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| SpecError::single("Cargo.toml", None, err.to_string()))?;
    let Some(workspace) = root.get("workspace").and_then(toml::Value::as_table) else {
        return Ok(None);
    };
    if root.contains_key("package") {
        return Ok(None);
    }
    let strings = |key: &str| -> Vec<String> {
        workspace
            .get(key)
            .and_then(toml::Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|item| {
                        item.as_str()
                            .map(|text| text.trim_end_matches('/').to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let excluded = strings("exclude");
    let mut members = Vec::new();
    for pattern in strings("members") {
        for path in expand(tree, &pattern) {
            if excluded.contains(&path) || members.iter().any(|m: &WorkspaceMember| m.path == path)
            {
                continue;
            }
            if let Some(member) = read_member(tree, &path)? {
                members.push(member);
            }
        }
    }
    Ok(Some(members))
}

/// The folders a `members` entry names: a path, or a last component with
/// `*` (`crates/*`, `services/api-*`).
fn expand(tree: &dyn ProjectTree, pattern: &str) -> Vec<String> {
    let (parent, last) = match pattern.rsplit_once('/') {
        Some((parent, last)) => (parent, last),
        None => ("", pattern),
    };
    let Some((prefix, suffix)) = last.split_once('*') else {
        return vec![pattern.to_string()];
    };
    let mut found: Vec<String> = tree
        .list(if parent.is_empty() { "." } else { parent })
        .into_iter()
        .filter(|name| name.starts_with(prefix) && name.ends_with(suffix))
        .map(|name| {
            if parent.is_empty() {
                name
            } else {
                format!("{parent}/{name}")
            }
        })
        .filter(|path| tree.read(&format!("{path}/Cargo.toml")).is_some())
        .collect();
    found.sort();
    found
}

fn read_member(tree: &dyn ProjectTree, path: &str) -> Result<Option<WorkspaceMember>, SpecError> {
    let file = format!("{path}/Cargo.toml");
    let Some(text) = tree.read(&file) else {
        return Ok(None);
    };
    let manifest: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| SpecError::single(&file, None, err.to_string()))?;
    let Some(package) = manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
    else {
        return Ok(None);
    };
    let mut bins: Vec<String> = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bin| {
            bin.get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_string)
        })
        .collect();
    if tree.read(&format!("{path}/src/main.rs")).is_some() && !bins.iter().any(|bin| bin == package)
    {
        bins.push(package.to_string());
    }
    for name in tree.list(&format!("{path}/src/bin")) {
        if let Some(stem) = name.strip_suffix(".rs")
            && !bins.iter().any(|bin| bin == stem)
        {
            bins.push(stem.to_string());
        }
    }
    Ok(Some(WorkspaceMember {
        path: path.to_string(),
        package: package.to_string(),
        bins,
    }))
}

/// Which packages of `members` to build for `spec`, or why none can be
/// chosen (with the names to choose from).
pub fn choose_packages(
    members: &[WorkspaceMember],
    spec: &AppSpec,
) -> Result<WorkspaceBuild, String> {
    let with_bins: Vec<&WorkspaceMember> = members.iter().filter(|m| !m.bins.is_empty()).collect();
    let owner_of = |bin: &str| with_bins.iter().find(|m| m.bins.iter().any(|b| b == bin));
    let listing = || {
        with_bins
            .iter()
            .map(|m| format!("{} ({})", m.package, m.bins.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some(package) = &spec.build.package {
        if !members.iter().any(|m| &m.package == package) {
            return Err(format!(
                "[build] package = \"{package}\" is not a member of the workspace; its packages with binaries: {}",
                listing()
            ));
        }
        return Ok(WorkspaceBuild {
            packages: vec![package.clone()],
            bin: spec.build.bin.clone(),
        });
    }
    // The binaries the spec names: [build] bin, then each process's program.
    let mut named: Vec<String> = spec.build.bin.iter().cloned().collect();
    for command in spec.processes.values() {
        let program = command.split_whitespace().find(|word| !word.contains('='));
        if let Some(program) = program {
            let name = program.rsplit('/').next().unwrap_or(program);
            if owner_of(name).is_some() && !named.iter().any(|n| n == name) {
                named.push(name.to_string());
            }
        }
    }
    if let Some(wanted) = &spec.build.bin
        && owner_of(wanted).is_none()
    {
        return Err(format!(
            "[build] bin = \"{wanted}\" is no binary of the workspace; its packages with binaries: {}",
            listing()
        ));
    }
    // An empty command (fly's `app = ""`) runs "the" binary: in a
    // workspace, [build] bin must say which.
    if spec.build.bin.is_none()
        && let Some((group, _)) = spec
            .processes
            .iter()
            .find(|(_, command)| command.is_empty())
    {
        return Err(format!(
            "process group `{group}` has no command of its own (the image's CMD), and a workspace has several binaries: name the one it runs with [build] bin = \"…\" (packages with binaries: {})",
            listing()
        ));
    }
    if !named.is_empty() {
        let mut packages: Vec<String> = Vec::new();
        for bin in &named {
            if let Some(member) = owner_of(bin)
                && !packages.contains(&member.package)
            {
                packages.push(member.package.clone());
            }
        }
        let program_of = |process: &str| {
            let command = spec.processes.get(process)?;
            let program = command
                .split_whitespace()
                .find(|word| !word.contains('='))?;
            let name = program.rsplit('/').next().unwrap_or(program).to_string();
            owner_of(&name).is_some().then_some(name)
        };
        let web = spec
            .build
            .bin
            .clone()
            .or_else(|| program_of("web"))
            .or_else(|| named.first().cloned());
        return Ok(WorkspaceBuild { packages, bin: web });
    }
    match with_bins.as_slice() {
        [only] => Ok(WorkspaceBuild {
            packages: vec![only.package.clone()],
            bin: (only.bins.len() == 1).then(|| only.bins[0].clone()),
        }),
        [] => Err("the workspace has no package with a binary to run".into()),
        _ => Err(format!(
            "the workspace has binaries in several packages — {} — say which to deploy with [build] bin = \"…\" (or [build] package = \"…\") in berth.toml",
            listing()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTree;

    fn tree() -> MemoryTree {
        MemoryTree::new(&[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"crates/*\", \"tools/gen\"]\nexclude = [\"crates/old\"]\n",
            ),
            ("crates/api/Cargo.toml", "[package]\nname = \"api\"\n"),
            ("crates/api/src/main.rs", "fn main() {}"),
            (
                "crates/worker/Cargo.toml",
                "[package]\nname = \"worker\"\n[[bin]]\nname = \"jobs\"\npath = \"src/jobs.rs\"\n",
            ),
            ("crates/shared/Cargo.toml", "[package]\nname = \"shared\"\n"),
            ("crates/shared/src/lib.rs", ""),
            ("crates/old/Cargo.toml", "[package]\nname = \"old\"\n"),
            ("crates/old/src/main.rs", "fn main() {}"),
            ("tools/gen/Cargo.toml", "[package]\nname = \"gen\"\n"),
            ("tools/gen/src/bin/codegen.rs", "fn main() {}"),
        ])
    }

    #[test]
    fn members_and_their_binaries_are_read_from_the_manifests() {
        let members = workspace_members(&tree()).unwrap().unwrap();
        let found: Vec<(&str, Vec<&str>)> = members
            .iter()
            .map(|m| {
                (
                    m.package.as_str(),
                    m.bins.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("api", vec!["api"]),
                ("shared", vec![]),
                ("worker", vec!["jobs"]),
                ("gen", vec!["codegen"]),
            ]
        );
        let package = MemoryTree::new(&[("Cargo.toml", "[package]\nname = \"x\"\n[workspace]\n")]);
        assert_eq!(workspace_members(&package).unwrap(), None);
    }

    #[test]
    fn the_packages_built_are_the_ones_the_app_runs() {
        let members = workspace_members(&tree()).unwrap().unwrap();
        let mut spec = AppSpec::default();
        let err = choose_packages(&members, &spec).unwrap_err();
        assert!(
            err.contains("api (api); worker (jobs); gen (codegen)"),
            "{err}"
        );

        spec.processes
            .insert("web".into(), "api --port $PORT".into());
        spec.processes
            .insert("worker".into(), "RUST_LOG=info ./jobs".into());
        let chosen = choose_packages(&members, &spec).unwrap();
        assert_eq!(chosen.packages, ["api", "worker"]);

        let mut by_bin = AppSpec::default();
        by_bin.build.bin = Some("codegen".into());
        assert_eq!(
            choose_packages(&members, &by_bin).unwrap().packages,
            ["gen"]
        );
        by_bin.build.bin = Some("nope".into());
        assert!(
            choose_packages(&members, &by_bin)
                .unwrap_err()
                .contains("no binary of the workspace")
        );

        // fly's `app = ""` beside a named worker: which binary is "the" one?
        let mut empty = AppSpec::default();
        empty.processes.insert("app".into(), String::new());
        empty.processes.insert("worker".into(), "jobs".into());
        let err = choose_packages(&members, &empty).unwrap_err();
        assert!(
            err.contains("`app` has no command") && err.contains("[build] bin"),
            "{err}"
        );
        empty.build.bin = Some("api".into());
        assert_eq!(
            choose_packages(&members, &empty).unwrap().packages,
            ["api", "worker"]
        );

        let mut by_package = AppSpec::default();
        by_package.build.package = Some("worker".into());
        assert_eq!(
            choose_packages(&members, &by_package).unwrap().packages,
            ["worker"]
        );
    }
}
