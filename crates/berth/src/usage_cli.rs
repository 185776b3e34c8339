//! `berth usage`, `berth cost`, `berth budget` and `berth notify`. Cost is
//! priced here, from the server's usage rows and the price tables (berth's,
//! or a folder given with `--prices`), so a user can try their own prices.

use anyhow::{Context, Result, anyhow, bail};
use berth_cost::{CalendarMonth, Month, PriceTable, ServerShare, price_all};
use berth_proto::{
    AddNotifyChannel, BudgetAction, BudgetSettings, BudgetStatus, NotifyFormat, SetBudget,
};

use crate::args::{parse_pairs, resolve_app};
use crate::cli::Global;
use crate::connect::connect;
use crate::output;
use crate::run_args::AppArg;
use crate::usage_args::{BudgetCommand, BudgetTarget, CostArgs, NotifyCommand, UsageArgs};

pub(crate) async fn usage(global: &Global, args: UsageArgs) -> Result<()> {
    let back = berth_spec::parse_duration(&args.since)
        .map_err(|err| anyhow!("--since {}: {err}", args.since))?;
    if !["day", "hour", "minute"].contains(&args.by.as_str()) {
        bail!("--by {}: use day, hour or minute", args.by);
    }
    let client = connect(global, false).await?;
    let now = berth_store_free_now();
    let report = client
        .usage(
            args.app.as_deref(),
            Some(now.saturating_sub(back.as_secs())),
            None,
            &args.by,
        )
        .await?;
    if global.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|row| {
            vec![
                output::unix_time(row.at),
                row.app.clone(),
                if row.process.is_empty() {
                    "-".into()
                } else {
                    row.process.clone()
                },
                format!("{} CPU/{} MiB", row.cpus, row.memory_mb),
                format!("{:.0}", row.instance_seconds),
                format!("{:.2}", row.cpu_seconds),
                format!(
                    "{}/{}",
                    output::bytes(row.memory_avg_bytes),
                    output::bytes(row.memory_peak_bytes)
                ),
                row.requests.to_string(),
                output::bytes(row.bytes_in),
                output::bytes(row.bytes_out),
                format!("{:.0}", row.build_seconds + row.job_seconds),
            ]
        })
        .collect();
    if rows.is_empty() {
        say!("no usage recorded since {}", args.since);
        return Ok(());
    }
    output::table(
        &[
            "PERIOD",
            "APP",
            "PROCESS",
            "SIZE",
            "INSTANCE-S",
            "CPU-S",
            "MEM AVG/PEAK",
            "REQUESTS",
            "IN",
            "OUT",
            "BUILD+JOB-S",
        ],
        &rows,
    );
    Ok(())
}

/// Unix seconds now.
fn berth_store_free_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

pub(crate) async fn cost(global: &Global, args: CostArgs) -> Result<()> {
    let now = berth_store_free_now();
    let month = match &args.month {
        Some(text) => CalendarMonth::parse(text).map_err(|err| anyhow!("--month: {err}"))?,
        None => CalendarMonth::of(now),
    };
    if let Some(usd) = args.server_usd
        && !(usd.is_finite() && usd >= 0.0)
    {
        bail!("--server-usd must be a price of zero or more, not {usd}");
    }
    let tables = PriceTable::load(args.prices.as_deref())?;
    let client = connect(global, false).await?;
    let until = month.end - 1;
    let all = client
        .usage(None, Some(month.start), Some(until), "day")
        .await?;
    let rows: Vec<_> = match &args.app {
        Some(app) => {
            // Unknown apps are an error, not an empty bill.
            client
                .usage(Some(app), Some(month.start), Some(until), "day")
                .await?
                .rows
        }
        None => all.rows.clone(),
    };
    let fraction = if now >= month.end {
        1.0
    } else {
        now.saturating_sub(month.start) as f64 / (month.end - month.start) as f64
    };
    let priced = price_all(
        &tables,
        &rows,
        &Month {
            name: month.name.clone(),
            days: month.days(),
            fraction,
        },
        ServerShare {
            usd_per_month: args.server_usd,
            all_vcpu_seconds: berth_cost::vcpu_seconds(&all.rows),
        },
        args.region.as_deref(),
    );
    let report = berth_proto::CostReport {
        month: month.name.clone(),
        app: args.app.clone(),
        month_fraction: fraction,
        providers: priced,
    };
    if global.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    say!(
        "{} for {}{}",
        args.app.as_deref().unwrap_or("every app"),
        month.name,
        if fraction < 1.0 {
            format!(" ({:.0}% of the month so far)", fraction * 100.0)
        } else {
            String::new()
        }
    );
    let summary: Vec<Vec<String>> = report
        .providers
        .iter()
        .map(|cost| {
            vec![
                format!("{}/{}", cost.provider, cost.plan),
                format!("${:.2}", cost.total_usd),
                cost.valid_from.clone(),
                cost.source.clone(),
            ]
        })
        .collect();
    output::table(&["PROVIDER/PLAN", "TOTAL", "PRICES OF", "SOURCE"], &summary);
    for cost in &report.providers {
        say!("\n{} — ${:.4}", cost.title, cost.total_usd);
        for line in &cost.lines {
            say!(
                "  {:<48} {:>14.3} {:<15} ${:.4}",
                line.item,
                line.quantity,
                line.unit,
                line.usd
            );
        }
        for note in &cost.notes {
            say!("  note: {note}");
        }
    }
    Ok(())
}

fn budget_key(target: &BudgetTarget) -> Result<String> {
    if target.server_wide {
        return Ok("*".into());
    }
    resolve_app(&AppArg {
        app: target.app.clone(),
    })
}

