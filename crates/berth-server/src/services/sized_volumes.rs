//! Volumes with a size (`[[mounts]] size`, fly's `initial_size`, render's
//! `sizeGB`): as root, an ext4 file system in a sparse image file beside
//! the volume's directory (`volumes/APP/.NAME.img`), loop-mounted on it.
//! A full volume stops the app's writes at its size ("No space left on
//! device"), never at the host's disk, which berth's store shares.
//!
//! The image is mounted when a deploy prepares the volume and again, if it
//! is not (after a reboot), when an instance that uses it starts. A bigger
//! size grows the file system in place; a smaller one is refused with the
//! reason (ext4 cannot shrink while mounted). A directory volume that is
//! given a size has its files moved into the new file system.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_runtime::run_command as run;

/// The image file of the volume at `dir`.
pub(super) fn image_of(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.img"))
}

/// Whether something is mounted on `dir`.
pub(super) fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(own), Some(Ok(parent))) => own.dev() != parent.dev(),
        _ => false,
    }
}

/// Makes the volume at `dir` a mounted file system of `size_mib`. Returns
/// what a deploy should say about it, if anything.
pub(super) fn prepare(dir: &Path, size_mib: u64) -> Result<Option<String>, String> {
    let image = image_of(dir);
    let wanted = size_mib * 1024 * 1024;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let mut said = None;
    if !image.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        // Made under another name and given the image's only when whole: a
        // crash half way through the copy leaves no image that would be
        // mounted over the files.
        let partial = image.with_extension("img.partial");
        let _ = std::fs::remove_file(&partial);
        make_image(&partial, wanted)?;
        let holds_files = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
        if holds_files {
            copy_into_image(dir, &partial).inspect_err(|_| {
                let _ = std::fs::remove_file(&partial);
            })?;
        }
        std::fs::rename(&partial, &image)
            .map_err(|err| format!("cannot name {}: {err}", image.display()))?;
        // Only once the image holds the files: a crash before this leaves
        // them in the folder, under the image when it is mounted.
        said = Some(if holds_files {
            let kept = set_aside(dir)?;
            format!(
                "volume {name} now has {size_mib} MB of its own; its files were copied in, and the old folder is kept as {}",
                kept.display()
            )
        } else {
            format!("volume {name}: {size_mib} MB of its own")
        });
    }
    if !is_mount_point(dir) {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        mount(&image, dir)?;
    }
    let current = std::fs::metadata(&image)
        .map_err(|err| format!("cannot read {}: {err}", image.display()))?
        .len();
    if wanted > current {
        grow(&image, dir, wanted)?;
        said = Some(format!("volume {name} grew to {size_mib} MB"));
    } else if wanted < current {
        return Err(format!(
            "volume `{name}` has {} MB; it cannot shrink to {size_mib} MB (make a new volume and copy what it needs)",
            current / (1024 * 1024)
        ));
    }
    Ok(said)
}

/// Mounts the volume at `dir` if its file system is not mounted (after a
/// reboot), or makes it if there is none yet; a size other than its own is
/// left for the next deploy to act on.
pub(super) fn ensure_mounted(dir: &Path, size_mib: u64) -> Result<(), String> {
    let image = image_of(dir);
    if !image.exists() {
        return prepare(dir, size_mib).map(|_| ());
    }
    if !is_mount_point(dir) {
        mount(&image, dir)?;
    }
    Ok(())
}

/// Unmounts the volume at `dir` if it has a file system of its own.
pub(super) fn unmount(dir: &Path) -> Result<(), String> {
    if is_mount_point(dir) {
        run(Command::new("umount").arg(dir), "unmount the volume")?;
    }
    Ok(())
}

fn make_image(image: &Path, bytes: u64) -> Result<(), String> {
    let file = std::fs::File::create(image)
        .map_err(|err| format!("cannot create {}: {err}", image.display()))?;
    file.set_len(bytes)
        .map_err(|err| format!("cannot size {}: {err}", image.display()))?;
    drop(file);
    // No blocks reserved for root: the app is the only user. 4 KiB blocks
    // always: a small file system gets 1 KiB ones, which ext4 cannot grow
    // while mounted.
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-b", "4096"])
            .arg(image),
        "make the volume's file system (mkfs.ext4, from e2fsprogs)",
    )
}

fn mount(image: &Path, dir: &Path) -> Result<(), String> {
    run(
        Command::new("mount")
            .args(["-o", "loop,nosuid,nodev"])
            .arg(image)
            .arg(dir),
        "mount the volume",
    )
}

/// Mounts the new file system beside `dir` and copies `dir`'s files into
/// it.
fn copy_into_image(dir: &Path, image: &Path) -> Result<(), String> {
    let staging = dir.with_file_name(format!(
        ".{}.moving",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::create_dir_all(&staging).map_err(|err| err.to_string())?;
    mount(image, &staging)?;
    let copied = run(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", dir.display()))
            .arg(&staging),
        "copy the volume's files into its new file system (is it larger than its size?)",
    );
    let _ = run(Command::new("umount").arg(&staging), "unmount");
    let _ = std::fs::remove_dir(&staging);
    copied
}

/// Puts an empty folder in `dir`'s place for its file system to be mounted
/// on. The old folder is kept beside it (returned), not deleted: instances
/// of the release still running have it mounted and go on writing there
/// until they stop.
fn set_aside(dir: &Path) -> Result<PathBuf, String> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let kept = dir.with_file_name(format!(
        ".{}.unsized-{since_epoch}",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::rename(dir, &kept).map_err(|err| err.to_string())?;
    std::fs::create_dir(dir).map_err(|err| err.to_string())?;
    Ok(kept)
}

/// Grows the mounted file system of the volume at `dir` to `bytes`, or
/// leaves it exactly as it was: online resizing needs `CAP_SYS_RESOURCE`,
/// which a confined root may lack.
fn grow(image: &Path, dir: &Path, bytes: u64) -> Result<(), String> {
    let set_len = |length: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .and_then(|file| file.set_len(length))
            .map_err(|err| format!("cannot resize {}: {err}", image.display()))
    };
    let original = std::fs::metadata(image)
        .map_err(|err| format!("cannot read {}: {err}", image.display()))?
        .len();
    let device = loop_device_of(dir)?;
    set_len(bytes)?;
    let grown = run(
        Command::new("losetup").arg("-c").arg(&device),
        "resize the loop device",
    )
    .and_then(|()| {
        run(
            Command::new("resize2fs").arg(&device),
            "grow the file system",
        )
    });
    if let Err(err) = grown {
        set_len(original)?;
        let _ = run(
            Command::new("losetup").arg("-c").arg(&device),
            "resize the loop device",
        );
        return Err(format!(
            "volume `{}` cannot grow while mounted ({err}; the kernel allows it to a root with CAP_SYS_RESOURCE); it keeps {} MB",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            original / (1024 * 1024)
        ));
    }
    Ok(())
}

/// The loop device mounted on `dir`, from /proc/self/mountinfo.
fn loop_device_of(dir: &Path) -> Result<String, String> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|err| err.to_string())?;
    let target = dir.display().to_string();
    mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let separator = fields.iter().position(|field| *field == "-")?;
            let source = fields.get(separator + 2)?;
            (*mount_point == target && source.starts_with("/dev/loop")).then(|| source.to_string())
        })
        .ok_or_else(|| format!("no loop device is mounted on {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_sits_beside_the_volume_hidden() {
        assert_eq!(
            image_of(Path::new("/data/volumes/app/uploads")),
            Path::new("/data/volumes/app/.uploads.img")
        );
    }
}
