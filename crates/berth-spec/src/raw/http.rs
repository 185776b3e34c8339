//! Validating the HTTP service and its scaling.

use super::shapes::*;
use super::values::*;
use super::*;

pub(super) fn validate_http(
    file: &str,
    http_service: Option<RawHttpService>,
    services: Vec<RawService>,
    checks: BTreeMap<String, RawCheck>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> HttpService {
    let mut spec = HttpService::default();
    let mut raw_checks: Vec<RawHttpCheck> = Vec::new();

    if let Some(http) = http_service {
        if let Some(port) = &http.internal_port {
            spec.internal_port = port_value(port, problems);
        }
        spec.force_https = http.force_https.unwrap_or(false);
        spec.hsts = http.hsts.unwrap_or(false);
        if let Some(tls) = &http.tls {
            match tls.get_ref().as_str() {
                "internal" => spec.tls_internal = true,
                "auto" => {}
                other => problems.at(
                    tls,
                    format!(
                        "[http_service] tls: `{other}` is neither \"auto\" (the ACME CA's certificates where it can issue them) nor \"internal\" (berth's own CA's)"
                    ),
                ),
            }
        }
        for domain in &http.domains {
            match berth_proto::validate_domain(domain.get_ref()) {
                Ok(name) if !spec.domains.contains(&name) => spec.domains.push(name),
                Ok(_) => {}
                Err(why) => problems.at(domain, format!("[http_service] domains: {why}")),
            }
        }
        spec.processes = http
            .processes
            .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        raw_checks.extend(http.checks);
        spec.scaling = validate_scaling(
            ScalingKeys {
                auto_stop: http.auto_stop_machines,
                auto_start: http.auto_start_machines,
                min: http.min_machines_running.or(http.min_instances),
                max: http.max_machines_running.or(http.max_instances),
                concurrency: http.concurrency,
                idle_timeout: http.idle_timeout,
                scale_in_delay: http.scale_in_delay,
                container_concurrency: http.container_concurrency,
            },
            problems,
        );
        if http.http_options.is_some() || http.tls_options.is_some() {
            warnings.push(format!(
                "{file}: [http_service] http_options and tls_options are ignored"
            ));
        }
    }

    for (index, service) in services.into_iter().enumerate() {
        let protocol = service.protocol.as_deref().unwrap_or("tcp");
        if protocol != "tcp" {
            warnings.push(format!(
                "{file}: [[services]] #{} uses protocol `{protocol}`; berth routes only HTTP over tcp",
                index + 1
            ));
            continue;
        }
        if spec.internal_port.is_none()
            && let Some(port) = &service.internal_port
        {
            spec.internal_port = port_value(port, problems);
        }
        if spec.processes.is_none() {
            spec.processes = service
                .processes
                .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        }
        raw_checks.extend(service.http_checks);
        raw_checks.extend(service.tcp_checks.into_iter().map(|mut check| {
            check.kind = Some("tcp".into());
            check
        }));
        if service.script_checks.is_some() {
            warnings.push(format!("{file}: script_checks are ignored"));
        }
        let _ = service.ports;
        if !spec.scaling.is_active() {
            spec.scaling = validate_scaling(
                ScalingKeys {
                    auto_stop: service.auto_stop_machines,
                    auto_start: service.auto_start_machines,
                    min: service.min_machines_running,
                    concurrency: service.concurrency,
                    ..ScalingKeys::default()
                },
                problems,
            );
        }
    }
    raw_checks.extend(checks.into_values());

    if let Some(check) = raw_checks.into_iter().next() {
        let mut health = HealthCheck::default();
        let is_tcp = check.kind.as_deref() == Some("tcp");
        if !is_tcp {
            health.http_path = Some(check.path.clone().unwrap_or_else(|| "/".into()));
        }
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
        if let Some(grace) = &check.grace_period {
            // Startup is waited for by the deploy timeout; the grace period only
            // needs to parse.
            let _ = duration_value(grace, Unit::Millis, "grace_period", problems);
        }
        if let Some(method) = &check.method
            && !method.eq_ignore_ascii_case("GET")
        {
            warnings.push(format!(
                "{file}: health checks use GET; method `{method}` is ignored"
            ));
        }
        let _ = (
            check.protocol,
            check.tls_skip_verify,
            check.headers,
            check.port,
            check.restart_limit,
        );
        spec.check = health;
    }
    spec
}

pub(super) fn validate_scaling(
    keys: ScalingKeys,
    problems: &mut Problems<'_>,
) -> crate::model::Scaling {
    let mut scaling = crate::model::Scaling::default();
    if let Some(value) = &keys.auto_stop {
        scaling.auto_stop = match value.get_ref() {
            BoolOrText::Bool(on) => *on,
            BoolOrText::Text(text) => match text.to_ascii_lowercase().as_str() {
                "off" | "false" => false,
                // A suspended machine resumes faster on Fly; here both stop.
                "stop" | "suspend" | "true" => true,
                other => {
                    problems.at(
                        value,
                        format!("auto_stop_machines = \"{other}\": use true/false, \"off\", \"stop\" or \"suspend\""),
                    );
                    false
                }
            },
        };
    }
    if let Some(value) = &keys.auto_start {
        scaling.auto_start = match value.get_ref() {
            BoolOrText::Bool(on) => *on,
            BoolOrText::Text(text) if text.eq_ignore_ascii_case("true") => true,
            BoolOrText::Text(text) if text.eq_ignore_ascii_case("false") => false,
            BoolOrText::Text(text) => {
                problems.at(
                    value,
                    format!("auto_start_machines = \"{text}\": use true or false"),
                );
                true
            }
        };
    }
    let at_most =
        |value: &Spanned<NumberOrText>, key: &str, count: u32, problems: &mut Problems<'_>| {
            if count > crate::MAX_INSTANCES_PER_GROUP {
                problems.at(
                    value,
                    format!(
                        "{key} = {count} is more than the {} instances a process group may have",
                        crate::MAX_INSTANCES_PER_GROUP
                    ),
                );
            }
        };
    if let Some(value) = &keys.min
        && let Some(min) = count_value(value, "min_machines_running", problems)
    {
        at_most(value, "min_machines_running", min, problems);
        scaling.min = min;
    }
    if let Some(value) = &keys.max {
        scaling.max = count_value(value, "max_machines_running", problems);
        if let Some(max) = scaling.max {
            at_most(value, "max_machines_running", max, problems);
        }
        if let Some(max) = scaling.max
            && max < scaling.min.max(1)
        {
            problems.at(
                value,
                format!("max_machines_running ({max}) must be at least 1 and at least min_machines_running ({})", scaling.min),
            );
        }
    }
    if let Some(concurrency) = &keys.concurrency {
        if let Some(kind) = &concurrency.kind {
            match kind.get_ref().as_str() {
                "requests" | "connections" => scaling.limit_type = kind.get_ref().clone(),
                other => problems.at(
                    kind,
                    format!("concurrency type `{other}`: use \"requests\" or \"connections\""),
                ),
            }
        }
        if let Some(value) = &concurrency.soft_limit {
            scaling.soft_limit =
                count_value(value, "soft_limit", problems).filter(|limit| *limit > 0);
        }
        if let Some(value) = &concurrency.hard_limit {
            scaling.hard_limit =
                count_value(value, "hard_limit", problems).filter(|limit| *limit > 0);
        }
        if let (Some(soft), Some(hard), Some(at)) = (
            scaling.soft_limit,
            scaling.hard_limit,
            &concurrency.soft_limit,
        ) && soft > hard
        {
            problems.at(
                at,
                format!("soft_limit ({soft}) must not exceed hard_limit ({hard})"),
            );
        }
    }
    if let Some(value) = &keys.container_concurrency
        && let Some(limit) =
            count_value(value, "container_concurrency", problems).filter(|limit| *limit > 0)
    {
        // Cloud Run scales out before instances are full: at 80% here.
        scaling.hard_limit = Some(limit);
        scaling.soft_limit = Some((limit * 4 / 5).max(1));
    }
    if let Some(value) = &keys.idle_timeout
        && let Some(duration) = duration_value(value, Unit::Seconds, "idle_timeout", problems)
    {
        scaling.idle_timeout = duration.max(Duration::from_millis(100));
    }
    if let Some(value) = &keys.scale_in_delay
        && let Some(duration) = duration_value(value, Unit::Seconds, "scale_in_delay", problems)
    {
        scaling.scale_in_delay = duration;
    }
    scaling
}
