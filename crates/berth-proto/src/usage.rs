//! Usage, cost and budgets on the wire: what the meter counted
//! (`berth usage`), what it would cost elsewhere (`berth cost`), and the
//! budgets that act on it (`berth budget`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one process group of an app used in one period, at one size.
/// `process` is empty for what belongs to the app as a whole (builds,
/// volumes, databases).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRow {
    /// The app.
    pub app: String,
    /// The process group; empty for the app as a whole.
    pub process: String,
    /// The period's start, unix seconds (UTC).
    pub at: u64,
    /// The size its instances declared: CPUs.
    pub cpus: f64,
    /// The size its instances declared: MiB of memory.
    pub memory_mb: u32,
    /// Seconds instances ran, summed over instances.
    pub instance_seconds: f64,
    /// Seconds with at least one request in flight at the router (what
    /// request-based billing charges for).
    pub busy_seconds: f64,
    /// CPU time used (from the cgroups).
    pub cpu_seconds: f64,
    /// The most memory one sample saw the group hold.
    pub memory_peak_bytes: u64,
    /// Memory held on average while it ran.
    pub memory_avg_bytes: u64,
    /// Requests the router routed to it.
    pub requests: u64,
    /// Request body bytes received from clients.
    pub bytes_in: u64,
    /// Response body bytes sent to clients.
    pub bytes_out: u64,
    /// Bytes the instances sent out of their network namespaces (as root:
    /// without isolation there is none, and this is 0).
    pub egress_bytes: u64,
    /// Seconds spent building releases.
    pub build_seconds: f64,
    /// Seconds job executions ran.
    pub job_seconds: f64,
    /// Bytes its volumes held (the period's largest sample, measured
    /// hourly).
    pub volume_bytes: u64,
    /// Bytes its database held (the period's largest sample, measured
    /// hourly while PostgreSQL runs).
    pub database_bytes: u64,
    /// Bytes its database's backups held (the period's largest sample,
    /// measured hourly).
    #[serde(default)]
    pub backup_bytes: u64,
}

impl UsageRow {
    /// Adds `other`'s counts to these (peaks and sizes take the larger;
    /// the average memory is weighted by instance-seconds).
    pub fn add(&mut self, other: &UsageRow) {
        let weight = self.instance_seconds + other.instance_seconds;
        if weight > 0.0 {
            self.memory_avg_bytes = ((self.memory_avg_bytes as f64 * self.instance_seconds
                + other.memory_avg_bytes as f64 * other.instance_seconds)
                / weight) as u64;
        }
        self.instance_seconds += other.instance_seconds;
        self.busy_seconds += other.busy_seconds;
        self.cpu_seconds += other.cpu_seconds;
        self.memory_peak_bytes = self.memory_peak_bytes.max(other.memory_peak_bytes);
        self.requests += other.requests;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.egress_bytes += other.egress_bytes;
        self.build_seconds += other.build_seconds;
        self.job_seconds += other.job_seconds;
        self.volume_bytes = self.volume_bytes.max(other.volume_bytes);
        self.database_bytes = self.database_bytes.max(other.database_bytes);
        self.backup_bytes = self.backup_bytes.max(other.backup_bytes);
    }
}

/// `GET /v1/usage`: rows per period.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// The period of each row: `minute`, `hour` or `day`.
    pub by: String,
    /// The first second covered (unix).
    pub since: u64,
    /// The last second covered (unix).
    pub until: u64,
    /// Oldest first; the period still open is included.
    pub rows: Vec<UsageRow>,
}

/// One priced item of a provider's bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostLine {
    /// What it is: `web: 1 vCPU, 256 MiB (shared-cpu-1x)`, `requests`.
    pub item: String,
    /// How much was used, after the free tier.
    pub quantity: f64,
    /// Its unit: `vCPU-seconds`, `GB`, `instance-hours`.
    pub unit: String,
    /// Its price, in US dollars.
    pub usd: f64,
}

