//! berth's PostgreSQL: one cluster in the data dir, a database per app.
//!
//! On first use berth finds the server binaries (Debian's
//! `/usr/lib/postgresql/<version>/bin`, `pg_config --bindir`, or `PATH`;
//! `BERTH_POSTGRES_BIN` overrides), runs `initdb` into `<data>/postgres/cluster`
//! with a superuser `berth` whose generated password stays in a 0600 file,
//! and replaces `pg_hba.conf` so that:
//!
//! - only TCP on 127.0.0.1 is accepted (no Unix socket, no other address),
//! - every login needs a SCRAM password,
//! - a role reaches only the database of its own name (`sameuser`), and only
//!   `berth` reaches every database.
//!
//! Each app gets role and database `app_<name>` with a 32-character random
//! password; `CONNECT` on it is revoked from `PUBLIC`. App A's credentials
//! therefore cannot open app B's database, twice over.
//!
//! When berth runs as root the server runs as the `postgres` system user
//! (PostgreSQL refuses root), which then owns the cluster directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::SystemUser;
use berth_vault::{Vault, Zeroizing};
use tokio::sync::Mutex;
use tokio_postgres::NoTls;

use crate::supervise::{ServiceCommand, Supervisor};
use crate::{ResourceError, io_error};

/// The superuser berth administers the cluster as.
pub const SUPERUSER: &str = "berth";

/// How long the server has to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The PostgreSQL programs berth uses.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// The directory holding them.
    pub dir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries.
    pub fn find() -> Result<PgBinaries, ResourceError> {
        let has_server =
            |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
        if let Some(dir) = std::env::var_os("BERTH_POSTGRES_BIN") {
            let dir = PathBuf::from(dir);
            if has_server(&dir) {
                return Ok(PgBinaries { dir });
            }
        }
        // Debian: /usr/lib/postgresql/<major>/bin, newest first.
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .flatten()
                .filter_map(|entry| {
                    let major = entry.file_name().to_str()?.parse().ok()?;
                    Some((major, entry.path().join("bin")))
                })
                .filter(|(_, dir)| has_server(dir))
                .collect();
            versions.sort();
            if let Some((_, dir)) = versions.pop() {
                return Ok(PgBinaries { dir });
            }
        }
        if let Ok(output) = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if output.status.success() && has_server(&dir) {
                return Ok(PgBinaries { dir });
            }
        }
        if let Some(postgres) = crate::on_path("postgres") {
            let dir = std::fs::canonicalize(&postgres)
                .ok()
                .and_then(|path| path.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| postgres.parent().unwrap_or(Path::new("/")).to_path_buf());
            if has_server(&dir) {
                return Ok(PgBinaries { dir });
            }
        }
        Err(ResourceError::NotInstalled {
            what: "PostgreSQL".into(),
            hint: "install Debian's `postgresql` package (apt-get install postgresql), or set BERTH_POSTGRES_BIN to the directory holding `postgres` and `initdb`".into(),
        })
    }

    /// The path of `program` (a client such as `pg_dump` falls back to `PATH`).
    pub fn program(&self, program: &str) -> PathBuf {
        let here = self.dir.join(program);
        if here.is_file() {
            return here;
        }
        crate::on_path(program).unwrap_or(here)
    }
}

/// Where an app's database is and how to log in.
#[derive(Clone)]
pub struct PgDatabase {
    /// Role and database name.
    pub name: String,
    /// The role's password.
    pub password: Zeroizing<String>,
    /// The server's port on 127.0.0.1.
    pub port: u16,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PgDatabase {
    /// `postgres://name@127.0.0.1:port/name?sslmode=prefer`: for command
    /// lines, which every user can read; the password goes in `PGPASSWORD`.
    pub fn url_without_password(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}?sslmode=prefer",
            self.name, self.port, self.name
        )
    }

    /// `postgres://name:password@127.0.0.1:port/name?sslmode=prefer`: TLS
    /// when the client has it (the server offers it), plain otherwise.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}?sslmode=prefer",
            self.name, *self.password, self.port, self.name
        )
    }
}

