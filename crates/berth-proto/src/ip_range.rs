//! IPv4 and IPv6 client ranges (`203.0.113.0/24`, `2001:db8::/32`, or one
//! address), as an app's `[edge] allow` and `deny` name them and as the
//! router matches clients against them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A range of IPv4 or IPv6 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    /// The network address (no host bits set).
    pub network: IpAddr,
    /// The prefix length: up to 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(width: u8, prefix: u8) -> u128 {
    let all = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    // Shifting a u128 by 128 (a single IPv6 address) would overflow.
    match all.checked_shr(u32::from(prefix)) {
        Some(below) => all & !below,
        None => all,
    }
}

impl IpRange {
    /// Whether `ip` is in the range; an IPv4 client seen as `::ffff:a.b.c.d`
    /// counts as `a.b.c.d`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (network, width) = bits(self.network);
        let (address, address_width) = bits(ip);
        width == address_width && address & mask(width, self.prefix) == network
    }
}

impl FromStr for IpRange {
    type Err = String;

    /// `203.0.113.0/24`, `2001:db8::/32`, or one address.
    fn from_str(text: &str) -> Result<IpRange, String> {
        let wrong = || {
            format!(
                "`{text}` is not an IP address or range such as \"203.0.113.0/24\" or \"2001:db8::/32\""
            )
        };
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().map_err(|_| wrong())?)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| wrong())?;
        let (value, width) = bits(network);
        let prefix = prefix.unwrap_or(width);
        if prefix > width {
            return Err(format!("`{text}`: a prefix is at most /{width}"));
        }
        let masked = value & mask(width, prefix);
        if masked != value {
            let shown = match network {
                IpAddr::V4(_) => IpAddr::from((masked as u32).to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
            };
            return Err(format!(
                "`{text}` has bits set past its /{prefix} prefix; did you mean \"{shown}/{prefix}\"?"
            ));
        }
        Ok(IpRange { network, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_ranges_match_their_clients() {
        let office: IpRange = "203.0.113.0/24".parse().unwrap();
        assert!(office.contains("203.0.113.9".parse().unwrap()));
        assert!(office.contains("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!office.contains("203.0.114.1".parse().unwrap()));
        let v6: IpRange = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("203.0.113.9".parse().unwrap()));
        // One IPv6 address (a /128), and all of them.
        let host: IpRange = "2001:db8::66".parse().unwrap();
        assert_eq!(host.to_string(), "2001:db8::66/128");
        assert!(host.contains("2001:db8::66".parse().unwrap()));
        assert!(!host.contains("2001:db8::67".parse().unwrap()));
        let every: IpRange = "::/0".parse().unwrap();
        assert!(every.contains("2001:db8::67".parse().unwrap()));
        let one: IpRange = "127.0.0.2".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.2/32");
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.3".parse().unwrap()));
        let everyone: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(everyone.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn what_is_not_a_range_says_why() {
        assert_eq!(
            "10.1.0.0/8".parse::<IpRange>().unwrap_err(),
            "`10.1.0.0/8` has bits set past its /8 prefix; did you mean \"10.0.0.0/8\"?"
        );
        assert!(
            "2001:db8::1/32"
                .parse::<IpRange>()
                .unwrap_err()
                .contains("2001:db8::/32")
        );
        assert!(
            "10.0.0.0/33"
                .parse::<IpRange>()
                .unwrap_err()
                .contains("at most /32")
        );
        for wrong in ["10.0.0/8", "office", "10.0.0.0/x", ""] {
            assert!(wrong.parse::<IpRange>().is_err(), "{wrong}");
        }
    }
}
