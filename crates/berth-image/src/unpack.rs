//! Applying a layer (a tar stream, gzip- or zstd-compressed or not) onto
//! a root file system being made, as the OCI image spec's changesets say:
//! entries replace what lower layers had, `.wh.NAME` removes NAME, and
//! `.wh..wh..opq` empties its directory of what lower layers put there.
//!
//! Nothing is written outside the root: an entry path with `..` is refused,
//! and every directory on an entry's way is resolved inside the root, the
//! way the kernel will resolve it once the root is the instance's `/` (a
//! symlink to `/etc` there means the root's `etc`, as containerd does it).
//! Device nodes and FIFOs are skipped; setuid and setgid bits dropped.
//!
//! A layer may also be unpacked alone into a folder of its own, for
//! overlayfs to stack ([`unpack_layer_alone`]): its whiteouts are then
//! written as overlay's rather than applied.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::{ImageError, Result, io_error, overlay};

/// The most symlinks followed resolving one path (as the kernel's 40).
const MAX_SYMLINKS: usize = 40;

/// Bounds on what one image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Bytes of file content, all layers together.
    pub max_bytes: u64,
    /// Entries, all layers together.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 16 * 1024 * 1024 * 1024,
            max_entries: 2_000_000,
        }
    }
}

/// What unpacking has counted so far (layers add to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries read.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Device nodes and FIFOs not made.
    pub skipped: u64,
}

/// An entry's path as clean components; `..` anywhere is refused.
fn clean(path: &Path) -> Result<Vec<OsString>> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::Escapes(path.display().to_string()));
            }
        }
    }
    Ok(parts)
}

/// The directory `parts` names under `root`, resolved inside it: each
/// symlink on the way is followed as if `root` were `/`, and `..` stops
/// at the root. Missing directories are made when `create`.
fn resolve_dir(root: &Path, parts: &[OsString], create: bool) -> Result<PathBuf> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = parts.iter().cloned().collect();
    let mut followed = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        if part.is_empty() || part == "." {
            continue;
        }
        let here: PathBuf = resolved.iter().fold(root.to_path_buf(), |at, p| at.join(p));
        let candidate = here.join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(ImageError::Malformed(format!(
                        "too many symlinks resolving {}",
                        join(parts).display()
                    )));
                }
                let target = fs::read_link(&candidate).map_err(io_error(format!(
                    "cannot read link {}",
                    candidate.display()
                )))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut next: VecDeque<OsString> = target
                    .components()
                    .filter_map(|component| match component {
                        Component::Normal(p) => Some(p.to_os_string()),
                        Component::ParentDir => Some(OsString::from("..")),
                        _ => None,
                    })
                    .collect();
                next.extend(pending.drain(..));
                pending = next;
            }
            Ok(meta) if meta.is_dir() => resolved.push(part),
            Ok(_) => {
                return Err(ImageError::Malformed(format!(
                    "{} is a file where a layer needs a directory",
                    join(&resolved).join(&part).display()
                )));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && create => {
                fs::create_dir(&candidate)
                    .map_err(io_error(format!("cannot make {}", candidate.display())))?;
                // Whatever the server's umask: an instance must pass.
                fs::set_permissions(&candidate, fs::Permissions::from_mode(0o755)).map_err(
                    io_error(format!("cannot set the mode of {}", candidate.display())),
                )?;
                resolved.push(part);
            }
            Err(err) => {
                return Err(io_error(format!("cannot read {}", candidate.display()))(
                    err,
                ));
            }
        }
    }
    Ok(resolved.iter().fold(root.to_path_buf(), |at, p| at.join(p)))
}

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

/// Removes whatever is at `path` (never following a symlink).
fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    }
    .map_err(io_error(format!("cannot remove {}", path.display())))
}

/// Wraps a layer's bytes in the decompressor its first bytes call for.
fn decompressed<'a>(layer: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::new(layer);
    let head = reader
        .fill_buf()
        .map_err(|err| ImageError::Malformed(err.to_string()))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::Decoder::with_buffer(reader)
                .map_err(|err| ImageError::Malformed(err.to_string()))?,
        )
    } else {
        Box::new(reader)
    })
}

