//! A seccomp filter for sandboxed processes: the system calls a web app
//! never needs, which are most of the kernel's attack surface from inside a
//! sandbox, fail with `EPERM`. Everything else is allowed.
//!
//! Denied: new namespaces (`unshare`, `setns`, `clone` with a namespace
//! flag — user namespaces above all), mounting (old and new API), kernel
//! modules, `kexec`, `reboot`, swap, the clock, accounting, quotas, `bpf`,
//! `perf_event_open`, `userfaultfd`, the kernel keyring, `io_uring`,
//! `ptrace` and `process_vm_*`, `open_by_handle_at`, and raw port I/O.
//! `clone3` answers `ENOSYS`, as under Docker's profile: its flags sit in
//! memory a filter cannot read, and C libraries then fall back to `clone`.
//! Another architecture's calls (x32 on x86-64) are refused too.
//!
//! The program is built once, before any fork (a pre-exec hook must not
//! allocate), and installed last, after the process became the app's user
//! with `no_new_privs`.

use std::io;
use std::sync::OnceLock;

use libc::sock_filter;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// `clone` flags that make a namespace.
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// The calls refused with EPERM.
const DENIED: &[libc::c_long] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
];

fn statement(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The BPF program: check the architecture, then the call.
fn build() -> Vec<sock_filter> {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W,
        SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
    };
    const ARCH_OFFSET: u32 = 4;
    const NR_OFFSET: u32 = 0;
    // args[0], its low 32 bits (little-endian).
    const ARG0_OFFSET: u32 = 16;
    let allow = statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    let errno = |code: i32| statement(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | code as u32);
    let mut program = vec![
        statement(BPF_LD | BPF_W | BPF_ABS, ARCH_OFFSET),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        errno(libc::ENOSYS),
        statement(BPF_LD | BPF_W | BPF_ABS, NR_OFFSET),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 calls carry bit 30 on the same architecture number.
        program.push(jump(BPF_JMP | BPF_JGE | BPF_K, 0x4000_0000, 0, 1));
        program.push(errno(libc::ENOSYS));
    }
    program.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone3 as u32,
        0,
        1,
    ));
    program.push(errno(libc::ENOSYS));
    // clone: refused when its flags make a namespace.
    program.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone as u32,
        0,
        4,
    ));
    program.push(statement(BPF_LD | BPF_W | BPF_ABS, ARG0_OFFSET));
    program.push(jump(BPF_JMP | BPF_JSET | BPF_K, NAMESPACE_FLAGS, 0, 1));
    program.push(errno(libc::EPERM));
    program.push(allow);
    // Each denied call jumps to the EPERM at the end; the rest fall
    // through to ALLOW just before it.
    let count = DENIED.len();
    for (index, call) in DENIED.iter().enumerate() {
        let to_deny = (count - index) as u8;
        program.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *call as u32, to_deny, 0));
    }
    program.push(allow);
    program.push(errno(libc::EPERM));
    program
}

static PROGRAM: OnceLock<Vec<sock_filter>> = OnceLock::new();

/// Builds the program now, in a process that may allocate, so that
/// [`install`] in a forked child does not.
pub(crate) fn prepare() {
    PROGRAM.get_or_init(build);
}

/// Installs the filter on the calling process (a child, before exec, with
/// `no_new_privs` set). Fails if [`prepare`] was not called before the fork.
pub(crate) fn install() -> io::Result<()> {
    let Some(program) = PROGRAM.get() else {
        return Err(io::Error::other("the seccomp filter was not prepared"));
    };
    let filter = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl(PR_SET_SECCOMP) reads the program, which lives in a
    // static for the life of the process; async-signal-safe.
    let result = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &filter as *const libc::sock_fprog,
        )
    };
    super::sys::check(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let program = build();
        assert!(program.len() < 256, "jumps are one byte");
        let is_jump = |code: u16| u32::from(code) & 0x07 == libc::BPF_JMP;
        for (index, instruction) in program.iter().enumerate() {
            if !is_jump(instruction.code) {
                continue;
            }
            let furthest = index + 1 + usize::from(instruction.jt.max(instruction.jf));
            assert!(furthest < program.len(), "instruction {index} jumps out");
        }
        // The last two: allow what is not denied, deny with EPERM.
        let last = program[program.len() - 1];
        assert_eq!(last.k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(program[program.len() - 2].k, libc::SECCOMP_RET_ALLOW);
    }
}
