//! `[build] packages`: Debian packages an app's build needs (`protoc`,
//! `libpq-dev`, `cmake`), installed into a root of its own rather than
//! onto the host — the Dockerfile's `apt-get install` without the host
//! changing.
//!
//! The host's apt resolves the packages and what they depend on that the
//! host lacks (`apt-get install --simulate`); those are downloaded once
//! (`apt-get download`, signed by the host's apt sources) and unpacked
//! (`dpkg-deb -x`, no maintainer scripts run) into
//! `build-roots/NAMES-HASH/gen-VERSIONS-HASH/tree`. An overlay of that
//! tree's `/usr` on the host's `/usr` (read-only, nosuid, nodev) is mounted
//! at `…/usr` and bind-mounted over `/usr` in the app's build sandbox and
//! in its instances, which so find the libraries the build linked. A root
//! is shared by every app that asks for the same packages, and made again
//! only when apt would install other versions.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_runtime::run_command as run;

/// Where package roots live (`DATA/build-roots`).
#[derive(Debug, Clone)]
pub struct PackageRoots {
    dir: PathBuf,
}

/// A package apt would install, at the version it would install.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pinned {
    name: String,
    version: String,
}

impl PackageRoots {
    /// The roots under `data_dir`.
    pub fn new(data_dir: &Path) -> PackageRoots {
        PackageRoots {
            dir: data_dir.join("build-roots"),
        }
    }

