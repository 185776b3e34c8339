//! `berth run` and `berth console` with a terminal: keys go to the
//! command's terminal on the server, its output comes back, the window
//! size follows the local one, and berth exits with the command's code.

use anyhow::{Result, anyhow, bail};
use berth_proto::{Frame, FrameReader, RunCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tty::{RawMode, window_size};

/// Runs `request` on a terminal; returns the code to exit with.
pub(crate) async fn run_on_terminal(
    client: &berth_client::Client,
    app: &str,
    mut request: RunCommand,
) -> Result<i32> {
    request.terminal = Some(window_size().unwrap_or_default());
    let connection = client.run_on_terminal(app, &request).await?;
    let (mut from_server, mut to_server) = tokio::io::split(connection.stream);
    // Frames to the server come from stdin and window changes alike.
    let (frames, mut outgoing) = tokio::sync::mpsc::channel::<Frame>(64);
    tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if to_server.write_all(&frame.encode()).await.is_err() {
                break;
            }
        }
    });
    spawn_stdin_reader(frames.clone());
    spawn_resize_watcher(frames);
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let raw = RawMode::enter();
    // Killed by a signal, berth puts the terminal back first.
    let result = tokio::select! {
        result = copy_output(&mut from_server) => result,
        _ = hangup.recv() => Ok(128 + libc::SIGHUP),
        _ = terminate.recv() => Ok(128 + libc::SIGTERM),
    };
    drop(raw);
    result
}

/// Writes the command's output to stdout until its exit frame.
async fn copy_output<R: tokio::io::AsyncRead + Unpin>(from_server: &mut R) -> Result<i32> {
    let mut stdout = tokio::io::stdout();
    let mut reader = FrameReader::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Output(bytes) => {
                    stdout.write_all(&bytes).await?;
                    stdout.flush().await?;
                }
                Frame::Exit { code, message } => {
                    if !message.is_empty() {
                        eprint!("\r\nberth run: {message}\r\n");
                    }
                    return Ok(code);
                }
                other => bail!("the server sent a client frame: {other:?}"),
            }
        }
        let count = from_server.read(&mut buffer).await?;
        if count == 0 {
            return Err(anyhow!(
                "the connection to the server closed before the command ended"
            ));
        }
        reader.push(&buffer[..count]);
    }
}

/// Sends what is typed (or piped) on stdin; its end as [`Frame::EndOfInput`].
/// A thread of its own, never joined: a read of stdin cannot be
/// cancelled, and berth must not wait for one more key to exit.
fn spawn_stdin_reader(frames: tokio::sync::mpsc::Sender<Frame>) {
    let _ = std::thread::Builder::new()
        .name("berth-stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buffer = vec![0u8; 4096];
            loop {
                match stdin.read(&mut buffer) {
                    Ok(0) | Err(_) => {
                        let _ = frames.blocking_send(Frame::EndOfInput);
                        break;
                    }
                    Ok(count) => {
                        if frames
                            .blocking_send(Frame::Input(buffer[..count].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
}

/// Sends the window's size each time it changes (SIGWINCH).
fn spawn_resize_watcher(frames: tokio::sync::mpsc::Sender<Frame>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            if let Some(size) = window_size()
                && frames.send(Frame::Resize(size)).await.is_err()
            {
                break;
            }
        }
    });
}
