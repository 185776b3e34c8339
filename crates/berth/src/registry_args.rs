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
