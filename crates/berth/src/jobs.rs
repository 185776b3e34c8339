//! `berth jobs`: list, run, show executions and their logs; `berth run`:
//! a one-off command.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use berth_client::LogFilter;

use crate::args::*;
use crate::cli::{AppArg, Global, JobsCommand};
use crate::connect::connect;
use crate::logs::show_logs;
use crate::output;

pub(crate) async fn jobs(global: &Global, command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List(app) => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let jobs = client.jobs(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|job| {
                    vec![
                        job.name.clone(),
                        job.schedule.clone().unwrap_or_else(|| "-".into()),
                        job.next_run.clone().unwrap_or_else(|| "-".into()),
                        job.last_execution
                            .as_ref()
                            .map(|execution| format!("#{} {}", execution.id, execution.status))
                            .unwrap_or_else(|| "-".into()),
                        format!("{}/{}", job.tasks, job.parallelism),
                        job.command.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "JOB",
                    "SCHEDULE",
                    "NEXT RUN",
                    "LAST",
                    "TASKS/PAR",
                    "COMMAND",
                ],
                &rows,
            );
        }
        JobsCommand::Run {
            name,
            wait,
            tasks,
            env,
            app,
        } => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let request = berth_proto::RunJob {
                tasks,
                env: parse_pairs(&env, "KEY=VALUE")?.into_iter().collect(),
            };
            let mut execution = client.run_job(&app, &name, &request).await?;
            if !global.json {
                eprintln!(
                    "==> started execution {} of job {name} ({} task(s))",
                    execution.id, execution.tasks
                );
            }
            if wait {
                while execution.status == berth_proto::ExecutionStatus::Running {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    execution = client.execution(&app, execution.id).await?;
                }
            }
            if global.json {
                say!("{}", serde_json::to_string_pretty(&execution)?);
            } else if wait {
                eprintln!(
                    "==> execution {} {}: {}",
                    execution.id,
                    execution.status,
                    execution.message.clone().unwrap_or_default()
                );
            } else {
                say!("{}", execution.id);
            }
            if wait && execution.status != berth_proto::ExecutionStatus::Succeeded {
                bail!(
                    "execution {} {}; see `berth jobs logs {}`",
                    execution.id,
                    execution.status,
                    execution.id
                );
            }
        }
        JobsCommand::History { name, limit, app } => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let executions = client.job_executions(&app, &name, limit).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&executions)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = executions
                .iter()
                .map(|execution| {
                    let exit_codes: Vec<String> = execution
                        .attempts
                        .iter()
                        .map(|attempt| match attempt.exit_code {
                            Some(code) => code.to_string(),
                            None => attempt.status.to_string(),
                        })
                        .collect();
                    vec![
                        execution.id.to_string(),
                        execution.trigger.to_string(),
                        execution.status.to_string(),
                        execution.started_at.clone(),
                        duration_between(&execution.started_at, execution.finished_at.as_deref()),
                        format!("{}/{}", execution.succeeded, execution.tasks),
                        execution.failed.to_string(),
                        exit_codes.join(","),
                    ]
                })
                .collect();
            output::table(
                &[
                    "EXECUTION",
                    "TRIGGER",
                    "STATUS",
                    "STARTED",
                    "DURATION",
                    "SUCCEEDED",
                    "FAILED",
                    "EXIT CODES",
                ],
                &rows,
            );
        }
        JobsCommand::Logs {
            execution,
            follow,
            app,
        } => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let filter = LogFilter {
                execution: Some(execution),
                limit: Some(10_000),
                ..LogFilter::default()
            };
            show_logs(&client, &app, &filter, follow, global.json).await?;
        }
        JobsCommand::Cancel { execution, app } => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let execution = client.cancel_execution(&app, execution).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&execution)?);
            } else {
                say!("execution {} {}", execution.id, execution.status);
            }
        }
    }
    Ok(())
}

pub(crate) fn duration_between(start: &str, end: Option<&str>) -> String {
    use time::format_description::well_known::Rfc3339;
    let parse = |text: &str| time::OffsetDateTime::parse(text, &Rfc3339).ok();
    let Some(start) = parse(start) else {
        return "-".into();
    };
    let end = end
        .and_then(parse)
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let millis = (end - start).whole_milliseconds().max(0);
    format!("{:.1}s", millis as f64 / 1000.0)
}

/// `berth run`: starts `command` as a one-off task of the app's release,
/// prints its output as it comes, and exits with its exit code. Ctrl-C
/// stops it.
pub(crate) async fn run(
    global: &Global,
    app: &AppArg,
    command: &[String],
    timeout: &str,
    detach: bool,
) -> Result<()> {
    let app = resolve_app(app)?;
    let timeout =
        berth_spec::parse_duration(timeout).map_err(|why| anyhow!("--timeout {timeout}: {why}"))?;
    // One word is a shell line (`berth run 'migrate && seed'`); several
    // are arguments, quoted for the shell.
    let line = match command {
        [one] => one.clone(),
        words => berth_spec::shell_join(words),
    };
    let client = connect(global, false).await?;
    let request = berth_proto::RunCommand {
        command: line,
        env: Default::default(),
        timeout_secs: Some(timeout.as_secs().max(1)),
    };
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

/// The one-off commands (`berth run`) that run now, for `berth status`.
pub(crate) async fn print_one_offs(client: &berth_client::Client, app: &str) {
    let Ok(runs) = client.job_executions(app, ONE_OFF_JOB, 200).await else {
        return;
    };
    for run in runs.iter().filter(|run| run.finished_at.is_none()) {
        say!(
            "one-off:  execution {} (berth run) running since {}; berth jobs logs {} --app {app} -f",
            run.id,
            run.started_at,
            run.id
        );
    }
}

/// The job one-off commands run as (the server's `ONE_OFF_JOB`).
const ONE_OFF_JOB: &str = "berth-run";
