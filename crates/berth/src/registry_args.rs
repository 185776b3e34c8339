//! The arguments of `berth registry`.

use clap::Subcommand;

/// `berth registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Repositories, their tags and digests, and the disk the registry uses.
    List,
    /// Remove what no tag, release or push of the last day references.
    Gc,
}

/// `berth image`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Store the app's running release as an image in berth's registry
    /// (`APP:vN`), to run here or push to another platform.
    Build {
        /// The tag (default: `v` and the release's version).
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        app: crate::run_args::AppArg,
    },
}
