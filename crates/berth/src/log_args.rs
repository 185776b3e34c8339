//! `berth logs`'s flags.

use clap::Args;

use crate::run_args::AppArg;

/// Which lines `berth logs` shows.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines since: a duration (10m, 2h, 1d) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines before: a duration back from now or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this process group.
    #[arg(long)]
    pub process: Option<String>,
    /// Only this instance.
    #[arg(long)]
    pub instance: Option<String>,
    /// Only lines at this level or above (trace, debug, info, warn, error).
    #[arg(long)]
    pub level: Option<String>,
    /// Only lines where these hold, e.g. 'level>=warn user_id=42 path~/api'
    /// (= != > >= < <= and ~ for contains; fields of JSON and logfmt lines).
    #[arg(long = "where", value_name = "CONDITIONS")]
    pub filter: Option<String>,
    /// Only lines whose message or fields match this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
    /// Full-text search of stored lines: words, "a phrase", prefix*, AND, OR, NOT.
    #[arg(long, value_name = "WORDS", conflicts_with = "follow")]
    pub search: Option<String>,
    /// How many past lines.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub limit: u32,
    #[command(flatten)]
    pub app: AppArg,
}
