//! IPv4 address ranges (`10.0.0.0/8`), as a spec's `[egress] allow` names
//! them and as the egress rules match them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 range: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The network address (no host bits set).
    pub network: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

/// Ranges an instance may not reach unless its app allows them: private
/// networks (RFC 1918, shared address space), link-local (where cloud
/// metadata services answer, 169.254.169.254), "this network", the IETF's
/// protocol assignments, benchmarking, multicast and reserved space.
pub const PRIVATE_RANGES: [Ipv4Cidr; 10] = [
    Ipv4Cidr::new_unchecked([0, 0, 0, 0], 8),
    Ipv4Cidr::new_unchecked([10, 0, 0, 0], 8),
    Ipv4Cidr::new_unchecked([100, 64, 0, 0], 10),
    Ipv4Cidr::new_unchecked([169, 254, 0, 0], 16),
    Ipv4Cidr::new_unchecked([172, 16, 0, 0], 12),
    Ipv4Cidr::new_unchecked([192, 0, 0, 0], 24),
    Ipv4Cidr::new_unchecked([192, 168, 0, 0], 16),
    Ipv4Cidr::new_unchecked([198, 18, 0, 0], 15),
    Ipv4Cidr::new_unchecked([224, 0, 0, 0], 4),
    Ipv4Cidr::new_unchecked([240, 0, 0, 0], 4),
];

impl Ipv4Cidr {
    const fn new_unchecked(octets: [u8; 4], prefix: u8) -> Ipv4Cidr {
        Ipv4Cidr {
            network: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
            prefix,
        }
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = Ipv4Cidr::mask(self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// Whether `ip` is in one of [`PRIVATE_RANGES`].
    pub fn is_private(ip: Ipv4Addr) -> bool {
        PRIVATE_RANGES.iter().any(|range| range.contains(ip))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    /// `10.0.0.0/8`, or one address (`10.1.2.3`, as `/32`).
    fn from_str(text: &str) -> Result<Ipv4Cidr, String> {
        let wrong = || format!("`{text}` is not an IPv4 range such as \"10.0.0.0/8\"");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, prefix.parse::<u8>().map_err(|_| wrong())?),
            None => (text, 32),
        };
        let network: Ipv4Addr = address.parse().map_err(|_| wrong())?;
        if prefix > 32 {
            return Err(format!("`{text}`: a prefix is at most /32"));
        }
        let masked = Ipv4Addr::from(u32::from(network) & Ipv4Cidr::mask(prefix));
        if masked != network {
            return Err(format!(
                "`{text}` has bits set past its /{prefix} prefix; did you mean \"{masked}/{prefix}\"?"
            ));
        }
        Ok(Ipv4Cidr { network, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_match_and_refuse_what_is_not_one() {
        let lan: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains("10.200.3.4".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        let one: Ipv4Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(
            "10.1.0.0/8".parse::<Ipv4Cidr>().unwrap_err(),
            "`10.1.0.0/8` has bits set past its /8 prefix; did you mean \"10.0.0.0/8\"?"
        );
        for wrong in ["10.0.0/8", "fd00::/8", "10.0.0.0/33", "lan", "10.0.0.0/x"] {
            assert!(wrong.parse::<Ipv4Cidr>().is_err(), "{wrong}");
        }
        for private in [
            "169.254.169.254",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
        ] {
            assert!(Ipv4Cidr::is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "172.32.0.1", "198.51.100.2", "8.8.8.8"] {
            assert!(!Ipv4Cidr::is_private(public.parse().unwrap()), "{public}");
        }
    }
}