/// Where a layer is applied.
#[derive(Debug, Clone, Copy)]
enum Onto<'a> {
    /// A root holding the layers below: a whiteout removes.
    Root,
    /// A folder of its own, stacked by overlayfs later: whiteouts become
    /// overlay's, and a hard link may name a file of a layer below
    /// (`lowers`, top first).
    Alone(&'a [PathBuf]),
}

/// Applies `layer` onto `root`, adding what it read to `stats` and
/// stopping at `limits`.
pub fn unpack_layer(
    layer: impl Read,
    root: &Path,
    limits: UnpackLimits,
    stats: &mut LayerStats,
) -> Result<()> {
    apply(layer, root, Onto::Root, limits, stats)
}

/// Unpacks `layer` alone into `tree`, for overlayfs to stack over the
/// layers below it (`lowers`, top first): `.wh.NAME` becomes a whiteout
/// device and `.wh..wh..opq` marks its folder opaque.
pub fn unpack_layer_alone(
    layer: impl Read,
    tree: &Path,
    lowers: &[PathBuf],
    limits: UnpackLimits,
    stats: &mut LayerStats,
) -> Result<()> {
    apply(layer, tree, Onto::Alone(lowers), limits, stats)
}

fn apply(
    layer: impl Read,
    root: &Path,
    onto: Onto<'_>,
    limits: UnpackLimits,
    stats: &mut LayerStats,
) -> Result<()> {
    let malformed = |err: std::io::Error| ImageError::Malformed(err.to_string());
    let mut archive = tar::Archive::new(decompressed(layer)?);
    // What this layer put down: an opaque directory keeps those.
    let mut added: HashSet<PathBuf> = HashSet::new();
    // Raw: long names and pax headers come as entries, read with a bound.
    let mut entries = archive.entries().map_err(malformed)?.raw(true);
    let mut extensions = crate::tar_headers::Extensions::default();
    let mut read_here = 0u64;
    loop {
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            // Some tools (umoci among them) end a layer right after its
            // last file, without the padding and end blocks: the end.
            // (The entry before was read whole: its length is checked.)
            Some(Err(err)) if read_here > 0 && is_early_end(&err) => break,
            Some(Err(err)) => return Err(malformed(err)),
        };
        read_here += 1;
        // Extension entries describe the entry after them: not counted.
        if extensions.absorb(&mut entry)? {
            continue;
        }
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(ImageError::TooLarge(format!(
                "over {} entries",
                limits.max_entries
            )));
        }
        // Its extra sparse headers are not counted in its size: read raw,
        // the rest of the layer would be misread.
        if entry.header().entry_type().is_gnu_sparse() {
            return Err(ImageError::Malformed(
                "GNU sparse files are not supported in image layers".into(),
            ));
        }
        let (raw, link) = extensions.apply(&entry)?;
        let mut parts = clean(&raw)?;
        let Some(name) = parts.pop() else {
            continue; // the root itself
        };
        let parent = resolve_dir(root, &parts, true)?;
        let name_text = name.to_string_lossy();
        if name_text == ".wh..wh..opq" {
            if let Onto::Alone(_) = onto {
                overlay::mark_opaque(&parent)
                    .map_err(io_error(format!("cannot mark {} opaque", parent.display())))?;
                continue;
            }
            for child in fs::read_dir(&parent)
                .map_err(io_error(format!("cannot read {}", parent.display())))?
                .flatten()
            {
                if !added.contains(&child.path()) {
                    remove(&child.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name_text.strip_prefix(".wh.") {
            // Only a name in this directory: never `.`, `..` or nothing.
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(ImageError::Escapes(raw.display().to_string()));
            }
            // It hides what lower layers have, not what this one added.
            let hidden = parent.join(hidden);
            if !added.contains(&hidden) {
                remove(&hidden)?;
                if let Onto::Alone(_) = onto {
                    overlay::make_whiteout(&hidden).map_err(io_error(format!(
                        "cannot make the whiteout {}",
                        hidden.display()
                    )))?;
                }
            }
            continue;
        }
        let path = parent.join(&name);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777;
        if kind.is_dir() {
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    remove(&path)?;
                    fs::create_dir(&path)
                        .map_err(io_error(format!("cannot make {}", path.display())))?;
                }
                Err(_) => fs::create_dir(&path)
                    .map_err(io_error(format!("cannot make {}", path.display())))?,
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_error(
                format!("cannot set the mode of {}", path.display()),
            ))?;
        } else if kind.is_file() {
            // Never wraps past the limit (the tar crate's own offsets
            // already keep the sum under 2^64).
            stats.bytes = stats.bytes.saturating_add(entry.size());
            if stats.bytes > limits.max_bytes {
                return Err(ImageError::TooLarge(format!(
                    "over {} bytes of files",
                    limits.max_bytes
                )));
            }
            remove(&path)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_error(format!("cannot write {}", path.display())))?;
            let copied = std::io::copy(&mut entry, &mut file).map_err(malformed)?;
            if copied != entry.size() {
                return Err(ImageError::Malformed(format!(
                    "{} ends after {copied} of its {} bytes",
                    raw.display(),
                    entry.size()
                )));
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_error(
                format!("cannot set the mode of {}", path.display()),
            ))?;
        } else if kind.is_symlink() {
            let target = link
                .clone()
                .ok_or_else(|| ImageError::Malformed(format!("{} links nowhere", raw.display())))?;
            remove(&path)?;
            std::os::unix::fs::symlink(&target, &path)
                .map_err(io_error(format!("cannot link {}", path.display())))?;
        } else if kind.is_hard_link() {
            let target = link
                .clone()
                .ok_or_else(|| ImageError::Malformed(format!("{} links nowhere", raw.display())))?;
            let mut target_parts = clean(&target)?;
            let target_name = target_parts
                .pop()
                .ok_or_else(|| ImageError::Escapes(target.display().to_string()))?;
            let in_layer = |dir: &Path| {
                let candidate = resolve_dir(dir, &target_parts, false)
                    .ok()?
                    .join(&target_name);
                // A file or a link; never a whiteout a layer wrote.
                fs::symlink_metadata(&candidate)
                    .is_ok_and(|meta| meta.is_file() || meta.file_type().is_symlink())
                    .then_some(candidate)
            };
            // Alone, the file may be a lower layer's (layers are never
            // written once made, and are named by the layers below them:
            // a link across them is safe).
            let lowers: &[PathBuf] = match onto {
                Onto::Root => &[],
                Onto::Alone(lowers) => lowers,
            };
            let existing = in_layer(root).or_else(|| lowers.iter().find_map(|l| in_layer(l)));
            match existing
                .as_ref()
                .and_then(|path| fs::symlink_metadata(path).ok())
            {
                Some(meta) if !meta.is_dir() => {}
                _ => {
                    return Err(ImageError::Malformed(format!(
                        "{} is a hard link to {}, which the layers do not have",
                        raw.display(),
                        target.display()
                    )));
                }
            }
            let existing = existing.expect("checked above");
            remove(&path)?;
            fs::hard_link(&existing, &path)
                .map_err(io_error(format!("cannot link {}", path.display())))?;
        } else if matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            stats.skipped += 1;
            continue;
        } else {
            continue; // other kinds (contiguous files, volume labels) are left out
        }
        added.insert(path);
    }
    if extensions.pending() {
        return Err(ImageError::Malformed(
            "the layer ends after a long name or pax header, before its entry".into(),
        ));
    }
    Ok(())
}

/// Whether `err` is the stream ending where the tar format wants padding
/// or end blocks.
fn is_early_end(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::UnexpectedEof || err.to_string().contains("unexpected EOF")
}

/// Whether `inside` (a path in the image) is a folder of `root`, symlinks
/// followed inside the root as the instance will see them.
pub fn is_dir_in_root(root: &Path, inside: &str) -> bool {
    let Ok(parts) = clean(Path::new(inside)) else {
        return false;
    };
    resolve_dir(root, &parts, false).is_ok_and(|dir| dir.is_dir())
}
