//! Named servers: `berth login URL --token T [--name NAME]` pins the
//! server's CA certificate on first contact (as ssh does with host keys)
//! and keeps the URL, token and certificate in
//! `~/.config/berth/contexts/NAME.json` (mode 0600); `--context NAME`
//! (or `BERTH_CONTEXT`) then talks to that server, and refuses a server
//! whose certificate no longer chains to the pinned one. `berth context
//! use NAME` makes one the default for every command; `berth context list`
//! and `remove` manage them.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use berth_client::Client;
use serde::{Deserialize, Serialize};

use crate::cli::Global;

/// A server the CLI logged in to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerContext {
    /// The API's base URL.
    pub url: String,
    /// The API token.
    pub token: String,
    /// The CA certificate pinned at login (PEM), for an `https` URL.
    pub root_pem: Option<String>,
    /// How `berth server install ssh://…` installed the server, for
    /// `berth server upgrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteInstall>,
}

/// How a server was installed over SSH, kept in its context.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteInstall {
    /// `ssh://[USER@]HOST[:PORT]`.
    pub ssh: String,
    /// The key `--identity` named.
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// The `--ssh-option`s.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// Where the binary is on the host.
    pub binary: String,
    /// The host's data dir.
    pub data: String,
    /// Whether commands there run through `sudo`.
    pub sudo: bool,
}

/// The name that stands for the local server in `berth context use`.
pub const LOCAL: &str = "local";

fn contexts_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|value| !value.is_empty()) {
        Some(config) => PathBuf::from(config),
        None => PathBuf::from(
            std::env::var_os("HOME").ok_or_else(|| anyhow!("no HOME to keep contexts in"))?,
        )
        .join(".config"),
    };
    Ok(base.join("berth/contexts"))
}

fn context_path(name: &str) -> Result<PathBuf> {
    berth_proto::validate_app_name(name)
        .map_err(|why| anyhow!("context name: {}", why.replace("app name", "name")))?;
    if name == LOCAL {
        bail!("`{LOCAL}` names the local server; choose another name");
    }
    Ok(contexts_dir()?.join(format!("{name}.json")))
}

/// Where `berth context use` keeps the default context's name.
fn current_path() -> Result<PathBuf> {
    Ok(contexts_dir()?.with_file_name("current-context"))
}

/// The context `berth context use` chose, unless it is the local server.
pub fn current() -> Option<String> {
    let name = std::fs::read_to_string(current_path().ok()?).ok()?;
    let name = name.trim();
    (!name.is_empty() && name != LOCAL).then(|| name.to_string())
}

