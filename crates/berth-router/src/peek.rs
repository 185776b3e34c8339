//! The name a new connection asks for, read from its first bytes without
//! answering it: the SNI of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066
//! §3), or the `Host` of an HTTP/1 request head.

/// What the first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Peeked {
    /// Not enough bytes yet.
    NeedMore,
    /// The name, lowercase, without a port or a trailing dot.
    Name(String),
    /// The bytes name nothing berth can route by.
    Unroutable,
}

/// How many bytes berth reads at most before deciding.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

fn name(raw: &[u8]) -> Peeked {
    match std::str::from_utf8(raw) {
        Ok(text) => {
            let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !text.is_empty()
                && text.len() <= 253
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if valid {
                Peeked::Name(text)
            } else {
                Peeked::Unroutable
            }
        }
        Err(_) => Peeked::Unroutable,
    }
}

/// A cursor over the ClientHello's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    fn number(&mut self, width: usize) -> Option<usize> {
        Some(
            self.take(width)?
                .iter()
                .fold(0usize, |value, byte| value << 8 | usize::from(*byte)),
        )
    }

    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let length = self.number(width)?;
        self.take(length)
    }
}

/// The SNI of the ClientHello `bytes` start with.
pub fn server_name(bytes: &[u8]) -> Peeked {
    if bytes.is_empty() {
        return Peeked::NeedMore;
    }
    if bytes[0] != 0x16 {
        return Peeked::Unroutable;
    }
    if bytes.len() < 5 {
        return Peeked::NeedMore;
    }
    let record = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if bytes.len() < 5 + record {
        return Peeked::NeedMore;
    }
    let hello = || -> Option<Peeked> {
        let mut reader = Reader {
            bytes: &bytes[5..5 + record],
        };
        if reader.number(1)? != 0x01 {
            return Some(Peeked::Unroutable);
        }
        let body = reader.vector(3)?;
        let mut reader = Reader { bytes: body };
        reader.take(2 + 32)?; // version, random
        reader.vector(1)?; // session id
        reader.vector(2)?; // cipher suites
        reader.vector(1)?; // compression methods
        let mut extensions = Reader {
            bytes: reader.vector(2)?,
        };
        while !extensions.bytes.is_empty() {
            let kind = extensions.number(2)?;
            let data = extensions.vector(2)?;
            if kind != 0 {
                continue;
            }
            let mut list = Reader { bytes: data };
            let mut names = Reader {
                bytes: list.vector(2)?,
            };
            while !names.bytes.is_empty() {
                let name_type = names.number(1)?;
                let host = names.vector(2)?;
                if name_type == 0 {
                    return Some(name(host));
                }
            }
        }
        Some(Peeked::Unroutable)
    };
    // A ClientHello cut short inside its own record is malformed: a
    // ClientHello split over records is too rare to route.
    hello().unwrap_or(Peeked::Unroutable)
}

/// The `Host` of the HTTP/1 request head `bytes` start with.
pub fn http_host(bytes: &[u8]) -> Peeked {
    let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        return if bytes.len() >= MAX_PEEK {
            Peeked::Unroutable
        } else {
            Peeked::NeedMore
        };
    };
    let head = &bytes[..end];
    for line in head.split(|byte| *byte == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"host") {
            continue;
        }
        let value = &line[colon + 1..];
        let value = std::str::from_utf8(value).unwrap_or_default().trim();
        // Without its port; an IPv6 literal is no name.
        if value.starts_with('[') {
            return Peeked::Unroutable;
        }
        let host = value.rsplit_once(':').map_or(value, |(host, _)| host);
        return name(host.as_bytes());
    }
    Peeked::Unroutable
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes one, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut connection = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut bytes = Vec::new();
        connection.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_sni_of_a_real_client_hello() {
        let hello = client_hello("Shop.Example.COM");
        assert_eq!(server_name(&hello), Peeked::Name("shop.example.com".into()));
        for cut in [0, 1, 4, 5, hello.len() - 1] {
            assert_eq!(server_name(&hello[..cut]), Peeked::NeedMore, "cut at {cut}");
        }
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Peeked::Unroutable);
        // A record that claims less than the handshake inside it.
        let mut short = hello.clone();
        short[3] = 0;
        short[4] = 10;
        assert_eq!(server_name(&short), Peeked::Unroutable);
    }

    #[test]
    fn the_host_of_a_request_head() {
        assert_eq!(
            http_host(b"GET / HTTP/1.1\r\nhost: App.Example.org:80\r\n\r\n"),
            Peeked::Name("app.example.org".into())
        );
        assert_eq!(
            http_host(b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: a.test\r\n\r\nbody"),
            Peeked::Name("a.test".into())
        );
        assert_eq!(http_host(b"GET / HTTP/1.1\r\nHost: a.te"), Peeked::NeedMore);
        assert_eq!(http_host(b"GET / HTTP/1.1\r\n\r\n"), Peeked::Unroutable);
        assert_eq!(
            http_host(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Peeked::Unroutable
        );
        assert_eq!(
            http_host(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Peeked::Unroutable
        );
        assert_eq!(http_host(&vec![b'a'; MAX_PEEK]), Peeked::Unroutable);
    }
}
