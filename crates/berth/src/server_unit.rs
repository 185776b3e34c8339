//! The systemd units `berth server install` and `berth relay install`
//! write.

use std::path::Path;

/// One word of `ExecStart=`: as is when plain, else quoted, with systemd's
/// specifiers (`%`) and variables (`$`) escaped.
fn word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,@+-".contains(c));
    let escaped = text.replace('%', "%%").replace('$', "$$");
    if plain {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The unit that runs `binary server --data DATA FLAGS…`: after the network
/// is up, restarted always, its output appended to `DATA/server.log` (what
/// `berth server logs` reads). On stop only the server gets SIGTERM first
/// (`KillMode=mixed`), so it stops its instances itself. Hardening that
/// leaves isolation working: no `ProtectKernelTunables` (berth turns IPv4
/// forwarding on), no `ProtectHome` (the toolchain may live in /root), no
/// `NoNewPrivileges` or `ProtectControlGroups` (instances get their own
/// users, namespaces and cgroups).
pub fn render(
    binary: &Path,
    data: &Path,
    flags: &[String],
    environment: &[(String, String)],
    system: bool,
) -> String {
    render_for(
        &Service {
            command: "server",
            dir_flag: "--data",
            description: "berth: hosts Rust apps",
            log: "server.log",
        },
        binary,
        data,
        flags,
        environment,
        system,
    )
}

/// Which berth command a unit runs.
pub struct Service {
    /// `server` or `relay`.
    pub command: &'static str,
    /// The flag that names its dir.
    pub dir_flag: &'static str,
    /// The unit's description.
    pub description: &'static str,
    /// Its log, in its dir.
    pub log: &'static str,
}

/// The unit that runs `binary COMMAND DIR_FLAG DIR FLAGS…` (see [`render`]).
pub fn render_for(
    service: &Service,
    binary: &Path,
    data: &Path,
    flags: &[String],
    environment: &[(String, String)],
    system: bool,
) -> String {
    let mut exec = vec![
        word(&binary.display().to_string()),
        service.command.to_string(),
        service.dir_flag.to_string(),
        word(&data.display().to_string()),
    ];
    exec.extend(flags.iter().map(|flag| word(flag)));
    // `append:` takes the path as written: no quotes (the caller refuses
    // a data dir with spaces).
    let log = data.join(service.log).display().to_string();
    let target = if system {
        "multi-user.target"
    } else {
        "default.target"
    };
    let mut unit = format!(
        "[Unit]\n\
         Description={}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         Restart=always\n\
         RestartSec=2\n\
         KillMode=mixed\n\
         TimeoutStopSec=180\n\
         LimitNOFILE=1048576\n\
         StandardOutput=append:{log}\n\
         StandardError=append:{log}\n\
         Environment=RUST_LOG=info\n",
        service.description,
        exec.join(" ")
    );
    for (name, value) in environment {
        unit.push_str(&format!(
            "Environment={}\n",
            word(&format!("{name}={value}"))
        ));
    }
    if system {
        unit.push_str(
            "PrivateTmp=yes\n\
             ProtectSystem=full\n\
             ProtectClock=yes\n\
             ProtectKernelLogs=yes\n\
             RestrictRealtime=yes\n\
             RestrictSUIDSGID=yes\n\
             LockPersonality=yes\n",
        );
    }
    unit.push_str(&format!("\n[Install]\nWantedBy={target}\n"));
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_quoted_for_systemd() {
        assert_eq!(word("--domain"), "--domain");
        assert_eq!(word("0.0.0.0:443"), "0.0.0.0:443");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word("100%"), "\"100%%\"");
        assert_eq!(word("$HOME"), "\"$$HOME\"");
        assert_eq!(word("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn the_unit_restarts_always_and_logs_to_the_data_dir() {
        let unit = render(
            Path::new("/usr/local/bin/berth"),
            Path::new("/var/lib/berth"),
            &["--public".into(), "--domain".into(), "example.com".into()],
            &[("PATH".into(), "/root/.cargo/bin:/usr/bin".into())],
            true,
        );
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/berth server --data /var/lib/berth --public --domain example.com\n"
        ));
        assert!(unit.contains("Restart=always"));
        assert!(unit.contains("Environment=PATH=/root/.cargo/bin:/usr/bin\n"));
        assert!(unit.contains("After=network-online.target"));
        assert!(unit.contains("StandardOutput=append:/var/lib/berth/server.log"));
        assert!(unit.contains("WantedBy=multi-user.target"));
        assert!(!unit.contains("ProtectKernelTunables"));
    }
}
