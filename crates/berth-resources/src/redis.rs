//! Redis for apps: one `redis-server` per app.
//!
//! A server of its own (rather than ACL users on a shared one) gives each
//! app a hard memory limit (`maxmemory`, 64 MiB unless asked otherwise, with
//! `noeviction` so a full Redis refuses writes instead of losing keys), its
//! own persistence, and no way to see another app's keys, not even with
//! `KEYS *`. Each listens on 127.0.0.1 with a generated password (the
//! default user's, kept in a 0600 config file, never on a command line) and
//! an append-only file in `<data>/redis/<app>`, so data survives restarts of
//! the app, of Redis and of berth. The app may not run the commands that
//! would lift its limits (`CONFIG`, `ACL`, …: see `LOCKED_COMMANDS`). As root
//! it runs as the `redis` user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::supervise::{ServiceCommand, Supervisor};
use crate::{ResourceError, io_error};

/// The memory limit of an app's Redis.
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 64;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands the app's user may not run: none of them is for an app, and
/// with them it could lift its memory limit (`CONFIG SET maxmemory 0`),
/// give itself back what is taken here (`ACL`), load code (`MODULE`),
/// stop the server, or make it a replica of another; nor `MIGRATE`, which
/// would have the server (in the host's network) connect to a loopback
/// port the app's own namespace cannot reach.
const LOCKED_COMMANDS: &str = "-config -acl -module -debug -shutdown -replicaof -slaveof -failover -cluster -sync -psync -migrate";

/// Finds `redis-server` (`BERTH_REDIS_SERVER` overrides).
pub fn find_server() -> Result<PathBuf, ResourceError> {
    if let Some(path) = std::env::var_os("BERTH_REDIS_SERVER") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
    }
    crate::on_path("redis-server")
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|path| path.is_file()))
        .ok_or_else(|| ResourceError::NotInstalled {
            what: "Redis".into(),
            hint: "install Debian's `redis-server` package (apt-get install redis-server), or set BERTH_REDIS_SERVER".into(),
        })
}

/// The URL an app's Redis is reached at.
pub fn url(port: u16, password: &str) -> String {
    format!("redis://default:{password}@127.0.0.1:{port}")
}

struct Running {
    supervisor: Supervisor,
    port: u16,
}

/// The apps' Redis servers.
pub struct RedisFleet {
    root: PathBuf,
    servers: Mutex<HashMap<String, Running>>,
}

impl std::fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFleet")
            .field("root", &self.root)
            .finish()
    }
}

impl RedisFleet {
    /// The fleet under `root` (`<data>/redis`); nothing starts yet.
    pub fn new(root: PathBuf) -> RedisFleet {
        RedisFleet {
            root,
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn dir(&self, app: &str) -> PathBuf {
        self.root.join(app)
    }

    /// The process id of `app`'s Redis, if it runs.
    pub async fn pid(&self, app: &str) -> Option<u32> {
        self.servers
            .lock()
            .await
            .get(app)
            .and_then(|running| running.supervisor.pid())
    }

    /// Starts `app`'s Redis if it is not running (on `wanted_port` when
    /// that is free) and waits until it answers. Returns its port.
    pub async fn ensure_running(
        &self,
        app: &str,
        password: &str,
        wanted_port: Option<u16>,
    ) -> Result<u16, ResourceError> {
        let mut servers = self.servers.lock().await;
        if let Some(port) = servers.get(app).map(|running| running.port) {
            drop(servers);
            wait_answering(port, password, &self.dir(app)).await?;
            return Ok(port);
        }
        let program = find_server()?;
        let user = crate::service_user("redis")?;
        let dir = self.dir(app);
        crate::check_reachable(&dir, user.as_ref())?;
        std::fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        let port =
            crate::free_port(wanted_port).map_err(io_error("cannot find a port for", &dir))?;
        let config = dir.join("redis.conf");
        write_config(&config, &dir, port, password, DEFAULT_MAX_MEMORY_MIB)?;
        let log = dir.join("redis.log");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
        crate::hand_over(&dir, user.as_ref())?;
        let supervisor = Supervisor::start(
            format!("redis-{app}"),
            ServiceCommand {
                program,
                args: vec![config.display().to_string()],
                user,
                log,
                workdir: dir.clone(),
                stop_signal: libc::SIGTERM,
                limits: Some(redis_limits(DEFAULT_MAX_MEMORY_MIB)),
            },
        );
        servers.insert(app.to_string(), Running { supervisor, port });
        drop(servers);
        wait_answering(port, password, &dir).await?;
        Ok(port)
    }

    /// Stops `app`'s Redis, keeping its data.
    pub async fn stop(&self, app: &str) {
        let running = self.servers.lock().await.remove(app);
        if let Some(running) = running {
            running.supervisor.stop().await;
        }
    }

    /// Stops `app`'s Redis and deletes its data.
    pub async fn destroy(&self, app: &str) -> Result<(), ResourceError> {
        self.stop(app).await;
        let dir = self.dir(app);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_error("cannot remove", &dir))?;
        }
        Ok(())
    }

    /// Stops every Redis.
    pub async fn stop_all(&self) {
        let servers: Vec<Running> = self
            .servers
            .lock()
            .await
            .drain()
            .map(|(_, running)| running)
            .collect();
        for running in servers {
            running.supervisor.stop().await;
        }
    }
}

