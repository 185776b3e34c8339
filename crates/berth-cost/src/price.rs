//! What a month of metered usage would cost on one provider's plan.

use std::collections::BTreeMap;

use berth_proto::{CostLine, ProviderCost, UsageRow};

use crate::table::{BilledTime, Plan, PriceTable, Size};

/// Bytes in a gigabyte, as providers bill egress and disks.
const GB: f64 = 1e9;

/// The month being priced.
#[derive(Debug, Clone, PartialEq)]
pub struct Month {
    /// `2026-11`.
    pub name: String,
    /// Its days.
    pub days: u32,
    /// How much of it the usage covers: 1 for a past month.
    pub fraction: f64,
}

/// What the own-server plan splits: the server's price and every app's
/// vCPU-seconds this month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerShare {
    /// The server's monthly price, when the user gave one.
    pub usd_per_month: Option<f64>,
    /// Declared vCPU-seconds of every app on the server this month.
    pub all_vcpu_seconds: f64,
}

/// Declared vCPU-seconds of `rows`: instances and job tasks at their
/// size, what the own-server plan splits the server's price by.
pub fn vcpu_seconds(rows: &[UsageRow]) -> f64 {
    rows.iter()
        .map(|row| (row.instance_seconds + row.job_seconds) * row.cpus)
        .sum()
}

/// Where the app would run, for prices that differ by region (Fly.io's
/// egress): `north-america`, `europe`, `asia-pacific`, … `None`: the
/// plan's default price.
pub type Region<'a> = Option<&'a str>;

/// Gigabyte-days of what an app keeps on disk, from daily rows (each
/// holds the day's largest measure).
#[derive(Debug, Default)]
struct KeptGbDays {
    volumes: f64,
    database: f64,
    backups: f64,
}

impl KeptGbDays {
    fn add(&mut self, row: &UsageRow) {
        self.volumes += row.volume_bytes as f64 / GB;
        self.database += row.database_bytes as f64 / GB;
        self.backups += row.backup_bytes as f64 / GB;
    }
}

/// What the rows of one process group at one size add up to.
#[derive(Debug, Default)]
struct Group {
    instance_seconds: f64,
    busy_seconds: f64,
    requests: u64,
    /// Job tasks' run time: billed whole, by every provider.
    job_seconds: f64,
}

impl Group {
    /// The time an instance-priced plan bills.
    fn run_seconds(&self) -> f64 {
        self.instance_seconds + self.job_seconds
    }
}

/// Prices `rows` (daily rows of one month) on `plan` of `table`.
pub fn price_plan(
    table: &PriceTable,
    plan: &Plan,
    rows: &[UsageRow],
    month: &Month,
    server: ServerShare,
) -> ProviderCost {
    price_plan_in(table, plan, rows, month, server, None)
}

