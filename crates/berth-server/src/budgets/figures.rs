//! Where a budget's month stands: usage read from the store (once per
//! evaluation pass, for every app) and priced as the budget says.

use berth_cost::{CalendarMonth, Month, MonthFigures, PriceTable, ServerShare, price_plan};
use berth_proto::{BudgetSettings, UsageRow};
use berth_store::{SERVER_BUDGET, Store};

/// A budget's month, measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    pub(crate) figures: MonthFigures,
    /// Money by month's end at the last hour's rate, and what is kept on
    /// disk at its latest day's size.
    pub(crate) projected_usd: f64,
    /// The last hour's money.
    pub(crate) last_hour_usd: f64,
    /// The average money of the hours (up to 23) before the last hour's
    /// window, over the hours that have usage.
    pub(crate) trailing_hourly_usd: f64,
}

/// Every app's usage a pass needs: the month by day, the last hour by
/// minute, the whole hours of the day before that by hour.
pub(crate) struct Reads {
    now: u64,
    month: CalendarMonth,
    month_rows: Vec<UsageRow>,
    last_hour: Vec<UsageRow>,
    trailing_day: Vec<UsageRow>,
}

impl Reads {
    /// When they were read (unix seconds).
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// Reads them at unix second `now`.
    pub(crate) fn load(store: &Store, now: u64) -> Result<Reads, String> {
        let month = CalendarMonth::of(now);
        let read = |resolution: &str, since: u64, until: u64| {
            store
                .usage(None, resolution, since, until)
                .map_err(|err| format!("cannot read usage: {err}"))
        };
        // Whole hours before the last hour's window.
        let window_start = now.saturating_sub(3_600);
        let day_end = window_start - window_start % 3_600;
        Ok(Reads {
            now,
            month_rows: read("day", month.start, month.end - 1)?,
            last_hour: without_storage(read("minute", window_start, now)?),
            trailing_day: without_storage(read(
                "hour",
                day_end.saturating_sub(23 * 3_600),
                day_end.saturating_sub(1),
            )?),
            month,
        })
    }
}

/// Rates leave what is kept on disk out (volumes, the database and its
/// backups): it costs by the day's size over the month, and a minute or
/// hour row holding a size would be priced as a whole day of it.
fn without_storage(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
    for row in &mut rows {
        row.volume_bytes = 0;
        row.database_bytes = 0;
        row.backup_bytes = 0;
    }
    rows
}

/// The sizes of what is kept on disk in the latest day of `rows` (daily
/// rows) that has any: its volumes, databases and backups, nothing else.
fn kept_on_disk(rows: &[UsageRow]) -> Vec<UsageRow> {
    let kept = |row: &&UsageRow| row.volume_bytes + row.database_bytes + row.backup_bytes > 0;
    let Some(latest) = rows.iter().filter(kept).map(|row| row.at).max() else {
        return Vec::new();
    };
    rows.iter()
        .filter(kept)
        .filter(|row| row.at == latest)
        .map(|row| UsageRow {
            app: row.app.clone(),
            at: row.at,
            volume_bytes: row.volume_bytes,
            database_bytes: row.database_bytes,
            backup_bytes: row.backup_bytes,
            ..UsageRow::default()
        })
        .collect()
}

/// The rows of `app` (`*`: all of them).
fn of_app(rows: &[UsageRow], app: &str) -> Vec<UsageRow> {
    rows.iter()
        .filter(|row| app == SERVER_BUDGET || row.app == app)
        .cloned()
        .collect()
}

/// Measures `app`'s month (`*`: every app's) as `settings` counts money.
pub(crate) fn measure(
    reads: &Reads,
    tables: &[PriceTable],
    server_usd: Option<f64>,
    app: &str,
    settings: &BudgetSettings,
) -> Result<Measured, String> {
    let month = &reads.month;
    let (table, plan) =
        berth_cost::find_plan(tables, &settings.price_as).map_err(|err| err.to_string())?;
    let month_seconds = (month.end - month.start) as f64;
    let priced = |rows: &[UsageRow], fraction: f64, free: bool, all: &[UsageRow]| {
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
                all_vcpu_seconds: berth_cost::vcpu_seconds(all),
            },
        )
        .total_usd
    };
    let rows = of_app(&reads.month_rows, app);
    let elapsed = reads.now.saturating_sub(month.start) as f64;
    let spent_usd = priced(&rows, elapsed / month_seconds, true, &reads.month_rows);
    let last_hour_usd = priced(
        &of_app(&reads.last_hour, app),
        3_600.0 / month_seconds,
        false,
        &reads.last_hour,
    );
    let day = of_app(&reads.trailing_day, app);
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
            &reads.trailing_day,
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
    let hours_left = month.end.saturating_sub(reads.now) as f64 / 3_600.0;
    // What is kept on disk costs on at its latest day's size.
    let latest_storage = kept_on_disk(&rows);
    let storage_hourly_usd = if latest_storage.is_empty() {
        0.0
    } else {
        priced(
            &latest_storage,
            86_400.0 / month_seconds,
            false,
            &reads.month_rows,
        ) / 24.0
    };
    Ok(Measured {
        figures,
        projected_usd: berth_cost::projected(
            spent_usd,
            last_hour_usd + storage_hourly_usd,
            hours_left,
        ),
        last_hour_usd,
        trailing_hourly_usd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hourly_rates_leave_out_what_is_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).unwrap();
        // Mid-month: a row a minute back is in the same month.
        let now = CalendarMonth::of(berth_store::now_unix()).start + 15 * 86_400;
        // The hourly storage reading of a 10 GB database with 30 GB of
        // backups, and one request, in the last hour.
        let storage = UsageRow {
            app: "shop".into(),
            database_bytes: 10_000_000_000,
            backup_bytes: 30_000_000_000,
            volume_bytes: 5_000_000_000,
            ..UsageRow::default()
        };
        let request = UsageRow {
            app: "shop".into(),
            process: "web".into(),
            cpus: 1.0,
            memory_mb: 256,
            requests: 1,
            ..UsageRow::default()
        };
        store.add_usage(now - 60, &[storage, request]).unwrap();
        let reads = Reads::load(&store, now).unwrap();
        let tables = PriceTable::load(None).unwrap();
        let settings = BudgetSettings {
            price_as: "cloud-run/request-based".into(),
            ..BudgetSettings::default()
        };
        let measured = measure(&reads, &tables, None, "shop", &settings).unwrap();
        // One request at $0.40 a million, and no day of storage priced as
        // an hour.
        assert!(
            (measured.last_hour_usd - 0.40 / 1e6).abs() < 1e-12,
            "{measured:?}"
        );
        // The month so far does price the storage, and the projection
        // adds it for every day left: Cloud SQL's 10 GB × $0.17 and 30 GB
        // of backups × $0.08 a month, and Cloud Run no volumes.
        assert!(measured.figures.spent_usd > 0.01, "{measured:?}");
        let month = CalendarMonth::of(now);
        let days = f64::from(month.days());
        let hours_left = (month.end - now) as f64 / 3_600.0;
        let storage_hourly = (10.0 * 0.17 + 30.0 * 0.08) / days / 24.0;
        let expected =
            measured.figures.spent_usd + (measured.last_hour_usd + storage_hourly) * hours_left;
        assert!(
            (measured.projected_usd - expected).abs() < 1e-9,
            "{measured:?}, expected {expected}"
        );
    }
}
