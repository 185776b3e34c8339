//! The headers a request is forwarded with: hop-by-hop ones removed,
//! `X-Forwarded-*` and `Forwarded` set (or kept from a trusted proxy), and
//! the client address a trusted proxy names.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub(crate) fn prepare_request_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    version: Version,
    client_ip: &HeaderValue,
    proto: &'static str,
    upgrade: bool,
    trusted: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if version == Version::HTTP_2 && headers.get_all(header::COOKIE).iter().count() > 1 {
        // HTTP/2 may split cookies into several fields; HTTP/1 wants one (RFC 9113 §8.2.3).
        let joined: Vec<&str> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if let Ok(value) = HeaderValue::from_str(&joined.join("; ")) {
            headers.insert(header::COOKIE, value);
        }
    }
    if version == Version::HTTP_2
        && !headers.contains_key(header::HOST)
        && let Some(authority) = uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    let host = headers.get(header::HOST).cloned();
    let this_hop = forwarded(client_ip, proto, host.as_ref());
    if trusted {
        // A proxy berth trusts: what it says of the client stays, this hop
        // is added after it.
        append(headers, "x-forwarded-for", client_ip);
        append(headers, header::FORWARDED.as_str(), &this_hop);
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        }
        if let Some(host) = &host
            && !headers.contains_key("x-forwarded-host")
        {
            headers.insert("x-forwarded-host", host.clone());
        }
        return;
    }
    // The router is the edge: what a client claims about itself is replaced,
    // or, for the headers berth does not set, removed.
    for claimed in CLAIMS_NOT_SET {
        headers.remove(claimed);
    }
    headers.insert("x-forwarded-for", client_ip.clone());
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(host) = &host {
        headers.insert("x-forwarded-host", host.clone());
    }
    headers.insert(header::FORWARDED, this_hop);
}

/// `name: existing, value` (one field), or `name: value` when there is none.
fn append(headers: &mut HeaderMap, name: &'static str, value: &HeaderValue) {
    let joined: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|existing| existing.to_str().ok())
        .chain(value.to_str().ok())
        .collect();
    if let Ok(joined) = HeaderValue::from_str(&joined.join(", ")) {
        headers.insert(name, joined);
    }
}

/// Headers proxies use to say who the client is that berth does not set:
/// from a client (not a trusted proxy) they are removed, never passed on.
const CLAIMS_NOT_SET: [&str; 4] = [
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
];

/// The client a request from a trusted proxy is for. `X-Forwarded-For` is
/// read from the right, each proxy appending who it heard from: trusted
/// proxies are passed over, and the first entry that is not one is the
/// client. An entry that cannot be read there stops the walk at `peer`:
/// skipping it would take an address the client wrote itself. All
/// trusted: the leftmost.
pub(crate) fn forwarded_client(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[berth_proto::IpRange],
) -> std::net::IpAddr {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    for entry in entries.iter().rev() {
        match forwarded_address(entry) {
            Some(address) if trusted.iter().any(|range| range.contains(address)) => {}
            Some(address) => return address,
            None => return peer,
        }
    }
    entries
        .first()
        .and_then(|entry| forwarded_address(entry))
        .unwrap_or(peer)
}

/// An `X-Forwarded-For` entry's address: `203.0.113.9`, `203.0.113.9:4711`,
/// `2001:db8::1`, `[2001:db8::1]:4711`, quoted or not.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim_matches('"');
    if let Ok(address) = entry.parse() {
        return Some(address);
    }
    if let Some(v6) = entry.strip_prefix('[') {
        return v6.split_once(']')?.0.parse().ok();
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(std::net::IpAddr::V4)
}

/// RFC 7239's `Forwarded` for this hop (the client's own is dropped): an
/// IPv6 client and the host are quoted, as the grammar needs.
fn forwarded(client_ip: &HeaderValue, proto: &str, host: Option<&HeaderValue>) -> HeaderValue {
    let ip = client_ip.to_str().unwrap_or("unknown");
    let node = if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    };
    let mut value = format!("for={node};proto={proto}");
    if let Some(host) = host.and_then(|host| host.to_str().ok())
        && host
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
    {
        value.push_str(&format!(";host=\"{host}\""));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names; `keep_upgrade` keeps `Upgrade` for a WebSocket handshake.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_of(forwarded_for: &str) -> std::net::IpAddr {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(forwarded_for).unwrap(),
        );
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        forwarded_client("10.0.0.1".parse().unwrap(), &headers, &trusted)
    }

    #[test]
    fn the_client_is_the_first_untrusted_entry_from_the_right() {
        assert_eq!(
            client_of("203.0.113.9"),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        // What the client wrote itself is to the left of what the proxy saw.
        assert_eq!(
            client_of("6.6.6.6, 203.0.113.9, 10.0.0.7").to_string(),
            "203.0.113.9"
        );
        // Proxies that append a port, or brackets: still read, never skipped.
        assert_eq!(
            client_of("6.6.6.6, 203.0.113.9:4711").to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            client_of("6.6.6.6, [2001:db8::9]:4711").to_string(),
            "2001:db8::9"
        );
        assert_eq!(
            client_of("6.6.6.6, \"[2001:db8::9]\"").to_string(),
            "2001:db8::9"
        );
        // Unreadable where the client should be: the peer, not 6.6.6.6.
        assert_eq!(client_of("6.6.6.6, unknown").to_string(), "10.0.0.1");
        // All trusted: the leftmost.
        assert_eq!(client_of("10.1.1.1, 10.0.0.7").to_string(), "10.1.1.1");
    }

    #[test]
    fn what_a_client_claims_about_itself_is_not_passed_on() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-real-ip",
            "x-forwarded-port",
            "x-forwarded-ssl",
            "x-forwarded-for",
        ] {
            headers.insert(name, HeaderValue::from_static("6.6.6.6"));
        }
        let client = HeaderValue::from_static("203.0.113.9");
        let uri: Uri = "/".parse().unwrap();
        prepare_request_headers(
            &mut headers,
            &uri,
            Version::HTTP_11,
            &client,
            "http",
            false,
            false,
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9");
        for name in ["x-real-ip", "x-forwarded-port", "x-forwarded-ssl"] {
            assert!(!headers.contains_key(name), "{name}");
        }
    }
}
