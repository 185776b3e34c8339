//! A small cgroup layer that speaks v1 and v2: one cgroup per instance,
//! with a memory limit (no swap beyond it), a CPU quota and a cap on its
//! processes and threads, and how many times the kernel's OOM killer struck
//! inside it.
//!
//! Instance cgroups live under berth's own: `<own>/berth/<instance>` in the
//! memory and cpu hierarchies (v1), or in the unified hierarchy (v2). On v2
//! a cgroup with processes cannot hand controllers to children, so the
//! server first moves itself into a leaf `<own>/berth-server`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where instance cgroups are made.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Separate memory and cpu hierarchies.
    V1 {
        /// `…/memory/<own>/berth`.
        memory: PathBuf,
        /// `…/cpu/<own>/berth`.
        cpu: PathBuf,
        /// `…/pids/<own>/berth`, when the pids hierarchy is mounted.
        pids: Option<PathBuf>,
    },
    /// One unified hierarchy.
    V2 {
        /// `<own>/berth`.
        root: PathBuf,
    },
}

/// The limits of one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// CPU cores (a quota).
    pub cpus: f64,
    /// Processes and threads, together.
    pub pids: u64,
}

impl Limits {
    /// The processes and threads an instance of `memory_mib` may have by
    /// default: four per MiB (1,024 for 256 MiB), at least 256 and at most
    /// 16,384 — room for a runtime's blocking pool, not for a fork bomb.
    pub fn default_pids(memory_mib: u64) -> u64 {
        (memory_mib * 4).clamp(256, 16_384)
    }
}

/// One instance's cgroup.
#[derive(Debug)]
pub struct InstanceCgroup {
    dirs: Vec<PathBuf>,
    memory_dir: PathBuf,
    version2: bool,
    procs: Vec<File>,
    /// Whether berth made it (and removes it when done), or only reads
    /// one another program made ([`InstanceCgroup::of_process`]).
    owned: bool,
}

const CFS_PERIOD_US: u64 = 100_000;

/// What a forked child needs to join a cgroup before it execs: the
/// cgroup's open `cgroup.procs` files (see [`InstanceCgroup::joiner`]).
#[derive(Debug, Clone)]
pub(crate) struct CgroupJoin(Vec<std::os::fd::RawFd>);

impl CgroupJoin {
    /// Moves the calling process into the cgroup (writes `0` to each
    /// `cgroup.procs`). Async-signal-safe: for a child between fork and
    /// exec.
    #[allow(unsafe_code)]
    pub(crate) fn join(&self) -> io::Result<()> {
        for fd in &self.0 {
            // SAFETY: write(2) of a static buffer to a descriptor the parent
            // keeps open across the fork (see `joiner`).
            let written = unsafe { libc::write(*fd, c"0".as_ptr().cast(), 1) };
            if written < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    path_in(&text, controller)
}

/// The path of `controller`'s cgroup (`""`: the unified one) in a
/// `/proc/PID/cgroup` text.
fn path_in(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|name| name == controller)
        };
        matches.then(|| path.to_string())
    })
}

fn join(base: &str, own: &str) -> PathBuf {
    Path::new(base).join(own.trim_start_matches('/'))
}

