//! Validating `[budget]`: limits that are positive numbers, known
//! actions, percentages, and a provider to count money in.

use berth_proto::{BudgetAction, BudgetSettings};
use toml::Spanned;

use super::shapes::{NumberOrText, Problems, RawBudget};

/// Providers berth ships prices for (a `--prices` directory may add more:
/// the server checks `price_as` against its tables when it deploys).
pub const SHIPPED_PROVIDERS: [&str; 4] = ["cloud-run", "fly", "render", "own-server"];

fn positive(
    value: &Option<Spanned<NumberOrText>>,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<f64> {
    let value = value.as_ref()?;
    let number = match value.get_ref() {
        NumberOrText::Integer(number) => *number as f64,
        NumberOrText::Float(number) => *number,
        NumberOrText::Text(_) => f64::NAN,
    };
    if number.is_finite() && number > 0.0 {
        Some(number)
    } else {
        problems.at(
            value,
            format!("[budget] {key} must be a positive number, such as 20"),
        );
        None
    }
}

pub(super) fn validate_budget(raw: RawBudget, problems: &mut Problems<'_>) -> BudgetSettings {
    let mut budget = BudgetSettings {
        monthly_usd: positive(&raw.monthly_usd, "monthly_usd", problems),
        requests: positive(&raw.requests, "requests", problems).map(|count| count.ceil() as u64),
        egress_gb: positive(&raw.egress_gb, "egress_gb", problems),
        instance_hours: positive(&raw.instance_hours, "instance_hours", problems),
        ..BudgetSettings::default()
    };
    let action = |text: &Spanned<String>, problems: &mut Problems<'_>| {
        BudgetAction::parse(text.get_ref())
            .map_err(|message| problems.at(text, format!("[budget] {message}")))
            .ok()
    };
    if let Some(on_exceed) = &raw.on_exceed
        && let Some(parsed) = action(on_exceed, problems)
    {
        budget.on_exceed = parsed;
    }
    for (process, text) in &raw.processes {
        if let Some(parsed) = action(text, problems) {
            budget.processes.insert(process.clone(), parsed);
        }
    }
    if let Some(alert_at) = &raw.alert_at {
        if alert_at.get_ref().iter().all(|at| (1..=1000).contains(at)) {
            budget.alert_at = alert_at.get_ref().iter().map(|at| *at as u32).collect();
        } else {
            problems.at(
                alert_at,
                "[budget] alert_at holds percentages from 1 to 1000, such as [50, 80, 100]".into(),
            );
        }
    }
    if let Some(price_as) = &raw.price_as {
        let provider = price_as.get_ref().split('/').next().unwrap_or_default();
        if provider.is_empty()
            || !provider
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.at(
                price_as,
                format!(
                    "[budget] price_as `{}` is not a provider; berth ships {}",
                    price_as.get_ref(),
                    SHIPPED_PROVIDERS.join(", ")
                ),
            );
        } else {
            budget.price_as = price_as.get_ref().clone();
        }
    }
    if let Some(rps) = &raw.throttle_rps {
        match u32::try_from(*rps.get_ref()) {
            Ok(rps) if rps >= 1 => budget.throttle_rps = Some(rps),
            _ => problems.at(rps, "[budget] throttle_rps must be at least 1".into()),
        }
    }
    let no_limit = budget.monthly_usd.is_none()
        && budget.requests.is_none()
        && budget.egress_gb.is_none()
        && budget.instance_hours.is_none();
    let had_error = [
        &raw.monthly_usd,
        &raw.requests,
        &raw.egress_gb,
        &raw.instance_hours,
    ]
    .iter()
    .any(|value| value.is_some());
    if no_limit && !had_error {
        problems.found.push(crate::error::SpecProblem {
            location: None,
            message: "[budget] needs a limit: monthly_usd, requests, egress_gb or instance_hours"
                .into(),
        });
    }
    budget
}

#[cfg(test)]
mod tests {
    use berth_proto::BudgetAction;

    fn problem(text: &str) -> String {
        crate::parse_spec("berth.toml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_budget_reads_limits_actions_and_overrides() {
        let parsed = crate::parse_spec(
            "berth.toml",
            "[budget]\nmonthly_usd = 20\nrequests = 1000000\nalert_at = [50, 90]\non_exceed = \"scale-to-zero\"\nprice_as = \"fly\"\nthrottle_rps = 5\n[budget.processes]\nworker = \"alert\"\n",
        )
        .unwrap();
        let budget = parsed.spec.budget.unwrap();
        assert_eq!(budget.monthly_usd, Some(20.0));
        assert_eq!(budget.requests, Some(1_000_000));
        assert_eq!(budget.alert_at, vec![50, 90]);
        assert_eq!(budget.on_exceed, BudgetAction::ScaleToZero);
        assert_eq!(budget.action_for("worker"), BudgetAction::Alert);
        assert_eq!(budget.price_as, "fly");
        assert_eq!(budget.throttle_rps, Some(5));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }

    #[test]
    fn bad_budgets_are_refused_at_their_line_and_column() {
        let negative = problem("[budget]\nmonthly_usd = -5\n");
        assert!(
            negative.contains("berth.toml:2:15") && negative.contains("positive"),
            "{negative}"
        );
        let text = problem("[budget]\nmonthly_usd = \"lots\"\n");
        assert!(text.contains("berth.toml:2:15"), "{text}");
        let action = problem("[budget]\nmonthly_usd = 5\non_exceed = \"explode\"\n");
        assert!(
            action.contains("berth.toml:3:13") && action.contains("scale-to-zero"),
            "{action}"
        );
        let percent = problem("[budget]\nrequests = 5\nalert_at = [0, 50]\n");
        assert!(percent.contains("berth.toml:3:12"), "{percent}");
        let none = problem("[budget]\non_exceed = \"cap\"\n");
        assert!(none.contains("needs a limit"), "{none}");
        let provider = problem("[budget]\nrequests = 5\nprice_as = \"Heroku!\"\n");
        assert!(
            provider.contains("berth.toml:3:12") && provider.contains("cloud-run"),
            "{provider}"
        );
        let unknown = problem("[budget]\nrequests = 5\nmonthly_eur = 3\n");
        assert!(unknown.contains("monthly_eur"), "{unknown}");
    }
}
