//! Budgets, as arithmetic: how much of the nearest limit a month's usage
//! has used, which alerts are due, the projection to month's end, and
//! whether the spend is spiking.

use berth_proto::BudgetSettings;

/// What counts against a budget so far this month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MonthFigures {
    /// Money, priced as the budget's `price_as`.
    pub spent_usd: f64,
    /// Requests.
    pub requests: u64,
    /// Gigabytes sent.
    pub egress_gb: f64,
    /// Instance-hours.
    pub instance_hours: f64,
}

/// How far along the nearest limit is.
#[derive(Debug, Clone, PartialEq)]
pub struct Used {
    /// Percent of the limit (above 100 once crossed).
    pub percent: f64,
    /// The limit, for a person: `monthly_usd 0.05 (spent 0.06)`.
    pub limit: String,
}

/// The share of the nearest limit `figures` used.
pub fn used(settings: &BudgetSettings, figures: &MonthFigures) -> Used {
    let candidates = [
        settings.monthly_usd.map(|limit| {
            (
                figures.spent_usd / limit,
                format!("monthly_usd {limit} (spent {:.4})", figures.spent_usd),
            )
        }),
        settings.requests.map(|limit| {
            (
                figures.requests as f64 / limit as f64,
                format!("requests {limit} (made {})", figures.requests),
            )
        }),
        settings.egress_gb.map(|limit| {
            (
                figures.egress_gb / limit,
                format!("egress_gb {limit} (sent {:.6})", figures.egress_gb),
            )
        }),
        settings.instance_hours.map(|limit| {
            (
                figures.instance_hours / limit,
                format!("instance_hours {limit} (ran {:.3})", figures.instance_hours),
            )
        }),
    ];
    candidates
        .into_iter()
        .flatten()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(share, limit)| Used {
            percent: share * 100.0,
            limit,
        })
        .unwrap_or(Used {
            percent: 0.0,
            limit: "no limit".into(),
        })
}

/// The thresholds of `settings.alert_at` reached and not yet `alerted`,
/// lowest first.
pub fn due_alerts(settings: &BudgetSettings, percent: f64, alerted: &[u32]) -> Vec<u32> {
    let mut due: Vec<u32> = settings
        .alert_at
        .iter()
        .copied()
        .filter(|at| f64::from(*at) <= percent && !alerted.contains(at))
        .collect();
    due.sort_unstable();
    due.dedup();
    due
}

/// Spend by month's end: so far, plus the last hour's rate for the hours
/// left.
pub fn projected(spent_usd: f64, last_hour_usd: f64, hours_left: f64) -> f64 {
    spent_usd + last_hour_usd * hours_left.max(0.0)
}

/// How many times the trailing day's hourly rate the last hour must cost
/// to be a spike, unless said otherwise.
pub const SPIKE_FACTOR: f64 = 4.0;

/// Whether the last hour cost over `factor` times the trailing day's
/// hourly average, and enough to matter (a hundredth of the budget). An
/// app without a trailing day has nothing to compare with: no spike.
pub fn is_spike(last_hour_usd: f64, trailing_day_usd: f64, factor: f64, budget_usd: f64) -> bool {
    let hourly = trailing_day_usd / 23.0;
    trailing_day_usd > 0.0 && last_hour_usd > hourly * factor && last_hour_usd >= budget_usd / 100.0
}

/// A calendar month in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarMonth {
    /// `2026-12`.
    pub name: String,
    /// Its first second, unix.
    pub start: u64,
    /// The first second of the next month, unix.
    pub end: u64,
}

impl CalendarMonth {
    /// The month holding unix second `at`.
    pub fn of(at: u64) -> CalendarMonth {
        let (year, month, _) = civil_from_days((at / 86_400) as i64);
        CalendarMonth::new(year, month)
    }

    /// Reads `2026-11`.
    pub fn parse(text: &str) -> Result<CalendarMonth, String> {
        let bad = || format!("`{text}` is not a month like 2026-11");
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        let year: i64 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || text.len() != 7 {
            return Err(bad());
        }
        Ok(CalendarMonth::new(year, month))
    }

    fn new(year: i64, month: u32) -> CalendarMonth {
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        CalendarMonth {
            name: format!("{year:04}-{month:02}"),
            start: (days_from_civil(year, month, 1) * 86_400) as u64,
            end: (days_from_civil(next_year, next_month, 1) * 86_400) as u64,
        }
    }

    /// Its days.
    pub fn days(&self) -> u32 {
        ((self.end - self.start) / 86_400) as u32
    }
}

/// Days since 1970-01-01 of a date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
