//! Secrets: opened from the vault for a start, sealed before the store
//! sees them, and every value an app could print handed to the log store
//! as a mask.

use std::collections::BTreeMap;

use berth_store::SealedSecret;
use berth_vault::Zeroizing;

use super::{Resources, ResourcesError};
use berth_store::ResourceKind;

impl Resources {
    /// The secrets of the app's current release, opened (for runtimes that
    /// fetch them, as Shuttle's does): a rollback brings back its own set.
    pub fn open_secrets(&self, app: &str) -> Result<BTreeMap<String, String>, ResourcesError> {
        let sealed = match self.store.app(app)?.target_release {
            Some(version) => self.store.release(app, version)?.secrets,
            None => self.store.secrets(app)?,
        };
        let mut opened = BTreeMap::new();
        for (name, secret) in sealed {
            let value = self.vault.open(app, &name, &secret.sealed)?;
            opened.insert(name, value.to_string());
        }
        Ok(opened)
    }

    /// Every value `app`'s processes could print: its secrets (current and
    /// those of its target release) and the passwords of its resources.
    pub(crate) fn mask_values(&self, app: &str) -> Vec<Zeroizing<String>> {
        self.mask_values_with(app, None)
    }

    /// [`Resources::mask_values`], and the passwords of the resources
    /// `deploying` (a spec about to be released) uses of other apps.
    fn mask_values_with(
        &self,
        app: &str,
        deploying: Option<&berth_spec::AppSpec>,
    ) -> Vec<Zeroizing<String>> {
        let mut values: Vec<Zeroizing<String>> = Vec::new();
        let mut sealed: Vec<(String, SealedSecret)> = self
            .store
            .secrets(app)
            .map(|secrets| secrets.into_iter().collect())
            .unwrap_or_default();
        // Whose database and Redis the app's env carries: its own, or an
        // owner's that shares them (`postgres_from`, `redis_from`).
        let mut owners = (app.to_string(), app.to_string());
        if let Ok(app_row) = self.store.app(app)
            && let Some(version) = app_row.target_release
            && let Ok(release) = self.store.release(app, version)
        {
            if let Ok(spec) = serde_json::from_str::<berth_spec::AppSpec>(&release.spec_json) {
                if let Some(owner) = spec.resources.postgres_from {
                    owners.0 = owner;
                }
                if let Some(owner) = spec.resources.redis_from {
                    owners.1 = owner;
                }
            }
            sealed.extend(release.secrets);
        }
        for (name, secret) in sealed {
            if let Ok(value) = self.vault.open(app, &name, &secret.sealed) {
                values.push(value);
            }
        }
        let app = app.to_string();
        // (An owner that is the app itself is looked up twice: harmless.)
        let mut whose = vec![
            (app.clone(), ResourceKind::Postgres),
            (app, ResourceKind::Redis),
            (owners.0, ResourceKind::Postgres),
            (owners.1, ResourceKind::Redis),
        ];
        if let Some(spec) = deploying {
            let resources = &spec.resources;
            whose.extend(
                (resources.postgres_from.clone()).map(|owner| (owner, ResourceKind::Postgres)),
            );
            whose.extend((resources.redis_from.clone()).map(|owner| (owner, ResourceKind::Redis)));
        }
        for (owner, kind) in whose {
            if let Ok(Some(row)) = self.store.resource(&owner, &kind)
                && let Ok(password) = self.open_password(&row)
            {
                values.push(password);
            }
        }
        values
    }

    /// Hands the log store every value of `app` to mask, with those of the
    /// release of `spec` about to run (its shared resources' passwords).
    pub fn mask_for_release(&self, app: &str, spec: &berth_spec::AppSpec) {
        let values = self.mask_values_with(app, Some(spec));
        (self.logs).set_masks(app, values.iter().map(|value| value.as_str()));
    }

    /// Hands the log store every value of `app` to mask.
    pub fn refresh_masks(&self, app: &str) {
        self.mask_with(app, &BTreeMap::new());
    }

    /// Hands the log store every value of `app` to mask, and `extra` (values
    /// about to be set, before any release carries them).
    pub fn mask_with(&self, app: &str, extra: &BTreeMap<String, String>) {
        let values = self.mask_values(app);
        let all = values
            .iter()
            .map(|value| value.as_str())
            .chain(extra.values().map(String::as_str));
        self.logs.set_masks(app, all);
    }

    /// `current` with `set` sealed in and `unset` taken out.
    pub fn seal_secrets(
        &self,
        app: &str,
        mut current: BTreeMap<String, SealedSecret>,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> BTreeMap<String, SealedSecret> {
        for name in unset {
            current.remove(name);
        }
        for (name, value) in set {
            let digest = self.vault.digest(app, value);
            if current
                .get(name)
                .is_some_and(|existing| existing.digest == digest)
            {
                continue;
            }
            current.insert(
                name.clone(),
                SealedSecret {
                    sealed: self.vault.seal(app, name, value),
                    digest,
                },
            );
        }
        current
    }
}
