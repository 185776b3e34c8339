//! An entry point for fuzzing the router's request handling (feature
//! `fuzzing`): raw bytes from a client, answered as the router answers a
//! TCP connection, over an in-memory stream.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::listen::{http_builder, serve_connection};
use crate::route::RouteTable;
use crate::router_state::RouterState;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for fuzzing");
}

/// Sends `bytes` as one client connection (then closes its sending half)
/// to a router with no apps, and returns what the router answered.
/// Panics only if the router does.
pub fn answer(bytes: &[u8]) -> Vec<u8> {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let (_keep, table) = tokio::sync::watch::channel(Arc::new(RouteTable::default()));
            let state = RouterState::new(table, "example.test".into());
            let (client, server) = tokio::io::duplex(64 * 1024);
            // The client closes its sending half after the request: the
            // router answers before it closes the connection.
            let mut builder = http_builder();
            builder.http1().half_close(true);
            let served = tokio::spawn(serve_connection(
                state,
                Arc::new(builder),
                server,
                ([127, 0, 0, 1], 40000).into(),
                false,
            ));
            let (mut reading, mut writing) = tokio::io::split(client);
            let _ = writing.write_all(bytes).await;
            let _ = writing.shutdown().await;
            let mut answer = Vec::new();
            // The client has closed its half: the router answers what it
            // got and closes too. A hang is a finding (libFuzzer's -timeout).
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                reading.read_to_end(&mut answer),
            )
            .await;
            served.abort();
            answer
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_for_an_unknown_app_is_answered_and_garbage_is_refused() {
        let unknown = super::answer(b"GET / HTTP/1.1\r\nHost: nope.example.test\r\n\r\n");
        let text = String::from_utf8_lossy(&unknown);
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        let two_hosts = super::answer(
            b"GET / HTTP/1.1\r\nHost: a.example.test\r\nHost: b.example.test\r\n\r\n",
        );
        assert!(String::from_utf8_lossy(&two_hosts).starts_with("HTTP/1.1 400"));
        let garbage = super::answer(b"\x00\xffGET");
        assert!(
            String::from_utf8_lossy(&garbage).starts_with("HTTP/1.1 400"),
            "{garbage:?}"
        );
    }
}
