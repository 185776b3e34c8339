//! The env an instance gets from the services: its resources' URLs, its
//! secrets, its volumes' paths.

use berth_resources::postgres::PgDatabase;
use berth_spec::AppSpec;
use berth_spec::EnvSource;
use berth_store::ReleaseRow;

use super::Resources;
use berth_store::ResourceKind;

impl Resources {
    /// The env a process of `release` gets from berth's resources: its
    /// secrets, `DATABASE_URL`, `REDIS_URL`, and `BERTH_VOLUME_<NAME>`.
    pub fn env_for(
        &self,
        release: &ReleaseRow,
        spec: &AppSpec,
        process: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let app = &release.app;
        let mut env = Vec::new();
        for (name, secret) in &release.secrets {
            let value = self
                .vault
                .open(app, name, &secret.sealed)
                .map_err(|err| err.to_string())?;
            env.push((name.clone(), value.to_string()));
        }
        // A shared database or Redis is its owner's, while the owner shares it.
        for owner in [&spec.resources.postgres_from, &spec.resources.redis_from]
            .into_iter()
            .flatten()
        {
            if !self.shares_with(owner, app) {
                return Err(format!(
                    "app `{owner}` no longer shares its database or Redis with `{app}` (its resources.shared_with)"
                ));
            }
        }
        let postgres_owner = spec.resources.postgres_from.as_deref().unwrap_or(app);
        let redis_owner = spec.resources.redis_from.as_deref().unwrap_or(app);
        let mut database = None;
        if let Some(row) = self
            .store
            .resource(postgres_owner, &ResourceKind::Postgres)
            .map_err(|err| err.to_string())?
        {
            let password = self.open_password(&row).map_err(|err| err.to_string())?;
            let found = PgDatabase {
                name: row.name.clone(),
                password,
                port: self.postgres.known_port().unwrap_or(5432),
            };
            env.push(("DATABASE_URL".into(), found.url()));
            database = Some(found);
        }
        let mut redis = None;
        if let Some(row) = self
            .store
            .resource(redis_owner, &ResourceKind::Redis)
            .map_err(|err| err.to_string())?
        {
            let password = self.open_password(&row).map_err(|err| err.to_string())?;
            if let Some(port) = row.port {
                env.push((
                    "REDIS_URL".into(),
                    berth_resources::redis::url(port, &password),
                ));
                redis = Some((port, password));
            }
        }
        for from in &spec.env_from {
            let value = match &from.source {
                // Kept as secrets, already in the env above.
                EnvSource::Generated | EnvSource::AskOnce => continue,
                EnvSource::Postgres { property } => {
                    let database = database.as_ref().ok_or_else(|| {
                        format!("{} needs a database and the app has none", from.key)
                    })?;
                    match property.as_str() {
                        "connectionString" | "connection_string" => database.url(),
                        "host" => "127.0.0.1".into(),
                        "port" => database.port.to_string(),
                        "database" | "user" => database.name.clone(),
                        "password" => database.password.to_string(),
                        other => {
                            return Err(format!(
                                "{}: unknown database property `{other}` (connectionString, host, port, database, user, password)",
                                from.key
                            ));
                        }
                    }
                }
                EnvSource::Redis { property } => {
                    let (port, password) = redis.as_ref().ok_or_else(|| {
                        format!("{} needs a Redis and the app has none", from.key)
                    })?;
                    match property.as_str() {
                        "connectionString" | "connection_string" => {
                            berth_resources::redis::url(*port, password)
                        }
                        "host" => "127.0.0.1".into(),
                        "port" => port.to_string(),
                        "hostport" => format!("127.0.0.1:{port}"),
                        other => {
                            return Err(format!(
                                "{}: unknown key-value property `{other}` (connectionString, host, port, hostport)",
                                from.key
                            ));
                        }
                    }
                }
                EnvSource::AppAddress { app, property } => {
                    let url = (self.url_for)(app);
                    let authority = url
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .to_string();
                    let (host, port) = authority
                        .rsplit_once(':')
                        .map(|(host, port)| (host.to_string(), port.to_string()))
                        .unwrap_or((authority.clone(), "80".into()));
                    match property.as_str() {
                        "host" => host,
                        "port" => port,
                        "hostport" => authority,
                        other => {
                            return Err(format!(
                                "{}: unknown service property `{other}` (host, port, hostport)",
                                from.key
                            ));
                        }
                    }
                }
            };
            env.push((from.key.clone(), value));
        }
        let isolated = self.isolated;
        for mount in spec.mounts.iter().filter(|mount| mount.applies_to(process)) {
            let seen_at = if isolated {
                mount.destination.clone()
            } else {
                self.volume_dir(app, &mount.source).display().to_string()
            };
            env.push((
                format!("BERTH_VOLUME_{}", mount.source.to_ascii_uppercase()),
                seen_at,
            ));
        }
        Ok(env)
    }
}

impl Resources {
    /// The value of `app`'s secret `name`, if it has one.
    pub fn secret_value(&self, app: &str, name: &str) -> Result<Option<String>, String> {
        let secrets = self.store.secrets(app).map_err(|err| err.to_string())?;
        let Some(secret) = secrets.get(name) else {
            return Ok(None);
        };
        let value = self
            .vault
            .open(app, name, &secret.sealed)
            .map_err(|err| err.to_string())?;
        Ok(Some(value.to_string()))
    }

    /// `app`'s own `DATABASE_URL` and the port it names on the host's
    /// loopback, if it has a database.
    pub fn database_url(&self, app: &str) -> Result<Option<(String, u16)>, String> {
        let Some(row) = self
            .store
            .resource(app, &ResourceKind::Postgres)
            .map_err(|err| err.to_string())?
        else {
            return Ok(None);
        };
        let password = self.open_password(&row).map_err(|err| err.to_string())?;
        let port = self.postgres.known_port().unwrap_or(5432);
        let database = PgDatabase {
            name: row.name.clone(),
            password,
            port,
        };
        Ok(Some((database.url(), port)))
    }
}
