//! Dockerfiles read for what berth can build natively: the cargo-chef
//! shape (chef → planner → builder → runtime) that the guide prints and
//! `berth export dockerfile` writes. Such a Dockerfile is a cargo build
//! of one binary plus a runtime stage on a base image: berth builds the
//! binary with its own cargo and persistent target dir, and puts it on
//! the base with the runtime stage's settings — no layer cache needed.

use std::collections::BTreeMap;

/// What a cargo-chef Dockerfile builds and runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChefPlan {
    /// The binary `cargo build --release --bin NAME` makes (`None`: the
    /// package's only one).
    pub bin: Option<String>,
    /// The cargo features the build names.
    pub features: Vec<String>,
    /// The runtime stage's base image (`debian:bookworm-slim`).
    pub base: String,
    /// Where the binary is copied in the runtime stage (a file path; when
    /// the Dockerfile names a folder, the binary's name is joined on).
    pub destination: String,
    /// The name the binary has in the build stage (the COPY source's).
    pub copied_name: String,
    /// Whether the destination was written as a folder (`/usr/local/bin/`);
    /// otherwise it is one when the base image has a folder there.
    pub destination_is_dir: bool,
    /// `ENTRYPOINT` and `CMD` of the runtime stage, in exec form.
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
    /// `ENV` of the runtime stage.
    pub env: Vec<(String, String)>,
    /// `WORKDIR` of the runtime stage.
    pub working_dir: Option<String>,
    /// `EXPOSE`d TCP ports.
    pub exposed_ports: Vec<u16>,
    /// Instructions of the runtime stage berth does not carry out (its
    /// `RUN`s, other `COPY`s), for a warning.
    pub not_run: Vec<String>,
}

/// One instruction: its keyword (upper case) and the rest of its line.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if joined.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            joined.push_str(continued);
            joined.push(' ');
            continue;
        }
        joined.push_str(trimmed);
        let (keyword, rest) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        found.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
        joined.clear();
    }
    found
}

/// `["a", "b"]` (exec form) or a shell line (`/bin/sh -c LINE`).
fn command_words(rest: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(words) => words,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), rest.to_string()],
    }
}

/// `--flag=value` options before a COPY's paths, and the paths.
fn copy_parts(rest: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut flags = BTreeMap::new();
    let mut rest = rest.trim();
    // The flags first, then the paths: plain words or a JSON array.
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        if let Some((name, value)) = word.split_once('=') {
            flags.insert(name.to_string(), value.to_string());
        }
        rest = after.trim_start();
    }
    let paths = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(words) => words,
        Err(_) => rest.split_whitespace().map(str::to_string).collect(),
    };
    (flags, paths)
}

/// `ENV` pairs: `A=1 B="two words"`, or the old `KEY value` form.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    if !rest
        .split_whitespace()
        .next()
        .is_some_and(|word| word.contains('='))
    {
        return rest
            .split_once(char::is_whitespace)
            .map(|(key, value)| vec![(key.to_string(), value.trim().to_string())])
            .unwrap_or_default();
    }
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        let mut quote = None;
        while let Some(c) = chars.peek().copied() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(open), c) if c == open => quote = None,
                (_, '\\') => {
                    chars.next();
                    if let Some(escaped) = chars.peek().copied() {
                        value.push(escaped);
                    }
                }
                (_, c) => value.push(c),
            }
            chars.next();
        }
        pairs.push((key.trim().to_string(), value));
    }
    pairs
}

/// `path` as an absolute path, relative ones under `workdir`.
fn absolute(path: &str, workdir: Option<&str>) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    let base = workdir.unwrap_or("/").trim_end_matches('/');
    match path.trim_start_matches("./") {
        "" | "." => format!("{base}/"),
        rest => format!("{base}/{rest}"),
    }
}

