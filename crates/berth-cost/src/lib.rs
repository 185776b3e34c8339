//! What usage costs: price tables per provider (shipped as TOML data files,
//! overridable), the cost of a month of metered usage on each provider's
//! plans side by side, and the arithmetic of budgets. No IO beyond reading
//! a price directory; the server meters, this crate prices.

mod budget;
mod price;
mod table;

pub use budget::{
    CalendarMonth, MonthFigures, SPIKE_FACTOR, Used, due_alerts, is_spike, projected, used,
};
pub use price::{Month, Region, ServerShare, price_plan, price_plan_in, vcpu_seconds};
pub use table::{BilledTime, FreeTier, Plan, PriceTable, SHIPPED, Size};

use berth_proto::{ProviderCost, UsageRow};

/// What can go wrong reading prices.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// A price file is malformed.
    #[error("{file}:{line}:{column}: {message}")]
    Table {
        /// The file.
        file: String,
        /// Its line, from 1.
        line: usize,
        /// Its column, from 1.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A price directory or file cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// No table or plan of that name.
    #[error("unknown provider `{asked}`; known: {known}")]
    UnknownProvider {
        /// What was asked for.
        asked: String,
        /// What exists.
        known: String,
    },
}

/// Every plan of every table, priced side by side (egress as sent from
/// `region` where a plan prices it by region).
pub fn price_all(
    tables: &[PriceTable],
    rows: &[UsageRow],
    month: &Month,
    server: ServerShare,
    region: Region<'_>,
) -> Vec<ProviderCost> {
    tables
        .iter()
        .flat_map(|table| {
            table
                .plans
                .iter()
                .map(move |plan| price_plan_in(table, plan, rows, month, server, region))
        })
        .collect()
}

/// The plan `price_as` names: `cloud-run` (its first plan) or
/// `cloud-run/instance-based`.
pub fn find_plan<'a>(
    tables: &'a [PriceTable],
    price_as: &str,
) -> Result<(&'a PriceTable, &'a Plan), CostError> {
    let (provider, plan) = match price_as.split_once('/') {
        Some((provider, plan)) => (provider, Some(plan)),
        None => (price_as, None),
    };
    let unknown = || CostError::UnknownProvider {
        asked: price_as.to_string(),
        known: tables
            .iter()
            .flat_map(|table| {
                table
                    .plans
                    .iter()
                    .map(move |plan| format!("{}/{}", table.provider, plan.name))
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    let table = tables
        .iter()
        .find(|table| table.provider == provider)
        .ok_or_else(unknown)?;
    let plan = match plan {
        Some(name) => table.plans.iter().find(|plan| plan.name == name),
        None => table.plans.first(),
    }
    .ok_or_else(unknown)?;
    Ok((table, plan))
}

#[cfg(test)]
mod tests;
