//! Source uploads: packing an app folder and unpacking it safely.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// What can go wrong packing or unpacking a source tree.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A path in the upload would land outside the app's folder.
    #[error("upload refused: `{0}` escapes the app folder")]
    PathEscapes(String),
    /// A link in the upload points outside the app's folder, or upwards.
    #[error(
        "upload refused: link `{path}` points to `{target}`; links must be relative and point inside the folder without `..`"
    )]
    LinkEscapes {
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// The upload holds something other than files, folders and links.
    #[error("upload refused: `{0}` is not a regular file, folder or symlink")]
    UnsupportedEntry(String),
    /// The unpacked tree would be larger than allowed.
    #[error("upload refused: the unpacked source is larger than {limit_mib} MiB")]
    TooLarge {
        /// The limit.
        limit_mib: u64,
    },
    /// The unpacked tree would hold more entries than allowed.
    #[error("upload refused: the source holds more than {limit} files, folders and links")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The upload was compressed with a window larger than the unpacker
    /// allows (`zstd --long`), which would take that much memory to read.
    #[error(
        "upload refused: it was compressed with a window over 128 MiB (zstd --long); compress it without --long"
    )]
    WindowTooLarge,
    /// The upload is not a zstd-compressed tarball.
    #[error("upload is not a valid compressed tarball ({0})")]
    Malformed(#[source] io::Error),
    /// Reading or writing files failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SourceError {
    let context = context.into();
    move |source| SourceError::Io { context, source }
}

/// Limits on an unpacked upload.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Total bytes of file contents.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 512 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// Checks that `path` is relative and never climbs out of its root.
fn safe_relative_path(path: &Path) -> Result<PathBuf, SourceError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SourceError::PathEscapes(path.display().to_string()));
            }
        }
    }
    Ok(clean)
}

/// Checks that a symlink at `link` pointing to `target` stays inside the
/// root: the target must be relative and must not contain `..`. Links that
/// only ever point down cannot be chained to climb out, whatever order they
/// are created in (a link through `..` could, once another link is added).
fn check_link(link: &Path, target: &Path) -> Result<(), SourceError> {
    let escapes = target.components().any(|component| {
        matches!(
            component,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if escapes || target.as_os_str().is_empty() {
        return Err(SourceError::LinkEscapes {
            path: link.display().to_string(),
            target: target.display().to_string(),
        });
    }
    Ok(())
}

/// Refuses to write at `relative` if it, or any folder on the way to it, is
/// a symlink already unpacked: writes never follow links.
fn refuse_symlinks_on_the_way(
    dest: &Path,
    relative: &Path,
    raw_path: &Path,
) -> Result<(), SourceError> {
    let mut walked = dest.to_path_buf();
    for part in relative.components() {
        walked.push(part);
        if fs::symlink_metadata(&walked).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(SourceError::PathEscapes(raw_path.display().to_string()));
        }
    }
    Ok(())
}

/// Unpacks a tarball made by [`crate::pack::pack`] into `dest` (which must exist and be
/// empty). Refuses, before writing anything outside `dest`, any entry that
/// would escape it; stops at the limits.
pub fn unpack(
    compressed: impl Read,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<u64, SourceError> {
    let decoder = zstd::Decoder::new(compressed).map_err(malformed)?;
    let mut archive = tar::Archive::new(decoder);
    let mut total_bytes = 0u64;
    let mut entries = 0u64;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(SourceError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = entry.path().map_err(malformed)?.into_owned();
        let relative = safe_relative_path(&raw_path)?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        refuse_symlinks_on_the_way(dest, &relative, &raw_path)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&target)
                .map_err(io_error(format!("cannot create {}", relative.display())))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(io_error(format!("cannot create {}", parent.display())))?;
        }
        if kind.is_symlink() {
            let link_target = entry
                .link_name()
                .map_err(malformed)?
                .ok_or_else(|| SourceError::UnsupportedEntry(relative.display().to_string()))?
                .into_owned();
            check_link(&relative, &link_target)?;
            std::os::unix::fs::symlink(&link_target, &target).map_err(io_error(format!(
                "cannot create link {}",
                relative.display()
            )))?;
            continue;
        }
        if !kind.is_file() {
            return Err(SourceError::UnsupportedEntry(
                relative.display().to_string(),
            ));
        }
        total_bytes += entry.size();
        if total_bytes > limits.max_bytes {
            return Err(SourceError::TooLarge {
                limit_mib: limits.max_bytes / (1024 * 1024),
            });
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
        let mut file = fs::File::create(&target)
            .map_err(io_error(format!("cannot write {}", relative.display())))?;
        io::copy(&mut entry, &mut file).map_err(malformed)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o600)).map_err(
            io_error(format!("cannot set mode of {}", relative.display())),
        )?;
    }
    Ok(total_bytes)
}

