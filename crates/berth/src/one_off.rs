//! `berth run`: a one-off command in a task of the app's release, with a
//! terminal when berth runs in one (or with `--tty`), else with its output
//! followed as log lines; `berth console`: the spec's `console_command`.

use std::time::Duration;

use anyhow::{Result, anyhow};
use berth_client::LogFilter;
use berth_proto::RunCommand;

use crate::args::resolve_app;
use crate::cli::Global;
use crate::connect::connect;
use crate::run_args::{AppArg, ConsoleArgs, RunArgs};

/// `berth run`: starts the command and exits with its exit code.
pub(crate) async fn run(global: &Global, args: RunArgs) -> Result<()> {
    // One word is a shell line (`berth run 'migrate && seed'`); several
    // are arguments, quoted for the shell.
    let line = match &args.command[..] {
        [one] => one.clone(),
        words => berth_spec::shell_join(words),
    };
    let request = RunCommand {
        command: line,
        timeout_secs: Some(timeout_secs(&args.timeout)?),
        ..RunCommand::default()
    };
    let terminal = args.tty || (!args.no_tty && !args.detach && crate::tty::interactive());
    start(global, &args.app, request, terminal, args.detach).await
}

/// `berth console`: the spec's `console_command`, on a terminal.
pub(crate) async fn console(global: &Global, args: ConsoleArgs) -> Result<()> {
    let request = RunCommand {
        console: true,
        timeout_secs: Some(timeout_secs(&args.timeout)?),
        ..RunCommand::default()
    };
    start(global, &args.app, request, true, false).await
}

fn timeout_secs(timeout: &str) -> Result<u64> {
    let timeout =
        berth_spec::parse_duration(timeout).map_err(|why| anyhow!("--timeout {timeout}: {why}"))?;
    Ok(timeout.as_secs().max(1))
}

async fn start(
    global: &Global,
    app: &AppArg,
    request: RunCommand,
    terminal: bool,
    detach: bool,
) -> Result<()> {
    let app = resolve_app(app)?;
    let client = connect(global, false).await?;
    if terminal {
        let code = crate::terminal::run_on_terminal(&client, &app, request).await?;
        if code != 0 {
            std::process::exit(code.clamp(1, 255));
        }
        return Ok(());
    }
    let execution = client.run_command(&app, &request).await?;
    let id = execution.id;
    if detach {
        if global.json {
            say!("{}", serde_json::to_string_pretty(&execution)?);
        } else {
            say!("execution {id} started; its output: berth jobs logs {id} --app {app} -f");
        }
        return Ok(());
    }
    let filter = LogFilter {
        execution: Some(id),
        limit: Some(10_000),
        ..LogFilter::default()
    };
    let mut stream = client.follow_logs(&app, &filter).await?;
    // Lines come through a task, so waiting for the end never drops one.
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stream.next().await {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let print = |line: berth_proto::LogLine| match line.stream {
        berth_proto::LogStream::Stdout => say!("{}", line.message),
        berth_proto::LogStream::Stderr => eprintln!("{}", line.message),
        _ => {}
    };
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let finished = loop {
        tokio::select! {
            Some(line) = lines.recv() => print(line),
            _ = poll.tick() => {
                let info = client.execution(&app, id).await?;
                if info.finished_at.is_some() {
                    break info;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                client.cancel_execution(&app, id).await?;
            }
        }
    };
    // The last lines reach the log store just after the exit.
    let drain_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(line)) = tokio::time::timeout_at(drain_until, lines.recv()).await {
        print(line);
    }
    let code = finished
        .attempts
        .last()
        .and_then(|attempt| attempt.exit_code)
        .unwrap_or(
            if finished.status == berth_proto::ExecutionStatus::Succeeded {
                0
            } else {
                1
            },
        );
    if code != 0 {
        if let Some(message) = &finished.message {
            eprintln!("berth run: {message}");
        }
        std::process::exit(code.clamp(1, 255));
    }
    Ok(())
}
