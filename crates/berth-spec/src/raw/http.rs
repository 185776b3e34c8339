//! Validating the HTTP service and its scaling.

use super::shapes::*;
use super::values::*;
use super::*;
use crate::{TcpPort, TcpService};

pub(super) fn validate_http(
    file: &str,
    http_service: Option<RawHttpService>,
    services: Vec<RawService>,
    checks: BTreeMap<String, RawCheck>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> (HttpService, Vec<TcpService>) {
    let mut spec = HttpService::default();
    // Each check with the port it probes (`None`: the HTTP port).
    let mut raw_checks: Vec<(RawHttpCheck, Option<u16>, Option<Vec<String>>)> = Vec::new();
    let mut scaling: Option<ScalingKeys> = None;
    let mut tcp_services = Vec::new();
    let mut declared_http = http_service.is_some();

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
        for check in http.checks.map(OneOrMany::into_vec).unwrap_or_default() {
            raw_checks.push((check, None, None));
        }
        scaling = Some(ScalingKeys {
            auto_stop: http.auto_stop_machines,
            auto_start: http.auto_start_machines,
            min: http.min_machines_running.or(http.min_instances),
            max: http.max_machines_running.or(http.max_instances),
            concurrency: http.concurrency,
            idle_timeout: http.idle_timeout,
            scale_in_delay: http.scale_in_delay,
            container_concurrency: http.container_concurrency,
        });
        if http.http_options.is_some() || http.tls_options.is_some() {
            warnings.push(format!(
                "{file}: [http_service] http_options and tls_options are ignored"
            ));
        }
    }

    for (index, service) in services.into_iter().enumerate() {
        let number = index + 1;
        let protocol = service.protocol.as_deref().unwrap_or("tcp");
        if protocol != "tcp" {
            warnings.push(format!(
                "{file}: [[services]] #{number} uses protocol `{protocol}`; berth forwards tcp only, so it is ignored"
            ));
            continue;
        }
        let internal_port = service
            .internal_port
            .as_ref()
            .and_then(|port| port_value(port, problems));
        let processes: Option<Vec<String>> = service
            .processes
            .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        let ports = service.ports.map(OneOrMany::into_vec).unwrap_or_default();
        let serves_http = ports.is_empty()
            || ports.iter().any(|port| {
                port.handlers
                    .iter()
                    .any(|handler| handler.eq_ignore_ascii_case("http"))
            });
        if service.script_checks.is_some() {
            warnings.push(format!("{file}: script_checks are ignored"));
        }
        let service_checks = service
            .http_checks
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .chain(
                service
                    .tcp_checks
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut check| {
                        check.kind = Some(Spanned::new(0..0, "tcp".into()));
                        check
                    }),
            );
        if !serves_http {
            let Some(internal_port) = internal_port else {
                problems.found.push(SpecProblem {
                    location: None,
                    message: format!(
                        "[[services]] #{number} has ports but no internal_port: which port of the app should they reach?"
                    ),
                });
                continue;
            };
            for check in service_checks {
                raw_checks.push((check, Some(internal_port), processes.clone()));
            }
            let ports = tcp_ports(file, number, ports, problems, warnings);
            if !ports.is_empty() {
                tcp_services.push(TcpService {
                    internal_port,
                    ports,
                    processes,
                });
            }
            continue;
        }
        let same_port = spec.internal_port.is_none() || spec.internal_port == internal_port;
        if !same_port {
            warnings.push(format!(
                "{file}: [[services]] #{number} serves HTTP on internal_port {} but the app's HTTP goes to {}: berth routes one HTTP port per app, so this service is reachable only at APP.internal:{}",
                internal_port.unwrap_or_default(),
                spec.internal_port.unwrap_or_default(),
                internal_port.unwrap_or_default(),
            ));
            continue;
        }
        declared_http = true;
        if spec.internal_port.is_none() {
            spec.internal_port = internal_port;
        }
        if spec.processes.is_none() {
            spec.processes.clone_from(&processes);
        }
        spec.force_https |= ports.iter().any(|port| port.force_https == Some(true));
        for check in service_checks {
            raw_checks.push((check, None, None));
        }
        // flyctl keeps each service's own keys; one HTTP route here takes
        // the first value given for each.
        let keys = ScalingKeys {
            auto_stop: service.auto_stop_machines,
            auto_start: service.auto_start_machines,
            min: service.min_machines_running,
            concurrency: service.concurrency,
            ..ScalingKeys::default()
        };
        scaling = Some(match scaling {
            Some(first) => first.or(keys),
            None => keys,
        });
    }
    // No HTTP declared, only TCP services: instances listen on the first
    // service's port, and the default check connects to it (as before
    // berth read TCP services).
    if !declared_http
        && spec.internal_port.is_none()
        && let Some(first) = tcp_services.first()
    {
        spec.internal_port = Some(first.internal_port);
    }
    spec.scaling = validate_scaling(scaling.unwrap_or_default(), problems);
    for check in checks.into_values() {
        let processes = check
            .processes
            .clone()
            .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        raw_checks.push((check, None, processes));
    }

    let mut validated = raw_checks
        .into_iter()
        .map(|(check, port, processes)| {
            super::checks::validate_check(file, check, port, processes, problems, warnings)
        })
        .collect::<Vec<_>>()
        .into_iter();
    if let Some(first) = validated.next() {
        spec.check = first;
        spec.extra_checks = validated.collect();
    }
    (spec, tcp_services)
}

