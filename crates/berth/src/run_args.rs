//! Flags shared by many commands (the app a command acts on), and those
//! of `berth run` and `berth console`.

use clap::Args;

/// The app a command acts on.
#[derive(Debug, Args, Clone, Default)]
pub struct AppArg {
    /// The app (default: from berth.toml, fly.toml or Cargo.toml in the current folder).
    #[arg(short, long)]
    pub app: Option<String>,
}

/// `berth run`'s flags and command.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start it and print its execution id; output goes to `berth jobs logs ID`.
    #[arg(short, long, conflicts_with_all = ["tty", "no_tty"])]
    pub(crate) detach: bool,
    /// Give it a terminal even when berth's stdin is not one.
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    pub(crate) tty: bool,
    /// No terminal, even from an interactive shell: its output comes as
    /// lines, stdout and stderr apart.
    #[arg(short = 'T', long)]
    pub(crate) no_tty: bool,
    /// How long it may run before it is killed.
    #[arg(long, default_value = "1h")]
    pub(crate) timeout: String,
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// `berth console`'s flags.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// How long it may run before it is killed.
    #[arg(long, default_value = "1h")]
    pub(crate) timeout: String,
    #[command(flatten)]
    pub(crate) app: AppArg,
}
