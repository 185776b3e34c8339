//! TLS for the shared PostgreSQL: a certificate authority of berth's own
//! (`DATA/postgres/tls/ca.crt`, its key private to berth) signs the
//! server's certificate (for `127.0.0.1` and `localhost`), made once with
//! the `openssl` command. Apps that insist on TLS (`sslmode=require`,
//! sqlx's `require_ssl`) get it; `DATABASE_URL` says `sslmode=prefer`, and
//! one that verifies can trust `ca.crt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_runtime::SystemUser;

use crate::ResourceError;

/// The server's certificate and key, made if missing. `None` (TLS off,
/// with a warning) when `openssl` is not installed or fails.
pub(super) fn ensure(root: &Path, user: Option<&SystemUser>) -> Option<(PathBuf, PathBuf)> {
    let dir = root.join("tls");
    let (certificate, key) = (dir.join("server.crt"), dir.join("server.key"));
    if certificate.is_file() && key.is_file() {
        return Some((certificate, key));
    }
    match make(&dir, user) {
        Ok(()) => Some((certificate, key)),
        Err(err) => {
            tracing::warn!(error = %err, "PostgreSQL runs without TLS: apps that require it cannot connect");
            None
        }
    }
}

fn make(dir: &Path, user: Option<&SystemUser>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    // PostgreSQL's user passes through to its key and certificate.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|err| err.to_string())?;
    let path = |name: &str| dir.join(name).display().to_string();
    let curve = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(curve)
        .args(["-days", "3650", "-subj", "/CN=berth local CA"])
        .args(["-keyout", &path("ca.key"), "-out", &path("ca.crt")]))?;
    run(Command::new("openssl")
        .args(["req"])
        .args(curve)
        .args(["-subj", "/CN=localhost"])
        .args(["-keyout", &path("server.key"), "-out", &path("server.csr")]))?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|err| err.to_string())?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "3650", "-CAcreateserial"])
        .args([
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.crt"),
            "-CAkey",
            &path("ca.key"),
        ])
        .args(["-extfile", &path("server.ext"), "-out", &path("server.crt")]))?;
    for leftover in ["server.csr", "server.ext", "ca.srl"] {
        let _ = std::fs::remove_file(dir.join(leftover));
    }
    for (name, mode) in [
        ("ca.key", 0o600),
        ("ca.crt", 0o644),
        ("server.crt", 0o644),
        ("server.key", 0o600),
    ] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode))
            .map_err(|err| err.to_string())?;
    }
    // PostgreSQL refuses a key others can read, and reads it as its user.
    for name in ["server.key", "server.crt"] {
        crate::hand_over(&dir.join(name), user).map_err(|err: ResourceError| err.to_string())?;
    }
    Ok(())
}

fn run(command: &mut Command) -> Result<(), String> {
    berth_runtime::run_command(command, "make the certificates with openssl")
}