fn show_budget(global: &Global, status: &BudgetStatus) -> Result<()> {
    if global.json {
        say!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let who = if status.app == "*" {
        "the server".to_string()
    } else {
        status.app.clone()
    };
    let Some(settings) = &status.settings else {
        say!("{who} has no budget");
        return Ok(());
    };
    let mut limits = Vec::new();
    if let Some(usd) = settings.monthly_usd {
        limits.push(format!("${usd}/month as {}", settings.price_as));
    }
    if let Some(requests) = settings.requests {
        limits.push(format!("{requests} requests"));
    }
    if let Some(gb) = settings.egress_gb {
        limits.push(format!("{gb} GB sent"));
    }
    if let Some(hours) = settings.instance_hours {
        limits.push(format!("{hours} instance-hours"));
    }
    say!(
        "{who}: {} (from {}); on exceed: {}",
        limits.join(", "),
        status.source.as_deref().unwrap_or("?"),
        settings.on_exceed.as_str()
    );
    say!(
        "{}: ${:.4} spent, ${:.4} projected by month's end; {} requests, {:.6} GB sent, {:.3} instance-hours; {:.1}% of the nearest limit",
        status.period,
        status.spent_usd,
        status.projected_usd,
        status.requests,
        status.egress_gb,
        status.instance_hours,
        status.used_percent
    );
    if !status.alerted.is_empty() {
        let alerted: Vec<String> = status.alerted.iter().map(|at| format!("{at}%")).collect();
        say!("alerted: {}", alerted.join(", "));
    }
    if let Some(hold) = &status.hold {
        let actions: Vec<String> = hold
            .actions
            .iter()
            .map(|(group, action)| format!("{group}: {}", action.as_str()))
            .collect();
        say!(
            "in force: {} since {} ({}); `berth budget resume` lifts it",
            actions.join(", "),
            output::unix_time(hold.since),
            hold.reason
        );
    }
    Ok(())
}

pub(crate) async fn budget(global: &Global, command: BudgetCommand) -> Result<()> {
    match command {
        BudgetCommand::Set {
            target,
            monthly_usd,
            requests,
            egress_gb,
            instance_hours,
            alert_at,
            on_exceed,
            processes,
            price_as,
            throttle_rps,
        } => {
            let key = budget_key(&target)?;
            let on_exceed =
                BudgetAction::parse(&on_exceed).map_err(|err| anyhow!("--on-exceed: {err}"))?;
            let mut settings = BudgetSettings {
                monthly_usd,
                requests,
                egress_gb,
                instance_hours,
                alert_at,
                on_exceed,
                price_as,
                throttle_rps,
                ..BudgetSettings::default()
            };
            for (group, action) in parse_pairs(&processes, "GROUP=ACTION")? {
                let action = BudgetAction::parse(&action)
                    .map_err(|err| anyhow!("--process {group}: {err}"))?;
                settings.processes.insert(group, action);
            }
            settings.validate().map_err(anyhow::Error::msg)?;
            let client = connect(global, false).await?;
            let status = client
                .set_budget(
                    &key,
                    &SetBudget {
                        settings: Some(settings),
                    },
                )
                .await?;
            show_budget(global, &status)
        }
        BudgetCommand::Show(target) => {
            let key = budget_key(&target)?;
            let status = connect(global, false).await?.budget(&key).await?;
            show_budget(global, &status)
        }
        BudgetCommand::Resume(target) => {
            let key = budget_key(&target)?;
            let status = connect(global, false).await?.resume_budget(&key).await?;
            show_budget(global, &status)
        }
        BudgetCommand::Unset(target) => {
            let key = budget_key(&target)?;
            let status = connect(global, false)
                .await?
                .set_budget(&key, &SetBudget { settings: None })
                .await?;
            show_budget(global, &status)
        }
    }
}

pub(crate) async fn notify(global: &Global, command: NotifyCommand) -> Result<()> {
    let client = connect(global, false).await?;
    match command {
        NotifyCommand::Add {
            kind,
            url,
            events,
            slack,
        } => {
            if kind != "webhook" {
                bail!("`{kind}`: berth sends alerts to a `webhook`");
            }
            let added = client
                .add_notify_channel(&AddNotifyChannel {
                    url,
                    events,
                    format: if slack {
                        NotifyFormat::Slack
                    } else {
                        NotifyFormat::Json
                    },
                })
                .await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                say!("webhook {} added: {}", added.id, added.url);
                say!(
                    "signing secret (shown once; verify the Berth-Signature header with it): {}",
                    added
                        .secret
                        .as_deref()
                        .context("the server sent no secret")?
                );
            }
        }
        NotifyCommand::List => {
            let channels = client.notify_channels().await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&channels)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = channels
                .iter()
                .map(|channel| {
                    vec![
                        channel.id.to_string(),
                        channel.url.clone(),
                        if channel.events.is_empty() {
                            "*".into()
                        } else {
                            channel.events.join(",")
                        },
                        format!("{:?}", channel.format).to_lowercase(),
                    ]
                })
                .collect();
            output::table(&["ID", "URL", "EVENTS", "FORMAT"], &rows);
        }
        NotifyCommand::Remove { id } => {
            client.remove_notify_channel(id).await?;
            say!("webhook {id} removed");
        }
        NotifyCommand::Log => {
            let log = client.notify_log().await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&log)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = log
                .iter()
                .map(|delivery| {
                    vec![
                        delivery.id.to_string(),
                        delivery.at.clone(),
                        delivery.channel.to_string(),
                        delivery.app.clone(),
                        delivery.event.clone(),
                        delivery.status.clone(),
                        delivery.attempts.to_string(),
                        delivery.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "AT",
                    "WEBHOOK",
                    "APP",
                    "EVENT",
                    "STATUS",
                    "TRIES",
                    "LAST ERROR",
                ],
                &rows,
            );
        }
    }
    Ok(())
}
