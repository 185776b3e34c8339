//! The Rust toolchain a sandboxed build runs: the server's default
//! (`rustc --print sysroot`), or the one a project pins in
//! `rust-toolchain.toml` (or `rust-toolchain`) when rustup has it
//! installed. Its folder is mounted read-only into the build's sandbox when
//! other users cannot reach it (rustup under `/root`).

use std::path::{Path, PathBuf};

/// Where a build sees the toolchain, when the host's is out of its reach.
pub const TOOLCHAIN_MOUNT: &str = "/tmp/berth-toolchain";

/// A toolchain: its root (`bin/cargo`, `bin/rustc`, `lib/`) on the host,
/// and whether it must be mounted to be reached.
#[derive(Debug, Clone)]
pub(crate) struct Toolchain {
    pub(crate) root: PathBuf,
    pub(crate) mounted: bool,
}

impl Toolchain {
    /// The server's default: the toolchain `rustc --print sysroot` names
    /// (with rustup, the default toolchain's folder).
    pub(crate) fn detect() -> Result<Toolchain, String> {
        sysroot(std::process::Command::new("rustc").args(["--print", "sysroot"]))
    }

    /// The installed toolchain `channel` (`1.80.0`, `nightly-2024-05-01`,
    /// `stable`), through rustup; never installed on demand.
    pub(crate) fn installed(channel: &str) -> Result<Toolchain, String> {
        let valid = !channel.is_empty()
            && !channel.starts_with('-')
            && channel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(format!("`{channel}` is not a toolchain name"));
        }
        sysroot(
            std::process::Command::new("rustup")
                .args(["run", channel, "rustc", "--print", "sysroot"])
                .env("RUSTUP_AUTO_INSTALL", "0"),
        )
        .map_err(|why| format!("this server has no toolchain `{channel}` ({why})"))
    }

    pub(crate) fn bin_dir(&self) -> PathBuf {
        if self.mounted {
            Path::new(TOOLCHAIN_MOUNT).join("bin")
        } else {
            self.root.join("bin")
        }
    }
}

/// The toolchain whose sysroot `command` prints, which must hold `bin/cargo`.
fn sysroot(command: &mut std::process::Command) -> Result<Toolchain, String> {
    let output = command
        .current_dir("/")
        .output()
        .map_err(|err| format!("cannot run it to find the toolchain: {err}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    let root = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !root.join("bin/cargo").is_file() {
        return Err(format!(
            "the toolchain at {} has no bin/cargo",
            root.display()
        ));
    }
    Ok(Toolchain {
        mounted: !reachable_by_anyone(&root),
        root,
    })
}

/// The channel `source` pins: `[toolchain] channel` of `rust-toolchain.toml`,
/// or the one line of a legacy `rust-toolchain` file.
///
/// The app's build may have written them (a build command runs before the
/// cargo build that reads them): read as the server, they are opened
/// within `source` (no link leads out), regular files of at most 64 KiB.
pub(crate) fn pinned_channel(source: &Path) -> Option<String> {
    let read = |name: &str| {
        berth_runtime::read_in_root(source, Path::new(name), 64 * 1024)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    };
    if let Some(text) = read("rust-toolchain.toml").or_else(|| read("rust-toolchain")) {
        if let Ok(table) = text.parse::<toml::Table>() {
            return table
                .get("toolchain")?
                .get("channel")?
                .as_str()
                .map(str::to_string);
        }
        let line = text.lines().next()?.trim();
        return (!line.is_empty()).then(|| line.to_string());
    }
    None
}

/// Whether every directory from `/` down to `path` lets others through.
fn reachable_by_anyone(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toolchain_under_a_private_folder_is_mounted() {
        assert!(reachable_by_anyone(Path::new("/usr/bin")));
        let private = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let inside = private.path().join("toolchain");
        std::fs::create_dir(&inside).unwrap();
        assert!(!reachable_by_anyone(&inside));
    }

    #[test]
    fn the_pinned_channel_is_read_in_both_spellings() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pinned_channel(dir.path()), None);
        // A link the build left (to /dev/zero, or a secret) is not read.
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("rust-toolchain")).unwrap();
        assert_eq!(pinned_channel(dir.path()), None);
        std::fs::remove_file(dir.path().join("rust-toolchain")).unwrap();
        std::fs::write(dir.path().join("rust-toolchain"), "1.80.0\n").unwrap();
        assert_eq!(pinned_channel(dir.path()).as_deref(), Some("1.80.0"));
        std::fs::write(
            dir.path().join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"nightly-2024-05-01\"\ncomponents = [\"rustfmt\"]\n",
        )
        .unwrap();
        assert_eq!(
            pinned_channel(dir.path()).as_deref(),
            Some("nightly-2024-05-01")
        );
        assert!(Toolchain::installed("/tmp/evil").is_err());
        assert!(Toolchain::installed("--help").is_err());
    }
}
