//! Validating `[edge]`: who may reach the app and how much.

use super::shapes::{Problems, RawEdge};
use super::*;
use crate::model::{EdgeSpec, RateLimitSpec};

pub(super) fn validate_edge(raw: RawEdge, problems: &mut Problems<'_>) -> EdgeSpec {
    let mut spec = EdgeSpec::default();
    for (list, key, into) in [
        (raw.allow, "allow", &mut spec.allow),
        (raw.deny, "deny", &mut spec.deny),
    ] {
        for range in list {
            match range.get_ref().parse::<berth_proto::IpRange>() {
                Ok(parsed) => into.push(parsed),
                Err(why) => problems.at(&range, format!("[edge] {key}: {why}")),
            }
        }
    }
    if let Some(size) = &raw.max_body {
        match super::values::size_bytes(size.get_ref()) {
            Some(0) | None => problems.at(
                size,
                "[edge] max_body must be a size above zero, such as \"10mb\" or a number of bytes"
                    .into(),
            ),
            Some(bytes) => spec.max_body_bytes = Some(bytes),
        }
    }
    if let Some(size) = &raw.max_header {
        match super::values::size_bytes(size.get_ref()) {
            Some(bytes) if bytes >= 1024 => spec.max_header_bytes = Some(bytes),
            _ => problems.at(
                size,
                "[edge] max_header must be a size of at least 1kb, such as \"16kb\"".into(),
            ),
        }
    }
    if let Some(count) = &raw.max_connections {
        match u32::try_from(*count.get_ref()) {
            Ok(count) if count > 0 => spec.max_connections = Some(count),
            _ => problems.at(
                count,
                "[edge] max_connections must be 1 or more (connections one client address may hold)"
                    .into(),
            ),
        }
    }
    if let Some(timeout) = &raw.request_timeout {
        match parse_duration(timeout.get_ref()) {
            Ok(limit) if limit.as_millis() >= 1 => spec.request_timeout = Some(limit),
            _ => problems.at(
                timeout,
                format!(
                    "[edge] request_timeout: `{}` is not a duration of 1ms or more, such as \"30s\"",
                    timeout.get_ref()
                ),
            ),
        }
    }
    for limit in raw.rate_limits {
        let Some(requests) = limit.requests else {
            problems.found.push(crate::error::SpecProblem {
                location: None,
                message: "[[edge.rate_limits]] needs `requests` (how many per `per`)".into(),
            });
            continue;
        };
        let count = match u32::try_from(*requests.get_ref()) {
            Ok(count) if count > 0 => count,
            _ => {
                problems.at(
                    &requests,
                    "[[edge.rate_limits]] requests must be 1 or more: a rate of zero would refuse everything (use [edge] deny for that)".into(),
                );
                continue;
            }
        };
        let per = match &limit.per {
            None => std::time::Duration::from_secs(1),
            Some(per) => match parse_duration(per.get_ref()) {
                Ok(per) if !per.is_zero() => per,
                _ => {
                    problems.at(
                        per,
                        format!(
                            "[[edge.rate_limits]] per: `{}` is not a duration such as \"1s\" or \"1m\"",
                            per.get_ref()
                        ),
                    );
                    continue;
                }
            },
        };
        let burst = match &limit.burst {
            None => count,
            Some(burst) => match u32::try_from(*burst.get_ref()) {
                Ok(burst) if burst > 0 => burst,
                _ => {
                    problems.at(burst, "[[edge.rate_limits]] burst must be 1 or more".into());
                    continue;
                }
            },
        };
        let path = match limit.path {
            Some(path) if !path.get_ref().starts_with('/') => {
                problems.at(
                    &path,
                    "[[edge.rate_limits]] path must start with `/` (a URL path prefix)".into(),
                );
                continue;
            }
            other => other.map(Spanned::into_inner),
        };
        spec.rate_limits.push(RateLimitSpec {
            requests: count,
            per,
            burst,
            path,
        });
    }
    spec
}
