//! `berth run` with a terminal: the request that upgrades the connection
//! to the terminal protocol (see [`berth_proto::Frame`]).

use berth_proto::{RunCommand, TERMINAL_UPGRADE};
use reqwest::Method;
use reqwest::header::{CONNECTION, UPGRADE};

use crate::{Client, ClientError, Result};

/// A one-off command running on a terminal: its execution and the
/// connection that now speaks the terminal protocol.
#[derive(Debug)]
pub struct TerminalConnection {
    /// The execution the command runs as.
    pub execution: i64,
    /// The upgraded connection: write [`berth_proto::Frame`]s from the
    /// client, read the server's.
    pub stream: reqwest::Upgraded,
}

impl Client {
    /// `POST /v1/apps/{app}/run/terminal`: starts `request` on a terminal
    /// and returns the connection to it.
    pub async fn run_on_terminal(
        &self,
        app: &str,
        request: &RunCommand,
    ) -> Result<TerminalConnection> {
        let response = self
            .request(Method::POST, &["v1", "apps", app, "run", "terminal"])?
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, TERMINAL_UPGRADE)
            .json(request)
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(Self::failure(response).await);
        }
        let execution = response
            .headers()
            .get("berth-execution")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| {
                ClientError::Read("the server did not name the command's execution".into())
            })?;
        let stream = response
            .upgrade()
            .await
            .map_err(|err| ClientError::Read(Box::new(err)))?;
        Ok(TerminalConnection { execution, stream })
    }
}