impl Cgroups {
    /// Finds the hierarchies and makes berth's parent cgroups; `None` when
    /// cgroups cannot be managed here (not root, nothing mounted).
    pub fn detect() -> Option<Cgroups> {
        if !crate::can_isolate() {
            return None;
        }
        if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
            let own = own_path("")?;
            let own_dir = join("/sys/fs/cgroup", &own);
            let root = own_dir.join("berth");
            if enable_v2(&own_dir, &root).is_err() {
                return None;
            }
            let cgroups = Cgroups::V2 { root };
            cgroups.remove_leftovers();
            return Some(cgroups);
        }
        let memory = join("/sys/fs/cgroup/memory", &own_path("memory")?).join("berth");
        let cpu = join("/sys/fs/cgroup/cpu", &own_path("cpu")?).join("berth");
        std::fs::create_dir_all(&memory).ok()?;
        std::fs::create_dir_all(&cpu).ok()?;
        let pids = own_path("pids")
            .map(|own| join("/sys/fs/cgroup/pids", &own).join("berth"))
            .filter(|pids| std::fs::create_dir_all(pids).is_ok());
        if pids.is_none() {
            tracing::warn!("no cgroup pids hierarchy: instances' process counts are not capped");
        }
        let cgroups = Cgroups::V1 { memory, cpu, pids };
        cgroups.remove_leftovers();
        Some(cgroups)
    }

    /// Removes the empty cgroups of instances a crashed server left (the
    /// kernel refuses to remove those that still hold processes). A
    /// cgroup's name ends with its server's pid: those of a server that
    /// still runs are its own (one it just made is empty until its process
    /// joins), and stay.
    fn remove_leftovers(&self) {
        let parents = match self {
            Cgroups::V1 { memory, cpu, pids } => {
                let mut parents = vec![memory.clone(), cpu.clone()];
                parents.extend(pids.clone());
                parents
            }
            Cgroups::V2 { root } => vec![root.clone()],
        };
        for parent in parents {
            for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let owner = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.rsplit('-').next()?.parse::<u32>().ok());
                let owner_runs = owner.is_some_and(|pid| {
                    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
                });
                if entry.path().is_dir() && !owner_runs {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// Which version, for people.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::V1 { memory, .. } => format!("cgroup v1 under {}", memory.display()),
            Cgroups::V2 { root } => format!("cgroup v2 under {}", root.display()),
        }
    }

    /// The directories a cgroup named `name` has (one per hierarchy).
    pub fn dirs(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V1 { memory, cpu, pids } => {
                let mut dirs = vec![memory.join(name), cpu.join(name)];
                dirs.extend(pids.as_ref().map(|pids| pids.join(name)));
                dirs
            }
            Cgroups::V2 { root } => vec![root.join(name)],
        }
    }

    /// Makes the cgroup of instance `id` with `limits`, opening the files a
    /// starting process writes itself into.
    pub fn create(&self, id: &str, limits: Limits) -> io::Result<InstanceCgroup> {
        let dirs = self.dirs(id);
        for dir in &dirs {
            std::fs::create_dir_all(dir)?;
        }
        self.limit(dirs, limits)
    }

    /// Takes over the cgroup `standby` (made, with a standby process in it,
    /// by the spawner) for instance `id`: renamed after it where the
    /// hierarchy allows (v1), with `limits` written before the instance
    /// runs anything of its own. Nothing moves between cgroups.
    pub fn adopt(&self, standby: &str, id: &str, limits: Limits) -> io::Result<InstanceCgroup> {
        let dirs = self
            .dirs(standby)
            .into_iter()
            .zip(self.dirs(id))
            .map(|(from, to)| match std::fs::rename(&from, &to) {
                Ok(()) => to,
                // cgroup v2 renames nothing: it keeps the standby's name.
                Err(_) => from,
            })
            .collect();
        self.limit(dirs, limits)
    }

    /// Writes `limits` into the cgroup whose directories are `dirs` (as
    /// [`Cgroups::dirs`] orders them).
    fn limit(&self, dirs: Vec<PathBuf>, limits: Limits) -> io::Result<InstanceCgroup> {
        let quota = ((limits.cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
        match (self, dirs.as_slice()) {
            (Cgroups::V1 { .. }, [memory_dir, cpu_dir, pids_dir @ ..]) if pids_dir.len() <= 1 => {
                if let Some(pids_dir) = pids_dir.first() {
                    write(&pids_dir.join("pids.max"), limits.pids)?;
                }
                write(
                    &memory_dir.join("memory.limit_in_bytes"),
                    limits.memory_bytes,
                )?;
                // With swap accounting, no swap beyond the limit either.
                let _ = write(
                    &memory_dir.join("memory.memsw.limit_in_bytes"),
                    limits.memory_bytes,
                );
                // A process attached after it started (see `attach`) brings
                // the memory it already holds, where the kernel still can
                // (before 6.x); `usage` covers the others.
                let _ = write(&memory_dir.join("memory.move_charge_at_immigrate"), 3);
                write(&cpu_dir.join("cpu.cfs_period_us"), CFS_PERIOD_US)?;
                write(&cpu_dir.join("cpu.cfs_quota_us"), quota)?;
                // A group competes as one task unless weighted: N CPUs
                // weigh as N busy tasks do outside any group.
                let _ = write(
                    &cpu_dir.join("cpu.shares"),
                    (1024.0 * limits.cpus.max(0.01)) as u64,
                );
                let mut procs = vec![open_procs(memory_dir)?, open_procs(cpu_dir)?];
                for pids_dir in pids_dir {
                    procs.push(open_procs(pids_dir)?);
                }
                Ok(InstanceCgroup {
                    memory_dir: memory_dir.clone(),
                    dirs,
                    version2: false,
                    procs,
                    owned: true,
                })
            }
            (Cgroups::V2 { .. }, [dir]) => {
                write(&dir.join("memory.max"), limits.memory_bytes)?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                std::fs::write(dir.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
                let weight = ((100.0 * limits.cpus) as u64).clamp(1, 10_000);
                let _ = write(&dir.join("cpu.weight"), weight);
                // Where the pids controller is enabled (see enable_v2).
                if dir.join("pids.max").exists() {
                    write(&dir.join("pids.max"), limits.pids)?;
                }
                let procs = vec![open_procs(dir)?];
                Ok(InstanceCgroup {
                    memory_dir: dir.clone(),
                    dirs,
                    version2: true,
                    procs,
                    owned: true,
                })
            }
            _ => Err(io::Error::other(
                "a cgroup's directories do not match its hierarchy",
            )),
        }
    }
}

fn enable_v2(own_dir: &Path, root: &Path) -> io::Result<()> {
    let subtree = own_dir.join("cgroup.subtree_control");
    if std::fs::write(&subtree, "+memory +cpu").is_err() {
        // Processes in our own cgroup block handing out controllers: move
        // the server (all its threads) into a leaf first.
        let leaf = own_dir.join("berth-server");
        std::fs::create_dir_all(&leaf)?;
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())?;
        std::fs::write(&subtree, "+memory +cpu")?;
    }
    std::fs::create_dir_all(root)?;
    std::fs::write(root.join("cgroup.subtree_control"), "+memory +cpu")?;
    // The pids controller caps processes and threads where the kernel has it.
    if std::fs::write(&subtree, "+pids").is_err()
        || std::fs::write(root.join("cgroup.subtree_control"), "+pids").is_err()
    {
        tracing::warn!("no cgroup pids controller: instances' process counts are not capped");
    }
    Ok(())
}

fn write(path: &Path, value: u64) -> io::Result<()> {
    std::fs::write(path, value.to_string())
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))
}

