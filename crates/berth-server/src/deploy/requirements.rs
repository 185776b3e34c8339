//! What a build needs from the server besides cargo, read from the source
//! before the build: crates in `Cargo.lock` that call system tools or
//! link system libraries (prost-build wants `protoc`, openssl-sys wants
//! pkg-config and libssl-dev, …), and a linker that `.cargo/config.toml`
//! names. Each one the server lacks is said before the build starts, with
//! the Debian package that brings it, which berth adds to the build's
//! `[build] packages` when it can install them (as root, with apt); else a
//! build that then fails has its reason right above.

use std::path::Path;

/// A system requirement of a crate.
struct Need {
    /// The crate in Cargo.lock.
    krate: &'static str,
    /// What must be there.
    what: Check,
    /// The Debian packages that bring it.
    packages: &'static [&'static str],
}

/// Something the build will need that this server lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Missing {
    /// What needs what, in a sentence (`prost-build (in Cargo.lock) needs `protoc``).
    pub(super) why: String,
    /// The Debian packages that bring it.
    pub(super) packages: Vec<&'static str>,
}

impl Missing {
    /// The warning given when berth cannot install the packages itself.
    pub(super) fn warning(&self) -> String {
        format!(
            "{}, which this server lacks: install Debian's {}, or the build may fail",
            self.why,
            self.packages.join(" and ")
        )
    }
}

#[derive(Clone, Copy)]
enum Check {
    /// A program on `PATH`.
    Program(&'static str),
    /// A pkg-config module.
    PkgConfig(&'static str),
}

const NEEDS: &[Need] = &[
    Need {
        krate: "prost-build",
        what: Check::Program("protoc"),
        packages: &["protobuf-compiler"],
    },
    Need {
        krate: "openssl-sys",
        what: Check::Program("pkg-config"),
        packages: &["pkg-config"],
    },
    Need {
        krate: "openssl-sys",
        what: Check::PkgConfig("openssl"),
        packages: &["libssl-dev"],
    },
    Need {
        krate: "pq-sys",
        what: Check::PkgConfig("libpq"),
        packages: &["libpq-dev"],
    },
    Need {
        krate: "cmake",
        what: Check::Program("cmake"),
        packages: &["cmake"],
    },
    Need {
        krate: "bindgen",
        what: Check::Program("clang"),
        packages: &["clang", "libclang-dev"],
    },
    Need {
        krate: "libz-sys",
        what: Check::PkgConfig("zlib"),
        packages: &["zlib1g-dev"],
    },
];

/// Linkers a `.cargo/config.toml` may name, and their packages.
const LINKERS: &[(&str, &str)] = &[
    ("clang", "clang"),
    ("mold", "mold"),
    ("lld", "lld"),
    ("ld.lld", "lld"),
];

/// A full-stack front end berth does not build: a Leptos app
/// (`[package.metadata.leptos]`, built with `cargo leptos`) or a Dioxus
/// app (`Dioxus.toml`, built with `dx`). Their server builds with cargo,
/// but the WebAssembly and styles of their pages need the tool; the warning
/// says so before the build rather than leaving pages broken unexplained.
pub(super) fn unbuilt_front_end(dir: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let leptos = manifest.parse::<toml::Table>().ok().is_some_and(|table| {
        ["package", "workspace"].iter().any(|section| {
            table
                .get(*section)
                .and_then(|value| value.get("metadata"))
                .and_then(|metadata| metadata.get("leptos"))
                .is_some()
        })
    });
    let (kind, tool) = if leptos {
        (
            "a Leptos app ([package.metadata.leptos])",
            "cargo leptos build --release",
        )
    } else if dir.join("Dioxus.toml").is_file() {
        ("a Dioxus app (Dioxus.toml)", "dx bundle")
    } else {
        return None;
    };
    Some(format!(
        "this is {kind}: berth builds its server with cargo, but not the WebAssembly and styles of its pages ({tool} is not supported yet), so they will be missing; build the site yourself and commit its folder, serving it with [[statics]]"
    ))
}

/// What the build of the source at `dir` needs that this server lacks.
pub(super) fn missing(dir: &Path) -> Vec<Missing> {
    missing_with(dir, &|check| present(check))
}

fn missing_with(dir: &Path, have: &dyn Fn(Check) -> bool) -> Vec<Missing> {
    let locked = locked_crates(dir);
    let mut said = Vec::new();
    for need in NEEDS {
        // openssl-src in the lock: OpenSSL is built from source (`vendored`).
        let vendored =
            need.krate == "openssl-sys" && locked.iter().any(|name| name == "openssl-src");
        if !locked.iter().any(|name| name == need.krate) || vendored || have(need.what) {
            continue;
        }
        let thing = match need.what {
            Check::Program(program) => format!("`{program}`"),
            Check::PkgConfig(module) => format!("the {module} library (pkg-config `{module}`)"),
        };
        said.push(Missing {
            why: format!("{} (in Cargo.lock) needs {thing}", need.krate),
            packages: need.packages.to_vec(),
        });
    }
    for linker in config_linkers(dir) {
        if let Some((_, package)) = LINKERS.iter().find(|(name, _)| *name == linker)
            && !have(Check::Program(program_of_linker(&linker)))
        {
            said.push(Missing {
                why: format!(".cargo/config.toml uses the linker `{linker}`"),
                packages: vec![*package],
            });
        }
    }
    said
}

fn program_of_linker(linker: &str) -> &'static str {
    match linker {
        "lld" | "ld.lld" => "ld.lld",
        "mold" => "mold",
        _ => "clang",
    }
}

/// The package names in `Cargo.lock`.
fn locked_crates(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.lock")) else {
        return Vec::new();
    };
    let Ok(lock) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    lock.get("package")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|package| package.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// Linkers `.cargo/config.toml` names: `linker = "clang"` under a target,
/// and `-fuse-ld=lld`/`mold` in `rustflags`.
fn config_linkers(dir: &Path) -> Vec<String> {
    let text = ["config.toml", "config"]
        .iter()
        .find_map(|name| std::fs::read_to_string(dir.join(".cargo").join(name)).ok());
    let Some(config) = text.and_then(|text| text.parse::<toml::Table>().ok()) else {
        return Vec::new();
    };
    let mut linkers = Vec::new();
    let mut look = |table: &toml::Table| {
        if let Some(linker) = table.get("linker").and_then(toml::Value::as_str) {
            linkers.push(linker.rsplit('/').next().unwrap_or(linker).to_string());
        }
        for flag in table
            .get("rustflags")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_str)
        {
            if let Some(linker) = flag.split("-fuse-ld=").nth(1) {
                linkers.push(linker.to_string());
            }
        }
    };
    if let Some(targets) = config.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            look(target);
        }
    }
    if let Some(build) = config.get("build").and_then(toml::Value::as_table) {
        look(build);
    }
    linkers.sort();
    linkers.dedup();
    linkers
}

