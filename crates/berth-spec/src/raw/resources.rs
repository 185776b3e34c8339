//! Validating statics, volume mounts and VM sizes.

use super::shapes::*;
use super::values::*;
use super::*;

pub(super) fn validate_statics(
    file: &str,
    statics: Vec<RawStatic>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<StaticSpec> {
    let mut found = Vec::new();
    for entry in statics {
        if entry.tigris_bucket.is_some() || entry.index_document.is_some() {
            warnings.push(format!(
                "{file}: [[statics]] tigris_bucket and index_document are ignored: files are served from the slug"
            ));
        }
        let (Some(guest), Some(prefix)) = (&entry.guest_path, &entry.url_prefix) else {
            problems.found.push(SpecProblem {
                location: entry
                    .guest_path
                    .as_ref()
                    .or(entry.url_prefix.as_ref())
                    .map(|at| Location::of_offset(problems.text, at.span().start)),
                message: "[[statics]] needs guest_path and url_prefix".into(),
            });
            continue;
        };
        if !prefix.get_ref().starts_with('/') {
            problems.at(
                prefix,
                format!("url_prefix `{}` must start with /", prefix.get_ref()),
            );
            continue;
        }
        let spec = StaticSpec {
            guest_path: guest.get_ref().clone(),
            url_prefix: prefix.get_ref().clone(),
        };
        if spec.slug_relative().is_none() {
            problems.at(
                guest,
                format!("guest_path `{}` leaves the app's folder", guest.get_ref()),
            );
            continue;
        }
        found.push(spec);
    }
    found
}

pub(super) fn validate_mounts(
    file: &str,
    mounts: Vec<RawMount>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<crate::model::MountSpec> {
    let mut valid = Vec::new();
    let mut sizing_warned = false;
    for mount in mounts {
        let sizing = mount.auto_extend_size_threshold.is_some()
            || mount.auto_extend_size_increment.is_some()
            || mount.auto_extend_size_limit.is_some()
            || mount.snapshot_retention.is_some()
            || mount.scheduled_snapshots.is_some();
        if sizing && !sizing_warned {
            sizing_warned = true;
            warnings.push(format!(
                "{file}: [[mounts]] auto-extension and snapshots are ignored: a volume keeps its size on this machine's disk"
            ));
        }
        let (Some(source), Some(destination)) = (&mount.source, &mount.destination) else {
            problems.found.push(SpecProblem {
                location: mount
                    .source
                    .as_ref()
                    .or(mount.destination.as_ref())
                    .map(|spanned| Location::of_offset(problems.text, spanned.span().start)),
                message: "each [[mounts]] entry needs `source` (a volume name) and `destination` (an absolute path)".into(),
            });
            continue;
        };
        let name = source.get_ref();
        if !valid_volume_name(name) {
            problems.at(
                source,
                format!("volume name `{name}` must be 1–30 lowercase letters, digits or `_`"),
            );
            continue;
        }
        let path = destination.get_ref();
        if let Err(reason) = valid_mount_destination(path) {
            problems.at(destination, format!("mount destination `{path}` {reason}"));
            continue;
        }
        if valid
            .iter()
            .any(|other: &crate::model::MountSpec| other.destination == *path)
        {
            problems.at(
                destination,
                format!("two mounts share the destination `{path}`"),
            );
            continue;
        }
        let mut size_mib = None;
        if let (Some(size), Some(_)) = (&mount.size, &mount.initial_size) {
            problems.at(
                size,
                "give the volume's size once: `size` or `initial_size`".into(),
            );
            continue;
        }
        if let Some(size) = mount.size.as_ref().or(mount.initial_size.as_ref()) {
            // fly's bare number is in GB.
            let mib = match size.get_ref() {
                NumberOrText::Integer(gb) => u64::try_from(*gb).ok().map(|gb| gb * 1024),
                other => memory_mib(other).map(u64::from),
            };
            match mib {
                Some(mib) if (MIN_VOLUME_MIB..=MAX_VOLUME_MIB).contains(&mib) => {
                    size_mib = Some(mib)
                }
                Some(mib) => {
                    problems.at(
                        size,
                        format!(
                            "volume size is {mib} MB; it must be between {MIN_VOLUME_MIB} MB and {} GB",
                            MAX_VOLUME_MIB / 1024
                        ),
                    );
                    continue;
                }
                None => {
                    problems.at(
                        size,
                        "volume size must be a size such as \"500mb\" or \"10gb\" (a bare number is GB)".into(),
                    );
                    continue;
                }
            }
        }
        valid.push(crate::model::MountSpec {
            size_mib,
            source: name.clone(),
            destination: path.trim_end_matches('/').to_string(),
            processes: mount
                .processes
                .map(|groups| groups.into_iter().map(Spanned::into_inner).collect()),
            shared: mount.shared.unwrap_or(false),
        });
    }
    valid
}

/// The smallest volume with a size (an ext4 file system needs a few MiB
/// for itself), and the largest, in MiB.
const MIN_VOLUME_MIB: u64 = 16;
const MAX_VOLUME_MIB: u64 = 16 * 1024 * 1024;

/// fly's GPU machine presets.
const GPU_SIZES: &[&str] = &["a10", "a100-40gb", "a100-80gb", "l40s"];

/// The most memory one instance may be given, in MiB.
const MAX_MEMORY_MIB: u32 = 256 * 1024;

pub(super) fn validate_vms(
    file: &str,
    vms: Vec<RawVm>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<crate::model::VmSpec> {
    let mut valid = Vec::new();
    for vm in vms {
        let mut spec = crate::model::VmSpec::default();
        if let Some(size) = &vm.size {
            let name = size.get_ref().to_ascii_lowercase();
            match crate::model::VM_SIZES
                .iter()
                .find(|(known, _, _)| *known == name)
            {
                Some((known, cpus, memory)) => {
                    spec.size = Some((*known).to_string());
                    spec.cpus = *cpus;
                    spec.memory_mb = *memory;
                }
                None if GPU_SIZES.contains(&name.as_str()) => {
                    // fly's GPU presets: 8 performance CPUs, 32 GB, a GPU.
                    spec.cpus = 8.0;
                    spec.memory_mb = 32 * 1024;
                    warnings.push(format!(
                        "{file}: [[vm]] size `{name}` has a GPU, and no GPU is available here: instances get its 8 CPUs and 32 GB without one"
                    ));
                }
                None => problems.at(
                    size,
                    format!(
                        "unknown size `{name}` (known: {})",
                        crate::model::VM_SIZES
                            .iter()
                            .map(|(known, _, _)| *known)
                            .chain(GPU_SIZES.iter().copied())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        for value in [&vm.memory, &vm.memory_mb].into_iter().flatten() {
            match memory_mib(value.get_ref()) {
                Some(mib) if (16..=MAX_MEMORY_MIB).contains(&mib) => {
                    spec.memory_mb = mib;
                    spec.size = None;
                }
                Some(mib) if mib < 16 => {
                    problems.at(value, format!("memory is {mib} MB; it must be at least 16 MB"))
                }
                Some(mib) => problems.at(
                    value,
                    format!("memory is {mib} MB; it can be at most {MAX_MEMORY_MIB} MB (256 GB)"),
                ),
                None => problems.at(
                    value,
                    "memory must be a number of MB, or a size such as \"512mb\" or \"1gb\" (units: kb, mb, gb)".into(),
                ),
            }
        }
        if let Some(value) = &vm.cpus {
            let cpus = match value.get_ref() {
                NumberOrText::Integer(number) => Some(*number as f64),
                NumberOrText::Float(number) => Some(*number),
                NumberOrText::Text(text) => text.trim().parse().ok(),
            };
            match cpus {
                Some(cpus) if cpus > 0.0 && cpus <= 256.0 => {
                    spec.cpus = cpus;
                    spec.size = None;
                }
                Some(cpus) if cpus > 256.0 => {
                    problems.at(value, format!("cpus is {cpus}; it can be at most 256"))
                }
                _ => problems.at(value, "cpus must be a number above 0".into()),
            }
        }
        if let Some(value) = &vm.pids {
            match count_value(value, "pids", problems) {
                Some(pids) if (32..=1_000_000).contains(&pids) => spec.pids = Some(pids),
                Some(pids) => problems.at(
                    value,
                    format!(
                        "pids is {pids}; an instance needs at least 32 and may have at most 1000000"
                    ),
                ),
                None => {}
            }
        }
        if let Some(kind) = &vm.cpu_kind
            && !matches!(kind.get_ref().as_str(), "shared" | "performance")
        {
            problems.at(
                kind,
                "cpu_kind must be \"shared\" or \"performance\"".into(),
            );
        }
        if vm.gpus.is_some() || vm.gpu_kind.is_some() {
            warnings.push(format!(
                "{file}: [[vm]] GPUs are ignored: berth runs on this machine's CPUs"
            ));
        }
        let _ = (vm.kernel_args, vm.host_dedication_id, vm.persist_rootfs);
        spec.processes = vm
            .processes
            .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        valid.push(spec);
    }
    valid
}

/// fly's volume names: lowercase letters, digits and underscores, at most 30.
pub(crate) fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An absolute, normalised path that is not `/` and not a system directory.
pub(crate) fn valid_mount_destination(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    if parts.is_empty() {
        return Err("cannot be `/`");
    }
    if parts.iter().any(|part| *part == "." || *part == "..") {
        return Err("cannot contain `.` or `..`");
    }
    const SYSTEM: &[&str] = &[
        "proc", "sys", "dev", "etc", "bin", "sbin", "lib", "lib64", "boot", "run",
    ];
    // Under /usr, an app's own folder (`/usr/src/app/data`,
    // `/usr/local/data`) is the app's; the system's are not.
    const USR_LOCAL_SYSTEM: &[&str] = &[
        "bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec", "include", "share", "etc",
        "man", "games",
    ];
    let under_usr_ok = match parts.as_slice() {
        ["usr", "src", _, ..] => true,
        ["usr", "local", top, ..] => !USR_LOCAL_SYSTEM.contains(top),
        ["usr", ..] => false,
        _ => true,
    };
    if SYSTEM.contains(&parts[0]) || parts == ["usr"] || !under_usr_ok {
        return Err("is a system directory");
    }
    Ok(())
}