/// The public ports of a TCP service: each `port` (or `start_port` to
/// `end_port`), with `tls` and `proxy_proto` handlers.
fn tcp_ports(
    file: &str,
    number: usize,
    ports: Vec<RawServicePort>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<TcpPort> {
    let mut valid = Vec::new();
    for port in ports {
        let tls = port
            .handlers
            .iter()
            .any(|handler| handler.eq_ignore_ascii_case("tls"));
        let proxy_proto_v1 = port
            .proxy_proto_options
            .as_ref()
            .and_then(|options| options.get("version"))
            .and_then(|version| version.as_str())
            .is_some_and(|version| version.eq_ignore_ascii_case("v1"));
        if port
            .handlers
            .iter()
            .any(|handler| handler.eq_ignore_ascii_case("pg_tls"))
        {
            warnings.push(format!(
                "{file}: [[services]] #{number}: the pg_tls handler (Fly ends PostgreSQL's TLS) is not one berth has; the connection's bytes, TLS request included, go to the app"
            ));
        }
        let proxy_proto = port.proxy_proto_options.is_some()
            || port
                .handlers
                .iter()
                .any(|handler| handler.eq_ignore_ascii_case("proxy_proto"));
        let numbers = match (&port.port, &port.start_port, &port.end_port) {
            (Some(single), _, _) => {
                named_port_value(single, "port", problems).map(|number| number..=number)
            }
            (None, Some(start), Some(end)) => {
                match (
                    named_port_value(start, "start_port", problems),
                    named_port_value(end, "end_port", problems),
                ) {
                    (Some(first), Some(last)) if first <= last && last - first < 64 => {
                        Some(first..=last)
                    }
                    (Some(first), Some(last)) => {
                        warnings.push(format!(
                            "{file}: [[services]] #{number}: ports {first} to {last} are skipped: berth forwards a range of at most 64 ports, start first"
                        ));
                        None
                    }
                    _ => None,
                }
            }
            _ => {
                problems.found.push(SpecProblem {
                    location: None,
                    message: format!(
                        "[[services]] #{number}: a [[services.ports]] entry needs `port` (or `start_port` and `end_port`)"
                    ),
                });
                None
            }
        };
        for public in numbers.into_iter().flatten() {
            valid.push(TcpPort {
                port: public,
                tls,
                proxy_proto,
                proxy_proto_v1,
            });
        }
        let _ = (port.tls_options, port.http_options, port.force_https);
    }
    valid
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
