//! `berth edge`: an app's edge rules set from the command line, kept
//! across deploys and added to what its berth.toml's `[edge]` sets.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_proto::{AppEdge, EdgeRuleSet, IpRange, RateLimit};

use crate::args::resolve_app;
use crate::cli::{EdgeCommand, Global};
use crate::connect::connect;

pub async fn edge(global: &Global, command: EdgeCommand) -> Result<()> {
    let app = match &command {
        EdgeCommand::Show { app }
        | EdgeCommand::Allow { app, .. }
        | EdgeCommand::Deny { app, .. }
        | EdgeCommand::Limit { app, .. }
        | EdgeCommand::Set { app, .. }
        | EdgeCommand::Remove { app, .. }
        | EdgeCommand::Clear { app } => resolve_app(app)?,
    };
    let client = connect(global, false).await?;
    let current = client.edge(&app).await?;
    let rules = match changed(current.from_cli.clone(), command)? {
        Some(rules) => client.set_edge(&app, &rules).await?,
        None => current,
    };
    if global.json {
        say!("{}", serde_json::to_string_pretty(&rules)?);
    } else {
        show(&rules);
    }
    Ok(())
}

/// The rules set here after `command`, or `None` when it only shows them.
fn changed(mut rules: EdgeRuleSet, command: EdgeCommand) -> Result<Option<EdgeRuleSet>> {
    match command {
        EdgeCommand::Show { .. } => return Ok(None),
        EdgeCommand::Allow { ranges, .. } => add(&mut rules.allow, &ranges)?,
        EdgeCommand::Deny { ranges, .. } => add(&mut rules.deny, &ranges)?,
        EdgeCommand::Limit {
            rate, burst, path, ..
        } => {
            let mut limit = parse_rate(&rate)?;
            if let Some(burst) = burst {
                limit.burst = burst;
            }
            limit.path = path;
            rules.rate_limits.retain(|other| other != &limit);
            rules.rate_limits.push(limit);
        }
        EdgeCommand::Set {
            max_body,
            max_header,
            max_connections,
            request_timeout,
            ..
        } => {
            if max_body.is_none()
                && max_header.is_none()
                && max_connections.is_none()
                && request_timeout.is_none()
            {
                bail!(
                    "say what to set: --max-body, --max-header, --max-connections or --request-timeout"
                );
            }
            if let Some(size) = max_body {
                rules.max_body = Some(size_of("--max-body", &size)?);
            }
            if let Some(size) = max_header {
                rules.max_header = Some(size_of("--max-header", &size)?);
            }
            if max_connections.is_some() {
                rules.max_connections = max_connections;
            }
            if let Some(timeout) = request_timeout {
                let limit = berth_spec::parse_duration(&timeout)
                    .map_err(|why| anyhow::anyhow!("--request-timeout: {why}"))?;
                rules.request_timeout_ms = Some(limit.as_millis() as u64);
            }
        }
        EdgeCommand::Remove { rules: named, .. } => {
            for name in named {
                remove(&mut rules, &name)?;
            }
        }
        EdgeCommand::Clear { .. } => rules = EdgeRuleSet::default(),
    }
    let problems = rules.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(Some(rules))
}

fn add(list: &mut Vec<IpRange>, ranges: &[String]) -> Result<()> {
    for text in ranges {
        let range: IpRange = text
            .parse()
            .map_err(|why| anyhow::anyhow!("`{text}`: {why}"))?;
        if !list.contains(&range) {
            list.push(range);
        }
    }
    Ok(())
}

fn size_of(flag: &str, text: &str) -> Result<u64> {
    berth_spec::parse_size(text)
        .filter(|bytes| *bytes > 0)
        .with_context(|| format!("{flag}: `{text}` is not a size such as 16kb or 10mb"))
}

/// `100/1m`, `10/s`, `5/500ms`: requests per window, bursting to the count.
fn parse_rate(text: &str) -> Result<RateLimit> {
    let wrong =
        || anyhow::anyhow!("`{text}` is not a rate: write REQUESTS/WINDOW, such as 100/1m or 10/s");
    let (count, window) = text.split_once('/').ok_or_else(wrong)?;
    let requests: u32 = count.trim().parse().map_err(|_| wrong())?;
    if requests == 0 {
        bail!("`{text}`: a rate of zero would refuse everything; use `berth edge deny` for that");
    }
    let window = window.trim();
    let window = if window.starts_with(|c: char| c.is_ascii_digit()) {
        berth_spec::parse_duration(window)
    } else {
        berth_spec::parse_duration(&format!("1{window}"))
    }
    .map_err(|_| wrong())?;
    if window.is_zero() {
        return Err(wrong());
    }
    Ok(RateLimit {
        requests,
        per_ms: window.as_millis() as u64,
        burst: requests,
        path: None,
    })
}

