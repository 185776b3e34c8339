//! A one-off command with a terminal in a container: the engine gives the
//! container a terminal of its own, and berth relays between it and the
//! terminal the server opened for the client, in raw mode, so keys,
//! Ctrl-C and the window size reach the command as with berth's own
//! runtime.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::AttachContainerResults;
use bollard::query_parameters::ResizeContainerTTYOptions;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::terminal::RelayEnd;

/// How often the client's window size is looked at.
const RESIZE_EVERY: Duration = Duration::from_millis(200);

/// Relays until the container's output ends (it exited): its output to
/// `end`, what is typed at `end` to its input, `end`'s window size to its
/// terminal. The first size is set before any input is passed on.
pub(super) async fn relay(
    docker: Docker,
    container: String,
    attached: AttachContainerResults,
    end: std::os::fd::OwnedFd,
) {
    let end = match RelayEnd::register(end) {
        Ok(end) => Arc::new(end),
        Err(err) => {
            tracing::warn!(error = %err, "cannot relay a container's terminal");
            return;
        }
    };
    let resize = move |(cols, rows): (u16, u16)| {
        let docker = docker.clone();
        let container = container.clone();
        async move {
            let options = ResizeContainerTTYOptions {
                h: i32::from(rows),
                w: i32::from(cols),
            };
            let _ = docker.resize_container_tty(&container, options).await;
        }
    };
    let mut size = end.size().ok();
    if let Some(size) = size {
        resize(size).await;
    }
    let typing = tokio::spawn({
        let end = end.clone();
        let mut input = attached.input;
        async move {
            let mut buffer = vec![0u8; 8 * 1024];
            while let Ok(count @ 1..) = end.read(&mut buffer).await {
                if input.write_all(&buffer[..count]).await.is_err() || input.flush().await.is_err()
                {
                    break;
                }
            }
        }
    });
    let resizing = tokio::spawn({
        let end = end.clone();
        async move {
            loop {
                tokio::time::sleep(RESIZE_EVERY).await;
                let now = end.size().ok();
                if now != size
                    && let Some(now) = now
                {
                    resize(now).await;
                    size = Some(now);
                }
            }
        }
    });
    let mut output = attached.output;
    while let Some(Ok(frame)) = output.next().await {
        if end.write_all(&frame.into_bytes()).await.is_err() {
            break;
        }
    }
    typing.abort();
    resizing.abort();
}
