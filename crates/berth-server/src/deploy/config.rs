//! Releases of the current build with changed env vars or secrets, or a
//! newly attached resource.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_store::{NewRelease, ResourceKind};

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};
use crate::launch::validate_env_key;

/// A change of configuration that makes a new release of the current build.
#[derive(Debug, Default, Clone)]
pub struct ConfigChange {
    /// Env vars to set.
    pub env_set: BTreeMap<String, String>,
    /// Env vars to remove.
    pub env_unset: Vec<String>,
    /// Secrets to set.
    pub secrets_set: BTreeMap<String, String>,
    /// Secrets to remove.
    pub secrets_unset: Vec<String>,
    /// Why, when it is not the changes themselves (`postgres attached`).
    pub cause: Option<String>,
}

impl ConfigChange {
    pub(super) fn describe(&self) -> String {
        if let Some(cause) = &self.cause {
            return cause.clone();
        }
        let mut changes: Vec<String> = Vec::new();
        changes.extend(self.env_set.keys().map(|key| format!("set {key}")));
        changes.extend(self.env_unset.iter().map(|key| format!("unset {key}")));
        let mut secrets: Vec<String> = Vec::new();
        secrets.extend(self.secrets_set.keys().map(|key| format!("set {key}")));
        secrets.extend(self.secrets_unset.iter().map(|key| format!("unset {key}")));
        let mut parts = Vec::new();
        if !changes.is_empty() {
            parts.push(format!("env {}", changes.join(", ")));
        }
        if !secrets.is_empty() {
            parts.push(format!("secrets {}", secrets.join(", ")));
        }
        parts.join("; ")
    }
}

impl Deployer {
    /// Makes a release from the current one with its configuration changed
    /// (env, secrets, or resources attached), and rolls it out. Returns
    /// `None` when the app has no release yet: the change applies at its
    /// first deploy.
    pub async fn reconfigure(
        self: Arc<Self>,
        app: String,
        change: ConfigChange,
        progress: Progress,
    ) -> Result<Option<u64>, DeployFailure> {
        for key in change
            .env_set
            .keys()
            .chain(change.env_unset.iter())
            .chain(change.secrets_set.keys())
            .chain(change.secrets_unset.iter())
        {
            validate_env_key(key).map_err(DeployFailure::before_release)?;
        }
        let lock = self.lock_for(&app);
        let _guard = lock.lock().await;
        self.reconfigure_locked(app, change, progress).await
    }

    /// Gives the app a resource (`postgres` or `redis`) and, when one was
    /// made, a release that has it — under the app's deploy lock, so a
    /// deploy attaching the same resource cannot race it.
    pub async fn attach(
        self: Arc<Self>,
        app: String,
        kind: ResourceKind,
        progress: Progress,
    ) -> Result<Option<u64>, DeployFailure> {
        let lock = self.lock_for(&app);
        let _guard = lock.lock().await;
        say(&progress, format!("attaching {kind}"));
        let made = if kind == ResourceKind::Postgres {
            self.resources.attach_postgres(&app).await?
        } else {
            self.resources.attach_redis(&app).await?
        };
        if !made {
            say(&progress, format!("app `{app}` already has {kind}"));
            return Ok(None);
        }
        let change = ConfigChange {
            cause: Some(format!("{kind} attached")),
            ..ConfigChange::default()
        };
        self.reconfigure_locked(app, change, progress).await
    }

    pub(super) async fn reconfigure_locked(
        &self,
        app: String,
        change: ConfigChange,
        progress: Progress,
    ) -> Result<Option<u64>, DeployFailure> {
        let app_row = self.store.app(&app)?;
        let mut env = self.store.env(&app)?;
        for key in &change.env_unset {
            env.remove(key);
        }
        env.extend(change.env_set.clone());
        let secrets = self.resources.seal_secrets(
            &app,
            self.store.secrets(&app)?,
            &change.secrets_set,
            &change.secrets_unset,
        );
        // Mask the new values before anything can print them.
        self.resources.mask_with(&app, &change.secrets_set);
        let cause = change.describe();
        let Some(current) = app_row.target_release else {
            self.store.set_env(&app, &env, &cause)?;
            self.store.set_secrets(&app, &secrets, &cause)?;
            self.resources.refresh_masks(&app);
            say(
                &progress,
                "saved; the app has no release yet, so this applies at its first deploy",
            );
            return Ok(None);
        };
        let current = self.store.release(&app, current)?;
        let spec = crate::stored_spec::spec_of(&current)
            .map_err(|err| DeployFailure::before_release(err.to_string()))?;
        let release = self
            .make_release(
                &spec,
                NewRelease {
                    cause,
                    slug: current.slug,
                    spec_json: current.spec_json,
                    processes: current.processes,
                    env,
                    secrets,
                },
                &app,
                &progress,
            )
            .await?;
        let outcome = self.roll_out(&spec, release, &progress).await.map(Some);
        self.resources.refresh_masks(&app);
        outcome
    }
}
