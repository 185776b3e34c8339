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

/// The instance's end of a pseudo-terminal (see `InstanceSpec::terminal`),
/// and a way to find the session that runs on it.
#[derive(Debug)]
pub struct InstanceTerminal {
    /// Its stdin, stdout and stderr.
    pub(crate) other_end: OwnedFd,
    /// A copy of the master end, only to ask which session the terminal
    /// belongs to (TIOCGSID answers on the master end alone).
    master: OwnedFd,
}

/// The session a terminal's command leads: stopping the instance signals
/// it too, since it left the process group the server signals.
#[derive(Debug)]
pub(crate) struct TerminalSession {
    master: OwnedFd,
}

impl InstanceTerminal {
    /// A handle to signal the session that will run on this terminal.
    pub(crate) fn session(&self) -> io::Result<TerminalSession> {
        Ok(TerminalSession {
            master: self.master.try_clone()?,
        })
    }
}

impl TerminalSession {
    /// Sends `signal` to the process group of the terminal's session
    /// leader (the command), if a session runs on it and that group is
    /// not `signalled` (the group the caller signals itself).
    pub(crate) fn signal(&self, signal: i32, signalled: u32) {
        let mut session: libc::pid_t = 0;
        // SAFETY: TIOCGSID writes one pid_t into the integer given.
        let found = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCGSID, &mut session) };
        if found == 0 && session > 1 && session as u32 != signalled {
            // SAFETY: kill(2) on a process group; no memory is shared.
            unsafe {
                libc::kill(-session, signal);
            }
        }
    }
}

/// A new pseudo-terminal of `cols`×`rows`: its master end (for the server)
/// and the instance's end. Every descriptor is close-on-exec from the
/// start: no other instance forked meanwhile can inherit one. Call it
/// inside a tokio runtime.
pub fn open_terminal(cols: u16, rows: u16) -> io::Result<(TerminalMaster, InstanceTerminal)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let master = check(unsafe { libc::posix_openpt(flags) })?;
    // SAFETY: the descriptor was just opened and is ours alone.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: grantpt/unlockpt on the master we own; TIOCGPTPEER opens its
    // other end by descriptor, no path, and returns the new descriptor.
    let other_end = unsafe {
        check(libc::grantpt(master.as_raw_fd()))?;
        check(libc::unlockpt(master.as_raw_fd()))?;
        let other = check(libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags))?;
        OwnedFd::from_raw_fd(other)
    };
    let size = window_size(cols, rows);
    // SAFETY: TIOCSWINSZ reads one winsize; fcntl on a descriptor we own.
    unsafe {
        check(libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size))?;
        let status = check(libc::fcntl(master.as_raw_fd(), libc::F_GETFL))?;
        check(libc::fcntl(
            master.as_raw_fd(),
            libc::F_SETFL,
            status | libc::O_NONBLOCK,
        ))?;
    }
    let instance = InstanceTerminal {
        other_end,
        master: master.try_clone()?,
    };
    // SAFETY: the File owns the descriptor, which stays open and the same
    // for as long as the AsyncFd holds it.
    let file = unsafe { tokio::io::unix::AsyncFd::register(std::fs::File::from(master)) }
        .map_err(io::Error::from)?;
    Ok((TerminalMaster { file }, instance))
}

impl TerminalMaster {
    /// Reads what the instance wrote; `Ok(0)` or an error (EIO) once
    /// every process holding the other end has closed it.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        read_from(&self.file, buffer).await
    }

    /// Writes all of `bytes` as the instance's input, waiting while the
    /// terminal's buffer is full.
    pub async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        write_all_to(&self.file, bytes).await
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

async fn read_from(
    file: &tokio::io::unix::AsyncFd<std::fs::File>,
    buffer: &mut [u8],
) -> io::Result<usize> {
    use std::io::Read;
    loop {
        let mut ready = file.readable().await?;
        if let Ok(result) = ready.try_io(|file| file.get_ref().read(buffer)) {
            return result;
        }
    }
}

async fn write_all_to(
    file: &tokio::io::unix::AsyncFd<std::fs::File>,
    mut bytes: &[u8],
) -> io::Result<()> {
    use std::io::Write;
    while !bytes.is_empty() {
        let mut ready = file.writable().await?;
        if let Ok(result) = ready.try_io(|file| file.get_ref().write(bytes)) {
            bytes = &bytes[result?..];
        }
    }
    Ok(())
}

impl InstanceTerminal {
    /// Puts the terminal in raw mode, for a command whose own terminal is
    /// elsewhere (a container's): bytes then pass both ways unchanged and
    /// that terminal does the line editing, echo and Ctrl-C. Call it
    /// before anything is typed: what cooked mode already took in (an
    /// end of input, say) would reach the command changed.
    pub fn set_raw(&self) -> io::Result<()> {
        // SAFETY: tcgetattr fills the termios given; cfmakeraw edits it in
        // place; tcsetattr acts on a descriptor we own.
        unsafe {
            let mut modes: libc::termios = std::mem::zeroed();
            check(libc::tcgetattr(self.other_end.as_raw_fd(), &mut modes))?;
            libc::cfmakeraw(&mut modes);
            check(libc::tcsetattr(
                self.other_end.as_raw_fd(),
                libc::TCSANOW,
                &modes,
            ))?;
        }
        Ok(())
    }

    /// Its window now: `(cols, rows)`.
    pub(crate) fn size(&self) -> io::Result<(u16, u16)> {
        window_of(&self.other_end)
    }

    /// A copy of the instance's end for berth to relay to a terminal of
    /// the command's own (see [`InstanceTerminal::set_raw`]).
    pub(crate) fn relay_end(&self) -> io::Result<OwnedFd> {
        let end = self.other_end.try_clone()?;
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let status = check(libc::fcntl(end.as_raw_fd(), libc::F_GETFL))?;
            check(libc::fcntl(
                end.as_raw_fd(),
                libc::F_SETFL,
                status | libc::O_NONBLOCK,
            ))?;
        }
        Ok(end)
    }
}

/// The window size of the terminal `fd` is an end of: `(cols, rows)`.
fn window_of(fd: &impl AsRawFd) -> io::Result<(u16, u16)> {
    let mut size = window_size(1, 1);
    // SAFETY: TIOCGWINSZ writes one winsize into the value given.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) })?;
    Ok((size.ws_col, size.ws_row))
}

/// [`InstanceTerminal::relay_end`], read and written in a runtime.
#[derive(Debug)]
pub(crate) struct RelayEnd {
    file: tokio::io::unix::AsyncFd<std::fs::File>,
}

impl RelayEnd {
    /// Takes `end` into the current tokio runtime.
    pub(crate) fn register(end: OwnedFd) -> io::Result<RelayEnd> {
        // SAFETY: the File owns the descriptor, which stays open and the
        // same for as long as the AsyncFd holds it.
        let file = unsafe { tokio::io::unix::AsyncFd::register(std::fs::File::from(end)) }
            .map_err(io::Error::from)?;
        Ok(RelayEnd { file })
    }

    /// What was typed (the bytes the server wrote to its master end).
    pub(crate) async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        read_from(&self.file, buffer).await
    }

    /// Shows `bytes` on the terminal (the server reads them from its
    /// master end).
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        write_all_to(&self.file, bytes).await
    }

    /// The terminal's window now: `(cols, rows)`.
    pub(crate) fn size(&self) -> io::Result<(u16, u16)> {
        window_of(self.file.get_ref())
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
