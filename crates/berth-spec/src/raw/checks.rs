//! Validating one health check: `[[http_service.checks]]`,
//! `[[services.http_checks]]`, `[[services.tcp_checks]]` or `[checks.NAME]`.

use super::shapes::*;
use super::values::*;
use super::*;

/// The methods an HTTP check may use.
const CHECK_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `service_port`: the port of the `[[services]]` entry the check belongs
/// to, when that is not the HTTP port.
pub(super) fn validate_check(
    file: &str,
    check: RawHttpCheck,
    service_port: Option<u16>,
    processes: Option<Vec<String>>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> HealthCheck {
    let mut health = HealthCheck {
        processes,
        ..HealthCheck::default()
    };
    let is_tcp = match &check.kind {
        None => false,
        Some(kind) => match kind.get_ref().to_ascii_lowercase().as_str() {
            "tcp" => true,
            "http" => false,
            other => {
                warnings.push(format!(
                    "{file}: check type `{other}` is not one berth runs (\"http\" or \"tcp\"); it is run as an HTTP check"
                ));
                false
            }
        },
    };
    if !is_tcp {
        health.http_path = Some(check.path.clone().unwrap_or_else(|| "/".into()));
    }
    health.port = match &check.port {
        Some(port) => named_port_value(port, "port", problems),
        None => service_port,
    };
    // fly reads bare numbers in checks as milliseconds.
    if let Some(interval) = &check.interval
        && let Some(value) = duration_value(interval, Unit::Millis, "interval", problems)
    {
        health.interval = value.max(Duration::from_millis(100));
    }
    if let Some(timeout) = &check.timeout
        && let Some(value) = duration_value(timeout, Unit::Millis, "timeout", problems)
    {
        health.timeout = value.max(Duration::from_millis(10));
    }
    if let Some(grace) = &check.grace_period
        && let Some(value) = duration_value(grace, Unit::Millis, "grace_period", problems)
    {
        health.grace_period = value;
    }
    if let Some(method) = &check.method {
        let upper = method.get_ref().to_ascii_uppercase();
        if CHECK_METHODS.contains(&upper.as_str()) {
            if upper != "GET" {
                health.method = Some(upper);
            }
        } else {
            warnings.push(format!(
                "{file}: check method `{}` is not one of {}; the check uses GET",
                method.get_ref(),
                CHECK_METHODS.join(", ")
            ));
        }
    }
    if let Some(headers) = &check.headers {
        health.headers = check_headers(file, headers, warnings);
    }
    if check.protocol.as_deref().is_some_and(|p| p != "http") {
        warnings.push(format!(
            "{file}: health checks speak plain HTTP to the instance; protocol `{}` is ignored",
            check.protocol.as_deref().unwrap_or_default()
        ));
    }
    let _ = (
        check.tls_skip_verify,
        check.tls_server_name,
        check.restart_limit,
    );
    health
}

/// Headers as a table (`{ X-Key = "v" }`) or fly's list of `{ name, value }`.
fn check_headers(
    file: &str,
    headers: &Spanned<toml::Value>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        toml::Value::Array(values) => values
            .first()
            .and_then(|first| first.as_str())
            .map(String::from),
        _ => None,
    };
    let mut pairs = Vec::new();
    match headers.get_ref() {
        toml::Value::Table(table) => {
            for (name, value) in table {
                pairs.push((name.clone(), scalar(value)));
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                let name = item.get("name").and_then(|name| name.as_str());
                let value = item.get("value").and_then(scalar);
                pairs.push((name.unwrap_or_default().to_string(), value));
            }
        }
        _ => {}
    }
    let mut valid = BTreeMap::new();
    for (name, value) in pairs {
        let token = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        match value {
            Some(value) if token && !value.contains(['\r', '\n', '\0']) => {
                valid.insert(name, value);
            }
            _ => warnings.push(format!(
                "{file}: check header `{name}` is not sent: a header needs a name of letters, digits and -, and a one-line text value"
            )),
        }
    }
    valid
}
