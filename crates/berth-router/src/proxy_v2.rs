//! The PROXY protocol, version 2 (haproxy's proxy-protocol.txt §2.2): the
//! binary header the relay puts in front of every tunnelled connection so
//! the home server knows the client's address.

use std::net::{IpAddr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a connection from `client` to `server` (TCP over IPv4
/// or IPv6; a mixed pair is given as IPv6, IPv4-mapped).
pub fn encode(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut header = SIGNATURE.to_vec();
    header.push(0x21); // version 2, PROXY
    match (client.ip(), server.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            header.push(0x11); // TCP over IPv4
            header.extend_from_slice(&12u16.to_be_bytes());
            header.extend_from_slice(&source.octets());
            header.extend_from_slice(&destination.octets());
        }
        (source, destination) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            header.push(0x21); // TCP over IPv6
            header.extend_from_slice(&36u16.to_be_bytes());
            header.extend_from_slice(&v6(source).octets());
            header.extend_from_slice(&v6(destination).octets());
        }
    }
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&server.port().to_be_bytes());
    header
}

/// What the start of a stream holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole header yet: read more.
    Incomplete,
    /// A header of `length` bytes naming `client` (`None` for LOCAL or
    /// an address family other than TCP).
    Header {
        /// The header's length, to skip.
        length: usize,
        /// The client's address.
        client: Option<SocketAddr>,
    },
    /// Not a version 2 header.
    Invalid,
}

/// Reads a header from the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    let known = bytes.len().min(SIGNATURE.len());
    if bytes[..known] != SIGNATURE[..known] {
        return Decoded::Invalid;
    }
    if bytes.len() < 16 {
        return Decoded::Incomplete;
    }
    let version_command = bytes[12];
    if version_command >> 4 != 2 || version_command & 0x0f > 1 {
        return Decoded::Invalid;
    }
    let family = bytes[13];
    let body = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let length = 16 + body;
    if bytes.len() < length {
        return Decoded::Incomplete;
    }
    let addresses = &bytes[16..length];
    let local = version_command & 0x0f == 0;
    let client = match family {
        _ if local => None,
        0x11 if addresses.len() >= 12 => {
            let ip: [u8; 4] = addresses[0..4].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Some(SocketAddr::from((ip, port)))
        }
        0x21 if addresses.len() >= 36 => {
            let ip: [u8; 16] = addresses[0..16].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            let ip = std::net::Ipv6Addr::from(ip);
            let ip = ip
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(ip));
            Some(SocketAddr::new(ip, port))
        }
        0x11 | 0x21 => return Decoded::Invalid,
        _ => None,
    };
    Decoded::Header { length, client }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_for_both_families() {
        let client: SocketAddr = "203.0.113.9:51234".parse().unwrap();
        let server: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let header = encode(client, server);
        assert_eq!(header.len(), 28);
        assert_eq!(
            decode(&header),
            Decoded::Header {
                length: 28,
                client: Some(client)
            }
        );
        let client6: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let header = encode(client6, server);
        assert_eq!(header.len(), 52);
        assert_eq!(
            decode(&header),
            Decoded::Header {
                length: 52,
                client: Some(client6)
            }
        );
    }

    #[test]
    fn partial_foreign_and_local_headers() {
        let header = encode("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        for cut in 0..header.len() {
            assert_eq!(decode(&header[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Decoded::Invalid);
        assert_eq!(decode(b"PROXY TCP4 1.2.3.4"), Decoded::Invalid);
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            decode(&local),
            Decoded::Header {
                length: 16,
                client: None
            }
        );
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert_eq!(decode(&short), Decoded::Invalid);
        let mut version1 = SIGNATURE.to_vec();
        version1.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert_eq!(decode(&version1), Decoded::Invalid);
    }
}
