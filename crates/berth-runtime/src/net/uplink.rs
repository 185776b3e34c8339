//! An instance namespace's link to the world outside, as a container has:
//! a veth pair whose host side is `bthN` with `10.233.A.B+1/30` and whose
//! inside is `eth0` with `10.233.A.B+2/30` and a default route through the
//! host side. Forwarding, NAT and the filter that keeps instances away from
//! the host and from each other are the server's (nftables rules on the
//! `bth*` interfaces and `10.233.0.0/16`).
//!
//! Slots are claimed host-wide without a lock: slot `N` is the one whose
//! host-side interface `bthN` this call managed to create (the kernel
//! refuses a name that exists), so several servers on one machine never
//! share an address. The pair goes away with the namespace.
//!
//! Everything is done with rtnetlink messages on sockets of the namespace
//! concerned, from the calling thread, which switches into the new
//! namespace and back.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// The network instance links are numbered in: `10.233.0.0/16`.
pub const NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 233, 0, 0), 16);
/// How host-side interfaces are named (`bth0`, `bth1`, ...).
pub const HOST_INTERFACE_PREFIX: &str = "bth";
/// How many /30 links fit in [`NETWORK`].
const SLOTS: u32 = 1 << (32 - 16 - 2);

/// One namespace's link: its host-side interface and the two addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// The host-side interface, `bthN`.
    pub host_interface: String,
    /// The host side's address (the namespace's gateway).
    pub gateway: Ipv4Addr,
    /// The address of `eth0` inside the namespace.
    pub address: Ipv4Addr,
}

impl Uplink {
    fn for_slot(slot: u32) -> Uplink {
        let base = u32::from(NETWORK.0) + slot * 4;
        Uplink {
            host_interface: format!("{HOST_INTERFACE_PREFIX}{slot}"),
            gateway: Ipv4Addr::from(base + 1),
            address: Ipv4Addr::from(base + 2),
        }
    }
}

/// Where the next search for a free slot starts (spread by process id so
/// two servers rarely try the same names).
fn next_slot() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(97)) % SLOTS,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS
}

