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
    // The router is the edge: what a client claims about itself is replaced.
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

/// The client a request from a trusted proxy is for: the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy; `peer` when the
/// header is missing or unreadable.
pub(crate) fn forwarded_client(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[berth_proto::IpRange],
) -> std::net::IpAddr {
    let listed: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    listed
        .iter()
        .rev()
        .find(|address| !trusted.iter().any(|range| range.contains(**address)))
        .or(listed.first())
        .copied()
        .unwrap_or(peer)
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
