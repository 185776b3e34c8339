//! The shared libraries a binary needs, read from its ELF headers (its
//! interpreter and `DT_NEEDED` entries, then theirs) — never by running
//! it or `ldd` on it: the binary is an app's, built from its source.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};

use crate::{ImageError, Result, io_error};

/// Where the host's loader finds libraries, in its order.
const LIBRARY_DIRS: [&str; 8] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// The largest ELF file read (a binary is read whole to find its names).
const MAX_ELF: u64 = 1024 * 1024 * 1024;

/// Whether `path` is a regular file under one of [`LIBRARY_DIRS`] once
/// resolved on the host: the only files a binary may bring into its image.
fn is_host_library(path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    (meta.is_file() && LIBRARY_DIRS.iter().any(|dir| real.starts_with(dir))).then_some(real)
}

/// What one ELF file names: its interpreter and the libraries it needs.
fn dependencies(path: &Path) -> Result<(Option<PathBuf>, Vec<String>)> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(io_error(format!("cannot read {}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(io_error(format!("cannot read {}", path.display())))?;
    if !meta.is_file() || meta.len() > MAX_ELF {
        return Err(ImageError::Invalid(format!(
            "{}: not a regular file of at most {MAX_ELF} bytes",
            path.display()
        )));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ELF)
        .read_to_end(&mut data)
        .map_err(io_error(format!("cannot read {}", path.display())))?;
    let invalid = |why: String| ImageError::Invalid(format!("{}: {why}", path.display()));
    let header = elf::FileHeader64::<object::Endianness>::parse(&*data)
        .map_err(|err| invalid(format!("not a 64-bit ELF file ({err})")))?;
    let endian = header.endian().map_err(|err| invalid(err.to_string()))?;
    let segments = header
        .program_headers(endian, &*data)
        .map_err(|err| invalid(err.to_string()))?;
    let mut interpreter = None;
    for segment in segments {
        if let Ok(Some(bytes)) = segment.interpreter(endian, &*data) {
            interpreter = Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    let mut needed = Vec::new();
    for segment in segments {
        let Ok(Some(entries)) = segment.dynamic(endian, &*data) else {
            continue;
        };
        // The string table is where DT_STRTAB points, found by address.
        let strtab_address = entries
            .iter()
            .find(|entry| entry.tag32(endian) == Some(elf::DT_STRTAB))
            .map(|entry| entry.d_val(endian));
        let Some(address) = strtab_address else {
            continue;
        };
        let Some(offset) = segments.iter().find_map(|load| {
            let start = load.p_vaddr(endian);
            let size = load.p_filesz(endian);
            let end = start.checked_add(size)?;
            (load.p_type(endian) == elf::PT_LOAD && address >= start && address < end)
                .then(|| load.p_offset(endian).checked_add(address - start))
                .flatten()
        }) else {
            continue;
        };
        for entry in entries {
            if entry.tag32(endian) == Some(elf::DT_NEEDED) {
                let at = offset
                    .checked_add(entry.d_val(endian))
                    .and_then(|at| usize::try_from(at).ok())
                    .ok_or_else(|| invalid("a DT_NEEDED name outside the file".into()))?;
                let name = data
                    .get(at..)
                    .and_then(|rest| rest.split(|b| *b == 0).next())
                    .ok_or_else(|| invalid("a DT_NEEDED name outside the file".into()))?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok((interpreter, needed))
}

/// Every shared library `binary` needs, with the interpreter, as host
/// paths (as the loader would find them); empty for a static binary. The
/// binary is an app's: it may only name libraries (plain names, found in
/// the host's library folders) and an interpreter that is one of them.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let mut pending = vec![binary.to_path_buf()];
    while let Some(file) = pending.pop() {
        let (interpreter, needed) = dependencies(&file)?;
        if let Some(interpreter) = interpreter {
            if is_host_library(&interpreter).is_none() {
                return Err(ImageError::Invalid(format!(
                    "{} names {} as its loader, which is not one of this host's libraries",
                    file.display(),
                    interpreter.display()
                )));
            }
            if found.insert(interpreter.clone()) {
                pending.push(interpreter);
            }
        }
        for name in needed {
            if name.contains('/') || name.is_empty() || name.starts_with('.') {
                return Err(ImageError::Invalid(format!(
                    "{} needs {name:?}, which is not a library name",
                    file.display()
                )));
            }
            let library = LIBRARY_DIRS
                .iter()
                .map(|dir| Path::new(dir).join(&name))
                .find(|candidate| is_host_library(candidate).is_some())
                .ok_or_else(|| {
                    ImageError::Invalid(format!(
                        "{} needs {name}, which this host does not have",
                        file.display()
                    ))
                })?;
            if found.insert(library.clone()) {
                pending.push(library);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Whether `err` says the file is not an ELF binary at all (a script).
pub fn is_not_elf(err: &ImageError) -> bool {
    matches!(err, ImageError::Invalid(why) if why.contains("not a 64-bit ELF file"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dynamic_binary_needs_libc_and_its_loader() {
        let shell = std::fs::canonicalize("/bin/sh").unwrap();
        let libraries = super::shared_libraries(&shell).unwrap();
        let names: Vec<String> = libraries
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|name| name.starts_with("libc.so")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|name| name.starts_with("ld-linux")),
            "{names:?}"
        );
        // Not an ELF file: said so.
        let text = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(text.path(), "#!/bin/sh\n").unwrap();
        assert!(super::is_not_elf(
            &super::shared_libraries(text.path()).unwrap_err()
        ));
        // A binary naming a path, or a loader outside the host's library
        // folders, brings nothing in: the host's own copy of this shell
        // with its loader swapped for /dev/zero.
        let mut hostile = std::fs::read(&shell).unwrap();
        let loader = libraries
            .iter()
            .find(|p| p.to_string_lossy().contains("ld-linux"))
            .unwrap();
        let name = loader.to_string_lossy().into_owned();
        if let Some(at) = hostile
            .windows(name.len())
            .position(|w| w == name.as_bytes())
        {
            let replacement = format!("{:\0<width$}", "/dev/zero", width = name.len());
            hostile[at..at + name.len()].copy_from_slice(replacement.as_bytes());
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &hostile).unwrap();
            let refused = super::shared_libraries(file.path()).unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("not one of this host's libraries"),
                "{refused}"
            );
        }
    }
}
