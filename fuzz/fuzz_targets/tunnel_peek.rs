//! What the relay reads from a stranger before routing: the SNI of a TLS
//! ClientHello, the Host of an HTTP head, a PROXY v2 header. Any bytes get
//! an answer, never a panic; a name is always one the relay can look up.
#![no_main]

use berth_router::peek::{Peeked, http_host, server_name};
use berth_router::proxy_v2::{Decoded, decode};

fn check(peeked: Peeked) {
    if let Peeked::Name(name) = peeked {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        );
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(server_name(data));
    check(http_host(data));
    if let Decoded::Header { length, .. } = decode(data) {
        assert!(length >= 16 && length <= data.len());
    }
});