fn present(check: Check) -> bool {
    match check {
        Check::Program(program) => std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/usr/bin".into(), "/usr/local/bin".into()])
            .any(|dir| dir.join(program).is_file()),
        Check::PkgConfig(module) => std::process::Command::new("pkg-config")
            .args(["--exists", module])
            .status()
            .is_ok_and(|status| status.success()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leptos_and_dioxus_apps_are_told_what_is_not_built() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"site\"\n\n[package.metadata.leptos]\nsite-root = \"target/site\"\n",
        )
        .unwrap();
        let said = unbuilt_front_end(dir.path()).unwrap();
        assert!(
            said.contains("a Leptos app") && said.contains("cargo leptos"),
            "{said}"
        );
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"site\"\n",
        )
        .unwrap();
        assert_eq!(unbuilt_front_end(dir.path()), None);
        std::fs::write(dir.path().join("Dioxus.toml"), "[application]\n").unwrap();
        assert!(unbuilt_front_end(dir.path()).unwrap().contains("dx bundle"));
    }

    #[test]
    fn each_missing_tool_is_named_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.lock"),
            "version = 3\n\n[[package]]\nname = \"prost-build\"\nversion = \"0.13.0\"\n\n[[package]]\nname = \"openssl-sys\"\nversion = \"0.9.0\"\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join(".cargo")).unwrap();
        std::fs::write(
            dir.path().join(".cargo/config.toml"),
            "[target.x86_64-unknown-linux-gnu]\nlinker = \"clang\"\nrustflags = [\"-C\", \"link-arg=-fuse-ld=mold\"]\n",
        )
        .unwrap();
        // A server with pkg-config and nothing else.
        let said = missing_with(dir.path(), &|check| {
            matches!(check, Check::Program("pkg-config"))
        });
        let said: Vec<String> = said.iter().map(Missing::warning).collect();
        let said = said.join("\n");
        for expected in [
            "prost-build (in Cargo.lock) needs `protoc`, which this server lacks: install Debian's protobuf-compiler",
            "openssl-sys (in Cargo.lock) needs the openssl library (pkg-config `openssl`), which this server lacks: install Debian's libssl-dev",
            "uses the linker `clang`, which this server lacks: install Debian's clang,",
            "uses the linker `mold`, which this server lacks: install Debian's mold,",
        ] {
            assert!(said.contains(expected), "no `{expected}` in:\n{said}");
        }
        assert!(!said.contains("pkg-config`, which"), "{said}");
        // A server with everything says nothing.
        assert!(missing_with(dir.path(), &|_| true).is_empty());
    }
}
