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

/// What one ELF file names: its interpreter and the libraries it needs.
fn dependencies(path: &Path) -> Result<(Option<PathBuf>, Vec<String>)> {
    let data = std::fs::read(path).map_err(io_error(format!("cannot read {}", path.display())))?;
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
            (load.p_type(endian) == elf::PT_LOAD && address >= start && address < start + size)
                .then(|| load.p_offset(endian) + (address - start))
        }) else {
            continue;
        };
        for entry in entries {
            if entry.tag32(endian) == Some(elf::DT_NEEDED) {
                let at = (offset + entry.d_val(endian)) as usize;
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
/// paths (as the loader would find them); empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let mut pending = vec![binary.to_path_buf()];
    let mut first = true;
    while let Some(file) = pending.pop() {
        let (interpreter, needed) = dependencies(&file)?;
        if let Some(interpreter) = interpreter
            && found.insert(interpreter.clone())
        {
            pending.push(interpreter);
        }
        for name in needed {
            let library = LIBRARY_DIRS
                .iter()
                .map(|dir| Path::new(dir).join(&name))
                .find(|candidate| candidate.exists())
                .ok_or_else(|| {
                    ImageError::Invalid(format!(
                        "{} needs {name}, which this host does not have",
                        if first { binary } else { &file }.display()
                    ))
                })?;
            if found.insert(library.clone()) {
                pending.push(library);
            }
        }
        first = false;
    }
    Ok(found.into_iter().collect())
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
        assert!(super::shared_libraries(text.path()).is_err());
    }
}
