//! `berth logs`'s flags, and `berth logs drain`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::run_args::AppArg;

/// Which lines `berth logs` shows.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: Option<LogsCommand>,
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

/// `berth logs` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Send the app's lines, as they are stored, to HTTP (NDJSON), OTLP or syslog.
    Drain {
        #[command(subcommand)]
        command: DrainCommand,
    },
}

/// `berth logs drain`.
#[derive(Debug, Subcommand)]
pub enum DrainCommand {
    /// Add a drain: https://HOST/PATH (NDJSON), otlp+https://HOST:4318/v1/logs,
    /// syslog+tls://HOST:6514 or syslog+tcp://HOST:514 (http:// and otlp+http:// too).
    Add {
        /// Where lines go.
        url: String,
        /// A CA certificate (PEM file) to trust for the drain's TLS, beside the system's.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Lines it may fall behind while down before the oldest are dropped (default 100000).
        #[arg(long, value_name = "LINES")]
        buffer: Option<u64>,
        #[command(flatten)]
        app: AppArg,
    },
    /// The app's drains: lines delivered and dropped, and the last error.
    List(AppArg),
    /// Remove a drain.
    Remove {
        /// Its id (from `berth logs drain list`).
        id: i64,
        #[command(flatten)]
        app: AppArg,
    },
}