fn open_procs(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
}

impl InstanceCgroup {
    /// The cgroup another program (a container engine) put process `pid`
    /// in, to read its usage: never changed, nor removed.
    pub fn of_process(pid: u32) -> Option<InstanceCgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let (dirs, version2) = if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
            (vec![join("/sys/fs/cgroup", &path_in(&text, "")?)], true)
        } else {
            let memory = join("/sys/fs/cgroup/memory", &path_in(&text, "memory")?);
            let cpu = join("/sys/fs/cgroup/cpu", &path_in(&text, "cpu")?);
            (vec![memory, cpu], false)
        };
        Some(InstanceCgroup {
            memory_dir: dirs[0].clone(),
            dirs,
            version2,
            procs: Vec::new(),
            owned: false,
        })
    }

    /// For a child forked to run in this cgroup: it joins before it
    /// execs, so nothing it runs is ever outside the limits. The cgroup
    /// must outlive the fork (its files stay open in the parent).
    pub(crate) fn joiner(&self) -> CgroupJoin {
        use std::os::fd::AsRawFd;
        CgroupJoin(self.procs.iter().map(AsRawFd::as_raw_fd).collect())
    }

    /// Moves process `pid` (all its threads) into the cgroup, then its
    /// descendants (children it started meanwhile).
    ///
    /// Done from the parent just after exec, off the start's critical path:
    /// on cgroup v1 a move waits for an RCU grace period (about 10 ms here),
    /// which a cold start should not. The instance runs unconstrained for
    /// that long; with `move_charge_at_immigrate` its early memory moves
    /// with it.
    pub fn attach(&self, pid: u32) -> io::Result<()> {
        for mut file in &self.procs {
            file.write_all(pid.to_string().as_bytes())?;
        }
        // Processes it forked before it moved (the init of its pid
        // namespace and the app, say) move too.
        for member in descendants(pid) {
            for mut file in &self.procs {
                // It may have exited meanwhile.
                let _ = file.write_all(member.to_string().as_bytes());
            }
        }
        Ok(())
    }

    /// The CPU time its processes used and the memory they hold now.
    pub fn usage(&self) -> crate::Usage {
        let read = |path: PathBuf| std::fs::read_to_string(path).ok();
        let (cpu_seconds, memory_bytes) = if self.version2 {
            let cpu = read(self.memory_dir.join("cpu.stat")).and_then(|text| {
                text.lines().find_map(|line| {
                    let micros: u64 = line.strip_prefix("usage_usec ")?.trim().parse().ok()?;
                    Some(micros as f64 / 1e6)
                })
            });
            let memory = read(self.memory_dir.join("memory.current"))
                .and_then(|text| text.trim().parse().ok());
            (cpu, memory)
        } else {
            let cpu = self
                .dirs
                .iter()
                .map(|dir| dir.join("cpuacct.usage"))
                .find(|path| path.exists())
                .and_then(read)
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map(|nanos| nanos as f64 / 1e9)
                // No cpuacct hierarchy: the CPU time of its processes now.
                .or_else(|| processes_cpu_seconds(&self.memory_dir));
            // Pages a process touched before it was attached stay charged
            // where it started (newer kernels move no charges): its
            // processes' resident memory is the truer figure then.
            let charged: Option<u64> = read(self.memory_dir.join("memory.usage_in_bytes"))
                .and_then(|text| text.trim().parse().ok());
            let resident = processes_resident_bytes(&self.memory_dir);
            let memory = match (charged, resident) {
                (Some(charged), Some(resident)) => Some(charged.max(resident)),
                (charged, resident) => charged.or(resident),
            };
            (cpu, memory)
        };
        crate::Usage {
            cpu_seconds,
            memory_bytes,
        }
    }

    /// How many processes the OOM killer killed in it.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|count| count.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Kills every process still in it (one that left the process group
    /// with `setsid` included).
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .lines()
                .filter_map(|line| line.trim().parse::<u32>().ok())
            {
                crate::signal_process(pid, libc::SIGKILL);
            }
        }
    }

    /// Removes it, waiting briefly for its last processes to be gone.
    pub fn remove(&self) {
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        // An instance that never started leaves no directory behind.
        self.procs.clear();
        if !self.owned {
            return;
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The CPU time (user and system, their waited-for children's included) of
/// the processes in the cgroup at `dir`, from `/proc`.
fn processes_cpu_seconds(dir: &std::path::Path) -> Option<f64> {
    // The kernel's USER_HZ, which /proc's times are counted in.
    const TICKS_PER_SECOND: f64 = 100.0;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    let mut ticks = 0u64;
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state is field 3, utime 14.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for index in 11..=14 {
            ticks += fields
                .get(index)
                .and_then(|field| field.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// The resident memory of the processes in the cgroup at `dir` (their
/// shared pages counted once per process), from `/proc`.
fn processes_resident_bytes(dir: &std::path::Path) -> Option<u64> {
    const PAGE: u64 = 4096;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    let mut pages = 0;
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
    {
        // statm: size resident shared …, in pages.
        pages += std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(pages * PAGE)
}

/// The processes below `root` (children, their children…), at most 4096.
fn descendants(root: u32) -> Vec<u32> {
    // Every thread's `children` file lists the processes it forked; a walk
    // down from the root costs as many reads as the tree has processes, not
    // as many as the machine has.
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
            {
                if !found.contains(&child) && found.len() < 4096 {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_resident_memory_of_a_cgroups_processes_is_read_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let resident = super::processes_resident_bytes(dir.path()).unwrap();
        assert!(resident > 1024 * 1024, "this test's process: {resident}");
    }

    #[test]
    fn the_cpu_time_of_a_cgroups_processes_is_read_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        // Burn a little CPU (well over the 10 ms /proc counts in).
        let start = std::time::Instant::now();
        let mut spin = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let seconds = super::processes_cpu_seconds(dir.path()).unwrap();
        assert!(seconds >= 0.05, "{seconds} s ({spin})");
        assert_eq!(super::processes_cpu_seconds(&dir.path().join("none")), None);
    }
}
