//! Network namespaces of instances: each has its own loopback, so apps that
//! listen on a fixed port (Fly's `internal_port`) run side by side.
//!
//! The host side never leaves a thread in another namespace: a call that
//! needs one ([`NetNs::within`]) switches the calling thread in, does its
//! work (makes a socket: a socket belongs to the namespace it was created
//! in, whichever thread later binds or connects it), and switches it back
//! before returning, even on a panic. With such sockets the router and the
//! health checks connect to `127.0.0.1:PORT` inside the instance's
//! namespace, and the server listens inside it on the loopback ports of its
//! own services (PostgreSQL, Redis, the API), bridging them to the host:
//! the only addresses involved are loopback ones (and, with a link, see
//! [`super::uplink`], the link's own). The instance joins the namespace
//! between fork and exec (`setns`).
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

/// A network namespace, alive while this handle (or a process in it) is.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    /// Its link to the world outside, when it has one.
    uplink: Option<super::uplink::Uplink>,
}

impl PartialEq for NetNs {
    fn eq(&self, other: &Self) -> bool {
        self.fd.as_raw_fd() == other.fd.as_raw_fd()
    }
}

/// The host's namespace: the process's own (its main thread never
/// switches), opened once.
fn host_netns() -> io::Result<RawFd> {
    static HOST: OnceLock<Result<OwnedFd, String>> = OnceLock::new();
    HOST.get_or_init(|| open_netns(c"/proc/self/ns/net").map_err(|err| err.to_string()))
        .as_ref()
        .map(|fd| fd.as_raw_fd())
        .map_err(|err| io::Error::other(err.clone()))
}

/// Switches the calling thread back to the host's namespace when dropped.
struct BackToHost(RawFd);

impl Drop for BackToHost {
    fn drop(&mut self) {
        super::switch::back_to_host(self.0);
    }
}

fn check(result: i32) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_own_netns() -> io::Result<OwnedFd> {
    open_netns(c"/proc/thread-self/ns/net")
}

fn open_netns(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: open(2) of a valid C string; the descriptor is owned below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the loopback interface up in the calling thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket for the ioctls, closed by OwnedFd; the
    // ifreq is a plain C struct, zeroed, with a NUL-terminated name.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(socket);
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        check(libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut request,
        ))?;
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            &request,
        ))?;
    }
    Ok(())
}

/// The lowest port a process without privileges may bind, per namespace.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

impl NetNs {
    /// A new namespace with its loopback up and nothing else; every port
    /// may be bound in it by any user.
    pub fn create() -> io::Result<Arc<NetNs>> {
        let host = host_netns()?;
        let back = BackToHost(host);
        // SAFETY: unshare(2) of the calling thread's own network namespace;
        // `back` returns it to the host's.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        // Any port may be bound inside: the namespace is the instance's
        // alone (an image's server on port 80 runs as the app's user).
        // A kernel without the setting (before 4.11) keeps 1024.
        let _ = std::fs::write(UNPRIVILEGED_PORT_START, "0");
        let made = loopback_up().and_then(|()| open_own_netns());
        drop(back);
        Ok(Arc::new(NetNs {
            fd: made?,
            uplink: None,
        }))
    }

    /// A new namespace with its loopback up and a veth link to the host
    /// (see [`super::uplink`]). Runs on the calling thread, which it moves
    /// into the new namespace and back: call it where blocking for a few
    /// milliseconds is fine (not on an async runtime's worker).
    pub fn create_linked() -> io::Result<Arc<NetNs>> {
        let plain = NetNs::create()?;
        let fd = Arc::try_unwrap(plain)
            .map_err(|_| io::Error::other("a new namespace is shared"))?
            .fd;
        let uplink = super::uplink::link(fd.as_raw_fd(), host_netns()?)?;
        Ok(Arc::new(NetNs {
            fd,
            uplink: Some(uplink),
        }))
    }

    /// Takes over a namespace another program made (a container engine's,
    /// opened at `/proc/PID/ns/net`), with a veth link to the host when
    /// `linked`. Its loopback must be up. Runs on the calling thread, as
    /// [`NetNs::create_linked`] does.
    pub fn adopt(fd: OwnedFd, linked: bool) -> io::Result<Arc<NetNs>> {
        let uplink = if linked {
            Some(super::uplink::link(fd.as_raw_fd(), host_netns()?)?)
        } else {
            None
        };
        Ok(Arc::new(NetNs { fd, uplink }))
    }

    /// Opens the network namespace process `pid` is in.
    pub fn open_of_process(pid: u32) -> io::Result<OwnedFd> {
        let path = std::ffi::CString::new(format!("/proc/{pid}/ns/net"))
            .map_err(|_| io::Error::other("NUL in a path"))?;
        open_netns(&path)
    }

