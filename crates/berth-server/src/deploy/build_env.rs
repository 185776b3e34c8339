//! What a build sees besides the source: `[build] env` (fly's
//! `[build.args]`), the app's secrets it names, `SQLX_OFFLINE` when the
//! source carries sqlx's offline query data, and with `[build] database =
//! true` the app's own `DATABASE_URL` (its database made first if need be,
//! and the source's `migrations/` applied to it), reachable from the
//! build's network.

use std::path::Path;

use berth_spec::AppSpec;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};

/// The build's env and the host loopback ports it may reach.
pub(super) struct BuildSurroundings {
    pub(super) env: Vec<(String, String)>,
    pub(super) loopback_ports: Vec<u16>,
}

impl Deployer {
    pub(super) async fn build_surroundings(
        &self,
        app: &str,
        spec: &AppSpec,
        source: &Path,
        progress: &Progress,
    ) -> Result<BuildSurroundings, DeployFailure> {
        let build = &spec.build;
        let mut env: Vec<(String, String)> = build
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for name in &build.secrets {
            let value = self
                .resources
                .secret_value(app, name)
                .map_err(DeployFailure::before_release)?
                .ok_or_else(|| {
                    DeployFailure::before_release(format!(
                        "[build] secrets names `{name}`, which `{app}` has no secret of (berth secrets set {name}=… --app {app})"
                    ))
                })?;
            env.push((name.clone(), value));
        }
        let mut loopback_ports = Vec::new();
        if build.database {
            if spec.resources.postgres && self.resources.attach_postgres(app).await? {
                say(
                    progress,
                    format!(
                        "made PostgreSQL database {} (DATABASE_URL) for the build",
                        berth_resources::postgres::database_name(app)
                    ),
                );
            }
            let (url, port) = self
                .resources
                .database_url(app)
                .map_err(DeployFailure::before_release)?
                .ok_or_else(|| {
                    DeployFailure::before_release(
                        "[build] database = true, but the app has no database: add [resources] postgres = true",
                    )
                })?;
            // The schema the queries are checked against is the one the
            // release will have: its migrations go first.
            let migrations = source.join("migrations");
            if migrations.is_dir() {
                let found = berth_resources::postgres::migrate::read_migrations(&migrations)
                    .map_err(DeployFailure::before_release)?;
                let done = berth_resources::postgres::migrate::apply(&url, &found)
                    .await
                    .map_err(DeployFailure::before_release)?;
                if !done.applied.is_empty() {
                    say(
                        progress,
                        format!(
                            "applied {} migration(s) before the build: {}",
                            done.applied.len(),
                            done.applied
                                .iter()
                                .map(|(version, description)| format!("{version} {description}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
            say(progress, "the build gets the app's DATABASE_URL");
            env.push(("DATABASE_URL".into(), url));
            loopback_ports.push(port);
        } else if !env.iter().any(|(key, _)| key == "SQLX_OFFLINE") {
            let offline = [".sqlx", "sqlx-data.json"]
                .into_iter()
                .find(|name| source.join(name).exists());
            if let Some(found) = offline {
                say(
                    progress,
                    format!(
                        "sqlx's offline query data ({found}) is in the source: the build runs with SQLX_OFFLINE=true"
                    ),
                );
                env.push(("SQLX_OFFLINE".into(), "true".into()));
            }
        }
        Ok(BuildSurroundings {
            env,
            loopback_ports,
        })
    }
}
