//! `POST /v1/apps/{app}/run/terminal`: a one-off command with a terminal
//! attached (`berth run` and `berth console` from an interactive shell).
//!
//! The request carries a [`berth_proto::RunCommand`] and asks to upgrade
//! the connection to the terminal protocol ([`berth_proto::Frame`]). The
//! server opens a pseudo-terminal, starts the command on it as an
//! execution of the one-off job (listed in `berth status`, stopped with the
//! server), answers `101 Switching Protocols`, and then copies keystrokes
//! in and output out until the command ends; the last frame is its exit.
//! A client that goes away cancels the command.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use berth_proto::{Frame, FrameReader, TERMINAL_UPGRADE};
use berth_runtime::TerminalMaster;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;

/// The largest request body (a command line and its env).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// After the command ends, how long output still in the terminal is
/// waited for when the terminal is not closed by then (a process it
/// started holds it open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Starts a one-off command on a terminal and upgrades the connection to
/// the terminal protocol.
#[utoipa::path(post, path = "/v1/apps/{app}/run/terminal", params(("app" = String, Path)),
    request_body = berth_proto::RunCommand,
    responses((status = 101, description = "the terminal protocol follows"), (status = 400, body = berth_proto::ApiError), (status = 404, body = berth_proto::ApiError)))]
pub(super) async fn run_terminal(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    mut request: Request,
) -> ApiResult<Response> {
    let asks_for_terminal = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case(TERMINAL_UPGRADE));
    if !asks_for_terminal {
        return Err(ApiFailure::BadRequest(format!(
            "this endpoint upgrades the connection: send `Upgrade: {TERMINAL_UPGRADE}`"
        )));
    }
    let upgrade = hyper::upgrade::on(&mut request);
    let body = axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES)
        .await
        .map_err(|err| ApiFailure::BadRequest(format!("cannot read the request: {err}")))?;
    let run: berth_proto::RunCommand = serde_json::from_slice(&body)
        .map_err(|err| ApiFailure::BadRequest(format!("bad run request: {err}")))?;
    let command = state.jobs.one_off_command(&app, &run)?;
    let size = run.terminal.unwrap_or_default();
    let (master, terminal) = berth_runtime::open_terminal(size.cols, size.rows)
        .map_err(|err| ApiFailure::Internal(format!("cannot open a terminal: {err}")))?;
    let timeout = Duration::from_secs(run.timeout_secs.unwrap_or(3600).max(1));
    let id = state.jobs.run_command(
        &app,
        &command,
        timeout,
        crate::jobs::RunOptions {
            trigger: berth_proto::Trigger::Manual,
            tasks: None,
            env: run.env.into_iter().collect(),
            terminal: Some(Arc::new(terminal)),
        },
    )?;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let session = Session {
                    state: state.clone(),
                    app: app.clone(),
                    id,
                    master,
                };
                session.relay(TokioIo::new(upgraded)).await;
            }
            Err(err) => {
                tracing::warn!(app = %app, execution = id, error = %err, "the terminal's connection did not upgrade; cancelling the command");
                let _ = state.jobs.cancel(&app, id).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TERMINAL_UPGRADE)
        .header("berth-execution", id.to_string())
        .body(Body::empty())
        .map_err(|err| ApiFailure::Internal(err.to_string()))
}

/// One terminal session: the command's execution and its terminal.
struct Session {
    state: ApiState,
    app: String,
    id: i64,
    master: TerminalMaster,
}

