//! The tunnel's wire: TLS (ALPN `berth-tunnel/1`), one line from the home
//! server (`BERTH-TUNNEL/1 SECRET`), one line back (`OK NAME DOMAINS` or
//! `NO REASON`), then HTTP/2 in which the relay is the client: a `POST`
//! per public connection, `x-berth-port: 80|443`, whose request body is
//! the client's bytes (after a PROXY v2 header) and response body the
//! home server's.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TunnelError;

/// The ALPN protocol of the tunnel's TLS.
pub const ALPN: &[u8] = b"berth-tunnel/1";
/// What the home server's first line starts with.
const HELLO: &str = "BERTH-TUNNEL/1 ";
/// The header that says which public port a stream came in on.
pub const PORT_HEADER: &str = "x-berth-port";
/// How long a TLS handshake, the hello, or a client's first bytes may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle tunnel, so a dead peer is noticed.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the tunnel is given up.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Flow-control window of one stream.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Flow-control window of the whole tunnel: many streams' worth, so that
/// a few readers that stop reading cannot hold all of it.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// How long a write to a client or to the router may make no progress
/// before its stream is given up: data a reader does not take holds the
/// tunnel's shared window until the stream goes.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Tunnels one token may hold open at once at the relay (a home server
/// keeps up to four; dead ones count until their pings time out).
pub const MAX_TUNNELS_PER_TOKEN: usize = 32;

/// Writes `data` unless the reader stalls for [`STALL_TIMEOUT`]; whether
/// it was written.
pub async fn write_unless_stalled<W: AsyncWrite + Unpin>(writer: &mut W, data: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(STALL_TIMEOUT, writer.write_all(data)).await,
        Ok(Ok(()))
    )
}

/// Reads one line of at most 512 bytes, without reading past it.
pub async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, TunnelError> {
    let mut line = Vec::new();
    let read = async {
        loop {
            let byte = stream
                .read_u8()
                .await
                .map_err(|err| TunnelError::Protocol(format!("the peer closed: {err}")))?;
            if byte == b'\n' {
                return Ok(());
            }
            line.push(byte);
            if line.len() > 512 {
                return Err(TunnelError::Protocol("line too long".into()));
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| TunnelError::Protocol("no answer within 10s".into()))??;
    String::from_utf8(line).map_err(|_| TunnelError::Protocol("a line that is not UTF-8".into()))
}

/// Writes `text` and a newline.
pub async fn write_line<S: AsyncWrite + Unpin>(
    stream: &mut S,
    text: &str,
) -> Result<(), TunnelError> {
    stream
        .write_all(format!("{text}\n").as_bytes())
        .await
        .and(stream.flush().await)
        .map_err(|err| TunnelError::Protocol(format!("cannot write: {err}")))
}

/// The relay's side of the hello: the secret the home server sent.
pub async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, TunnelError> {
    let line = read_line(stream).await?;
    line.strip_prefix(HELLO)
        .map(|secret| secret.trim().to_string())
        .ok_or_else(|| TunnelError::Protocol("not a berth tunnel".into()))
}

/// The home server's side: its secret.
pub async fn write_hello<S: AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &str,
) -> Result<(), TunnelError> {
    write_line(stream, &format!("{HELLO}{secret}")).await
}

/// Sends what `reader` gives as the data of `body` until either ends,
/// without copying it again.
pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    body: &mut http_body_util::channel::Sender<Bytes>,
) {
    let mut buffer = BytesMut::with_capacity(32 * 1024);
    loop {
        buffer.reserve(32 * 1024);
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if body.send_data(buffer.split().freeze()).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_is_given_up_after_the_stall_timeout() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        // More than the pipe holds, and nobody reads.
        assert!(!write_unless_stalled(&mut writer, &[7u8; 4096]).await);
        assert!(started.elapsed() >= STALL_TIMEOUT);
        // One that reads takes it all.
        let (mut writer, mut reader_2) = tokio::io::duplex(1024);
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            reader_2.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        assert!(write_unless_stalled(&mut writer, &[7u8; 4096]).await);
        drop(writer);
        assert_eq!(reading.await.unwrap(), 4096);
        drop(reader);
    }
}