/// What the usage would have cost on one provider's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderCost {
    /// The provider's key: `cloud-run`, `fly`, `render`, `own-server`.
    pub provider: String,
    /// The plan: `request-based`, `machines`.
    pub plan: String,
    /// For a person: `Google Cloud Run, request-based billing`.
    pub title: String,
    /// The date its price table is valid from.
    pub valid_from: String,
    /// Where the prices were read.
    pub source: String,
    /// The total, in US dollars.
    pub total_usd: f64,
    /// The items, each priced.
    pub lines: Vec<CostLine>,
    /// What was assumed (a size rounded up to the next the provider sells).
    pub notes: Vec<String>,
}

/// `GET /v1/cost`: the same usage, priced side by side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostReport {
    /// The month priced, `2026-11`.
    pub month: String,
    /// The app, or `None` for all of them.
    pub app: Option<String>,
    /// The fraction of the month the usage covers (1 for a past month).
    pub month_fraction: f64,
    /// One entry per provider plan.
    pub providers: Vec<ProviderCost>,
}

/// What a budget does when crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum BudgetAction {
    /// Only alerts.
    Alert,
    /// Lowers the app's rate limit at the router.
    Throttle,
    /// At most one instance per group.
    Cap,
    /// Stops its instances; requests get a 503 page saying why.
    ScaleToZero,
    /// Also stops its jobs and workers.
    Suspend,
}

impl BudgetAction {
    /// Every action, as written in berth.toml.
    pub const ALL: [BudgetAction; 5] = [
        BudgetAction::Alert,
        BudgetAction::Throttle,
        BudgetAction::Cap,
        BudgetAction::ScaleToZero,
        BudgetAction::Suspend,
    ];

    /// Its spelling in berth.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetAction::Alert => "alert",
            BudgetAction::Throttle => "throttle",
            BudgetAction::Cap => "cap",
            BudgetAction::ScaleToZero => "scale-to-zero",
            BudgetAction::Suspend => "suspend",
        }
    }

    /// Reads one, or says which exist.
    pub fn parse(text: &str) -> Result<BudgetAction, String> {
        BudgetAction::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a budget action; use one of: {}",
                    BudgetAction::ALL.map(BudgetAction::as_str).join(", ")
                )
            })
    }
}

/// The requests per second per client a throttled app is allowed when
/// its budget says nothing.
pub const DEFAULT_THROTTLE_RPS: u32 = 1;

/// A monthly budget: limits (the first crossed acts), when to alert, and
/// what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetSettings {
    /// Money per month, in US dollars, priced as `price_as`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_usd: Option<f64>,
    /// Requests per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Gigabytes (10^9 bytes) sent to clients per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_gb: Option<f64>,
    /// Instance-hours per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_hours: Option<f64>,
    /// Percentages of the limit that send an alert, once each per month.
    pub alert_at: Vec<u32>,
    /// What happens at 100%.
    pub on_exceed: BudgetAction,
    /// Per process group: another action than `on_exceed`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, BudgetAction>,
    /// Whose prices count the money: `cloud-run`, `fly`, `render`,
    /// `own-server` (optionally `provider/plan`).
    pub price_as: String,
    /// Requests per second per client while throttled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_rps: Option<u32>,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            monthly_usd: None,
            requests: None,
            egress_gb: None,
            instance_hours: None,
            alert_at: vec![50, 80, 100],
            on_exceed: BudgetAction::Alert,
            processes: BTreeMap::new(),
            price_as: "cloud-run".into(),
            throttle_rps: None,
        }
    }
}