/// Links the namespace `inside` (a handle on it) to the host, from the
/// calling thread, which must be in the host's namespace (`host` is a
/// handle on it) and is back there when this returns.
pub(crate) fn link(inside: RawFd, host: RawFd) -> io::Result<Uplink> {
    let mut netlink = Netlink::open()?;
    let start = next_slot();
    let mut chosen = None;
    for attempt in 0..SLOTS {
        let uplink = Uplink::for_slot((start + attempt) % SLOTS);
        match netlink.create_veth(&uplink.host_interface, "eth0", inside) {
            Ok(()) => {
                chosen = Some(uplink);
                break;
            }
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(err) => return Err(err),
        }
    }
    let uplink = chosen.ok_or_else(|| io::Error::other("every instance link slot is taken"))?;
    let host_index = interface_index(&uplink.host_interface)?;
    netlink.add_address(host_index, uplink.gateway, 30)?;
    netlink.set_up(host_index)?;
    // SAFETY: setns(2) with a namespace handle the caller holds.
    if unsafe { libc::setns(inside, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let configured = (|| {
        let mut netlink = Netlink::open()?;
        let index = interface_index("eth0")?;
        netlink.add_address(index, uplink.address, 30)?;
        netlink.set_up(index)?;
        netlink.add_default_route(uplink.gateway, index)
    })();
    super::switch::back_to_host(host);
    configured.map(|()| uplink)
}

fn interface_index(name: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(name).map_err(|_| io::Error::other("NUL in a name"))?;
    // SAFETY: if_nametoindex reads a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

// rtnetlink numbers (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
// linux/veth.h, linux/if_addr.h).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// A `struct ifinfomsg` for interface `index` (0: a new one).
fn interface_message(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut message = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    message.extend(index.to_ne_bytes());
    message.extend(flags.to_ne_bytes());
    message.extend(change.to_ne_bytes());
    message
}

/// Appends a route attribute, padded to four bytes.
fn attribute(message: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let length = 4 + data.len();
    message.extend((length as u16).to_ne_bytes());
    message.extend(kind.to_ne_bytes());
    message.extend(data);
    message.resize(message.len().next_multiple_of(4), 0);
}

/// Appends an attribute whose data `fill` writes (nested attributes).
fn nested(message: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = message.len();
    message.extend([0u8; 4]);
    fill(message);
    let length = (message.len() - start) as u16;
    message[start..start + 2].copy_from_slice(&length.to_ne_bytes());
    message[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
}

/// A rtnetlink socket of the calling thread's namespace.
struct Netlink {
    socket: OwnedFd,
    sequence: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) and bind(2) with a zeroed sockaddr_nl (the
        // kernel picks the port id); the descriptor is owned below.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let socket = OwnedFd::from_raw_fd(fd);
            let mut address: libc::sockaddr_nl = std::mem::zeroed();
            address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            if libc::bind(
                fd,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(Netlink {
                socket,
                sequence: 0,
            })
        }
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        self.sequence += 1;
        let length = 16 + payload.len();
        let mut message = Vec::with_capacity(length);
        message.extend((length as u32).to_ne_bytes());
        message.extend(kind.to_ne_bytes());
        message.extend((flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        message.extend(self.sequence.to_ne_bytes());
        message.extend(0u32.to_ne_bytes());
        message.extend(payload);
        // SAFETY: send(2) of a buffer we own to the kernel (the default
        // destination of an unconnected netlink socket).
        let sent = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = [0u8; 8192];
        loop {
            // SAFETY: recv(2) into a stack buffer of the given size.
            let received = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if received < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut rest = &buffer[..received as usize];
            while rest.len() >= 16 {
                let length = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let sequence = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if length < 16 || length > rest.len() {
                    break;
                }
                if kind == NLMSG_ERROR && sequence == self.sequence && length >= 20 {
                    let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                rest = &rest[length.next_multiple_of(4).min(rest.len())..];
            }
        }
    }

    /// A veth pair: `name` here, `peer` in the namespace `peer_namespace`.
    fn create_veth(&mut self, name: &str, peer: &str, peer_namespace: RawFd) -> io::Result<()> {
        let mut message = interface_message(0, 0, 0);
        attribute(&mut message, IFLA_IFNAME, format!("{name}\0").as_bytes());
        nested(&mut message, IFLA_LINKINFO, |info| {
            attribute(info, IFLA_INFO_KIND, b"veth");
            nested(info, IFLA_INFO_DATA, |data| {
                nested(data, VETH_INFO_PEER, |peer_info| {
                    peer_info.extend(interface_message(0, 0, 0));
                    attribute(peer_info, IFLA_IFNAME, format!("{peer}\0").as_bytes());
                    attribute(
                        peer_info,
                        IFLA_NET_NS_FD,
                        &(peer_namespace as u32).to_ne_bytes(),
                    );
                });
            });
        });
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &message)
    }

    fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut message = vec![libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE];
        message.extend(index.to_ne_bytes());
        attribute(&mut message, IFA_LOCAL, &address.octets());
        attribute(&mut message, IFA_ADDRESS, &address.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &message)
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.request(RTM_NEWLINK, 0, &interface_message(index, up, up))
    }

    fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut message = vec![
            libc::AF_INET as u8,
            0, // destination prefix length: the default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ];
        message.extend(0u32.to_ne_bytes());
        attribute(&mut message, RTA_GATEWAY, &gateway.octets());
        attribute(&mut message, RTA_OIF, &index.to_ne_bytes());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_thirty_twos_of_the_network() {
        let first = Uplink::for_slot(0);
        assert_eq!(first.host_interface, "bth0");
        assert_eq!(first.gateway, Ipv4Addr::new(10, 233, 0, 1));
        assert_eq!(first.address, Ipv4Addr::new(10, 233, 0, 2));
        let next = Uplink::for_slot(1);
        assert_eq!(next.gateway, Ipv4Addr::new(10, 233, 0, 5));
        let last = Uplink::for_slot(SLOTS - 1);
        assert_eq!(last.address, Ipv4Addr::new(10, 233, 255, 254));
    }

    #[test]
    fn nested_attributes_carry_their_whole_length() {
        let mut message = Vec::new();
        nested(&mut message, IFLA_LINKINFO, |info| {
            attribute(info, IFLA_INFO_KIND, b"veth");
        });
        // 4 (outer header) + 4 (inner header) + 4 ("veth").
        assert_eq!(u16::from_ne_bytes([message[0], message[1]]), 12);
        assert_eq!(message.len(), 12);
        let mut odd = Vec::new();
        attribute(&mut odd, IFLA_IFNAME, b"eth0\0");
        assert_eq!(odd.len(), 12, "padded to four bytes");
        assert_eq!(
            u16::from_ne_bytes([odd[0], odd[1]]),
            9,
            "length without padding"
        );
    }
}
