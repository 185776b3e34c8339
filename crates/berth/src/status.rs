//! `berth status`: one app at a glance — its release, process groups,
//! instances, domains, edge counts and running one-off commands.

use anyhow::Result;

use crate::args::*;
use crate::cli::{AppArg, Global};
use crate::connect::connect;
use crate::output;

pub(crate) async fn status(global: &Global, app: &AppArg) -> Result<()> {
    let app = resolve_app(app)?;
    let client = connect(global, false).await?;
    let status = client.status(&app).await?;
    if global.json {
        say!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    say!("App:     {}", status.name);
    say!("URL:     {}", status.url);
    if let Ok(Some(tunnel)) = client.tunnel().await {
        say!("Tunnel:  {}", output::tunnel_line(&tunnel));
    }
    match &status.release {
        Some(release) => say!(
            "Release: v{} ({}, {}) {}",
            release.version,
            release.status,
            release.cause,
            release.created_at
        ),
        None => say!("Release: none yet (deploy with `berth up`)"),
    }
    if !status.processes.is_empty() {
        say!();
        let rows: Vec<Vec<String>> = status
            .processes
            .iter()
            .map(|group| {
                let scale = match (group.autoscaled, group.min, group.max) {
                    (true, Some(min), Some(max)) => format!("auto {min}..{max}"),
                    _ => "manual".into(),
                };
                let why = [group.reason.clone(), group.why.clone()]
                    .into_iter()
                    .flatten()
                    .filter(|text| text != "manual" && text != "scaled to zero")
                    .collect::<Vec<_>>()
                    .join("; ");
                vec![
                    group.name.clone(),
                    format!("{}/{}", group.running, group.desired),
                    scale,
                    group.health.to_string(),
                    why,
                    group.command.clone(),
                ]
            })
            .collect();
        output::table(
            &["PROCESS", "RUNNING", "SCALE", "HEALTH", "WHY", "COMMAND"],
            &rows,
        );
    }
    crate::jobs::print_one_offs(&client, &app).await;
    for domain in &status.domains {
        let state = match (&domain.expires, &domain.problem) {
            (Some(expires), None) => format!("certificate until {expires}"),
            (Some(expires), Some(problem)) => {
                format!("certificate until {expires}; cannot renew: {problem}")
            }
            (None, Some(problem)) => format!("no certificate: {problem}"),
            (None, None) => domain.issuer.clone(),
        };
        say!("domain:   {} ({state})", domain.name);
    }
    let logs = &status.logs;
    if logs.max_bytes > 0 {
        say!(
            "logs:     {} of {} kept, {} back",
            output::bytes(logs.bytes),
            output::bytes(logs.max_bytes),
            if logs.retain_secs % 86_400 == 0 {
                format!("{}d", logs.retain_secs / 86_400)
            } else {
                berth_proto::format_duration(std::time::Duration::from_secs(logs.retain_secs))
            }
        );
    }
    let edge = &status.edge;
    if edge.denied + edge.rate_limited + edge.too_large + edge.over_connections + edge.timed_out > 0
    {
        say!(
            "edge:     {} denied by address, {} rate-limited, {} too large, {} over the connection limit, {} timed out",
            edge.denied,
            edge.rate_limited,
            edge.too_large,
            edge.over_connections,
            edge.timed_out
        );
    }
    if !status.instances.is_empty() {
        say!();
        let rows: Vec<Vec<String>> = status
            .instances
            .iter()
            .map(|instance| {
                vec![
                    instance.id.clone(),
                    format!("v{}", instance.release),
                    instance.state.to_string(),
                    if instance.healthy {
                        "passing".into()
                    } else {
                        "-".into()
                    },
                    instance.restarts.to_string(),
                    output::duration(instance.uptime_secs),
                    instance
                        .port
                        .map(|port| port.to_string())
                        .unwrap_or_else(|| "-".into()),
                    instance
                        .pid
                        .map(|pid| pid.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        output::table(
            &[
                "INSTANCE", "RELEASE", "STATE", "HEALTH", "RESTARTS", "UPTIME", "PORT", "PID",
            ],
            &rows,
        );
    }
    Ok(())
}
