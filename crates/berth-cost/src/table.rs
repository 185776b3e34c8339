//! Price tables: one TOML file per provider, shipped with berth and
//! overridable with a directory of the same files (`--prices DIR`).

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::CostError;

/// The tables berth ships, by file name.
pub const SHIPPED: [(&str, &str); 4] = [
    ("cloud-run.toml", include_str!("../prices/cloud-run.toml")),
    ("fly.toml", include_str!("../prices/fly.toml")),
    ("render.toml", include_str!("../prices/render.toml")),
    ("own-server.toml", include_str!("../prices/own-server.toml")),
];

/// One provider's prices.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    /// Its key: `cloud-run`.
    pub provider: String,
    /// For a person: `Google Cloud Run`.
    pub title: String,
    /// The date the prices were read, `2026-11-01`.
    pub valid_from: String,
    /// Where they were read.
    pub source: String,
    /// Its billing models, each priced side by side.
    pub plans: Vec<Plan>,
}

/// What instance time is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BilledTime {
    /// Every second an instance runs.
    Instance,
    /// Only seconds with a request in flight (Cloud Run's request-based
    /// billing); groups that serve no requests are billed by instance time.
    Busy,
}

/// A size a provider sells, at a monthly price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Its name: `shared-cpu-1x`.
    pub name: String,
    /// Its CPUs.
    pub cpus: f64,
    /// Its memory, MiB.
    pub memory_mb: u32,
    /// Its price for a whole month.
    pub usd_per_month: f64,
}

/// What a plan gives for free each month.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeTier {
    /// vCPU-seconds.
    #[serde(default)]
    pub vcpu_seconds: f64,
    /// GiB-seconds.
    #[serde(default)]
    pub gib_seconds: f64,
    /// Requests.
    #[serde(default)]
    pub requests: f64,
    /// Gigabytes sent.
    #[serde(default)]
    pub egress_gb: f64,
    /// Instance-hours.
    #[serde(default)]
    pub instance_hours: f64,
    /// Gigabyte-months of backups.
    #[serde(default)]
    pub backup_gb_months: f64,
}

/// One billing model of a provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its key: `request-based`.
    pub name: String,
    /// For a person.
    pub title: String,
    /// What instance time is billed.
    pub billed_time: BilledTime,
    /// Price per vCPU-second (resource pricing).
    #[serde(default)]
    pub vcpu_second: f64,
    /// Price per GiB-second of memory (resource pricing).
    #[serde(default)]
    pub gib_second: f64,
    /// Sizes sold (size pricing): the cheapest holding the declared size
    /// is billed.
    #[serde(default)]
    pub sizes: Vec<Size>,
    /// Hours a monthly size price covers.
    #[serde(default = "default_hours_per_month")]
    pub hours_per_month: f64,
    /// Price per million requests.
    #[serde(default)]
    pub usd_per_million_requests: f64,
    /// Price per gigabyte sent.
    #[serde(default)]
    pub egress_usd_per_gb: f64,
    /// Price per gigabyte sent from a region, where it differs by region
    /// (`berth cost --region`); `egress_usd_per_gb` otherwise.
    #[serde(default)]
    pub egress_usd_per_gb_by_region: std::collections::BTreeMap<String, f64>,
    /// Price per gigabyte of volume kept a month.
    #[serde(default)]
    pub volume_usd_per_gb_month: f64,
    /// Price per gigabyte of managed database storage kept a month (the
    /// app's PostgreSQL database on the provider's database product).
    #[serde(default)]
    pub database_usd_per_gb_month: f64,
    /// Price per gigabyte of database backups kept a month.
    #[serde(default)]
    pub backup_usd_per_gb_month: f64,
    /// A whole server's monthly price, split by share of use.
    #[serde(default)]
    pub server_usd_per_month: Option<f64>,
    /// What is free each month.
    #[serde(default)]
    pub free: FreeTier,
}

fn default_hours_per_month() -> f64 {
    730.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    provider: String,
    title: String,
    valid_from: Spanned<String>,
    source: String,
    plans: Vec<Spanned<Plan>>,
}