/// A read error of the upload, saying so when the cause is a window too
/// large for the decoder (a frame from `zstd --long=31`, say).
fn malformed(err: io::Error) -> SourceError {
    if err.to_string().contains("too much memory") {
        SourceError::WindowTooLarge
    } else {
        SourceError::Malformed(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // Write the name bytes directly: `set_path` refuses `..`, a hostile client would not.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()
    }

    #[test]
    fn paths_that_escape_are_refused_and_nothing_is_written_outside() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("app");
        fs::create_dir(&dest).unwrap();
        let evil = tarball(&[("ok.txt", b"fine"), ("../escaped.txt", b"gotcha")]);
        let err = unpack(&evil[..], &dest, UnpackLimits::default()).unwrap_err();
        assert!(matches!(err, SourceError::PathEscapes(_)), "{err}");
        assert!(err.to_string().contains("../escaped.txt"));
        assert!(!parent.path().join("escaped.txt").exists());

        let absolute = tarball(&[("/tmp/berth-absolute-escape", b"x")]);
        assert!(matches!(
            unpack(&absolute[..], &dest, UnpackLimits::default()),
            Err(SourceError::PathEscapes(_))
        ));
    }

    #[test]
    fn links_that_point_outside_are_refused() {
        assert!(check_link(Path::new("a/link"), Path::new("b/c")).is_ok());
        assert!(check_link(Path::new("a/link"), Path::new("../b")).is_err());
        assert!(check_link(Path::new("a/link"), Path::new("../../etc/passwd")).is_err());
        assert!(check_link(Path::new("link"), Path::new("/etc/passwd")).is_err());
    }

    fn link_tarball(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            match link {
                Some(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    header.set_link_name(target).unwrap();
                    header.set_path(path).unwrap();
                    header.set_cksum();
                    builder.append(&header, &[][..]).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(6);
                    header.set_path(path).unwrap();
                    header.set_cksum();
                    builder.append(&header, &b"gotcha"[..]).unwrap();
                }
            }
        }
        zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()
    }

    #[test]
    fn regression_chained_symlinks_cannot_write_outside() {
        // `s -> .` then `f -> s/s/s/../../../victim` then a file written at `f`.
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("a/b/c/app");
        fs::create_dir_all(&dest).unwrap();
        let evil = link_tarball(&[
            ("s", Some(".")),
            ("f", Some("s/s/s/../../../victim")),
            ("f", None),
        ]);
        assert!(unpack(&evil[..], &dest, UnpackLimits::default()).is_err());
        assert!(!parent.path().join("a/victim").exists());
        // Writing through a link to a folder, or onto a link, is refused too.
        let dest2 = parent.path().join("app2");
        fs::create_dir_all(&dest2).unwrap();
        let through = link_tarball(&[("d", Some("sub")), ("d/x", None)]);
        assert!(matches!(
            unpack(&through[..], &dest2, UnpackLimits::default()),
            Err(SourceError::PathEscapes(_))
        ));
        let dest3 = parent.path().join("app3");
        fs::create_dir_all(&dest3).unwrap();
        let onto = link_tarball(&[("l", Some("target")), ("l", None)]);
        assert!(matches!(
            unpack(&onto[..], &dest3, UnpackLimits::default()),
            Err(SourceError::PathEscapes(_))
        ));
        // Links that point down are fine.
        let dest4 = parent.path().join("app4");
        fs::create_dir_all(&dest4).unwrap();
        let fine = link_tarball(&[("real.txt", None), ("alias.txt", Some("real.txt"))]);
        unpack(&fine[..], &dest4, UnpackLimits::default()).unwrap();
        assert_eq!(
            fs::read_to_string(dest4.join("alias.txt")).unwrap(),
            "gotcha"
        );
    }

    #[test]
    fn uploads_over_the_limit_are_refused() {
        let big = tarball(&[("a", &[0u8; 2048]), ("b", &[0u8; 2048])]);
        let dest = tempfile::tempdir().unwrap();
        let limits = UnpackLimits {
            max_bytes: 3000,
            max_entries: 10,
        };
        assert!(matches!(
            unpack(&big[..], dest.path(), limits),
            Err(SourceError::TooLarge { .. })
        ));
        assert!(matches!(
            unpack(&b"not a tarball"[..], dest.path(), limits),
            Err(SourceError::Malformed(_))
        ));
    }

    #[test]
    fn each_refusal_says_which_limit() {
        let dest = tempfile::tempdir().unwrap();
        let many = tarball(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 2,
        };
        let err = unpack(&many[..], dest.path(), limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "upload refused: the source holds more than 2 files, folders and links"
        );

        // zstd --long=31: a 2 GiB window, which the unpacker will not hold.
        let mut raw = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        raw.append_data(&mut header, "a", &b"hello"[..]).unwrap();
        let raw = raw.into_inner().unwrap();
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.window_log(31).unwrap();
        std::io::Write::write_all(&mut encoder, &raw).unwrap();
        let long = encoder.finish().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&long[..], dest.path(), UnpackLimits::default()).unwrap_err();
        assert!(matches!(err, SourceError::WindowTooLarge), "{err}");
        assert!(err.to_string().contains("zstd --long"), "{err}");

        let err = unpack(&b"not a tarball"[..], dest.path(), UnpackLimits::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("upload is not a valid compressed tarball ("),
            "{err}"
        );
    }
}
