//! Pseudo-terminals for one-off commands run with a terminal attached
//! (`berth run` from an interactive shell): the server keeps the master
//! end, the instance gets the other as its stdin, stdout, stderr and
//! controlling terminal, so line editing, job control, Ctrl-C and window
//! sizes work as in any terminal.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The server's end of a pseudo-terminal: what the instance writes comes
/// out of it, what is written to it is the instance's input.
#[derive(Debug)]
pub struct TerminalMaster {
    file: tokio::io::unix::AsyncFd<std::fs::File>,
}

/// A new pseudo-terminal of `cols`×`rows`: its master end (for the server)
/// and its other end (for the instance, see `InstanceSpec::terminal`).
/// Call it inside a tokio runtime.
pub fn open_terminal(cols: u16, rows: u16) -> io::Result<(TerminalMaster, OwnedFd)> {
    let mut master = -1;
    let mut other = -1;
    let size = window_size(cols, rows);
    // SAFETY: openpty writes two descriptors into the integers given and
    // reads the window size; no name buffer, no termios.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut other,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if opened != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both are fresh descriptors of ours.
    let (master, other) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(other)) };
    for fd in [&master, &other] {
        // SAFETY: fcntl on a descriptor we own.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = check(libc::fcntl(master.as_raw_fd(), libc::F_GETFL))?;
        check(libc::fcntl(
            master.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        ))?;
    }
    // SAFETY: the File owns the descriptor, which stays open and the same
    // for as long as the AsyncFd holds it.
    let file = unsafe { tokio::io::unix::AsyncFd::register(std::fs::File::from(master)) }
        .map_err(io::Error::from)?;
    Ok((TerminalMaster { file }, other))
}

impl TerminalMaster {
    /// Reads what the instance wrote; `Ok(0)` or an error (EIO) once
    /// every process holding the other end has closed it.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        loop {
            let mut ready = self.file.readable().await?;
            if let Ok(result) = ready.try_io(|file| file.get_ref().read(buffer)) {
                return result;
            }
        }
    }

    /// Writes all of `bytes` as the instance's input, waiting while the
    /// terminal's buffer is full.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        while !bytes.is_empty() {
            let mut ready = self.file.writable().await?;
            if let Ok(result) = ready.try_io(|file| file.get_ref().write(bytes)) {
                bytes = &bytes[result?..];
            }
        }
        Ok(())
    }

    /// Tells the terminal its window is now `cols`×`rows` (its foreground
    /// processes get SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let size = window_size(cols, rows);
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer given.
        check(unsafe { libc::ioctl(self.file.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size) })
            .map(|_| ())
    }
}

/// In the instance's process, between fork and exec: a session of its own
/// with the terminal on its stdin as its controlling terminal.
///
/// # Safety
/// Only between fork and exec: two system calls, no allocation.
pub(crate) unsafe fn take_terminal() -> io::Result<()> {
    // SAFETY: setsid and ioctl on this process and its own stdin.
    unsafe {
        check(libc::setsid())?;
        check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
    }
    Ok(())
}

fn window_size(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn check(result: i32) -> io::Result<i32> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}