impl BudgetSettings {
    /// Checks what a person could get wrong: a negative or zero limit, no
    /// limit at all, a percentage outside 1–1000.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(usd) = self.monthly_usd
            && !(usd.is_finite() && usd > 0.0)
        {
            return Err(format!(
                "monthly_usd must be a positive number of dollars, not {usd}"
            ));
        }
        if self.requests == Some(0) {
            return Err("requests must be a positive count".into());
        }
        for (name, value) in [
            ("egress_gb", self.egress_gb),
            ("instance_hours", self.instance_hours),
        ] {
            if let Some(value) = value
                && !(value.is_finite() && value > 0.0)
            {
                return Err(format!("{name} must be a positive number, not {value}"));
            }
        }
        if self.monthly_usd.is_none()
            && self.requests.is_none()
            && self.egress_gb.is_none()
            && self.instance_hours.is_none()
        {
            return Err(
                "a budget needs a limit: monthly_usd, requests, egress_gb or instance_hours".into(),
            );
        }
        if let Some(bad) = self.alert_at.iter().find(|at| !(1..=1000).contains(*at)) {
            return Err(format!(
                "alert_at: {bad} is not a percentage from 1 to 1000"
            ));
        }
        if self.throttle_rps == Some(0) {
            return Err("throttle_rps must be at least 1".into());
        }
        Ok(())
    }

    /// The action for `process`.
    pub fn action_for(&self, process: &str) -> BudgetAction {
        self.processes
            .get(process)
            .copied()
            .unwrap_or(self.on_exceed)
    }
}

/// `PUT /v1/budgets/{app}` (`*` for the whole server).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetBudget {
    /// The budget; `None` removes the one set here (berth.toml's applies
    /// again).
    pub settings: Option<BudgetSettings>,
}

/// A budget's actions in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetHold {
    /// The month it holds for.
    pub period: String,
    /// Per process group, what was done (`*`: every group).
    pub actions: BTreeMap<String, BudgetAction>,
    /// When, unix seconds.
    pub since: u64,
    /// Which limit was crossed.
    pub reason: String,
    /// Requests per second per client while throttled.
    pub throttle_rps: u32,
    /// It is the server's budget's (`berth budget resume --server-wide`).
    #[serde(default)]
    pub server_wide: bool,
    /// It is the app's own and the server's together: both must be resumed.
    #[serde(default)]
    pub both: bool,
    /// A rate limit applies (a throttle, also one a stricter action on the
    /// same group hides in a combined hold).
    #[serde(default)]
    pub throttled: bool,
}

impl BudgetHold {
    /// The action on `group`: its own, else the one for every group (`*`).
    pub fn action_on(&self, group: &str) -> Option<BudgetAction> {
        self.actions
            .get(group)
            .or_else(|| self.actions.get("*"))
            .copied()
    }

    /// This hold and `other` together: on each group, the stricter action
    /// (alert < throttle < cap < scale-to-zero < suspend).
    pub fn merged(&self, other: &BudgetHold) -> BudgetHold {
        let mut actions = BTreeMap::new();
        let groups = self
            .actions
            .keys()
            .chain(other.actions.keys())
            .chain(std::iter::once(&"*".to_string()))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>();
        for group in groups {
            if let Some(action) = self.action_on(&group).max(other.action_on(&group)) {
                actions.insert(group, action);
            }
        }
        BudgetHold {
            period: self.period.clone(),
            actions,
            since: self.since.min(other.since),
            reason: format!("{}; {}", self.reason, other.reason),
            throttle_rps: self.throttle_rps.min(other.throttle_rps),
            server_wide: self.server_wide || other.server_wide,
            both: true,
            throttled: self.is_throttled() || other.is_throttled(),
        }
    }

    /// Whether a rate limit applies.
    pub fn is_throttled(&self) -> bool {
        self.throttled
            || self
                .actions
                .values()
                .any(|action| *action == BudgetAction::Throttle)
    }
}

