//! The image of a container that holds a network namespace and does
//! nothing else: an instance's container joins its network
//! (`--network container:ID`), so berth can link and bridge that network
//! before the app's first instruction runs.
//!
//! Its one file is a static x86-64 ELF program of 129 bytes, written here
//! by hand rather than taken from a registry: it calls `pause(2)` forever.
//! A signal ends it only if it is SIGKILL (it is PID 1 of its namespace and
//! handles nothing), which is how the driver removes it.

/// The tag the image is imported as in the engine.
pub(super) const PAUSE_IMAGE: &str = "berth-pause:1";

/// Where the program is in the image.
pub(super) const PAUSE_PATH: &str = "/pause";

/// Where an x86-64 program is loaded and where its code starts (just past
/// the two headers).
const LOAD_AT: u64 = 0x40_0000;
const CODE_AT: u64 = 64 + 56;

/// `mov eax, 34` (pause); `syscall`; `jmp` back to the `mov`.
const CODE: [u8; 9] = [0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];

/// The program: an ELF header, one loadable segment (the whole file,
/// readable and executable), the code.
pub(super) fn program() -> Vec<u8> {
    let size = CODE_AT + CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(LOAD_AT + CODE_AT).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    // The program header: PT_LOAD, PF_R | PF_X, the file from offset 0.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_AT.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_AT.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&CODE);
    elf
}

/// The image's file system as a tar stream, as the engine's import takes
/// it.
pub(super) fn image_tar() -> std::io::Result<Vec<u8>> {
    let program = program();
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(program.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(
        &mut header,
        PAUSE_PATH.trim_start_matches('/'),
        &program[..],
    )?;
    archive.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_program_runs_until_killed() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, program()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Still there: it waits, it does not exit or crash.
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn the_image_holds_the_program_executable() {
        let tar = image_tar().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("pause"));
        assert_eq!(entry.header().mode().unwrap(), 0o755);
        assert_eq!(entry.header().size().unwrap(), 129);
    }
}