/// The cgroup of a Redis with `max_memory_mib` of data: twice that (a
/// background save forks, and the copy's pages count too) plus 64 MiB for
/// buffers and fragmentation, one core, and room for its few threads.
pub fn redis_limits(max_memory_mib: u32) -> berth_runtime::cgroup::Limits {
    berth_runtime::cgroup::Limits {
        memory_bytes: (u64::from(max_memory_mib) * 2 + 64) * 1024 * 1024,
        cpus: 1.0,
        pids: 64,
    }
}

fn write_config(
    path: &Path,
    dir: &Path,
    port: u16,
    password: &str,
    max_memory_mib: u32,
) -> Result<(), ResourceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = format!(
        "# Written by berth at each start.\n\
         bind 127.0.0.1\n\
         port {port}\n\
         protected-mode yes\n\
         user default on >{password} ~* &* +@all {locked}\n\
         maxmemory {max_memory_mib}mb\n\
         maxmemory-policy noeviction\n\
         dir {dir}\n\
         appendonly yes\n\
         appendfsync everysec\n\
         save \"\"\n\
         enable-protected-configs no\n\
         enable-debug-command no\n\
         enable-module-command no\n\
         daemonize no\n\
         logfile \"\"\n",
        dir = dir.display(),
        locked = LOCKED_COMMANDS
    );
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("cannot write", path))?;
    file.write_all(text.as_bytes())
        .map_err(io_error("cannot write", path))
}

/// Sends `AUTH` and `PING`; true when Redis answers `+OK` and `+PONG`.
pub async fn ping(port: u16, password: &str) -> std::io::Result<bool> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
        password.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 256];
    while !reply.ends_with(b"+PONG\r\n") && !reply.starts_with(b"-") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..read]);
    }
    Ok(reply == b"+OK\r\n+PONG\r\n")
}

async fn wait_answering(port: u16, password: &str, dir: &Path) -> Result<(), ResourceError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(2), ping(port, password)).await;
        if let Ok(Ok(true)) = answer {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ResourceError::Start {
                what: "Redis".into(),
                reason: format!(
                    "it did not answer on 127.0.0.1:{port}; last lines of its log:\n{}",
                    crate::tail(&dir.join("redis.log"), 10)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_app_gets_its_own_password_protected_redis() {
        assert!(
            find_server().is_ok(),
            "Redis is not installed (.ci/run installs it)"
        );
        let data = crate::tests::data_dir();
        let fleet = RedisFleet::new(data.path().join("redis"));
        let port = fleet
            .ensure_running("shop", "pw-shop-123", None)
            .await
            .unwrap();
        assert!(ping(port, "pw-shop-123").await.unwrap());
        assert!(!ping(port, "wrong").await.unwrap());
        // The app cannot lift its memory limit, nor give itself CONFIG back.
        for (command, words) in [
            ("CONFIG", &["CONFIG", "SET", "maxmemory", "0"][..]),
            ("ACL", &["ACL", "SETUSER", "default", "+@all"][..]),
            // Nor reach the host's loopback through the server.
            (
                "MIGRATE",
                &["MIGRATE", "127.0.0.1", "6379", "k", "0", "1000"][..],
            ),
        ] {
            let answer = send(port, "pw-shop-123", words).await;
            assert!(answer.contains("-NOPERM"), "{command}: {answer}");
        }
        assert!(
            send(port, "pw-shop-123", &["SET", "k", "v"])
                .await
                .contains("+OK")
        );
        let pid = fleet.pid("shop").await.unwrap();
        if berth_runtime::cgroup::Cgroups::detect().is_some() {
            // As root it runs in a memory cgroup of its own: neither
            // CONFIG nor a leak takes more than its limit from the host.
            assert_eq!(
                cgroup_memory_limit(pid),
                Some(redis_limits(DEFAULT_MAX_MEMORY_MIB).memory_bytes),
                "{}",
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
            );
        }
        fleet.stop("shop").await;
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || {
                // A zombie reaped a moment later still has /proc; allow it briefly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            }
        );
        // Comes back on the same port with the same data dir.
        let again = fleet
            .ensure_running("shop", "pw-shop-123", Some(port))
            .await
            .unwrap();
        assert_eq!(again, port);
        fleet.destroy("shop").await.unwrap();
        assert!(!data.path().join("redis/shop").exists());
    }

    /// The memory limit of the cgroup `pid` is in (v1 or v2).
    fn cgroup_memory_limit(pid: u32) -> Option<u64> {
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        membership.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let file = match controllers {
                "" => format!("/sys/fs/cgroup{path}/memory.max"),
                list if list.split(',').any(|c| c == "memory") => {
                    format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
                }
                _ => return None,
            };
            std::fs::read_to_string(file).ok()?.trim().parse().ok()
        })
    }

    /// `AUTH` then `words` over RESP; everything the server answered.
    async fn send(port: u16, password: &str, words: &[&str]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let encode = |words: &[&str]| {
            let mut out = format!("*{}\r\n", words.len());
            for word in words {
                out.push_str(&format!("${}\r\n{word}\r\n", word.len()));
            }
            out
        };
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = encode(&["AUTH", "default", password]) + &encode(words) + &encode(&["QUIT"]);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }
}