/// The role and database name of `app`: `app_<name>`, within PostgreSQL's
/// Connections the shared server takes in all.
pub const MAX_CONNECTIONS: u32 = 200;
/// Of those, kept for berth's own (superuser) connections.
pub const RESERVED_FOR_BERTH: u32 = 10;
/// The most one app's role may hold: one app cannot lock the others out
/// (`pgbench -c 197` did).
pub const ROLE_CONNECTION_LIMIT: u32 = 40;

/// 63-byte identifiers (a long name is cut and given a hash of the whole).
pub fn database_name(app: &str) -> String {
    let name = format!("app_{}", app.replace('-', "_"));
    if name.len() <= 63 {
        return name;
    }
    let hash = app.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{:012x}", &name[..50], hash & 0xffff_ffff_ffff)
}

struct Running {
    supervisor: Supervisor,
    port: u16,
}

/// berth's PostgreSQL cluster.
pub struct Postgres {
    root: PathBuf,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("root", &self.root)
            .finish()
    }
}

impl Postgres {
    /// The cluster under `root` (`<data>/postgres`); nothing starts yet.
    pub fn new(root: PathBuf) -> Postgres {
        Postgres {
            root,
            running: Mutex::new(None),
        }
    }

    fn cluster_dir(&self) -> PathBuf {
        self.root.join("cluster")
    }

    fn password_file(&self) -> PathBuf {
        self.root.join("superuser.password")
    }

