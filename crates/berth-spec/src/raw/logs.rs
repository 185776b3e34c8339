//! Validating `[logs]`.

use super::shapes::{Problems, RawLogs};
use super::*;
use crate::LogsSpec;

/// The least a spec may keep: a minute of lines, and 64 KiB.
const MIN_RETAIN: std::time::Duration = std::time::Duration::from_secs(60);
const MIN_BYTES: u64 = 64 * 1024;
/// The most: ten years.
const MAX_RETAIN: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);

pub(super) fn validate_logs(raw: RawLogs, problems: &mut Problems<'_>) -> LogsSpec {
    let mut spec = LogsSpec {
        access: raw.access,
        ..LogsSpec::default()
    };
    if let Some(retain) = &raw.retain {
        match parse_duration(retain.get_ref()) {
            Ok(age) if (MIN_RETAIN..=MAX_RETAIN).contains(&age) => spec.retain = Some(age),
            _ => problems.at(
                retain,
                format!(
                    "[logs] retain: `{}` is not a duration from a minute to ten years, such as \"14d\"",
                    retain.get_ref()
                ),
            ),
        }
    }
    if let Some(size) = &raw.max_size {
        match super::values::size_bytes(size.get_ref()) {
            Some(bytes) if bytes >= MIN_BYTES => spec.max_bytes = Some(bytes),
            _ => problems.at(
                size,
                "[logs] max_size must be a size of at least 64kb, such as \"1gb\"".into(),
            ),
        }
    }
    spec
}
