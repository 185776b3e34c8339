//! Builders and release slugs.
//!
//! The path of a deploy through this crate: [`pack::pack`] (on the client)
//! turns an app folder into a compressed tarball that honours `.gitignore` and
//! skips `target/`; [`source::unpack`] (on the server) unpacks it, refusing
//! paths that escape the folder and uploads that are too big; [`cargo`] syncs
//! the tree into the app's persistent build workspace and runs `cargo build
//! --release` through a [`run::CargoRunner`] (at low priority; in a sandbox of
//! the app's own when the server is root), so a one-line change rebuilds incrementally;
//! [`slug`] stores the source tree plus the binaries, content-addressed, so a
//! rollback needs no rebuild. Nothing here runs an app.

pub mod cargo;
mod error;
pub mod pack;
pub mod run;
pub mod slug;
pub mod source;
mod sync;

pub use cargo::{BuildError, BuildLock, BuildOutput, BuildRequest, Builder, CargoBuilder};
pub use pack::{pack, pack_with};
pub use run::{CargoJob, CargoRunner, CargoStream, LocalCargo};
pub use slug::{SLUG_BIN_DIR, SlugError, SlugStore};
pub use source::{SourceError, UnpackLimits, unpack};