    /// A path to the namespace that another program run by this one may
    /// open to join it (`/proc/PID/fd/FD`; `--network ns:PATH` of buildah
    /// and podman), valid while this handle lives.
    pub fn path(&self) -> std::path::PathBuf {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd()).into()
    }

    /// Its link to the world outside, if it was made with one.
    pub fn uplink(&self) -> Option<&super::uplink::Uplink> {
        self.uplink.as_ref()
    }

    /// The descriptor a child joins with `setns` before exec.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `job` on the calling thread inside this namespace, and switches
    /// the thread back to the host's before returning (or unwinding). The
    /// job must not block for long or yield to an async runtime: it holds
    /// the thread in the namespace.
    pub fn within<T>(&self, job: impl FnOnce() -> T) -> io::Result<T> {
        let host = host_netns()?;
        // SAFETY: setns(2) into a namespace we hold a handle on; `back`
        // returns the thread to the host's.
        check(unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
        let back = BackToHost(host);
        let result = job();
        drop(back);
        Ok(result)
    }

    /// A TCP socket that belongs to this namespace (not yet bound or connected).
    pub fn tcp_socket(&self, ipv6: bool) -> io::Result<OwnedFd> {
        self.within(|| {
            let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
            // SAFETY: socket(2); the descriptor is owned below.
            let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?
    }

    /// Connects to `addr` as seen inside this namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let socket = std::net::TcpStream::from(self.tcp_socket(addr.is_ipv6())?);
        socket.set_nonblocking(true)?;
        tokio::net::TcpSocket::from_std_stream(socket)
            .connect(addr)
            .await
    }

    /// A UDP socket bound to `addr` inside this namespace.
    pub fn bind_udp(&self, addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
        let socket = self.within(|| std::net::UdpSocket::bind(addr))??;
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket)
    }

    /// Listens on `addr` inside this namespace.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let socket = std::net::TcpStream::from(self.tcp_socket(addr.is_ipv6())?);
        socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket);
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(128)
    }
}

/// The addresses of this host's own interfaces (in the caller's namespace).
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while !entry.is_null() {
            let address = (*entry).ifa_addr;
            if !address.is_null() {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        found.push(std::net::IpAddr::from(
                            u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        found.push(std::net::IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Joins the namespace `fd` (in the child, before exec).
pub(crate) fn enter(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) with an inherited descriptor; async-signal-safe.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[ignore = "needs root"]
    async fn a_namespace_has_its_own_loopback() {
        assert!(crate::isolation::is_root(), "needs root");
        let first = NetNs::create().unwrap();
        let second = NetNs::create().unwrap();
        // The same port in two namespaces and on the host: no conflict.
        let addr: SocketAddr = "127.0.0.1:47113".parse().unwrap();
        let one = first.listen(addr).unwrap();
        let two = second.listen(addr).unwrap();
        let host = tokio::net::TcpListener::bind(addr).await.unwrap();
        let mut client = first.connect(addr).await.unwrap();
        let (mut accepted, _) = one.accept().await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client.write_all(b"ping").await.unwrap();
        let mut buffer = [0u8; 4];
        accepted.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"ping");
        // Nothing from the second namespace or the host reached the first.
        drop((two, host));
        let empty = NetNs::create().unwrap();
        assert!(empty.connect(addr).await.is_err(), "nothing listens there");
        // Inside, any port may be bound by anyone; the host keeps its own.
        let inside = first
            .within(|| std::fs::read_to_string(UNPRIVILEGED_PORT_START))
            .unwrap()
            .unwrap();
        assert_eq!(inside.trim(), "0");
        let host_setting = std::fs::read_to_string(UNPRIVILEGED_PORT_START).unwrap();
        assert_ne!(host_setting.trim(), "0", "the host's setting is untouched");
    }

    #[test]
    #[ignore = "needs root"]
    fn a_linked_namespace_is_reached_from_the_host_through_its_own_link() {
        assert!(crate::isolation::is_root(), "needs root");
        let linked = NetNs::create_linked().unwrap();
        let uplink = linked.uplink().unwrap().clone();
        assert!(uplink.host_interface.starts_with("bth"));
        // A listener on the inside address, reached from the host through
        // the link (the server's filter, if installed, lets the host in).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let inside = linked
                .listen(SocketAddr::from((uplink.address, 0)))
                .unwrap();
            let port = inside.local_addr().unwrap().port();
            let client = std::net::TcpStream::connect((uplink.address, port)).unwrap();
            let (_, from) = inside.accept().await.unwrap();
            assert_eq!(from.ip(), std::net::IpAddr::V4(uplink.gateway));
            drop(client);
        });
        // Two linked namespaces get different links.
        let started = std::time::Instant::now();
        let other = NetNs::create_linked().unwrap();
        eprintln!("a linked namespace took {:?}", started.elapsed());
        assert_ne!(other.uplink().unwrap(), &uplink);
        // The pair goes with the namespace.
        let name = uplink.host_interface.clone();
        drop(linked);
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !std::path::Path::new(&format!("/sys/class/net/{name}")).exists()
        });
        assert!(gone, "{name} outlived its namespace");
    }
}