/// Keeps `context` as `name`, readable only by its owner.
pub fn save(name: &str, context: &ServerContext) -> Result<()> {
    let path = context_path(name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    berth_tls::write_private(&path, &serde_json::to_string_pretty(context)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The contexts kept, by name.
fn all() -> Result<Vec<(String, ServerContext)>> {
    let dir = contexts_dir()?;
    let mut contexts = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(contexts),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|file| file.strip_suffix(".json")) else {
            continue;
        };
        contexts.push((name.to_string(), load(name)?));
    }
    contexts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(contexts)
}

/// `berth context list`: every context, the default marked.
pub fn list(global: &Global) -> Result<()> {
    let current = current();
    let contexts = all()?;
    if global.json {
        let rows: Vec<serde_json::Value> = contexts
            .iter()
            .map(|(name, context)| {
                serde_json::json!({
                    "name": name,
                    "url": context.url,
                    "current": current.as_deref() == Some(name),
                    "ssh": context.remote.as_ref().map(|remote| &remote.ssh),
                })
            })
            .collect();
        let local = serde_json::json!({"name": LOCAL, "url": null, "current": current.is_none()});
        say!(
            "{}",
            serde_json::to_string_pretty(&[vec![local], rows].concat())?
        );
        return Ok(());
    }
    let mark = |chosen: bool| if chosen { "*" } else { " " };
    say!(
        "{} {:<20} the server of this machine's data dir",
        mark(current.is_none()),
        LOCAL
    );
    for (name, context) in &contexts {
        let via = context
            .remote
            .as_ref()
            .map(|remote| format!("  (installed over {})", remote.ssh))
            .unwrap_or_default();
        say!(
            "{} {:<20} {}{via}",
            mark(current.as_deref() == Some(name)),
            name,
            context.url
        );
    }
    Ok(())
}

/// `berth context use NAME`: the server every command talks to unless
/// `--context` or `--server` says otherwise (`local` for this machine's).
pub fn use_context(name: &str) -> Result<()> {
    let path = current_path()?;
    if name == LOCAL {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
        eprintln!("==> commands now talk to the local server");
        return Ok(());
    }
    let context = load(name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, format!("{name}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "==> commands now talk to {} (`berth context use {LOCAL}` to go back)",
        context.url
    );
    Ok(())
}

/// `berth context remove NAME`: forgets the context (the server keeps
/// running); if it was the default, the local server is again.
pub fn remove(name: &str) -> Result<()> {
    let path = context_path(name)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("no context `{name}` (`berth context list` shows them)")
        }
        Err(err) => return Err(err).with_context(|| format!("cannot remove {}", path.display())),
    }
    if current().as_deref() == Some(name) {
        use_context(LOCAL)?;
    }
    eprintln!("==> forgot the context `{name}`; its server still runs");
    Ok(())
}

/// The context `name`.
pub fn load(name: &str) -> Result<ServerContext> {
    let path = context_path(name)?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no context `{name}` ({}): log in first with `berth login URL --token T --name {name}`",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is unreadable", path.display()))
}

/// A client for `context`, whose server must present a certificate that
/// chains to the pinned one.
pub fn client_for(context: &ServerContext) -> Result<Client> {
    Ok(match &context.root_pem {
        Some(root) => Client::with_root(&context.url, &context.token, root)?,
        None => Client::new(&context.url, &context.token),
    })
}

/// A client for the context `name`, whose server must present a
/// certificate that chains to the pinned one.
pub async fn client(name: &str) -> Result<Client> {
    let context = load(name)?;
    let client = client_for(&context)?;
    if let Err(err) = client.health().await
        && err.is_certificate_refused()
    {
        let pinned = context
            .root_pem
            .as_deref()
            .and_then(root_fingerprint)
            .unwrap_or_default();
        bail!(
            "the server at {} no longer presents the certificate pinned when you logged in (CA SHA-256 {pinned}).\n\
             If it was reinstalled, read its new CA's fingerprint on it (`berth certs root` prints it) and run\n\
             `berth login {} --token T --name {name} --replace-pin --fingerprint SHA256`; if not, someone may be between you and it.",
            context.url,
            context.url
        );
    }
    Ok(client)
}

pub(crate) fn root_fingerprint(pem: &str) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(berth_tls::fingerprint(der.as_ref()))
}

/// What `berth login` checks of the CA a server presents before it sends
/// the token.
#[derive(Debug, Default)]
pub struct PinCheck {
    /// The fingerprint the user read on the server (`berth certs root`).
    pub fingerprint: Option<String>,
    /// A context of the same name may have pinned another CA.
    pub replace: bool,
}

