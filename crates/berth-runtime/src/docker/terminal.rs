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

/// A kill with the engine's default signal (SIGKILL).
const NO_OPTIONS: Option<bollard::query_parameters::KillContainerOptions> = None;

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
            tracing::warn!(error = %err, "cannot relay a container's terminal; stopping it");
            let _ = docker.kill_container(&container, NO_OPTIONS).await;
            return;
        }
    };
    let stopper = (docker.clone(), container.clone());
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
    let mut lost = false;
    while let Some(frame) = output.next().await {
        match frame {
            Ok(frame) => {
                if end.write_all(&frame.into_bytes()).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "a container's terminal was lost; stopping it");
                lost = true;
                break;
            }
        }
    }
    typing.abort();
    resizing.abort();
    // Nobody could reach it any more: it would wait for input until its
    // timeout.
    if lost {
        let (docker, container) = stopper;
        let _ = docker.kill_container(&container, NO_OPTIONS).await;
    }
}
