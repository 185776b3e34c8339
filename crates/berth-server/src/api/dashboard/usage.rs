//! The app page's usage and cost: this month's usage, what it would cost
//! on each provider's plans, and the app's budget (its resume button is
//! one of the page's actions).

use berth_cost::{CalendarMonth, Month, ServerShare, price_all};
use berth_proto::UsageRow;
use serde::Serialize;

use crate::api::state::ApiState;

/// One provider plan's price of the month, as the page shows it.
#[derive(Debug, Serialize)]
pub(super) struct CostCell {
    title: String,
    total: String,
    valid_from: String,
    /// Where the prices were read, when it is a web address.
    link: Option<String>,
}

/// This month of `app`, for the page: its month, totals (as text), costs,
/// and its budget when it has one.
#[derive(Debug, Serialize, Default)]
pub(super) struct MonthView {
    month: String,
    totals: Vec<(String, String)>,
    costs: Vec<CostCell>,
    budget: Option<String>,
    held: Option<String>,
}

/// What `app` used this month and what it would cost.
pub(super) fn month_view(state: &ApiState, app: &str) -> MonthView {
    let now = berth_store::now_unix();
    let month = CalendarMonth::of(now);
    let read = |filter: Option<&str>| {
        state
            .store
            .usage(filter, "day", month.start, month.end - 1)
            .unwrap_or_default()
    };
    let rows = read(Some(app));
    let all = read(None);
    let mut total = UsageRow::default();
    for row in &rows {
        total.add(row);
    }
    let fraction = now.saturating_sub(month.start) as f64 / (month.end - month.start) as f64;
    let costs = price_all(
        &state.budgets.tables,
        &rows,
        &Month {
            name: month.name.clone(),
            days: month.days(),
            fraction,
        },
        ServerShare {
            usd_per_month: state.budgets.server_usd,
            all_vcpu_seconds: berth_cost::vcpu_seconds(&all),
        },
        None,
    )
    .into_iter()
    .map(|cost| CostCell {
        title: cost.title,
        total: format!("${:.2}", cost.total_usd),
        valid_from: cost.valid_from,
        link: (cost.source.starts_with("https://") || cost.source.starts_with("http://"))
            .then_some(cost.source),
    })
    .collect();
    let totals = vec![
        (
            "instance-hours".into(),
            format!("{:.2}", total.instance_seconds / 3600.0),
        ),
        ("CPU seconds".into(), format!("{:.1}", total.cpu_seconds)),
        ("requests".into(), total.requests.to_string()),
        ("received".into(), size(total.bytes_in)),
        ("sent".into(), size(total.bytes_out + total.egress_bytes)),
        ("volumes".into(), size(total.volume_bytes)),
    ];
    let (budget, held) = match state.budgets.status(app, now) {
        Ok(status) if status.settings.is_some() => (
            Some(format!(
                "{:.1}% of its budget used (${:.4} spent, ${:.2} by month's end)",
                status.used_percent, status.spent_usd, status.projected_usd
            )),
            status.hold.map(|hold| {
                let actions: Vec<String> = hold
                    .actions
                    .iter()
                    .map(|(group, action)| format!("{group}: {}", action.as_str()))
                    .collect();
                format!("in force: {} ({})", actions.join(", "), hold.reason)
            }),
        ),
        _ => (None, None),
    };
    MonthView {
        month: month.name,
        totals,
        costs,
        budget,
        held,
    }
}

/// A size for people: `3.2 MiB`.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