/// A rate as `berth edge show` writes it, which `remove` takes back.
fn rate_text(limit: &RateLimit) -> String {
    format!(
        "{}/{}",
        limit.requests,
        berth_spec::format_duration(Duration::from_millis(limit.per_ms))
    )
}

fn remove(rules: &mut EdgeRuleSet, name: &str) -> Result<()> {
    match name {
        "max-body" => rules.max_body = None,
        "max-header" => rules.max_header = None,
        "max-connections" => rules.max_connections = None,
        "request-timeout" => rules.request_timeout_ms = None,
        _ if name
            .split_once('/')
            .is_some_and(|(count, _)| count.chars().all(|c| c.is_ascii_digit())) =>
        {
            let before = rules.rate_limits.len();
            rules.rate_limits.retain(|limit| rate_text(limit) != name);
            if rules.rate_limits.len() == before {
                bail!("no rate limit `{name}` was set with `berth edge`");
            }
        }
        _ => {
            let range: IpRange = name.parse().map_err(|why| {
                anyhow::anyhow!(
                    "`{name}` is not a rule: give a range, a rate (100/1m), or max-body, max-header, max-connections, request-timeout ({why})"
                )
            })?;
            let before = rules.allow.len() + rules.deny.len();
            rules.allow.retain(|other| other != &range);
            rules.deny.retain(|other| other != &range);
            if rules.allow.len() + rules.deny.len() == before {
                bail!("`{name}` is in neither list set with `berth edge`");
            }
        }
    }
    Ok(())
}

fn show(edge: &AppEdge) {
    say!("edge rules of {}", edge.app);
    let sources = [
        ("berth.toml", &edge.from_spec),
        ("berth edge", &edge.from_cli),
    ];
    let mut any = false;
    for (source, rules) in sources {
        for line in lines(rules) {
            say!("  {line:<40} ({source})");
            any = true;
        }
    }
    if !any {
        say!("  none: every client may reach it, at any rate");
    }
}

/// One line per rule.
fn lines(rules: &EdgeRuleSet) -> Vec<String> {
    let ranges = |list: &[IpRange]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = Vec::new();
    if !rules.allow.is_empty() {
        lines.push(format!("allow {}", ranges(&rules.allow)));
    }
    if !rules.deny.is_empty() {
        lines.push(format!("deny {}", ranges(&rules.deny)));
    }
    for limit in &rules.rate_limits {
        let mut line = format!("limit {} burst {}", rate_text(limit), limit.burst);
        if let Some(path) = &limit.path {
            line.push_str(&format!(" under {path}"));
        }
        lines.push(line);
    }
    if let Some(bytes) = rules.max_body {
        lines.push(format!("max body {bytes} bytes"));
    }
    if let Some(bytes) = rules.max_header {
        lines.push(format!("max header {bytes} bytes"));
    }
    if let Some(count) = rules.max_connections {
        lines.push(format!("max {count} connections per client"));
    }
    if let Some(ms) = rules.request_timeout_ms {
        lines.push(format!(
            "request timeout {}",
            berth_spec::format_duration(Duration::from_millis(ms))
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_written_and_come_back_the_same() {
        let limit = parse_rate("100/1m").unwrap();
        assert_eq!(
            (limit.requests, limit.per_ms, limit.burst),
            (100, 60_000, 100)
        );
        assert_eq!(rate_text(&limit), "100/1m");
        assert_eq!(parse_rate("10/s").unwrap().per_ms, 1000);
        assert_eq!(parse_rate("5/500ms").unwrap().per_ms, 500);
        for bad in ["100", "0/1m", "x/1m", "10/soon", "10/0s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn removing_takes_only_what_was_set_here() {
        let mut rules = EdgeRuleSet::default();
        add(&mut rules.deny, &["10.0.0.0/8".into()]).unwrap();
        rules.rate_limits.push(parse_rate("10/s").unwrap());
        rules.max_connections = Some(4);
        remove(&mut rules, "10.0.0.0/8").unwrap();
        remove(&mut rules, "10/1s").unwrap();
        rules.rate_limits.push(parse_rate("5/1500ms").unwrap());
        remove(&mut rules, "5/1.5s").unwrap();
        remove(&mut rules, "max-connections").unwrap();
        assert!(rules.is_empty());
        assert!(remove(&mut rules, "10.0.0.0/8").is_err());
        assert!(remove(&mut rules, "nonsense").is_err());
        assert!(add(&mut rules.allow, &["10.1.0.0/8".into()]).is_err());
    }
}
