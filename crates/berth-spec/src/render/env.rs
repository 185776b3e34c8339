//! A service's `envVars`: plain values, generated and asked-once secrets,
//! and values taken from databases, key-value stores and other services.

use super::context::{Problems, Shared, scalar};
use super::raw::{RawEnvVar, RawService};
use crate::{AppSpec, EnvFrom, EnvSource};

/// Sets `spec`'s env from `vars`; keys Render has but one machine cannot
/// honour go to `ignored`.
pub(super) fn apply(
    shared: &Shared<'_>,
    problems: &mut Problems<'_>,
    service: &RawService,
    app: &str,
    spec: &mut AppSpec,
    ignored: &mut Vec<&'static str>,
    vars: Vec<RawEnvVar>,
) {
    let app_of = crate::app_name_from_package;
    let Shared {
        databases,
        database_owner,
        key_values,
        redis_owner,
        app_services,
        ..
    } = shared;
    let mut used_database: Option<String> = None;
    for var in vars {
        let Some(key) = var.key.clone() else {
            problems.at(
                &service.name,
                Some("envVars"),
                format!("service `{}`: an envVars entry has no key", service.name),
            );
            continue;
        };
        if var.preview_value.is_some() {
            ignored.push("previewValue");
        }
        if let Some(value) = &var.value {
            spec.env.insert(key, scalar(value));
        } else if var.generate_value == Some(true) {
            spec.env_from.push(EnvFrom {
                key,
                source: EnvSource::Generated,
            });
        } else if var.sync == Some(false) {
            spec.env_from.push(EnvFrom {
                key,
                source: EnvSource::AskOnce,
            });
        } else if let Some(from) = &var.from_database {
            if !databases.contains_key(from.name.as_str()) {
                problems.at(
                    &service.name,
                    Some("envVars"),
                    format!(
                        "`{key}` is from database `{}`, which `databases` does not define",
                        from.name
                    ),
                );
                continue;
            }
            let owner = &database_owner[&from.name];
            if let Some(first) = &used_database
                && *first != from.name
            {
                problems.at(
                    &service.name,
                    Some("envVars"),
                    format!(
                        "service `{}` uses databases `{first}` and `{}`; a berth app has one database",
                        service.name, from.name
                    ),
                );
                continue;
            }
            used_database = Some(from.name.clone());
            if *owner == app {
                spec.resources.postgres = true;
            } else {
                spec.resources.postgres_from = Some(owner.clone());
            }
            if key == "DATABASE_URL" && is_connection_string(&from.property) {
                // berth sets DATABASE_URL itself.
                continue;
            }
            spec.env_from.push(EnvFrom {
                key,
                source: EnvSource::Postgres {
                    property: from.property.clone(),
                },
            });
        } else if let Some(from) = &var.from_service {
            if matches!(from.kind.as_str(), "keyvalue" | "redis") {
                if !key_values.contains_key(from.name.as_str()) {
                    problems.at(
                        &service.name,
                        Some("envVars"),
                        format!(
                            "`{key}` is from key-value store `{}`, which no service defines",
                            from.name
                        ),
                    );
                    continue;
                }
                let owner = &redis_owner[&from.name];
                if *owner == app {
                    spec.resources.redis = true;
                } else {
                    spec.resources.redis_from = Some(owner.clone());
                }
                if key == "REDIS_URL" && from.property.as_deref().is_none_or(is_connection_string) {
                    // berth sets REDIS_URL itself.
                    continue;
                }
                spec.env_from.push(EnvFrom {
                    key,
                    source: EnvSource::Redis {
                        property: from
                            .property
                            .clone()
                            .unwrap_or_else(|| "connectionString".into()),
                    },
                });
            } else if let Some(other_key) = &from.env_var_key {
                let value = app_services
                    .iter()
                    .find(|other| other.name == from.name)
                    .and_then(|other| {
                        other
                            .env_vars
                            .iter()
                            .find(|var| var.key.as_deref() == Some(other_key))
                    })
                    .and_then(|var| var.value.as_ref().map(scalar));
                match value {
                    Some(value) => {
                        spec.env.insert(key, value);
                    }
                    None => problems.at(
                        &service.name,
                        Some("envVars"),
                        format!("`{key}` copies `{other_key}` of service `{}`, which has no plain value for it", from.name),
                    ),
                }
            } else {
                spec.env_from.push(EnvFrom {
                    key,
                    source: EnvSource::AppAddress {
                        app: app_of(&from.name),
                        property: from.property.clone().unwrap_or_else(|| "hostport".into()),
                    },
                });
            }
        } else {
            problems.at(
                &service.name,
                Some("envVars"),
                format!(
                    "`{key}` has no value, generateValue, fromDatabase, fromService or sync: false"
                ),
            );
        }
    }
}

fn is_connection_string(property: &str) -> bool {
    matches!(property, "connectionString" | "connection_string")
}