impl Session {
    /// Copies between the client and the terminal until the command ends
    /// (then sends its exit) or the client goes away (then cancels it).
    /// Keys go in on a task of their own: a command that does not read its
    /// input never stops its output from coming out, nor a disconnect
    /// from being seen.
    async fn relay<S>(self, connection: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (from_client, mut to_client) = tokio::io::split(connection);
        let mut ended = match self.state.jobs.watch_execution(self.id) {
            Some(ended) => ended,
            None => tokio::sync::watch::channel(true).1,
        };
        let master = Arc::new(self.master);
        let (gone, mut client_gone) = tokio::sync::oneshot::channel();
        let input = tokio::spawn(forward_input(
            from_client,
            master.clone(),
            gone,
            self.app.clone(),
            self.id,
        ));
        let mut output = vec![0u8; 16 * 1024];
        let mut terminal_open = true;
        let left = loop {
            if *ended.borrow() {
                break false;
            }
            tokio::select! {
                read = master.read(&mut output), if terminal_open => match read {
                    Ok(0) | Err(_) => terminal_open = false,
                    Ok(count) => {
                        let wire = Frame::data_frames(&output[..count], false);
                        if to_client.write_all(&wire).await.is_err() {
                            break true;
                        }
                    }
                },
                _ = &mut client_gone => break true,
                _ = ended.changed() => {}
            }
        };
        input.abort();
        if left {
            drop(master);
            return client_gone_cancels(&self.state, &self.app, self.id).await;
        }
        // What the command wrote last is still in the terminal; a process
        // it left that keeps writing does not hold the session open.
        let deadline = tokio::time::Instant::now() + DRAIN_AFTER_EXIT * 4;
        while terminal_open {
            let idle = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
            match tokio::time::timeout_at(idle.min(deadline), master.read(&mut output)).await {
                Ok(Ok(count)) if count > 0 => {
                    let wire = Frame::data_frames(&output[..count], false);
                    if to_client.write_all(&wire).await.is_err() {
                        return;
                    }
                }
                _ => terminal_open = false,
            }
        }
        let exit = exit_frame(&self.state, &self.app, self.id);
        let _ = to_client.write_all(&exit.encode()).await;
        let _ = to_client.shutdown().await;
    }
}

/// Reads the client's frames and acts on them until it goes away (or
/// sends something that is not a client frame); then says so on `gone`.
/// Once the terminal is closed (the command ended) keys are dropped.
async fn forward_input<R: tokio::io::AsyncRead>(
    from_client: R,
    master: Arc<TerminalMaster>,
    gone: tokio::sync::oneshot::Sender<()>,
    app: String,
    id: i64,
) {
    let mut from_client = std::pin::pin!(from_client);
    let mut frames = FrameReader::new();
    let mut incoming = vec![0u8; 16 * 1024];
    let mut terminal_open = true;
    let mut last_input = b'\n';
    loop {
        let count = match from_client.read(&mut incoming).await {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        frames.push(&incoming[..count]);
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(app = %app, execution = id, error = %err, "a bad terminal frame; cancelling the command");
                    let _ = gone.send(());
                    return;
                }
            };
            let written = match frame {
                Frame::Input(bytes) if terminal_open => {
                    last_input = bytes.last().copied().unwrap_or(last_input);
                    master.write_all(&bytes).await
                }
                // Ctrl-D ends the input of a line-reading command; after
                // half a line, the first one only sends the half.
                Frame::EndOfInput if terminal_open => {
                    let eof: &[u8] = if last_input == b'\n' { &[4] } else { &[4, 4] };
                    master.write_all(eof).await
                }
                Frame::Resize(size) if terminal_open => master.resize(size.cols, size.rows),
                Frame::Output(_) | Frame::Exit { .. } => {
                    tracing::warn!(app = %app, execution = id, "a server frame from the client; cancelling the command");
                    let _ = gone.send(());
                    return;
                }
                _ => Ok(()),
            };
            // The terminal is closed: the command has ended, and its exit
            // is on its way.
            if written.is_err() {
                terminal_open = false;
            }
        }
    }
    let _ = gone.send(());
}

/// The client left: its command goes too.
async fn client_gone_cancels(state: &ApiState, app: &str, id: i64) {
    if state.jobs.watch_execution(id).is_some()
        && let Err(err) = state.jobs.cancel(app, id).await
    {
        tracing::warn!(app = %app, execution = id, error = %err, "cannot cancel a command whose terminal left");
    }
}

/// How the command ended, from its execution's record.
fn exit_frame(state: &ApiState, app: &str, id: i64) -> Frame {
    let Ok(execution) = state.store.execution(app, id) else {
        return Frame::Exit {
            code: 1,
            message: format!("execution {id} is not recorded"),
        };
    };
    let attempt = execution.attempts.last();
    let code = attempt
        .and_then(|attempt| attempt.exit_code)
        .unwrap_or(if execution.succeeded() > 0 { 0 } else { 1 });
    let message = match attempt {
        Some(attempt) if attempt.exit_code == Some(0) => String::new(),
        Some(attempt)
            if attempt
                .reason
                .as_deref()
                .is_some_and(|reason| reason.starts_with("exit code")) =>
        {
            String::new()
        }
        Some(attempt) => attempt.reason.clone().unwrap_or_default(),
        None => execution.message.clone().unwrap_or_default(),
    };
    Frame::Exit { code, message }
}
