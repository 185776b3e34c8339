//! `berth server install ssh://USER@HOST` and `berth server upgrade` for a
//! server installed that way: the running binary copied over SSH (the
//! `ssh` the user already has, with their keys and config), the
//! server installed there by that binary's own `berth server install`,
//! and the host kept as a context whose certificate is pinned from what
//! SSH read, so there is no trust-on-first-use.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cli::Global;
use crate::cli::parse_server_flags;
use crate::contexts::{RemoteInstall, ServerContext, save};
use crate::server_args::InstallArgs;

/// `ssh://[USER@]HOST[:PORT]`, split.
#[derive(Debug, Clone, PartialEq)]
struct SshTarget {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_target(url: &str) -> Result<SshTarget> {
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| anyhow!("`{url}` is not an ssh://[USER@]HOST[:PORT] address"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        bail!("`{url}` has a path; berth installs to the host, as ssh://[USER@]HOST[:PORT]");
    }
    let (user, host_port) = match rest.rsplit_once('@') {
        Some((user, host_port)) => (Some(user.to_string()), host_port),
        None => (None, rest),
    };
    let user_ok = |user: &str| {
        !user.is_empty()
            && !user.starts_with('-')
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if let Some(user) = &user
        && !user_ok(user)
    {
        bail!("`{user}` in `{url}` is not a user name");
    }
    let (_, host, port) = crate::contexts::split_url(&format!("ssh://{host_port}"))?;
    if host.starts_with('-')
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
    {
        bail!("`{host}` in `{url}` is not a host name or address");
    }
    Ok(SshTarget { user, host, port })
}

/// One word for the remote shell, quoted.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The user's `ssh`, pointed at a host.
struct Ssh {
    target: SshTarget,
    identity: Option<PathBuf>,
    options: Vec<String>,
}

impl Ssh {
    fn new(url: &str, identity: Option<PathBuf>, options: Vec<String>) -> Result<Ssh> {
        Ok(Ssh {
            target: parse_target(url)?,
            identity,
            options,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("ssh");
        command.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
        if let Some(port) = self.target.port {
            command.arg("-p").arg(port.to_string());
        }
        if let Some(identity) = &self.identity {
            command.arg("-i").arg(identity);
        }
        for option in &self.options {
            command.arg("-o").arg(option);
        }
        command
    }

    fn destination(&self) -> String {
        match &self.target.user {
            Some(user) => format!("{user}@{}", self.target.host),
            None => self.target.host.clone(),
        }
    }

    /// Runs `script` in the host's shell; its standard output, or an error
    /// with what it wrote to standard error.
    fn run(&self, what: &str, script: &str) -> Result<String> {
        self.run_with_input(what, script, None)
    }

    /// [`Ssh::run`], with `input` on the script's standard input (a
    /// secret, which no command line shows).
    fn run_with_input(&self, what: &str, script: &str, input: Option<&str>) -> Result<String> {
        let mut command = self.command();
        let destination = self.destination();
        command
            .arg("--")
            .arg(destination)
            .arg(script)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .context("cannot run ssh (is OpenSSH's client installed?)")?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin
                .write_all(format!("{input}\n").as_bytes())
                .context("cannot write to ssh")?;
        }
        let output = child
            .wait_with_output()
            .context("cannot run ssh (is OpenSSH's client installed?)")?;
        if !output.status.success() {
            bail!(
                "{what} on {} failed ({}):\n{}",
                self.target.host,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // What the remote berth said goes on to the user.
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Copies this berth binary to `remote` on the host, through ssh's
    /// standard input (no scp or SFTP needed there).
    fn copy_binary(&self, remote: &str) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the berth binary")?;
        let file =
            std::fs::File::open(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
        let output = self
            .command()
            .arg("--")
            .arg(self.destination())
            .arg(format!("cat > {}", quote(remote)))
            .stdin(file)
            .output()
            .context("cannot run ssh (is OpenSSH's client installed?)")?;
        if !output.status.success() {
            bail!(
                "copying berth to {} failed ({}):\n{}",
                self.target.host,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

/// What a host is, asked before anything there changes.
struct HostFacts {
    arch: String,
    root: bool,
    sudo: bool,
    systemd: bool,
}

fn probe(ssh: &Ssh) -> Result<HostFacts> {
    let out = ssh.run(
        "looking at the host",
        "uname -s; uname -m; id -u; \
         if [ -d /run/systemd/system ]; then echo systemd; else echo none; fi; \
         if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo sudo; else echo none; fi",
    )?;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let [os, arch, uid, systemd, sudo] = lines[..] else {
        bail!("the host answered what it is with something berth cannot read:\n{out}");
    };
    if os != "Linux" {
        bail!("the host runs {os}; berth runs on Linux. Nothing was changed");
    }
    Ok(HostFacts {
        arch: arch.to_string(),
        root: uid == "0",
        sudo: sudo == "sudo",
        systemd: systemd == "systemd",
    })
}

/// Refuses a host this binary cannot serve, before anything changes.
fn check_host(facts: &HostFacts, host: &str, no_systemd: bool) -> Result<()> {
    let ours = std::env::consts::ARCH;
    if facts.arch != ours {
        bail!(
            "{host} is {} and this berth is built for {ours}: nothing was changed. Run the install from a berth built for {}",
            facts.arch,
            facts.arch
        );
    }
    if !facts.root && !facts.sudo {
        bail!(
            "on {host} berth needs root, or sudo without a password prompt (`sudo -n true` failed): nothing was changed"
        );
    }
    if !facts.systemd && !no_systemd {
        bail!(
            "{host} does not run systemd (no /run/systemd/system): nothing was changed. \
             Pass --no-systemd to start berth there in the background instead (it is then not restarted at boot)"
        );
    }
    Ok(())
}

/// Copies this binary to a temporary dir on the host and runs it there
/// with `args` (as root); removes the copy afterwards.
fn run_remote_berth(
    ssh: &Ssh,
    sudo: bool,
    what: &str,
    args: &[String],
    input: Option<&str>,
) -> Result<String> {
    let dir = ssh.run(
        "making a temporary dir",
        "mktemp -d /tmp/berth-install.XXXXXX",
    )?;
    let dir = dir.trim().to_string();
    if !dir.starts_with("/tmp/berth-install.") {
        bail!("the host made an unexpected temporary dir `{dir}`");
    }
    let binary = format!("{dir}/berth");
    let result = ssh.copy_binary(&binary).and_then(|()| {
        let sudo = if sudo { "sudo -n " } else { "" };
        let words: Vec<String> = args.iter().map(|arg| quote(arg)).collect();
        ssh.run_with_input(
            what,
            &format!(
                "chmod 755 {} && {sudo}{} {}",
                quote(&binary),
                quote(&binary),
                words.join(" ")
            ),
            input,
        )
    });
    let _ = ssh.run("cleaning up", &format!("rm -rf {}", quote(&dir)));
    result
}

/// `berth server install ssh://…`.
pub async fn install(global: &Global, url: &str, args: &InstallArgs) -> Result<()> {
    if args.print {
        bail!("--print shows the local unit; leave out the ssh:// address");
    }
    let ssh = Ssh::new(url, args.identity.clone(), args.ssh_options.clone())?;
    let mut flags = args.server_flags().to_vec();
    let mut server = parse_server_flags(&flags)?;
    // A tunnel token goes over SSH's standard input, not a command line
    // (`--tunnel-token-file -` reads it there, into the host's data dir).
    let mut tunnel_token = std::env::var("BERTH_TUNNEL_TOKEN")
        .ok()
        .filter(|token| !token.is_empty());
    let mut kept = Vec::with_capacity(flags.len());
    let mut words = flags.iter();
    while let Some(flag) = words.next() {
        if let Some(value) = flag.strip_prefix("--tunnel-token=") {
            tunnel_token = Some(value.to_string());
        } else if flag == "--tunnel-token" {
            tunnel_token = words.next().cloned();
        } else {
            kept.push(flag.clone());
        }
    }
    flags = kept;
    if tunnel_token.is_some() {
        flags.extend(["--tunnel-token-file".into(), "-".into()]);
    }
    if !flags
        .iter()
        .any(|flag| flag == "--api" || flag.starts_with("--api="))
    {
        flags.extend(["--api".into(), "0.0.0.0:8079".into()]);
        server.api_addr = "0.0.0.0:8079".parse()?;
    }
    if server.api_addr.ip().is_loopback() {
        bail!(
            "the API would listen on {} on the host, which this machine cannot reach: give --api 0.0.0.0:PORT (it is served over TLS)",
            server.api_addr
        );
    }
    let host = ssh.target.host.clone();
    let host_is_name =
        host.parse::<std::net::IpAddr>().is_ok() || berth_proto::validate_domain(&host).is_ok();
    if host_is_name {
        flags.extend(["--api-name".into(), host.clone()]);
    }
    let data = args
        .remote_data
        .clone()
        .unwrap_or_else(|| "/var/lib/berth".into());
    let binary = args
        .binary
        .clone()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "/usr/local/bin/berth".into());
    if !data.starts_with('/') || !binary.starts_with('/') {
        bail!("--remote-data and --binary must be absolute paths on the host");
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => host.replace(['.', ':'], "-").to_ascii_lowercase(),
    };

    eprintln!("==> looking at {host} over SSH");
    let facts = probe(&ssh)?;
    check_host(&facts, &host, args.no_systemd)?;
    let sudo = !facts.root;

    eprintln!(
        "==> copying berth {} to {host} and installing it",
        env!("CARGO_PKG_VERSION")
    );
    let mut remote_args = vec![
        "--data".to_string(),
        data.clone(),
        "server".into(),
        "install".into(),
        "--binary".into(),
        binary.clone(),
    ];
    if args.no_systemd {
        remote_args.push("--no-systemd".into());
    }
    remote_args.extend(flags);
    run_remote_berth(
        &ssh,
        sudo,
        "installing berth",
        &remote_args,
        tunnel_token.as_deref(),
    )?;

    let read = |file: &str| {
        let sudo = if sudo { "sudo -n " } else { "" };
        ssh.run(
            "reading the server's token and certificate",
            &format!("{sudo}cat {}", quote(&format!("{data}/{file}"))),
        )
    };
    let token = read("token")?.trim().to_string();
    let root_pem = read("tls/ca.pem")?;
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let context = ServerContext {
        url: format!("https://{url_host}:{}", server.api_addr.port()),
        token,
        root_pem: Some(root_pem),
        remote: Some(RemoteInstall {
            ssh: url.to_string(),
            identity: args.identity.clone(),
            ssh_options: args.ssh_options.clone(),
            binary,
            data,
            sudo,
        }),
    };
    let client = crate::contexts::client_for(&context)?;
    let health = client.health().await.with_context(|| {
        format!(
            "berth runs on {host}, but its API at {} does not answer from here: is port {} open in its firewall?",
            context.url,
            server.api_addr.port()
        )
    })?;
    save(&name, &context)?;
    if global.json {
        say!(
            "{}",
            serde_json::json!({"context": name, "url": context.url, "version": health.version})
        );
    }
    eprintln!(
        "==> berth {} runs on {host}; its API is {} (certificate pinned from SSH)\n    use it with `berth context use {name}` or --context {name}",
        health.version, context.url
    );
    Ok(())
}

/// `berth server upgrade` for the context `name`: this binary copied to
/// the host, where it replaces the server's and restarts it.
pub async fn upgrade(name: &str, timeout: Duration) -> Result<()> {
    let context = crate::contexts::load(name)?;
    let Some(remote) = &context.remote else {
        bail!(
            "the context `{name}` was made by `berth login`, not installed over SSH: run `berth server upgrade` on its host"
        );
    };
    let ssh = Ssh::new(
        &remote.ssh,
        remote.identity.clone(),
        remote.ssh_options.clone(),
    )?;
    let host = ssh.target.host.clone();
    let facts = probe(&ssh)?;
    check_host(&facts, &host, true)?;
    eprintln!("==> copying berth {} to {host}", env!("CARGO_PKG_VERSION"));
    run_remote_berth(
        &ssh,
        remote.sudo,
        "upgrading berth",
        &[
            "--data".into(),
            remote.data.clone(),
            "server".into(),
            "upgrade".into(),
            "--binary".into(),
            remote.binary.clone(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs()),
        ],
        None,
    )?;
    let version = crate::contexts::client_for(&context)?
        .health()
        .await
        .with_context(|| format!("the upgraded server at {} does not answer", context.url))?
        .version;
    eprintln!("==> {host} runs berth {version}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_targets_name_a_user_host_and_port() {
        assert_eq!(
            parse_target("ssh://root@10.0.0.5").unwrap(),
            SshTarget {
                user: Some("root".into()),
                host: "10.0.0.5".into(),
                port: None
            }
        );
        assert_eq!(
            parse_target("ssh://deploy@vm.example.org:2222/").unwrap(),
            SshTarget {
                user: Some("deploy".into()),
                host: "vm.example.org".into(),
                port: Some(2222)
            }
        );
        assert_eq!(parse_target("ssh://[::1]:22").unwrap().host, "::1");
        assert!(parse_target("root@host").is_err());
        assert!(parse_target("ssh://-oProxyCommand=x@host").is_err());
        assert!(parse_target("ssh://root@-host").is_err());
        assert!(parse_target("ssh://root@host/path").is_err());
        assert!(parse_target("ssh://root@host;rm").is_err());
    }

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
