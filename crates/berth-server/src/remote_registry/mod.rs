//! Other registries berth pulls images from: `berth registry login HOST`
//! keeps the credentials (the password sealed in the vault, in
//! `DATA/registry-logins.json`), and `berth deploy --image HOST/NAME:TAG`
//! for such a host copies the image for this machine's platform into
//! berth's own registry, as `HOST/NAME` with the port's colon made an
//! underscore (`ghcr.io/team/shop`, `127.0.0.1_5000/shop`), before
//! running it pinned like any image. Only hosts signed in to are pulled from; any other host in
//! a reference means berth's own registry (`SERVER:PORT/shop`).

mod client;
mod pull;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::{RegistryLogin, RegistryLoginInfo};
use serde::{Deserialize, Serialize};

use crate::services::Resources;
pub(crate) use client::RemoteRegistry;
pub(crate) use pull::{local_name, split_host, split_tag};

/// One host's credentials as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredLogin {
    username: String,
    /// Sealed by the vault.
    password: String,
    plain_http: bool,
}

/// The registries berth signs in to.
pub(crate) struct RegistryLogins {
    resources: Arc<Resources>,
    path: PathBuf,
    lock: std::sync::Mutex<()>,
}

/// The longest host name accepted.
const MAX_HOST: usize = 255;

/// Checks a registry address: a host name or address, maybe a port.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    let valid = !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        && !host.starts_with(['-', '.', ':'])
        && host.matches(':').count() <= 1;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a registry address (a host name or IPv4 address, maybe with :PORT)",
            host.chars().take(80).collect::<String>()
        ))
    }
}

impl RegistryLogins {
    /// The logins kept under the server's data dir.
    pub(crate) fn new(resources: Arc<Resources>) -> RegistryLogins {
        let path = resources.data_dir().join("registry-logins.json");
        RegistryLogins {
            resources,
            path,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// The logins; none when the file is missing, an error when it is
    /// damaged (so a new login never writes over the others).
    fn read(&self) -> Result<BTreeMap<String, StoredLogin>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| format!("{} is damaged: {err}", self.path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(err) => Err(format!("cannot read {}: {err}", self.path.display())),
        }
    }

    /// Replaces the file whole (mode 0600, synced before it is renamed in).
    fn write(&self, logins: &BTreeMap<String, StoredLogin>) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = serde_json::to_vec_pretty(logins).expect("logins serialize");
        let staged = self.path.with_extension("json.new");
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&staged, &self.path))
            .map_err(|err| format!("cannot store {}: {err}", self.path.display()))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks `login` against its registry, then keeps it.
    pub(crate) async fn add(&self, login: RegistryLogin) -> Result<(), String> {
        let host = login.host.trim().to_ascii_lowercase();
        check_host(&host)?;
        if login.username.is_empty() || login.password.is_empty() {
            return Err("a registry login needs a user name and a password".into());
        }
        let remote = RemoteRegistry::new(
            &host,
            login.plain_http,
            &login.username,
            berth_vault::Zeroizing::new(login.password.clone()),
        )?;
        remote.check().await?;
        let sealed = self.resources.seal_server_secret(&host, &login.password);
        let _guard = self.guard();
        let mut logins = self.read()?;
        logins.insert(
            host,
            StoredLogin {
                username: login.username,
                password: sealed,
                plain_http: login.plain_http,
            },
        );
        self.write(&logins)
    }

    /// Forgets `host`; whether it was there.
    pub(crate) fn remove(&self, host: &str) -> Result<bool, String> {
        let _guard = self.guard();
        let mut logins = self.read()?;
        let removed = logins.remove(&host.to_ascii_lowercase()).is_some();
        if removed {
            self.write(&logins)?;
        }
        Ok(removed)
    }

    /// The hosts, without passwords.
    pub(crate) fn list(&self) -> Result<Vec<RegistryLoginInfo>, String> {
        Ok(self
            .read()?
            .into_iter()
            .map(|(host, login)| RegistryLoginInfo {
                host,
                username: login.username,
                plain_http: login.plain_http,
            })
            .collect())
    }

    /// A client of `host`, if berth signs in there.
    pub(crate) fn client(&self, host: &str) -> Option<Result<RemoteRegistry, String>> {
        let host = host.to_ascii_lowercase();
        let login = match self.read() {
            Ok(mut logins) => logins.remove(&host)?,
            Err(err) => return Some(Err(err)),
        };
        Some(
            self.resources
                .open_server_secret(&host, &login.password)
                .map_err(|err| format!("the password kept for {host}: {err}"))
                .and_then(|password| {
                    RemoteRegistry::new(&host, login.plain_http, &login.username, password)
                }),
        )
    }
}
