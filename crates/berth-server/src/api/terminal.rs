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
    async fn relay<S>(self, connection: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut from_client, mut to_client) = tokio::io::split(connection);
        let mut ended = match self.state.jobs.watch_execution(self.id) {
            Some(ended) => ended,
            None => tokio::sync::watch::channel(true).1,
        };
        let mut frames = FrameReader::new();
        let mut incoming = vec![0u8; 16 * 1024];
        let mut output = vec![0u8; 16 * 1024];
        let mut terminal_open = true;
        loop {
            if *ended.borrow() {
                break;
            }
            tokio::select! {
                read = self.master.read(&mut output), if terminal_open => match read {
                    Ok(0) | Err(_) => terminal_open = false,
                    Ok(count) => {
                        let wire = Frame::data_frames(&output[..count], false);
                        if to_client.write_all(&wire).await.is_err() {
                            return self.client_gone().await;
                        }
                    }
                },
                read = from_client.read(&mut incoming) => match read {
                    Ok(0) | Err(_) => return self.client_gone().await,
                    Ok(count) => {
                        frames.push(&incoming[..count]);
                        if let Err(err) = self.take_frames(&mut frames).await {
                            tracing::warn!(app = %self.app, execution = self.id, error = %err, "a bad terminal frame; cancelling the command");
                            return self.client_gone().await;
                        }
                    }
                },
                _ = ended.changed() => {}
            }
        }
        // What the command wrote last is still in the terminal.
        while terminal_open {
            match tokio::time::timeout(DRAIN_AFTER_EXIT, self.master.read(&mut output)).await {
                Ok(Ok(count)) if count > 0 => {
                    let wire = Frame::data_frames(&output[..count], false);
                    if to_client.write_all(&wire).await.is_err() {
                        return;
                    }
                }
                _ => terminal_open = false,
            }
        }
        let exit = self.exit_frame();
        let _ = to_client.write_all(&exit.encode()).await;
        let _ = to_client.shutdown().await;
    }

    /// Acts on every whole frame the client sent.
    async fn take_frames(&self, frames: &mut FrameReader) -> Result<(), String> {
        while let Some(frame) = frames.next_frame().map_err(|err| err.to_string())? {
            match frame {
                Frame::Input(bytes) => self
                    .master
                    .write_all(&bytes)
                    .await
                    .map_err(|err| format!("cannot write to the terminal: {err}"))?,
                Frame::Resize(size) => {
                    self.master
                        .resize(size.cols, size.rows)
                        .map_err(|err| format!("cannot resize the terminal: {err}"))?;
                }
                // The terminal's end-of-file character (Ctrl-D).
                Frame::EndOfInput => self
                    .master
                    .write_all(&[0x04])
                    .await
                    .map_err(|err| format!("cannot write to the terminal: {err}"))?,
                Frame::Output(_) | Frame::Exit { .. } => {
                    return Err("a server frame from the client".into());
                }
            }
        }
        Ok(())
    }

    /// The client left: its command goes too (closing the terminal hangs
    /// it up; the cancel stops what ignores that).
    async fn client_gone(self) {
        let Session {
            state,
            app,
            id,
            master,
            ..
        } = self;
        drop(master);
        if state.jobs.watch_execution(id).is_some()
            && let Err(err) = state.jobs.cancel(&app, id).await
        {
            tracing::warn!(app = %app, execution = id, error = %err, "cannot cancel a command whose terminal left");
        }
    }

    /// How the command ended, from its execution's record.
    fn exit_frame(&self) -> Frame {
        let Ok(execution) = self.state.store.execution(&self.app, self.id) else {
            return Frame::Exit {
                code: 1,
                message: format!("execution {} is not recorded", self.id),
            };
        };
        let attempt = execution.attempts.last();
        let code = attempt
            .and_then(|attempt| attempt.exit_code)
            .unwrap_or(if execution.succeeded() > 0 { 0 } else { 1 });
        let message = match attempt.and_then(|attempt| attempt.exit_code) {
            Some(_) => String::new(),
            None => attempt
                .and_then(|attempt| attempt.reason.clone())
                .or(execution.message.clone())
                .unwrap_or_default(),
        };
        Frame::Exit { code, message }
    }
}