/// Hex digits only, in capitals: fingerprints compare whatever their
/// colons and case.
fn normalized(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl PinCheck {
    /// Refuses `presented` (the CA's fingerprint) for the context `name`
    /// unless it is the one asked for, and the one pinned before or
    /// `replace` is set.
    fn check(&self, name: &str, url: &str, presented: &str) -> Result<()> {
        if let Some(wanted) = &self.fingerprint
            && normalized(wanted) != normalized(presented)
        {
            bail!(
                "{url} presents a CA with SHA-256 fingerprint\n    {presented}\nnot the {wanted} you gave: nothing was sent to it"
            );
        }
        let pinned = context_path(name)
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| serde_json::from_str::<ServerContext>(&text).ok())
            .and_then(|context| context.root_pem)
            .and_then(|pem| root_fingerprint(&pem));
        if let Some(pinned) = pinned
            && normalized(&pinned) != normalized(presented)
            && !self.replace
        {
            bail!(
                "the context `{name}` pinned a CA with SHA-256 fingerprint\n    {pinned}\nbut {url} now presents\n    {presented}\n\
                 Nothing was sent to it. If the server was reinstalled, check the new fingerprint on it (`berth certs root` prints it)\n\
                 and run again with --replace-pin --fingerprint SHA256; if not, someone may be between you and it."
            );
        }
        Ok(())
    }
}

/// `berth login`: pins the server's CA (for https), checks the token, and
/// keeps the context.
pub async fn login(
    global: &Global,
    url: &str,
    token: Option<String>,
    name: Option<String>,
    pin: PinCheck,
) -> Result<()> {
    let token = token.or_else(|| global.token.clone()).ok_or_else(|| {
        anyhow!("berth login needs the server's token: --token T (see DATA/token on the server)")
    })?;
    let (scheme, host, port) = split_url(url)?;
    let name = match name {
        Some(name) => name,
        None => host.replace(['.', ':'], "-").to_ascii_lowercase(),
    };
    let root_pem = match scheme.as_str() {
        "https" => {
            let port = port.unwrap_or(443);
            let chain = berth_tls::first_contact_chain(&host, port).await?;
            let root = chain
                .last()
                .ok_or_else(|| anyhow!("{url} presented no certificate"))?;
            let presented = berth_tls::fingerprint(root.as_ref());
            pin.check(&name, url, &presented)?;
            eprintln!(
                "==> {url} presents a certificate of the CA with SHA-256 fingerprint\n    {presented}\n    pinned: later connections must chain to it"
            );
            Some(berth_tls::certificate_pem(root.as_ref()))
        }
        "http" => {
            if pin.fingerprint.is_some() {
                bail!(
                    "{url} is plain HTTP: it presents no certificate to check --fingerprint against"
                );
            }
            // Going from a pinned https context to none is a pin change.
            pin.check(&name, url, "none (plain HTTP)")?;
            eprintln!("warning: {url} is plain HTTP: the token crosses the network in clear");
            None
        }
        other => {
            bail!("`{other}` is not a scheme berth speaks: use https:// (or http:// on loopback)")
        }
    };
    let context = ServerContext {
        url: url.trim_end_matches('/').to_string(),
        token,
        root_pem,
        remote: None,
    };
    let client = client_for(&context)?;
    client
        .apps()
        .await
        .with_context(|| format!("cannot log in to {url}"))?;
    save(&name, &context)?;
    eprintln!("==> logged in; use it with --context {name} (or BERTH_CONTEXT={name})");
    Ok(())
}

/// The scheme, host and port of `url` (`https://host:8079/`).
pub(crate) fn split_url(url: &str) -> Result<(String, String, Option<u16>)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("`{url}` is not a URL such as https://host:8079"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("`{url}` has an unclosed IPv6 address"))?;
            (host.to_string(), after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        },
    };
    if host.is_empty() {
        bail!("`{url}` names no host");
    }
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .map_err(|_| anyhow!("`{url}`: `{port}` is not a port"))
        })
        .transpose()?;
    Ok((scheme.to_ascii_lowercase(), host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_port() {
        assert_eq!(
            split_url("https://berth.example.org:8079/").unwrap(),
            ("https".into(), "berth.example.org".into(), Some(8079))
        );
        assert_eq!(
            split_url("https://[::1]:9000").unwrap(),
            ("https".into(), "::1".into(), Some(9000))
        );
        assert_eq!(split_url("http://10.0.0.5").unwrap().2, None);
        assert!(split_url("berth.example.org").is_err());
        assert!(split_url("https://host:port").is_err());
    }
}
