//! Each app's role and database: made, capped, counted and dropped;
//! and its backups.

use std::path::Path;

use super::*;

impl Postgres {
    /// Gives `app` its role and database with `password` (made anew, or
    /// brought back after the store lost them). Returns how to reach it.
    pub async fn provision(&self, app: &str, password: &str) -> Result<PgDatabase, ResourceError> {
        let port = self.ensure_running().await?;
        let client = self.admin(port).await?;
        let name = database_name(app);
        let role = quote_identifier(&name);
        let literal = quote_literal(password);
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await?
            .is_some();
        if exists {
            client
                .batch_execute(&format!(
                    "ALTER ROLE {role} WITH LOGIN CONNECTION LIMIT {ROLE_CONNECTION_LIMIT} PASSWORD {literal}"
                ))
                .await?;
        } else {
            client
                .batch_execute(&format!(
                    "CREATE ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {ROLE_CONNECTION_LIMIT} PASSWORD {literal}"
                ))
                .await?;
        }
        let has_database = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !has_database {
            client
                .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
                .await?;
        }
        client
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {role} FROM PUBLIC; GRANT ALL ON DATABASE {role} TO {role};\
                 REVOKE ALL ON DATABASE postgres FROM PUBLIC;"
            ))
            .await?;
        Ok(PgDatabase {
            name,
            password: Zeroizing::new(password.to_string()),
            port,
        })
    }

    /// Caps `app`'s role at [`ROLE_CONNECTION_LIMIT`] connections (a role
    /// made by an older berth had no cap).
    pub async fn limit_connections(&self, app: &str) -> Result<(), ResourceError> {
        let port = self.ensure_running().await?;
        let client = self.admin(port).await?;
        let role = quote_identifier(&database_name(app));
        client
            .batch_execute(&format!(
                "ALTER ROLE {role} CONNECTION LIMIT {ROLE_CONNECTION_LIMIT}"
            ))
            .await?;
        Ok(())
    }

    /// The connections `app`'s role has open now.
    pub async fn connections(&self, app: &str) -> Result<u32, ResourceError> {
        let port = self.ensure_running().await?;
        let client = self.admin(port).await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&database_name(app)],
            )
            .await?;
        let count: i64 = row.get(0);
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Bytes each of `apps`' databases takes on disk, when the server
    /// runs (it is not started for this); apps without one are left out.
    pub async fn database_sizes(&self, apps: &[String]) -> Vec<(String, u64)> {
        let (Some(_), Some(port)) = (self.pid().await, self.known_port()) else {
            return Vec::new();
        };
        let Ok(client) = self.admin(port).await else {
            return Vec::new();
        };
        let mut sizes = Vec::new();
        for app in apps {
            let row = client
                .query_opt(
                    "SELECT pg_database_size(datname) FROM pg_database WHERE datname = $1",
                    &[&database_name(app)],
                )
                .await;
            if let Ok(Some(row)) = row {
                let bytes: i64 = row.get(0);
                sizes.push((app.clone(), bytes.max(0) as u64));
            }
        }
        sizes
    }

    /// Drops `app`'s database (closing its connections) and role.
    pub async fn drop_database(&self, app: &str) -> Result<(), ResourceError> {
        let port = self.ensure_running().await?;
        let client = self.admin(port).await?;
        let role = quote_identifier(&database_name(app));
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {role} WITH (FORCE)"))
            .await?;
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await?;
        Ok(())
    }

    /// Writes a pg_dump (custom format) of `database` to `file`.
    pub async fn backup(&self, database: &PgDatabase, file: &Path) -> Result<(), ResourceError> {
        let binaries = PgBinaries::find()?;
        let partial = file.with_extension("partial");
        let mut command = tokio::process::Command::new(binaries.program("pg_dump"));
        command
            .arg("--format=custom")
            .arg("--no-owner")
            .arg("--file")
            .arg(&partial)
            .arg("--dbname")
            .arg(database.url_without_password());
        run_client(command, "pg_dump", &database.password).await?;
        std::fs::rename(&partial, file).map_err(io_error("cannot write", file))?;
        Ok(())
    }

    /// Restores `file` (from [`Postgres::backup`]) into `database`,
    /// replacing what is there, in one transaction.
    pub async fn restore(&self, database: &PgDatabase, file: &Path) -> Result<(), ResourceError> {
        let binaries = PgBinaries::find()?;
        let mut command = tokio::process::Command::new(binaries.program("pg_restore"));
        command
            .arg("--clean")
            .arg("--if-exists")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--single-transaction")
            .arg("--exit-on-error")
            .arg("--dbname")
            .arg(database.url_without_password())
            .arg(file);
        run_client(command, "pg_restore", &database.password).await
    }
}