    /// Makes sure the root of `packages` holds them, saying what it does;
    /// returns the `/usr` to mount, or `None` when the host has them all.
    /// Errors name the package and apt's reason.
    pub fn prepare(
        &self,
        packages: &[String],
        say: &mut dyn FnMut(String),
    ) -> Result<Option<PathBuf>, String> {
        if packages.is_empty() {
            return Ok(None);
        }
        let set = self.dir.join(names_key(packages));
        let current = set.join("current");
        let missing = resolve(packages)?;
        if missing.is_empty() {
            say(format!(
                "[build] packages: {} already on this machine",
                packages.join(", ")
            ));
            let _ = std::fs::remove_file(&current);
            return Ok(None);
        }
        let generation = set.join(format!("gen-{}", versions_key(&missing)));
        if !generation.join(".ready").exists() {
            let shown: Vec<String> = missing
                .iter()
                .map(|pinned| format!("{} {}", pinned.name, pinned.version))
                .collect();
            say(format!(
                "[build] packages: installing {} into the build's own root (not onto this machine)",
                shown.join(", ")
            ));
            install(&missing, &generation)?;
        }
        let usr = mounted_usr(&generation)?;
        let staging = set.join(".current");
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&generation, &staging)
            .and_then(|()| std::fs::rename(&staging, &current))
            .map_err(|err| format!("cannot record the build root {}: {err}", set.display()))?;
        Ok(Some(usr))
    }

    /// For a build that is not sandboxed (berth is not root): the host
    /// must have `packages` itself, or the error names those it lacks.
    pub fn check_installed(&self, packages: &[String]) -> Result<(), String> {
        let missing = resolve(packages)?;
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|pinned| pinned.name.as_str()).collect();
        Err(format!(
            "[build] packages: this machine lacks {}, and berth installs packages into a build root of their own only when it runs as root; install them (sudo apt-get install {}) or run berth as root",
            names.join(", "),
            names.join(" ")
        ))
    }

    /// The `/usr` last prepared for `packages` (mounted again after a
    /// reboot), for an instance of a release built with them; `None` when
    /// the host had them all.
    pub fn existing(&self, packages: &[String]) -> Result<Option<PathBuf>, String> {
        if packages.is_empty() {
            return Ok(None);
        }
        let current = self.dir.join(names_key(packages)).join("current");
        match std::fs::read_link(&current) {
            Ok(generation) => mounted_usr(&generation).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// A stable name for a set of package names.
fn names_key(packages: &[String]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort();
    sorted.dedup();
    short_hash(&sorted.join(" "))
}

fn versions_key(pinned: &[Pinned]) -> String {
    let text: Vec<String> = pinned
        .iter()
        .map(|pinned| format!("{}={}", pinned.name, pinned.version))
        .collect();
    short_hash(&text.join(" "))
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What apt would install for `packages` that the host lacks.
fn resolve(packages: &[String]) -> Result<Vec<Pinned>, String> {
    if let Some(bad) = packages
        .iter()
        .find(|name| !berth_spec::valid_debian_package(name))
    {
        return Err(format!(
            "[build] packages: `{bad}` is not a Debian package name"
        ));
    }
    let output = Command::new("apt-get")
        .args(["install", "--simulate", "--no-install-recommends", "-q"])
        .args(packages)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| {
            format!(
                "[build] packages needs apt (Debian or Ubuntu) to install {}: {err}",
                packages.join(", ")
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reasons: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("E:"))
            .collect();
        return Err(format!(
            "[build] packages: apt cannot install {}: {}",
            packages.join(", "),
            if reasons.is_empty() {
                stderr.trim().to_string()
            } else {
                reasons.join(" ")
            }
        ));
    }
    Ok(planned(&String::from_utf8_lossy(&output.stdout)))
}

/// The `Inst NAME [OLD] (VERSION …)` lines of apt's simulation.
fn planned(simulation: &str) -> Vec<Pinned> {
    simulation
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let version = rest.split_once('(')?.1.split_whitespace().next()?;
            (berth_spec::valid_debian_package(name) && !version.is_empty()).then(|| Pinned {
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect()
}

/// Downloads `pinned` and unpacks it into `generation/tree`.
fn install(pinned: &[Pinned], generation: &Path) -> Result<(), String> {
    let debs = generation.join("debs");
    let tree = generation.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    for dir in [&debs, &tree] {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .args(
                pinned
                    .iter()
                    .map(|pinned| format!("{}={}", pinned.name, pinned.version)),
            )
            .current_dir(&debs),
        "download the packages (apt-get download)",
    )?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)
        .map_err(|err| err.to_string())?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    files.sort();
    for deb in &files {
        run(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree),
            &format!("unpack {}", deb.display()),
        )?;
    }
    merge_into_usr(&tree)?;
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::write(generation.join(".ready"), versions_key(pinned))
        .map_err(|err| format!("cannot finish {}: {err}", generation.display()))
}

/// On a merged-/usr host (`/lib` → `usr/lib`), what a package puts in
/// `/bin`, `/sbin` or `/lib*` belongs under `/usr`, the part mounted.
fn merge_into_usr(tree: &Path) -> Result<(), String> {
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let from = tree.join(top);
        if !from.is_dir() || from.is_symlink() {
            continue;
        }
        let to = tree.join("usr").join(top);
        run(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", from.display()))
                .arg(&to),
            &format!("move /{top} of the packages under /usr"),
        )?;
        std::fs::remove_dir_all(&from).map_err(|err| err.to_string())?;
    }
    Ok(())
}

/// The overlay of the generation's `usr` on the host's, mounted (again, if
/// the host rebooted) at `generation/usr`.
fn mounted_usr(generation: &Path) -> Result<PathBuf, String> {
    let merged = generation.join("usr");
    if super::sized_volumes::is_mount_point(&merged) {
        return Ok(merged);
    }
    let upper = generation.join("tree").join("usr");
    if !upper.is_dir() {
        return Err(format!(
            "the build root {} is incomplete: deploy again to make it",
            generation.display()
        ));
    }
    let text = upper.display().to_string();
    if text.contains([':', ',', '\\']) {
        return Err(format!(
            "the data dir's path {text} has a `:`, `,` or `\\`, which an overlay mount cannot take"
        ));
    }
    std::fs::create_dir_all(&merged)
        .map_err(|err| format!("cannot create {}: {err}", merged.display()))?;
    run(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,nosuid,nodev,lowerdir={text}:/usr"))
            .arg(&merged),
        "mount the build root over /usr (overlayfs)",
    )?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apts_plan_gives_each_package_and_its_version() {
        let simulation = "NOTE: This is only a simulation!\n\
            Reading package lists...\n\
            The following NEW packages will be installed:\n  libprotoc32 protobuf-compiler\n\
            Inst libprotoc32 (3.21.12-3+deb12u1 Debian:12.11/stable [amd64])\n\
            Inst libssl3 [3.0.15-1~deb12u1] (3.0.16-1~deb12u1 Debian-Security:12/stable-security [amd64])\n\
            Inst protobuf-compiler (3.21.12-3+deb12u1 Debian:12.11/stable [amd64])\n\
            Conf libprotoc32 (3.21.12-3+deb12u1 Debian:12.11/stable [amd64])\n";
        let shown: Vec<(String, String)> = planned(simulation)
            .into_iter()
            .map(|pinned| (pinned.name, pinned.version))
            .collect();
        assert_eq!(
            shown,
            [
                ("libprotoc32".into(), "3.21.12-3+deb12u1".into()),
                ("libssl3".into(), "3.0.16-1~deb12u1".into()),
                ("protobuf-compiler".into(), "3.21.12-3+deb12u1".into()),
            ]
        );
    }

    #[test]
    fn the_same_packages_in_any_order_share_a_root() {
        let one = names_key(&["cmake".into(), "protobuf-compiler".into()]);
        let other = names_key(&["protobuf-compiler".into(), "cmake".into(), "cmake".into()]);
        assert_eq!(one, other);
        assert_ne!(one, names_key(&["cmake".into()]));
    }

    #[test]
    fn a_name_apt_could_read_as_an_option_never_reaches_it() {
        let err = resolve(&["-o".into()]).unwrap_err();
        assert!(err.contains("not a Debian package name"), "{err}");
    }
}
