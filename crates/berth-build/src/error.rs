//! What can go wrong building.

use std::path::PathBuf;

/// What can go wrong building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo ran and failed; `message` holds its errors.
    #[error("cargo build failed ({status}):\n{message}")]
    CargoFailed {
        /// How cargo exited.
        status: String,
        /// The compiler's error lines.
        message: String,
    },
    /// `[build] command` ran and failed.
    #[error("the build command `{command}` failed ({status}); its output is above")]
    CommandFailed {
        /// The command.
        command: String,
        /// How it ended.
        status: String,
    },
    /// Cargo could not be started.
    #[error("cannot run cargo (is it installed and on PATH?)")]
    CargoMissing(#[source] std::io::Error),
    /// The build produced no binary, or several and none was chosen.
    #[error("{0}")]
    NoBinary(String),
    /// The build's sandbox could not be made.
    #[error("cannot run the build in its sandbox: {0}")]
    Sandbox(String),
    /// Preparing the build directory failed.
    #[error("cannot prepare the build directory {path}")]
    Workspace {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
