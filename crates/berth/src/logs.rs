//! `berth logs` and `berth events`, once or following.

use anyhow::Result;
use berth_client::{Client, LogFilter};

use crate::args::*;
use crate::cli::{AppArg, Global, LogsArgs};
use crate::connect::connect;
use crate::log_args::LogsCommand;
use crate::output;

pub(crate) async fn logs(global: &Global, args: LogsArgs) -> Result<()> {
    if let Some(LogsCommand::Drain { command }) = args.command {
        return crate::drains::drain(global, command).await;
    }
    let app = resolve_app(&args.app)?;
    let client: Client = connect(global, false).await?;
    let filter = LogFilter {
        since: args.since,
        process: args.process,
        instance: args.instance,
        execution: None,
        level: args.level,
        until: args.until,
        grep: args.grep,
        filter: args.filter,
        search: args.search,
        limit: Some(args.limit),
    };
    show_logs(&client, &app, &filter, args.follow, global.json).await
}

/// Prints stored log lines, then (with `follow`) new ones as they come.
pub(crate) async fn show_logs(
    client: &Client,
    app: &str,
    filter: &LogFilter,
    follow: bool,
    json: bool,
) -> Result<()> {
    let print = |line: &berth_proto::LogLine| {
        if json {
            if let Ok(text) = serde_json::to_string(line) {
                say!("{text}");
            }
        } else {
            say!("{}", output::log_line(line));
        }
    };
    if follow {
        let mut stream = client.follow_logs(app, filter).await?;
        while let Some(line) = stream.next().await? {
            print(&line);
        }
    } else {
        for line in client.logs(app, filter).await? {
            print(&line);
        }
    }
    Ok(())
}

pub(crate) async fn events(global: &Global, app: &AppArg, follow: bool, limit: u32) -> Result<()> {
    let app = resolve_app(app)?;
    let client = connect(global, false).await?;
    let print = |event: &berth_proto::EventInfo| {
        if global.json {
            if let Ok(text) = serde_json::to_string(event) {
                say!("{text}");
            }
        } else {
            say!("{} {:<18} {}", event.at, event.kind, event.message);
        }
    };
    if follow {
        let mut stream = client.follow_events(&app, limit).await?;
        while let Some(event) = stream.next().await? {
            print(&event);
        }
    } else {
        for event in client.events(&app, limit).await? {
            print(&event);
        }
    }
    Ok(())
}