    fn port_file(&self) -> PathBuf {
        self.root.join("port")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// The port the server listens on, or last listened on.
    pub fn known_port(&self) -> Option<u16> {
        std::fs::read_to_string(self.port_file())
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Whether a cluster was made here before.
    pub fn exists(&self) -> bool {
        self.cluster_dir().join("PG_VERSION").is_file()
    }

    /// The running server's process id, if it runs.
    pub async fn pid(&self) -> Option<u32> {
        self.running
            .lock()
            .await
            .as_ref()
            .and_then(|running| running.supervisor.pid())
    }

    /// Makes the cluster if needed, starts it if it is not running, and
    /// waits until it accepts the superuser. Returns its port.
    pub async fn ensure_running(&self) -> Result<u16, ResourceError> {
        let mut running = self.running.lock().await;
        if let Some(port) = running.as_ref().map(|running| running.port) {
            drop(running);
            wait_accepting(self, port).await?;
            return Ok(port);
        }
        let binaries = PgBinaries::find()?;
        let user = crate::service_user("postgres")?;
        crate::check_reachable(&self.cluster_dir(), user.as_ref())?;
        if !self.exists() {
            self.init(&binaries, user.as_ref()).await?;
        }
        let wanted = self.known_port();
        let port =
            crate::free_port(wanted).map_err(io_error("cannot find a port for", &self.root))?;
        std::fs::write(self.port_file(), port.to_string())
            .map_err(io_error("cannot write", &self.port_file()))?;
        let cluster = self.cluster_dir();
        let mut args: Vec<String> = vec![
            "-D".into(),
            cluster.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            format!("max_connections={MAX_CONNECTIONS}"),
            // berth's own (superuser) connections never find it full.
            "-c".into(),
            format!("superuser_reserved_connections={RESERVED_FOR_BERTH}"),
        ];
        if let Some((certificate, key)) = tls::ensure(&self.root, user.as_ref()) {
            args.extend([
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", certificate.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ]);
        }
        let command = ServiceCommand {
            program: binaries.program("postgres"),
            args,
            user: user.clone(),
            log: self.log_file(),
            workdir: cluster.clone(),
            stop_signal: libc::SIGINT,
            // Shared by every app: sized by the host, not by one app.
            limits: None,
        };
        // The log is written by the service's user.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file());
        crate::hand_over(&self.log_file(), user.as_ref())?;
        let supervisor = Supervisor::start("postgres", command);
        *running = Some(Running { supervisor, port });
        drop(running);
        wait_accepting(self, port).await?;
        Ok(port)
    }

    async fn init(
        &self,
        binaries: &PgBinaries,
        user: Option<&SystemUser>,
    ) -> Result<(), ResourceError> {
        std::fs::create_dir_all(&self.root).map_err(io_error("cannot create", &self.root))?;
        let cluster = self.cluster_dir();
        std::fs::create_dir_all(&cluster).map_err(io_error("cannot create", &cluster))?;
        set_mode(&cluster, 0o700)?;
        let password = Vault::generate_password(32);
        write_private(&self.password_file(), password.as_bytes())?;
        // initdb reads the password from a file its user can read; it is
        // removed as soon as initdb is done.
        let initdb_password = self.root.join("initdb.password");
        write_private(&initdb_password, password.as_bytes())?;
        crate::hand_over(&initdb_password, user)?;
        crate::hand_over(&cluster, user)?;
        let mut command = tokio::process::Command::new(binaries.program("initdb"));
        command
            .arg("-D")
            .arg(&cluster)
            .arg("--username")
            .arg(SUPERUSER)
            .arg("--pwfile")
            .arg(&initdb_password)
            .arg("--auth")
            .arg("scram-sha-256")
            .arg("--encoding")
            .arg("UTF8")
            .arg("--locale")
            .arg("C.UTF-8")
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8");
        if let Some(user) = user {
            command.uid(user.uid).gid(user.gid);
        }
        let output = command.output().await;
        let _ = std::fs::remove_file(&initdb_password);
        let output = output.map_err(io_error("cannot run initdb in", &cluster))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&cluster);
            return Err(ResourceError::Command {
                command: "initdb".into(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        let hba = "# Written by berth. Loopback TCP only, SCRAM passwords only;\n\
                   # a role reaches only the database of its own name, berth's superuser all.\n\
                   host all berth 127.0.0.1/32 scram-sha-256\n\
                   host sameuser all 127.0.0.1/32 scram-sha-256\n";
        let hba_path = cluster.join("pg_hba.conf");
        std::fs::write(&hba_path, hba).map_err(io_error("cannot write", &hba_path))?;
        crate::hand_over(&hba_path, user)?;
        Ok(())
    }

    fn superuser_password(&self) -> Result<Zeroizing<String>, ResourceError> {
        let path = self.password_file();
        let text = std::fs::read_to_string(&path).map_err(io_error("cannot read", &path))?;
        Ok(Zeroizing::new(text.trim().to_string()))
    }

    /// The superuser's connection URL (for `pgbench` and the like).
    pub async fn superuser_url(&self, database: &str) -> Result<String, ResourceError> {
        let port = self.ensure_running().await?;
        Ok(format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{port}/{database}",
            *self.superuser_password()?
        ))
    }

    async fn admin(&self, port: u16) -> Result<tokio_postgres::Client, ResourceError> {
        let client = connect(port, SUPERUSER, &self.superuser_password()?, "postgres").await?;
        // Statements with passwords in them never reach the server's log,
        // not even when they fail.
        client
            .batch_execute("SET log_min_error_statement = PANIC; SET log_statement = 'none'")
            .await?;
        Ok(client)
    }

    /// Creates a database owned by the superuser (benchmarks compare
    /// against it).
    pub async fn create_superuser_database(&self, name: &str) -> Result<(), ResourceError> {
        let port = self.ensure_running().await?;
        let client = self.admin(port).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {}", quote_identifier(name)))
                .await?;
        }
        Ok(())
    }

    /// Stops the server cleanly.
    pub async fn stop(&self) {
        if let Some(running) = self.running.lock().await.take() {
            running.supervisor.stop().await;
        }
    }
}

/// Waits until the server at `port` accepts the superuser.
async fn wait_accepting(postgres: &Postgres, port: u16) -> Result<(), ResourceError> {
    let password = postgres.superuser_password()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match connect(port, SUPERUSER, &password, "postgres").await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(ResourceError::Start {
                    what: "PostgreSQL".into(),
                    reason: format!(
                        "{err}; last lines of {}:\n{}",
                        postgres.log_file().display(),
                        crate::tail(&postgres.log_file(), 10)
                    ),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Connects to `database` on 127.0.0.1:`port` as `user`.
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, ResourceError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn run_client(
    mut command: tokio::process::Command,
    what: &str,
    password: &str,
) -> Result<(), ResourceError> {
    command
        .env_clear()
        .env("PGPASSWORD", password)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null());
    let output = command
        .output()
        .await
        .map_err(|err| ResourceError::Command {
            command: what.into(),
            output: err.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ResourceError::Command {
            command: what.into(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ResourceError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error("cannot set the mode of", path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ResourceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("cannot write", path))?;
    file.write_all(bytes)
        .map_err(io_error("cannot write", path))
}

pub mod migrate;
mod roles;
#[cfg(test)]
mod tests;
mod tls;