/// [`price_plan`], with egress priced as sent from `region`.
pub fn price_plan_in(
    table: &PriceTable,
    plan: &Plan,
    rows: &[UsageRow],
    month: &Month,
    server: ServerShare,
    region: Region<'_>,
) -> ProviderCost {
    let mut cost = ProviderCost {
        provider: table.provider.clone(),
        plan: plan.name.clone(),
        title: plan.title.clone(),
        valid_from: table.valid_from.clone(),
        source: table.source.clone(),
        total_usd: 0.0,
        lines: Vec::new(),
        notes: Vec::new(),
    };
    let mut groups: BTreeMap<(String, u64, u32), Group> = BTreeMap::new();
    let mut totals = UsageRow::default();
    let mut kept = KeptGbDays::default();
    for row in rows {
        totals.add(row);
        kept.add(row);
        // Rows without a size (an app's builds, or job time metered as the
        // app's before jobs had their own groups) price no compute.
        let sized = row.cpus > 0.0 && row.memory_mb > 0;
        if row.instance_seconds > 0.0 || row.requests > 0 || (row.job_seconds > 0.0 && sized) {
            let group = groups
                .entry((row.process.clone(), row.cpus.to_bits(), row.memory_mb))
                .or_default();
            group.instance_seconds += row.instance_seconds;
            group.busy_seconds += row.busy_seconds;
            group.requests += row.requests;
            group.job_seconds += row.job_seconds;
        }
    }
    if let Some(configured) = plan.server_usd_per_month {
        let usd_per_month = server.usd_per_month.unwrap_or(configured);
        let vcpu_seconds: f64 = groups
            .iter()
            .map(|((_, cpus, _), group)| group.run_seconds() * f64::from_bits(*cpus))
            .sum();
        let share = if server.all_vcpu_seconds > 0.0 {
            (vcpu_seconds / server.all_vcpu_seconds).min(1.0)
        } else {
            0.0
        };
        if usd_per_month == 0.0 {
            cost.notes
                .push("no server price given: pass --server-usd MONTHLY_PRICE".into());
        }
        cost.lines.push(CostLine {
            item: format!("{:.1}% of the server's use", share * 100.0),
            quantity: vcpu_seconds,
            unit: "vCPU-seconds".into(),
            usd: usd_per_month * share * month.fraction,
        });
    } else if plan.sizes.is_empty() {
        price_resources(plan, &groups, &mut cost);
    } else {
        price_sizes(plan, &groups, &mut cost);
    }
    if plan.usd_per_million_requests > 0.0 {
        let billed = (totals.requests as f64 - plan.free.requests).max(0.0);
        cost.lines.push(CostLine {
            item: "requests".into(),
            quantity: billed,
            unit: "requests".into(),
            usd: billed / 1e6 * plan.usd_per_million_requests,
        });
    }
    let (egress_price, egress_item) = match region {
        Some(region) if !plan.egress_usd_per_gb_by_region.is_empty() => {
            match plan.egress_usd_per_gb_by_region.get(region) {
                Some(price) => (*price, format!("data sent from {region}")),
                None => {
                    cost.notes.push(format!(
                        "no egress price for region `{region}` (it has: {}); priced at its default",
                        plan.egress_usd_per_gb_by_region
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    (plan.egress_usd_per_gb, "data sent".to_string())
                }
            }
        }
        _ => (plan.egress_usd_per_gb, "data sent".to_string()),
    };
    if egress_price > 0.0 {
        let sent = (totals.bytes_out + totals.egress_bytes) as f64 / GB;
        let billed = (sent - plan.free.egress_gb).max(0.0);
        cost.lines.push(CostLine {
            item: egress_item,
            quantity: billed,
            unit: "GB".into(),
            usd: billed * egress_price,
        });
    }
    let days = f64::from(month.days.max(1));
    let stored = [
        ("volumes", kept.volumes, plan.volume_usd_per_gb_month, 0.0),
        (
            "database storage",
            kept.database,
            plan.database_usd_per_gb_month,
            0.0,
        ),
        (
            "database backups",
            kept.backups,
            plan.backup_usd_per_gb_month,
            plan.free.backup_gb_months,
        ),
    ];
    for (item, gb_days, price, free_gb_months) in stored {
        if price > 0.0 && gb_days > 0.0 {
            let billed = (gb_days / days - free_gb_months).max(0.0);
            cost.lines.push(CostLine {
                item: item.into(),
                quantity: billed,
                unit: "GB-months".into(),
                usd: billed * price,
            });
        }
    }
    cost.total_usd = cost.lines.iter().map(|line| line.usd).sum();
    cost
}

/// Cloud Run's way: vCPU-seconds and GiB-seconds of billed time.
fn price_resources(
    plan: &Plan,
    groups: &BTreeMap<(String, u64, u32), Group>,
    cost: &mut ProviderCost,
) {
    let mut vcpu_seconds = 0.0;
    let mut gib_seconds = 0.0;
    for ((process, cpus, memory_mb), group) in groups {
        let seconds = match plan.billed_time {
            BilledTime::Busy if group.requests > 0 || group.busy_seconds > 0.0 => {
                group.busy_seconds + group.job_seconds
            }
            BilledTime::Busy if group.instance_seconds > 0.0 => {
                cost.notes.push(format!(
                    "{}: serves no requests, billed by instance time",
                    shown_process(process)
                ));
                group.run_seconds()
            }
            BilledTime::Busy | BilledTime::Instance => group.run_seconds(),
        };
        vcpu_seconds += seconds * f64::from_bits(*cpus);
        gib_seconds += seconds * f64::from(*memory_mb) / 1024.0;
    }
    let vcpu_billed = (vcpu_seconds - plan.free.vcpu_seconds).max(0.0);
    let gib_billed = (gib_seconds - plan.free.gib_seconds).max(0.0);
    cost.lines.push(CostLine {
        item: "CPU".into(),
        quantity: vcpu_billed,
        unit: "vCPU-seconds".into(),
        usd: vcpu_billed * plan.vcpu_second,
    });
    cost.lines.push(CostLine {
        item: "memory".into(),
        quantity: gib_billed,
        unit: "GiB-seconds".into(),
        usd: gib_billed * plan.gib_second,
    });
}

/// Fly's and Render's way: the cheapest size that holds the declared
/// one, by the hour.
fn price_sizes(plan: &Plan, groups: &BTreeMap<(String, u64, u32), Group>, cost: &mut ProviderCost) {
    let mut free_hours = plan.free.instance_hours;
    for ((process, cpus, memory_mb), group) in groups {
        let cpus = f64::from_bits(*cpus);
        let (size, fits) = size_for(&plan.sizes, cpus, *memory_mb);
        if !fits {
            cost.notes.push(format!(
                "{}: no size holds {cpus} CPUs and {memory_mb} MiB; priced as {}",
                shown_process(process),
                size.name
            ));
        }
        let hours = group.run_seconds() / 3600.0;
        let free = free_hours.min(hours);
        free_hours -= free;
        let billed = hours - free;
        cost.lines.push(CostLine {
            item: format!(
                "{}: {cpus} CPU, {memory_mb} MiB as {} ({} CPU, {} MiB)",
                shown_process(process),
                size.name,
                size.cpus,
                size.memory_mb
            ),
            quantity: billed,
            unit: "instance-hours".into(),
            usd: billed * size.usd_per_month / plan.hours_per_month,
        });
    }
}

/// The cheapest size with at least `cpus` and `memory_mb` (and whether
/// one fits; if none does, the largest).
fn size_for(sizes: &[Size], cpus: f64, memory_mb: u32) -> (&Size, bool) {
    let cheapest_fitting = sizes
        .iter()
        .filter(|size| size.cpus >= cpus && size.memory_mb >= memory_mb)
        .min_by(|a, b| a.usd_per_month.total_cmp(&b.usd_per_month));
    match cheapest_fitting {
        Some(size) => (size, true),
        None => (
            sizes
                .iter()
                .max_by(|a, b| a.usd_per_month.total_cmp(&b.usd_per_month))
                .expect("a size-priced plan has sizes"),
            false,
        ),
    }
}

fn shown_process(process: &str) -> &str {
    if process.is_empty() { "app" } else { process }
}
