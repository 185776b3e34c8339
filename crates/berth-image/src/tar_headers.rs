//! GNU long-name and long-link entries and pax headers, read here rather
//! than by the tar crate: it reads each into memory whole, whatever size
//! its header claims, so a layer of a few megabytes could ask the server
//! for gigabytes. Here each is refused beyond [`MAX_EXTENSION`].

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::{ImageError, Result};

/// The largest extension entry a layer may give (names are at most 4 KiB
/// on Linux; pax records with xattrs stay well under this).
pub(crate) const MAX_EXTENSION: u64 = 1024 * 1024;

/// What extension entries said about the entry that follows them.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    path: Option<PathBuf>,
    link: Option<PathBuf>,
    size: Option<u64>,
}

impl Extensions {
    /// Takes `entry` in when it is an extension entry (`true`); `false`
    /// for any other.
    pub(crate) fn absorb<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<bool> {
        let kind = entry.header().entry_type();
        let local_pax = kind.is_pax_local_extensions();
        if !(kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || local_pax
            || kind.is_pax_global_extensions())
        {
            return Ok(false);
        }
        let size = entry.size();
        if size > MAX_EXTENSION {
            return Err(ImageError::TooLarge(format!(
                "a tar extension entry of {size} bytes (at most {MAX_EXTENSION})"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .take(size)
            .read_to_end(&mut data)
            .map_err(|err| ImageError::Malformed(err.to_string()))?;
        if data.len() as u64 != size {
            return Err(ImageError::Malformed(format!(
                "a tar extension entry ends after {} of its {size} bytes",
                data.len()
            )));
        }
        if kind.is_gnu_longname() {
            self.path = Some(name_of(data));
        } else if kind.is_gnu_longlink() {
            self.link = Some(name_of(data));
        } else if local_pax {
            for record in tar::PaxExtensions::new(&data) {
                let record = record.map_err(|err| ImageError::Malformed(err.to_string()))?;
                let value = record.value_bytes().to_vec();
                match record.key_bytes() {
                    b"path" => self.path = Some(name_of(value)),
                    b"linkpath" => self.link = Some(name_of(value)),
                    b"size" => {
                        let size = std::str::from_utf8(&value)
                            .ok()
                            .and_then(|text| text.parse().ok())
                            .ok_or_else(|| {
                                ImageError::Malformed("a pax size that is not a number".into())
                            })?;
                        self.size = Some(size);
                    }
                    _ => {}
                }
            }
        }
        // A global pax header names no one entry: nothing in it applies.
        Ok(true)
    }

    /// Whether extensions wait for an entry (at the end of a layer, one
    /// that was cut off).
    pub(crate) fn pending(&self) -> bool {
        self.path.is_some() || self.link.is_some() || self.size.is_some()
    }

    /// The path and link target of `entry`, which these extensions
    /// precede (they are used up).
    pub(crate) fn apply<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(PathBuf, Option<PathBuf>)> {
        let malformed = |err: std::io::Error| ImageError::Malformed(err.to_string());
        let taken = std::mem::take(self);
        // The entry's data was framed by its header's size: a pax size
        // unlike it (files over 8 GiB) would misread the rest.
        if let Some(size) = taken.size
            && size != entry.size()
        {
            return Err(ImageError::Malformed(format!(
                "a pax size of {size} bytes for an entry of {}: files over 8 GiB are not supported",
                entry.size()
            )));
        }
        let path = match taken.path {
            Some(path) => path,
            None => entry.path().map_err(malformed)?.into_owned(),
        };
        let link = match taken.link {
            Some(link) => Some(link),
            None => entry
                .link_name()
                .map_err(malformed)?
                .map(|link| link.into_owned()),
        };
        Ok((path, link))
    }
}

/// A name from an extension entry: its bytes up to the first NUL.
fn name_of(mut bytes: Vec<u8>) -> PathBuf {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    PathBuf::from(OsString::from_vec(bytes))
}

#[cfg(test)]
mod tests {
    use crate::{ImageError, LayerStats, UnpackLimits, unpack_layer};

    fn apply(root: &std::path::Path, layer: &[u8]) -> crate::Result<LayerStats> {
        let mut stats = LayerStats::default();
        unpack_layer(layer, root, UnpackLimits::default(), &mut stats).map(|()| stats)
    }

    /// A header of `kind` for `name` claiming `size` bytes.
    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(size);
        header.set_cksum();
        header
    }

    #[test]
    fn long_names_long_links_and_pax_paths_land_where_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let long_dir = format!("opt/{}", "d".repeat(120));
        let long_file = format!("{long_dir}/{}", "f".repeat(120));
        let mut builder = tar::Builder::new(Vec::new());
        // GNU long-name entries for both, made by the tar crate.
        let mut dir_header = header("x", tar::EntryType::Directory, 0);
        dir_header.set_mode(0o755);
        builder
            .append_data(&mut dir_header, &long_dir, &b""[..])
            .unwrap();
        let mut file = header("x", tar::EntryType::Regular, 5);
        builder
            .append_data(&mut file, &long_file, &b"hello"[..])
            .unwrap();
        // A symlink whose target needs a GNU long-link entry.
        let mut link = header("x", tar::EntryType::Symlink, 0);
        builder
            .append_link(&mut link, "opt/to-long", &long_file)
            .unwrap();
        // A pax header naming the next entry.
        let pax_path = format!("srv/{}", "p".repeat(150));
        let record = format!("path={pax_path}\n");
        let record = format!(
            "{} {record}",
            record.len() + 1 + (record.len() + 3).to_string().len()
        );
        let pax = header("pax", tar::EntryType::XHeader, record.len() as u64);
        builder.append(&pax, record.as_bytes()).unwrap();
        let short = header("short", tar::EntryType::Regular, 3);
        builder.append(&short, &b"pax"[..]).unwrap();
        let layer = builder.into_inner().unwrap();

        apply(dir.path(), &layer).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(&long_file)).unwrap(),
            b"hello"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("opt/to-long")).unwrap(),
            std::path::Path::new(&long_file)
        );
        assert_eq!(std::fs::read(dir.path().join(&pax_path)).unwrap(), b"pax");
        assert!(!dir.path().join("short").exists());
    }

    #[test]
    fn an_extension_entry_claiming_gigabytes_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // A long-name entry saying 8 GiB follow, and then little: read
        // whole it would ask for 8 GiB of memory.
        let mut layer = header("././@LongLink", tar::EntryType::GNULongName, 8 << 30)
            .as_bytes()
            .to_vec();
        layer.extend_from_slice(&[0u8; 4096]);
        match apply(dir.path(), &layer) {
            Err(ImageError::TooLarge(why)) => assert!(why.contains("extension"), "{why}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_layer_cut_off_in_or_after_an_extension_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut file = header("x", tar::EntryType::Regular, 2);
        builder
            .append_data(&mut file, format!("a/{}", "n".repeat(150)), &b"hi"[..])
            .unwrap();
        let whole = builder.into_inner().unwrap();
        // Inside the long-name entry's data (its header is 512 bytes).
        match apply(dir.path(), &whole[..600]) {
            Err(ImageError::Malformed(_)) => {}
            other => panic!("expected Malformed, got {other:?}"),
        }
        // Right after it, before the file it names: nothing applies it.
        match apply(dir.path(), &whole[..1024]) {
            Err(ImageError::Malformed(_)) => {}
            other => panic!("expected Malformed, got {other:?}"),
        }
        apply(dir.path(), &whole).unwrap();
    }
}