impl PriceTable {
    /// Reads a table, naming `file` and the line and column of a mistake.
    pub fn parse(file: &str, text: &str) -> Result<PriceTable, CostError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            CostError::Table {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawTable = toml::from_str(text)
            .map_err(|err| at(err.span().unwrap_or(0..0), err.message().trim().to_string()))?;
        let date = raw.valid_from.get_ref();
        let valid_date = date.len() == 10
            && date
                .char_indices()
                .all(|(index, c)| matches!(index, 4 | 7) && c == '-' || c.is_ascii_digit());
        if !valid_date {
            return Err(at(
                raw.valid_from.span(),
                format!("valid_from `{date}` is not a date like 2026-11-01"),
            ));
        }
        if raw.plans.is_empty() {
            return Err(at(
                0..0,
                "a price table needs at least one [[plans]]".into(),
            ));
        }
        let mut plans = Vec::new();
        for spanned in raw.plans {
            let span = spanned.span();
            let plan = spanned.into_inner();
            if let Some(problem) = plan.problem() {
                return Err(at(span, format!("plan `{}`: {problem}", plan.name)));
            }
            plans.push(plan);
        }
        Ok(PriceTable {
            provider: raw.provider,
            title: raw.title,
            valid_from: raw.valid_from.into_inner(),
            source: raw.source,
            plans,
        })
    }

    /// The shipped tables, then those in `dir` (which replace a shipped one
    /// of the same provider, or add a provider).
    pub fn load(dir: Option<&Path>) -> Result<Vec<PriceTable>, CostError> {
        let mut tables: Vec<PriceTable> = SHIPPED
            .iter()
            .map(|(file, text)| PriceTable::parse(file, text))
            .collect::<Result<_, _>>()?;
        let Some(dir) = dir else {
            return Ok(tables);
        };
        let entries = std::fs::read_dir(dir).map_err(|err| CostError::Read {
            path: dir.display().to_string(),
            message: err.to_string(),
        })?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        for path in files {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|err| CostError::Read {
                path: shown.clone(),
                message: err.to_string(),
            })?;
            let table = PriceTable::parse(&shown, &text)?;
            tables.retain(|known| known.provider != table.provider);
            tables.push(table);
        }
        Ok(tables)
    }
}

impl Plan {
    /// What is wrong with it, if anything: a negative price, sizes with
    /// resource prices, no way to price instance time.
    fn problem(&self) -> Option<String> {
        let prices = [
            ("vcpu_second", self.vcpu_second),
            ("gib_second", self.gib_second),
            ("usd_per_million_requests", self.usd_per_million_requests),
            ("egress_usd_per_gb", self.egress_usd_per_gb),
            ("volume_usd_per_gb_month", self.volume_usd_per_gb_month),
            ("database_usd_per_gb_month", self.database_usd_per_gb_month),
            ("backup_usd_per_gb_month", self.backup_usd_per_gb_month),
            ("hours_per_month", self.hours_per_month),
            (
                "server_usd_per_month",
                self.server_usd_per_month.unwrap_or(0.0),
            ),
        ];
        if let Some((name, value)) = prices
            .iter()
            .find(|(_, value)| !(value.is_finite() && *value >= 0.0))
        {
            return Some(format!("{name} = {value} is not a price of zero or more"));
        }
        if let Some((region, value)) = self
            .egress_usd_per_gb_by_region
            .iter()
            .find(|(_, value)| !(value.is_finite() && **value >= 0.0))
        {
            return Some(format!(
                "egress_usd_per_gb_by_region.{region} = {value} is not a price of zero or more"
            ));
        }
        if self.hours_per_month == 0.0 {
            return Some("hours_per_month must be more than zero".into());
        }
        if let Some(size) = self.sizes.iter().find(|size| {
            !(size.usd_per_month.is_finite() && size.usd_per_month >= 0.0 && size.cpus > 0.0)
        }) {
            return Some(format!(
                "size `{}` needs cpus above zero and a price of zero or more",
                size.name
            ));
        }
        let resource_priced = self.vcpu_second > 0.0 || self.gib_second > 0.0;
        if resource_priced && !self.sizes.is_empty() {
            return Some("give sizes or vcpu_second/gib_second, not both".into());
        }
        None
    }
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}
