//! The flags of `berth usage`, `berth cost`, `berth budget` and `berth notify`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `berth usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// One app (default: every app).
    #[arg(short, long)]
    pub(crate) app: Option<String>,
    /// How far back: a duration such as 30d, 12h.
    #[arg(long, default_value = "30d")]
    pub(crate) since: String,
    /// One row per `day`, `hour` or `minute`.
    #[arg(long, default_value = "day")]
    pub(crate) by: String,
}

/// `berth cost`.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// One app (default: every app).
    #[arg(short, long)]
    pub(crate) app: Option<String>,
    /// The month, such as 2026-11 (default: this one, so far).
    #[arg(long)]
    pub(crate) month: Option<String>,
    /// A folder of price tables (TOML) replacing or adding to berth's.
    #[arg(long)]
    pub(crate) prices: Option<PathBuf>,
    /// What the server costs a month, for the `own-server` column.
    #[arg(long)]
    pub(crate) server_usd: Option<f64>,
    /// Where the app would run, for egress priced by region (Fly.io):
    /// north-america, europe, asia-pacific, oceania, south-america, africa,
    /// india.
    #[arg(long)]
    pub(crate) region: Option<String>,
}

/// Whose budget.
#[derive(Debug, Args)]
pub struct BudgetTarget {
    /// The app (default: from the current folder).
    #[arg(short, long, conflicts_with = "server_wide")]
    pub(crate) app: Option<String>,
    /// The whole server's budget (every app counts; it acts on every app).
    #[arg(long)]
    pub(crate) server_wide: bool,
}

/// `berth budget`.
#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set a budget (over berth.toml's `[budget]`).
    Set {
        #[command(flatten)]
        target: BudgetTarget,
        /// Dollars per month, priced as --price-as.
        #[arg(long, allow_negative_numbers = true)]
        monthly_usd: Option<f64>,
        /// Requests per month.
        #[arg(long)]
        requests: Option<u64>,
        /// Gigabytes sent per month.
        #[arg(long, allow_negative_numbers = true)]
        egress_gb: Option<f64>,
        /// Instance-hours per month.
        #[arg(long, allow_negative_numbers = true)]
        instance_hours: Option<f64>,
        /// Percentages that alert, once each a month.
        #[arg(long, value_delimiter = ',', default_value = "50,80,100")]
        alert_at: Vec<u32>,
        /// What happens at 100%: alert, throttle, cap, scale-to-zero, suspend.
        #[arg(long, default_value = "alert")]
        on_exceed: String,
        /// Another action for one group: GROUP=ACTION (repeatable).
        #[arg(long = "process")]
        processes: Vec<String>,
        /// Whose prices count the money: cloud-run, fly, render, own-server
        /// (or PROVIDER/PLAN).
        #[arg(long, default_value = "cloud-run")]
        price_as: String,
        /// Requests per second per client while throttled.
        #[arg(long)]
        throttle_rps: Option<u32>,
    },
    /// Where the budget stands this month.
    Show(BudgetTarget),
    /// Lift the budget's action for the rest of the month.
    Resume(BudgetTarget),
    /// Remove the budget set here (berth.toml's applies again).
    Unset(BudgetTarget),
}

/// `berth notify`.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send alerts to a webhook (JSON signed with HMAC-SHA256).
    Add {
        /// `webhook`.
        kind: String,
        /// The URL to POST to.
        url: String,
        /// Events it gets, comma-separated (`budget.*,deploy.failed`; default: all).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Send Slack's `{"text": …}` body.
        #[arg(long)]
        slack: bool,
    },
    /// The webhooks.
    List,
    /// Remove a webhook.
    Remove {
        /// Its id.
        id: u64,
    },
    /// The latest deliveries and how they went.
    Log,
}
