//! `berth jobs`: list, run, show executions and their logs.

use anyhow::{Result, bail};
use berth_client::LogFilter;

use crate::args::*;
use crate::cli::{Global, JobsCommand};
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
