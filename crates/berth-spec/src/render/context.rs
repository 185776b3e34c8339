//! What converting every service shares: the problem list (located by the
//! service a problem belongs to), the file's databases and key-value stores
//! and their owners, and reading a YAML scalar as text.

use std::collections::BTreeMap;

use super::raw::{RawDatabase, RawService};
use crate::error::{Location, SpecProblem};

/// Render's instance types: plan, CPUs, memory in MiB.
pub const RENDER_PLANS: &[(&str, f64, u32)] = &[
    ("free", 0.1, 512),
    ("starter", 0.5, 512),
    ("starter plus", 1.0, 1024),
    ("standard", 1.0, 2048),
    ("standard plus", 1.5, 3072),
    ("pro", 2.0, 4096),
    ("pro plus", 4.0, 8192),
    ("pro max", 4.0, 16384),
    ("pro ultra", 8.0, 32768),
];

/// Problems, located by the service they belong to.
pub(super) struct Problems<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) found: Vec<SpecProblem>,
}

impl Problems<'_> {
    /// Reports `message` at the line that names `name` (`name: api`), or
    /// at `key` after it when given.
    pub(super) fn at(&mut self, name: &str, key: Option<&str>, message: String) {
        let location = locate(self.text, name, key);
        self.found.push(SpecProblem { location, message });
    }
}

/// Finds `name: <name>` in `text`, then the first `key:` after it.
pub(super) fn locate(text: &str, name: &str, key: Option<&str>) -> Option<Location> {
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = trimmed.strip_prefix("name:")
            && rest.trim().trim_matches(['"', '\'']) == name
        {
            start = Some(offset + line.len() - line.trim_start().len());
            if key.is_none() {
                break;
            }
        } else if let (Some(_), Some(key)) = (start, key)
            && trimmed.starts_with(&format!("{key}:"))
        {
            return Some(Location::of_offset(
                text,
                offset + line.len() - line.trim_start().len(),
            ));
        }
        offset += line.len();
    }
    start.map(|offset| Location::of_offset(text, offset))
}
pub(super) fn scalar(value: &serde_norway::Value) -> String {
    match value {
        serde_norway::Value::String(text) => text.clone(),
        serde_norway::Value::Bool(flag) => flag.to_string(),
        serde_norway::Value::Number(number) => number.to_string(),
        serde_norway::Value::Null => String::new(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// What every service's conversion reads: the file, the package's binary,
/// and who owns each shared database and key-value store.
pub(super) struct Shared<'a> {
    pub(super) file: &'a str,
    pub(super) default_binary: Option<&'a str>,
    pub(super) databases: BTreeMap<&'a str, &'a RawDatabase>,
    pub(super) key_values: BTreeMap<&'a str, &'a RawService>,
    pub(super) app_services: &'a [&'a RawService],
    pub(super) database_owner: BTreeMap<String, String>,
    pub(super) redis_owner: BTreeMap<String, String>,
}
