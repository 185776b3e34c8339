//! Static sites: an app that is only files the router serves (Render's
//! `runtime: static`), with its rewrites, redirects and headers (whose
//! types berth-proto holds, for the router).

use serde::{Deserialize, Serialize};

pub use berth_proto::{SiteHeader, SiteRule, match_path};

/// A site the router serves from a folder of the release's slug; the app
/// runs no process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSpec {
    /// The folder of the slug served at `/` (Render's `staticPublishPath`).
    pub dir: String,
    /// Rewrites and redirects, applied in order to a path that names no
    /// file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<SiteRule>,
    /// Headers added to the answers for matching paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<SiteHeader>,
}
