//! The arguments of `berth registry`.

use clap::Subcommand;

/// `berth registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Repositories, their tags and digests, and the disk the registry uses.
    List,
    /// Remove what no tag, release or push of the last day references.
    Gc,
    /// Sign in to another registry, so `berth deploy --image HOST/NAME:TAG`
    /// pulls from it (the password is read from standard input).
    Login {
        /// Its address: `ghcr.io`, `registry.example.com:5000`.
        host: String,
        /// The user name.
        #[arg(long, short)]
        username: String,
        /// Read the password or token from standard input (the only way:
        /// never on the command line).
        #[arg(long)]
        password_stdin: bool,
        /// Plain HTTP instead of HTTPS (a registry on this machine or LAN).
        #[arg(long)]
        plain_http: bool,
    },
    /// Forget a registry signed in to.
    Logout {
        /// Its address.
        host: String,
    },
    /// The registries berth signs in to.
    Logins,
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