/// `GET /v1/budgets/{app}`: a budget and where the month stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetStatus {
    /// The app, or `*` for the server's budget.
    pub app: String,
    /// The budget in force, if any.
    pub settings: Option<BudgetSettings>,
    /// Where it comes from: `berth.toml` or `berth budget set`.
    pub source: Option<String>,
    /// The month, `2026-12`.
    pub period: String,
    /// Money so far this month, as `price_as` counts it.
    pub spent_usd: f64,
    /// Money by month's end at the last hour's rate.
    pub projected_usd: f64,
    /// Requests so far this month.
    pub requests: u64,
    /// Gigabytes sent so far this month.
    pub egress_gb: f64,
    /// Instance-hours so far this month.
    pub instance_hours: f64,
    /// The share of the nearest limit used, in percent.
    pub used_percent: f64,
    /// Thresholds already alerted this month.
    pub alerted: Vec<u32>,
    /// What is in force, if the budget was crossed.
    pub hold: Option<BudgetHold>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_what_a_person_could_get_wrong() {
        let mut budget = BudgetSettings {
            monthly_usd: Some(-1.0),
            ..BudgetSettings::default()
        };
        assert!(budget.validate().unwrap_err().contains("positive"));
        budget.monthly_usd = Some(f64::NAN);
        assert!(budget.validate().is_err());
        budget.monthly_usd = None;
        assert!(budget.validate().unwrap_err().contains("needs a limit"));
        budget.requests = Some(10);
        budget.alert_at = vec![0];
        assert!(budget.validate().unwrap_err().contains("percentage"));
        budget.alert_at = vec![50, 100];
        budget.validate().unwrap();
        assert!(
            BudgetAction::parse("explode")
                .unwrap_err()
                .contains("scale-to-zero")
        );
        assert_eq!(
            BudgetAction::parse("scale-to-zero"),
            Ok(BudgetAction::ScaleToZero)
        );
    }

    #[test]
    fn a_process_override_wins_over_the_budget_action() {
        let mut budget = BudgetSettings {
            on_exceed: BudgetAction::ScaleToZero,
            ..BudgetSettings::default()
        };
        budget
            .processes
            .insert("worker".into(), BudgetAction::Alert);
        assert_eq!(budget.action_for("web"), BudgetAction::ScaleToZero);
        assert_eq!(budget.action_for("worker"), BudgetAction::Alert);
    }

    #[test]
    fn merged_holds_take_the_stricter_action_per_group() {
        let hold = |actions: &[(&str, BudgetAction)], server_wide| BudgetHold {
            period: "2026-12".into(),
            actions: actions
                .iter()
                .map(|(group, action)| (group.to_string(), *action))
                .collect(),
            since: 5,
            reason: "r".into(),
            throttle_rps: 3,
            server_wide,
            both: false,
            throttled: false,
        };
        let own = hold(
            &[
                ("*", BudgetAction::Throttle),
                ("worker", BudgetAction::Suspend),
            ],
            false,
        );
        let server = hold(&[("*", BudgetAction::ScaleToZero)], true);
        let merged = own.merged(&server);
        assert_eq!(merged.action_on("web"), Some(BudgetAction::ScaleToZero));
        assert_eq!(merged.action_on("worker"), Some(BudgetAction::Suspend));
        assert!(merged.server_wide && merged.both);
        // The server's throttle survives the app's own stricter cap.
        let capped = hold(&[("*", BudgetAction::Cap)], false);
        let throttled = hold(&[("*", BudgetAction::Throttle)], true);
        let combined = capped.merged(&throttled);
        assert_eq!(combined.action_on("web"), Some(BudgetAction::Cap));
        assert!(combined.is_throttled());
        let alert_only = hold(&[("worker", BudgetAction::Cap)], false);
        assert_eq!(alert_only.action_on("web"), None);
    }

    #[test]
    fn adding_usage_weights_the_average_memory_by_time() {
        let mut row = UsageRow {
            instance_seconds: 10.0,
            memory_avg_bytes: 100,
            memory_peak_bytes: 150,
            requests: 3,
            ..UsageRow::default()
        };
        row.add(&UsageRow {
            instance_seconds: 30.0,
            memory_avg_bytes: 200,
            memory_peak_bytes: 120,
            requests: 4,
            ..UsageRow::default()
        });
        assert_eq!(row.memory_avg_bytes, 175);
        assert_eq!(row.memory_peak_bytes, 150);
        assert_eq!(row.requests, 7);
        assert_eq!(row.instance_seconds, 40.0);
    }
}
