//! What a release needs before it runs: its databases, Redis, volumes and
//! secrets, and the databases it shares with another app.

use std::collections::BTreeMap;

use berth_spec::AppSpec;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};

impl Deployer {
    /// Gives the app what its spec asks for (a database, a Redis, volumes)
    /// before its release is made, so the release command can use them.
    pub(super) async fn prepare_resources(
        &self,
        app: &str,
        spec: &AppSpec,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        if spec.resources.postgres && self.resources.attach_postgres(app).await? {
            say(
                progress,
                format!(
                    "made PostgreSQL database {} (DATABASE_URL)",
                    berth_resources::postgres::database_name(app)
                ),
            );
        }
        if spec.resources.redis && self.resources.attach_redis(app).await? {
            say(progress, "made a Redis of its own (REDIS_URL)");
        }
        for message in self.resources.ensure_volumes(app, spec)? {
            say(progress, message);
        }
        for (owner, what) in [
            (&spec.resources.postgres_from, "database"),
            (&spec.resources.redis_from, "Redis"),
        ] {
            if let Some(owner) = owner {
                self.check_shared(app, owner, what)?;
                say(progress, format!("uses the {what} of app {owner}"));
            }
        }
        // The owners' passwords are in this release's env from its release
        // command on: masked from now, not from when it becomes the target.
        self.resources.mask_for_release(app, spec);
        Ok(())
    }

    /// An app may use another's database or Redis only when that app's
    /// current spec shares it with this one.
    pub(super) fn check_shared(
        &self,
        app: &str,
        owner: &str,
        what: &str,
    ) -> Result<(), DeployFailure> {
        let refuse = |why: &str| {
            DeployFailure::before_release(format!(
                "app `{app}` uses the {what} of app `{owner}`, but {why}"
            ))
        };
        let owner_row = self
            .store
            .app(owner)
            .map_err(|_| refuse(&format!("`{owner}` does not exist yet: deploy it first")))?;
        let Some(version) = owner_row.target_release else {
            return Err(refuse(&format!(
                "`{owner}` has no release yet: deploy it first"
            )));
        };
        let release = self.store.release(owner, version)?;
        let owner_spec = crate::stored_spec::spec_of(&release)
            .map_err(|err| DeployFailure::before_release(err.to_string()))?;
        if !owner_spec
            .resources
            .shared_with
            .iter()
            .any(|name| name == app)
        {
            return Err(refuse(&format!(
                "`{owner}` does not share it (its spec's resources.shared_with does not name `{app}`)"
            )));
        }
        let kind = if what == "database" {
            berth_store::ResourceKind::Postgres
        } else {
            berth_store::ResourceKind::Redis
        };
        if self.store.resource(owner, &kind)?.is_none() {
            return Err(refuse(&format!("`{owner}` has no {what}")));
        }
        Ok(())
    }

    /// Secrets the spec makes (`generateValue`) are made once; secrets it
    /// asks the user for (`sync: false`) must have been set.
    pub(super) fn ensure_spec_secrets(
        &self,
        app: &str,
        spec: &AppSpec,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        let current = self.store.secrets(app)?;
        let mut generated = BTreeMap::new();
        let mut missing = Vec::new();
        for from in &spec.env_from {
            if current.contains_key(&from.key) {
                continue;
            }
            match from.source {
                berth_spec::EnvSource::Generated => {
                    let value = berth_vault::Vault::generate_password(32);
                    generated.insert(from.key.clone(), value.to_string());
                }
                berth_spec::EnvSource::AskOnce => missing.push(from.key.clone()),
                _ => {}
            }
        }
        if !missing.is_empty() {
            let assignments: Vec<String> = missing.iter().map(|key| format!("{key}=…")).collect();
            return Err(DeployFailure::before_release(format!(
                "{} must be set once (the spec marks {} `sync: false`): berth secrets set --app {app} {}",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                assignments.join(" ")
            )));
        }
        if !generated.is_empty() {
            self.resources.mask_with(app, &generated);
            let sealed = self.resources.seal_secrets(app, current, &generated, &[]);
            let names: Vec<&str> = generated.keys().map(String::as_str).collect();
            self.store
                .set_secrets(app, &sealed, &format!("generated {}", names.join(", ")))?;
            self.resources.refresh_masks(app);
            say(
                progress,
                format!(
                    "generated secret(s) {} (kept from now on)",
                    names.join(", ")
                ),
            );
        }
        Ok(())
    }
}
