//! Render services berth builds without cargo: static sites the router
//! serves (`runtime: static`), and services in other languages (`node`,
//! `python`, …) built and run with the toolchain the server has.

use super::context::Problems;
use super::raw::RawService;
use crate::{SiteHeader, SiteRule, SiteSpec};

/// Runtimes berth runs through their `buildCommand` and `startCommand`
/// with the server's own toolchain.
pub(super) const COMMAND_RUNTIMES: &[&str] = &["node", "python", "go", "ruby", "elixir", "bun"];

/// `command` run in the service's `rootDir` (a monorepo's folder).
pub(super) fn in_root_dir(service: &RawService, command: &str) -> String {
    match root_dir(service) {
        Some(root) => format!("cd {} && {command}", crate::shell_join(&[root])),
        None => command.to_string(),
    }
}

fn root_dir(service: &RawService) -> Option<String> {
    let root = service.root_dir.as_deref()?.trim_matches('/');
    let root = root.strip_prefix("./").unwrap_or(root);
    (!root.is_empty() && root != ".").then(|| root.to_string())
}

/// The site of a `runtime: static` service: its publish folder (under its
/// `rootDir`), routes and headers.
pub(super) fn static_site(problems: &mut Problems<'_>, service: &RawService) -> Option<SiteSpec> {
    let publish = service
        .static_publish_path
        .as_deref()
        .unwrap_or("public")
        .trim_start_matches("./")
        .trim_end_matches('/');
    let dir = match root_dir(service) {
        Some(root) => format!("{root}/{publish}"),
        None => publish.to_string(),
    };
    if dir.is_empty()
        || dir.starts_with('/')
        || dir
            .split('/')
            .any(|part| part == ".." || part == "." || part.is_empty())
    {
        problems.at(
            &service.name,
            Some("staticPublishPath"),
            format!(
                "service `{}`: staticPublishPath `{publish}` must be a folder of the repository (not the whole of it)",
                service.name
            ),
        );
        return None;
    }
    let mut site = SiteSpec {
        dir,
        rules: Vec::new(),
        headers: Vec::new(),
    };
    let text = |value: &serde_norway::Value, key: &str| {
        value.get(key).and_then(|v| v.as_str()).map(str::to_string)
    };
    let valid_path = |path: &str| path.starts_with('/') && !path.contains(['\r', '\n']);
    for route in list(&service.routes) {
        let kind = text(route, "type").unwrap_or_default();
        let (Some(source), Some(destination)) = (text(route, "source"), text(route, "destination"))
        else {
            problems.at(
                &service.name,
                Some("routes"),
                format!(
                    "service `{}`: each route needs source and destination",
                    service.name
                ),
            );
            continue;
        };
        let redirect = match kind.as_str() {
            "rewrite" => None,
            "redirect" => Some(301),
            other => {
                problems.at(
                    &service.name,
                    Some("routes"),
                    format!(
                        "service `{}`: route type `{other}`: use rewrite or redirect",
                        service.name
                    ),
                );
                continue;
            }
        };
        let destination_ok = valid_path(&destination)
            || (redirect.is_some()
                && (destination.starts_with("https://") || destination.starts_with("http://"))
                && !destination.contains(['\r', '\n']));
        if !valid_path(&source) || !destination_ok {
            problems.at(
                &service.name,
                Some("routes"),
                format!(
                    "service `{}`: route {source} → {destination}: paths start with `/` (a redirect may go to an http(s) URL)",
                    service.name
                ),
            );
            continue;
        }
        site.rules.push(SiteRule {
            source,
            destination,
            redirect,
        });
    }
    for header in list(&service.headers) {
        let (Some(path), Some(name), Some(value)) = (
            text(header, "path"),
            text(header, "name"),
            text(header, "value"),
        ) else {
            problems.at(
                &service.name,
                Some("headers"),
                format!(
                    "service `{}`: each header needs path, name and value",
                    service.name
                ),
            );
            continue;
        };
        let token = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !token || value.contains(['\r', '\n', '\0']) || !valid_path(&path) {
            problems.at(
                &service.name,
                Some("headers"),
                format!(
                    "service `{}`: header `{name}` for {path} is not a valid header",
                    service.name
                ),
            );
            continue;
        }
        site.headers.push(SiteHeader { path, name, value });
    }
    Some(site)
}

fn list(value: &Option<serde_norway::Value>) -> &[serde_norway::Value] {
    match value {
        Some(serde_norway::Value::Sequence(items)) => items,
        _ => &[],
    }
}
