//! Where a budget's month stands: usage read from the store and priced as
//! the budget says.

use berth_cost::{CalendarMonth, Month, MonthFigures, PriceTable, ServerShare, price_plan};
use berth_proto::{BudgetSettings, UsageRow};
use berth_store::{SERVER_BUDGET, Store, StoreError};

/// A budget's month, measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    pub(crate) figures: MonthFigures,
    /// Money by month's end at the last hour's rate.
    pub(crate) projected_usd: f64,
    /// The last hour's money.
    pub(crate) last_hour_usd: f64,
    /// The average money of the hours (up to 23) before the last hour's
    /// window, over the hours that have usage.
    pub(crate) trailing_hourly_usd: f64,
}

/// Measures `app`'s month (`*`: every app's) as `settings` counts money.
pub(crate) fn measure(
    store: &Store,
    tables: &[PriceTable],
    server_usd: Option<f64>,
    app: &str,
    settings: &BudgetSettings,
    now: u64,
) -> Result<Measured, String> {
    let month = CalendarMonth::of(now);
    let filter = (app != SERVER_BUDGET).then_some(app);
    let read = |filter: Option<&str>, resolution: &str, since: u64, until: u64| {
        store
            .usage(filter, resolution, since, until)
            .map_err(|err: StoreError| format!("cannot read usage: {err}"))
    };
    let rows = read(filter, "day", month.start, month.end - 1)?;
    let all_rows = if filter.is_some() {
        read(None, "day", month.start, month.end - 1)?
    } else {
        rows.clone()
    };
    let (table, plan) =
        berth_cost::find_plan(tables, &settings.price_as).map_err(|err| err.to_string())?;
    let month_seconds = (month.end - month.start) as f64;
    let elapsed = (now.saturating_sub(month.start)) as f64;
    let vcpu_seconds =
        |rows: &[UsageRow]| -> f64 { rows.iter().map(|row| row.instance_seconds * row.cpus).sum() };
    let priced = |rows: &[UsageRow], fraction: f64, free: bool, all: f64| {
        let mut plan = plan.clone();
        if !free {
            plan.free = berth_cost::FreeTier::default();
        }
        let month = Month {
            name: month.name.clone(),
            days: month.days(),
            fraction,
        };
        price_plan(
            table,
            &plan,
            rows,
            &month,
            ServerShare {
                usd_per_month: server_usd,
                all_vcpu_seconds: all,
            },
        )
        .total_usd
    };
    let spent_usd = priced(
        &rows,
        elapsed / month_seconds,
        true,
        vcpu_seconds(&all_rows),
    );
    // Rates leave volumes out: a volume costs by the month, not by the row.
    let without_volumes = |mut rows: Vec<UsageRow>| {
        for row in &mut rows {
            row.volume_bytes = 0;
        }
        rows
    };
    let last_hour = without_volumes(read(filter, "minute", now.saturating_sub(3_600), now)?);
    let last_hour_all = read(None, "minute", now.saturating_sub(3_600), now)?;
    let last_hour_usd = priced(
        &last_hour,
        3_600.0 / month_seconds,
        false,
        vcpu_seconds(&last_hour_all),
    );
    // Whole hours before the last hour's window.
    let window_start = now.saturating_sub(3_600);
    let day_end = window_start - window_start % 3_600;
    let day_start = day_end.saturating_sub(23 * 3_600);
    let day = without_volumes(read(filter, "hour", day_start, day_end.saturating_sub(1))?);
    let day_all = read(None, "hour", day_start, day_end.saturating_sub(1))?;
    let hours = day
        .iter()
        .map(|row| row.at)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let trailing_hourly_usd = if hours == 0 {
        0.0
    } else {
        priced(
            &day,
            hours as f64 * 3_600.0 / month_seconds,
            false,
            vcpu_seconds(&day_all),
        ) / hours as f64
    };
    let mut total = UsageRow::default();
    for row in &rows {
        total.add(row);
    }
    let figures = MonthFigures {
        spent_usd,
        requests: total.requests,
        egress_gb: (total.bytes_out + total.egress_bytes) as f64 / 1e9,
        instance_hours: total.instance_seconds / 3_600.0,
    };
    let hours_left = (month.end.saturating_sub(now)) as f64 / 3_600.0;
    Ok(Measured {
        figures,
        projected_usd: berth_cost::projected(spent_usd, last_hour_usd, hours_left),
        last_hour_usd,
        trailing_hourly_usd,
    })
}
