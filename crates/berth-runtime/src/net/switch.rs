//! Returning the calling thread to the host's network namespace, which
//! every switch into an instance's namespace must do before it returns.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Moves the calling thread back into the host's namespace (`host` is a
/// handle on it); aborts the process if it cannot, since a thread left in
/// an instance's namespace would open the server's sockets there.
pub(crate) fn back_to_host(host: RawFd) {
    // SAFETY: setns(2) with a valid namespace descriptor.
    if unsafe { libc::setns(host, libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "berth: cannot return to the host network namespace: {}",
            io::Error::last_os_error()
        );
        std::process::abort();
    }
}