/// The `--bin` and `--features` of a `cargo build --release` line.
fn cargo_build(line: &str) -> Option<(Option<String>, Vec<String>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .windows(2)
        .position(|pair| pair == ["cargo", "build"])?;
    let rest = &words[at + 2..];
    if !rest.contains(&"--release") {
        return None;
    }
    let value = |flag: &str| {
        rest.iter().enumerate().find_map(|(index, word)| {
            word.strip_prefix(&format!("{flag}="))
                .map(str::to_string)
                .or_else(|| {
                    (*word == flag)
                        .then(|| rest.get(index + 1).map(|v| v.to_string()))
                        .flatten()
                })
        })
    };
    let features = value("--features")
        .map(|list| {
            list.split([',', ' '])
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some((value("--bin"), features))
}

/// A stage: its base, its name (`AS name`), its instructions.
type Stage = (String, Option<String>, Vec<(String, String)>);

/// The cargo-chef plan of `text`, or why it is not one berth builds.
pub fn chef_plan(text: &str) -> Result<ChefPlan, String> {
    let mut stages: Vec<Stage> = Vec::new();
    for (keyword, rest) in instructions(text) {
        if keyword == "FROM" {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let base = words.first().copied().unwrap_or_default().to_string();
            let name = match words.as_slice() {
                [_, as_word, name, ..] if as_word.eq_ignore_ascii_case("as") => {
                    Some(name.to_string())
                }
                _ => None,
            };
            stages.push((base, name, Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push((keyword, rest));
        }
    }
    let (runtime, builders) = stages.split_last().ok_or("it has no FROM")?;
    let cooks = builders.iter().any(|(_, _, lines)| {
        lines
            .iter()
            .any(|(k, rest)| k == "RUN" && rest.contains("cargo chef cook"))
    });
    if !cooks {
        return Err("no stage runs `cargo chef cook`".into());
    }
    let build = builders
        .iter()
        .flat_map(|(_, name, lines)| lines.iter().map(move |line| (name, line)))
        .find_map(|(name, (k, rest))| {
            (k == "RUN")
                .then(|| cargo_build(rest))
                .flatten()
                .map(|b| (name.clone(), b))
        });
    let Some((builder_name, (bin, features))) = build else {
        return Err("no stage runs `cargo build --release`".into());
    };
    let stage_names: Vec<&str> = builders
        .iter()
        .filter_map(|(_, name, _)| name.as_deref())
        .collect();
    if stage_names.contains(&runtime.0.as_str()) {
        return Err(format!(
            "the last stage starts FROM the stage {}, not a base image",
            runtime.0
        ));
    }
    let mut plan = ChefPlan {
        bin,
        features,
        base: runtime.0.clone(),
        ..ChefPlan::default()
    };
    let mut copied = false;
    for (keyword, rest) in &runtime.2 {
        match keyword.as_str() {
            "COPY" => {
                let (flags, paths) = copy_parts(rest);
                let from_builder = flags
                    .get("from")
                    .is_some_and(|from| Some(from) == builder_name.as_ref());
                let binary_source = paths
                    .first()
                    .is_some_and(|source| source.contains("target/release/"));
                if from_builder && binary_source && paths.len() == 2 && !copied {
                    let destination = absolute(&paths[1], plan.working_dir.as_deref());
                    plan.destination_is_dir = destination.ends_with('/');
                    plan.copied_name = paths[0].rsplit('/').next().unwrap_or_default().to_string();
                    plan.destination = destination;
                    copied = true;
                } else {
                    plan.not_run.push(format!("COPY {rest}"));
                }
            }
            "ENTRYPOINT" => plan.entrypoint = Some(command_words(rest)),
            "CMD" => plan.cmd = Some(command_words(rest)),
            // Relative to the one before, as docker reads it.
            "WORKDIR" => {
                let dir = absolute(rest, plan.working_dir.as_deref());
                let dir = dir.trim_end_matches('/');
                plan.working_dir = Some(if dir.is_empty() {
                    "/".into()
                } else {
                    dir.into()
                });
            }
            "EXPOSE" => plan.exposed_ports.extend(
                rest.split_whitespace()
                    .filter(|port| !port.ends_with("/udp"))
                    .filter_map(|port| port.split('/').next()?.parse::<u16>().ok()),
            ),
            "ENV" => plan.env.extend(env_pairs(rest)),
            "ARG" | "LABEL" | "USER" | "STOPSIGNAL" | "HEALTHCHECK" => {}
            _ => plan.not_run.push(format!("{keyword} {rest}")),
        }
    }
    if !copied {
        return Err(
            "the last stage copies no binary from target/release of the build stage".into(),
        );
    }
    Ok(plan)
}

/// The images a Dockerfile builds on: each `FROM` that names neither an
/// earlier stage nor `scratch`, in order, once each, with the global
/// `ARG`s (those before the first `FROM`) substituted (`$NAME`, `${NAME}`,
/// `${NAME:-default}`).
pub fn base_images(text: &str) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    let mut seen_from = false;
    for (keyword, rest) in instructions(text) {
        match keyword.as_str() {
            "ARG" if !seen_from => {
                for word in rest.split_whitespace() {
                    let (name, value) = word.split_once('=').unwrap_or((word, ""));
                    args.insert(name.to_string(), value.trim_matches('"').to_string());
                }
            }
            "FROM" => {
                seen_from = true;
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|word| !word.starts_with("--"))
                    .collect();
                let image = substitute_args(words.first().copied().unwrap_or_default(), &args);
                let is_stage = stages.contains(&image.to_ascii_lowercase());
                if let [_, as_word, name, ..] = words.as_slice()
                    && as_word.eq_ignore_ascii_case("as")
                {
                    stages.push(name.to_ascii_lowercase());
                }
                if !image.is_empty() && image != "scratch" && !is_stage && !bases.contains(&image) {
                    bases.push(image);
                }
            }
            _ => {}
        }
    }
    bases
}

/// Why a Dockerfile built with buildah is refused, if it is: what would
/// reach past its context and its bases — `ADD` of a URL or a git
/// repository (fetched by the builder, outside the build's network), a
/// `RUN --mount` (caches and binds the builder shares), `COPY --from` an
/// image rather than a stage, and a base that reads as an option.
pub fn buildah_refusal(text: &str) -> Option<String> {
    let mut stages: Vec<String> = Vec::new();
    for (keyword, rest) in instructions(text) {
        match keyword.as_str() {
            "FROM" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|word| !word.starts_with("--"))
                    .collect();
                if let [_, as_word, name, ..] = words.as_slice()
                    && as_word.eq_ignore_ascii_case("as")
                {
                    stages.push(name.to_ascii_lowercase());
                }
            }
            "ADD" | "COPY" => {
                let (flags, paths) = copy_parts(&rest);
                let sources = &paths[..paths.len().saturating_sub(1)];
                if let Some(url) = sources
                    .iter()
                    .find(|source| source.contains("://") || source.starts_with("git@"))
                {
                    return Some(format!(
                        "{keyword} {url}: fetching from the network outside a RUN is not allowed; download it in a RUN step (its network is the build's)"
                    ));
                }
                if let Some(from) = flags.get("from") {
                    let from = from.to_ascii_lowercase();
                    if !stages.contains(&from) && from.parse::<usize>().is_err() {
                        return Some(format!(
                            "{keyword} --from={from}: copying from an image is not allowed; add it as a stage (FROM {from} AS name) so berth hands it over from its registry"
                        ));
                    }
                }
            }
            "RUN" if rest.trim_start().starts_with("--") => {
                return Some(format!(
                    "RUN {}: options of RUN (--mount, --network, --security) are not allowed",
                    rest.split_whitespace().next().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    base_images(text)
        .into_iter()
        .find(|base| base.starts_with('-'))
        .map(|base| format!("FROM {base}: not an image name"))
}

/// `text` with `$NAME`, `${NAME}` and `${NAME:-default}` replaced by the
/// value in `args` (empty when unknown, as docker does).
fn substitute_args(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, default, used) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => {
                    let inner = &braced[..end];
                    let (name, default) = match inner.split_once(":-") {
                        Some((name, default)) => (name, Some(default)),
                        None => (inner, None),
                    };
                    (name, default, end + 2)
                }
                None => (braced, None, after.len()),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], None, end)
        };
        let value = args.get(name).filter(|value| !value.is_empty());
        out.push_str(value.map_or(default.unwrap_or_default(), String::as_str));
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's Dockerfile, as cargo-chef's README prints it.
    const GUIDE: &str = r#"FROM lukemathwalker/cargo-chef:latest-rust-1 AS chef
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Build dependencies - this is the caching Docker layer!
RUN cargo chef cook --release --recipe-path recipe.json
# Build application
COPY . .
RUN cargo build --release --bin app

# We do not need the Rust toolchain to run the binary!
FROM debian:bookworm-slim AS runtime
WORKDIR /app
COPY --from=builder /app/target/release/app /usr/local/bin
ENTRYPOINT ["/usr/local/bin/app"]
"#;

    #[test]
    fn what_would_reach_past_the_context_is_refused_for_buildah() {
        let fine = "FROM shell:v1 AS one\nRUN make\nFROM shell:v1\nCOPY --from=one /a /a\nCOPY --from=0 /b /b\nADD local.tar /x/\n";
        assert_eq!(buildah_refusal(fine), None);
        for (text, said) in [
            (
                "FROM a\nADD http://127.0.0.1:8080/x /x\n",
                "ADD http://127.0.0.1:8080/x",
            ),
            (
                "FROM a\nADD git@github.com:a/b.git /b\n",
                "ADD git@github.com",
            ),
            (
                "FROM a\nCOPY --from=nginx:latest /etc/nginx /n\n",
                "COPY --from=nginx:latest",
            ),
            (
                "FROM a\nRUN --mount=type=cache,id=../../x,target=/c true\n",
                "RUN --mount",
            ),
            (
                "ARG B=--storage-driver=vfs\nFROM ${B}\n",
                "FROM --storage-driver=vfs",
            ),
        ] {
            let refused = buildah_refusal(text).unwrap_or_else(|| panic!("{text} passed"));
            assert!(refused.contains(said), "{refused}");
        }
    }

    #[test]
    fn the_bases_are_the_froms_that_name_no_stage_with_global_args_put_in() {
        let text = "ARG RUST=1.83\nARG BASE\nFROM rust:${RUST} AS build\nRUN cargo build\nFROM --platform=linux/amd64 build AS again\nFROM ${BASE:-debian:bookworm-slim}\nFROM again\nCOPY --from=build /a /a\nFROM scratch\nFROM rust:$RUST\n";
        assert_eq!(
            base_images(text),
            vec!["rust:1.83".to_string(), "debian:bookworm-slim".to_string()]
        );
    }

    #[test]
    fn the_guides_dockerfile_is_a_cargo_build_on_a_base() {
        let plan = chef_plan(GUIDE).unwrap();
        assert_eq!(plan.bin.as_deref(), Some("app"));
        assert_eq!(plan.base, "debian:bookworm-slim");
        // Written without a slash: a folder only if the base has one there
        // (the deploy looks).
        assert_eq!(
            (plan.destination.as_str(), plan.destination_is_dir),
            ("/usr/local/bin", false)
        );
        assert_eq!(plan.copied_name, "app");
        assert_eq!(
            plan.entrypoint,
            Some(vec!["/usr/local/bin/app".to_string()])
        );
        assert_eq!(plan.working_dir.as_deref(), Some("/app"));
        assert!(plan.not_run.is_empty());
    }

    #[test]
    fn berths_own_export_is_built_natively_with_what_it_cannot_run_said() {
        let spec = crate::AppSpec::default();
        let exported = crate::to_dockerfile(&spec, "shop");
        let plan = chef_plan(&exported).unwrap();
        assert_eq!(plan.bin.as_deref(), Some("shop"));
        assert_eq!(
            (plan.destination.as_str(), plan.destination_is_dir),
            ("/usr/local/bin/shop", false)
        );
        assert_eq!(plan.exposed_ports, [8080]);
        assert_eq!(plan.env, [("PORT".to_string(), "8080".to_string())]);
        assert_eq!(plan.cmd.as_ref().unwrap()[..2], ["/bin/sh", "-c"]);
        assert!(
            plan.not_run[0].starts_with("RUN apt-get update"),
            "{:?}",
            plan.not_run
        );
    }

    #[test]
    fn other_dockerfiles_say_why_they_are_not_native() {
        assert!(
            chef_plan("FROM rust\nRUN cargo build --release\n")
                .unwrap_err()
                .contains("cargo chef cook")
        );
        assert!(chef_plan("").unwrap_err().contains("no FROM"));
        let no_copy = GUIDE.replace(
            "COPY --from=builder /app/target/release/app /usr/local/bin\n",
            "",
        );
        assert!(
            chef_plan(&no_copy)
                .unwrap_err()
                .contains("copies no binary")
        );
        // Continued lines and a --features list.
        let features = GUIDE.replace(
            "RUN cargo build --release --bin app",
            "RUN cargo build \\\n    --release --bin app --features tls,metrics",
        );
        assert_eq!(chef_plan(&features).unwrap().features, ["tls", "metrics"]);
        // Exec-form COPY after its flags, a relative destination under a
        // relative WORKDIR, several ENV pairs.
        let exec_form = GUIDE.replace(
            "WORKDIR /app\nCOPY --from=builder /app/target/release/app /usr/local/bin",
            "WORKDIR /srv\nWORKDIR app\nCOPY --from=builder [\"/app/target/release/app\", \"bin/\"]\nENV A=1 B=\"two words\"",
        );
        let plan = chef_plan(&exec_form).unwrap();
        assert_eq!(plan.working_dir.as_deref(), Some("/srv/app"));
        assert_eq!(
            (plan.destination.as_str(), plan.destination_is_dir),
            ("/srv/app/bin/", true)
        );
        assert_eq!(
            plan.env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string())
            ]
        );
    }
}
