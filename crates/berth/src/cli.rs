//! Commands and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::log_args::LogsArgs;
pub use crate::run_args::{AppArg, ConsoleArgs, RunArgs};
pub use crate::server_args::ServerArgs;

/// Host Rust apps on machines you own.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// API URL of the berth server (default: the local one in the data dir).
    #[arg(long, global = true, env = "BERTH_SERVER")]
    pub server: Option<String>,
    /// API token (default: read from the data dir).
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir of the local server.
    #[arg(long, global = true, env = "BERTH_DATA")]
    pub data: Option<PathBuf>,
    /// A server logged in to with `berth login` (its URL, token and pinned
    /// certificate).
    #[arg(long, global = true, env = "BERTH_CONTEXT")]
    pub context: Option<String>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `berth context …`.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// The contexts, the default marked with `*`.
    List,
    /// Make NAME the server every command talks to (`local`: this
    /// machine's).
    Use { name: String },
    /// Forget NAME (its server keeps running).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, deploy and serve the app in DIR (starting a local server if none runs); prints its URL.
    Up(DeployArgs),
    /// Build and deploy the app in DIR to a running server.
    Deploy(DeployArgs),
    /// Run the berth server in the foreground.
    Server(Box<ServerArgs>),
    /// List, create or destroy apps.
    Apps {
        #[command(subcommand)]
        command: Option<AppsCommand>,
    },
    /// Show an app's release, process groups and instances.
    Status(AppArg),
    /// List an app's releases.
    Releases(AppArg),
    /// Go back to an earlier release without rebuilding (default: the one before).
    Rollback {
        /// The version to roll back to.
        #[arg(value_name = "VERSION")]
        target: Option<u64>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Set instance counts per process group: `berth scale web=3 worker=1`.
    Scale {
        /// GROUP=COUNT pairs.
        counts: Vec<String>,
        /// Autoscaling: never fewer instances (0 lets an idle app scale to zero).
        #[arg(long)]
        min: Option<u32>,
        /// Autoscaling: never more instances.
        #[arg(long)]
        max: Option<u32>,
        /// The group --min/--max apply to (default: the one serving HTTP).
        #[arg(long)]
        process: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Manage an app's env vars (a change makes a new release).
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Show an app's logs.
    Logs(LogsArgs),
    /// Show an app's event log: deploys, starts, exits and their causes, health.
    Events {
        /// Keep following new events.
        #[arg(short, long)]
        follow: bool,
        /// How many past events.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        app: AppArg,
    },
    /// Print the app's URL and open it in a browser if one is available.
    Open(AppArg),
    /// Print the dashboard's URL (sign in with the API token) and open it.
    Dashboard,
    /// Run a one-off command in a task of the app's release (same slug, env,
    /// secrets, database, volumes and sandbox), on a terminal when berth runs
    /// in one; exits with its exit code.
    Run(RunArgs),
    /// Run the spec's `console_command` (fly.toml) on a terminal.
    Console(ConsoleArgs),
    /// Run jobs and see their history.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Secrets: encrypted at rest, injected as env vars, masked in logs, never shown.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// The app's PostgreSQL database on berth's own server.
    Postgres {
        #[command(subcommand)]
        command: PostgresCommand,
    },
    /// The app's own Redis.
    Redis {
        #[command(subcommand)]
        command: RedisCommand,
    },
    /// The app's volumes (persistent directories).
    Volumes {
        #[command(subcommand)]
        command: VolumesCommand,
    },
    /// Custom domains the router serves for an app.
    Domains {
        #[command(subcommand)]
        command: DomainsCommand,
    },
    /// What each app used: instance-seconds by size, CPU, memory, requests, bytes.
    Usage(crate::usage_args::UsageArgs),
    /// What the usage would cost on Cloud Run, Fly.io, Render and this server, side by side.
    Cost(crate::usage_args::CostArgs),
    /// Monthly budgets that alert and act: `set`, `show`, `resume`, `unset`.
    Budget {
        #[command(subcommand)]
        command: crate::usage_args::BudgetCommand,
    },
    /// Where alerts go: `add webhook URL`, `list`, `remove ID`, `log`.
    Notify {
        #[command(subcommand)]
        command: crate::usage_args::NotifyCommand,
    },
    /// The app as an OCI image in berth's registry: `build`.
    Image {
        #[command(subcommand)]
        command: crate::registry_args::ImageCommand,
    },
    /// The built-in OCI registry at `/v2/` of the API: `list`, `gc`.
    Registry {
        #[command(subcommand)]
        command: crate::registry_args::RegistryCommand,
    },
    /// An app's edge rules set from here, on top of its berth.toml's `[edge]`.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// Log in to a remote server: pin its certificate, keep its URL and token
    /// as a context (`--context NAME`).
    Login {
        /// The server's API URL (`https://host:8079`).
        url: String,
        /// A name for it (default: from the host).
        #[arg(long)]
        name: Option<String>,
        /// The SHA-256 fingerprint the server's CA must have (`berth certs
        /// root` on the server prints it): checked before the token is sent.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Pin a CA other than the one the context NAME pinned before (a
        /// reinstalled server); without it, a changed CA is refused.
        #[arg(long)]
        replace_pin: bool,
    },
    /// The tunnel relay, on a public host: it forwards HTTPS (undecrypted)
    /// and HTTP to home servers that dial out to it (`berth server
    /// --tunnel`). `berth relay token add` names who may serve what.
    Relay(crate::relay_cli::RelayArgs),
    /// The servers this CLI knows: `list`, `use NAME` (the default for
    /// every command; `local` for this machine's), `remove NAME`.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Certificates: `berth certs root` prints berth's own CA certificate.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Write the app's model as another platform's files.
    Export {
        /// `fly` (a fly.toml), `dockerfile` (a cargo-chef Dockerfile),
        /// `render` (a render.yaml), `cloudrun` (a Knative Service and Cloud
        /// Run Jobs) or `k8s` (Kubernetes manifests).
        #[arg(value_parser = ["fly", "dockerfile", "render", "cloudrun", "k8s"])]
        format: String,
        /// The app's folder (berth.toml, fly.toml, Procfile, Cargo.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Export the model the server runs for this app instead of a folder's.
        #[arg(long)]
        app: Option<String>,
    },
    /// Check a spec before deploying: what berth will do with it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The app's jobs with their schedules, next and last runs.
    List(AppArg),
    /// Start an execution of a job.
    Run {
        /// The job.
        name: String,
        /// Wait until it ends; exit non-zero if it fails.
        #[arg(long)]
        wait: bool,
        /// Run this many tasks instead of the job's `tasks`.
        #[arg(long)]
        tasks: Option<u32>,
        /// Extra env vars, KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// A job's executions: trigger, start, duration, tasks succeeded/failed, exit codes.
    History {
        /// The job.
        name: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        app: AppArg,
    },
    /// The logs of one execution's tasks.
    Logs {
        /// The execution id.
        execution: i64,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Cancel a running execution.
    Cancel {
        /// The execution id.
        execution: i64,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The app's folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub app: AppArg,
    /// Run this image from berth's registry (`NAME[:TAG|@DIGEST]`) instead
    /// of building; the folder's berth.toml or fly.toml, if any, configures it.
    #[arg(long)]
    pub image: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List apps (the default).
    List,
    /// Create an app.
    Create {
        /// Its name.
        name: String,
    },
    /// Destroy an app: stop its instances, delete its releases, drop its database, Redis and volumes.
    Destroy {
        /// Its name.
        name: String,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set KEY=VALUE pairs.
    Set {
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove keys.
    Unset {
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// List env vars.
    List(AppArg),
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set NAME=VALUE pairs (a new release picks them up).
    Set {
        /// NAME=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove secrets.
    Unset {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// List names and digests (never values).
    List(AppArg),
    /// Import a Shuttle Secrets.toml or a .env file.
    Import {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum PostgresCommand {
    /// Give the app a database and role of its own (DATABASE_URL).
    Attach(AppArg),
    /// Print the app's DATABASE_URL (it holds the password).
    Url(AppArg),
    /// Open psql on the app's database.
    Connect(AppArg),
    /// Take a backup (pg_dump).
    Backup(AppArg),
    /// Apply the running release's migrations/ (sqlx's files and
    /// bookkeeping table, so sqlx agrees with what is applied).
    Migrate(AppArg),
    /// List backups, newest first.
    Backups(AppArg),
    /// Restore a backup over the database (default: the newest).
    Restore {
        /// The backup id (from `berth postgres backups`).
        backup: Option<String>,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// Give the app a Redis of its own (REDIS_URL).
    Attach(AppArg),
    /// Print the app's REDIS_URL (it holds the password).
    Url(AppArg),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load a berth.toml, fly.toml, Procfile, or a folder holding them, and
    /// print the apps, processes, services, jobs, resources and every warning.
    /// Exits non-zero only on a real error.
    Validate {
        /// A spec file or an app's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Print berth's own CA certificate (PEM), to trust it in a browser or
    /// system store for the HTTPS of APP.localhost and other local names.
    Root,
}

#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// The app's edge rules: from berth.toml, set here, and in effect.
    Show {
        #[command(flatten)]
        app: AppArg,
    },
    /// Let only these clients in (CIDRs or addresses; adds to the list).
    Allow {
        #[arg(required = true)]
        ranges: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Keep these clients out (CIDRs or addresses; wins over allow).
    Deny {
        #[arg(required = true)]
        ranges: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Limit each client address to RATE requests: `100/1m`, `10/s`.
    Limit {
        rate: String,
        /// Requests that may come at once (default: the rate's count).
        #[arg(long)]
        burst: Option<u32>,
        /// Only paths under this prefix (`/api`).
        #[arg(long)]
        path: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Set limits: larger bodies or heads, more connections per client,
    /// slower answers are refused.
    Set {
        /// 413 over this body size (`10mb`).
        #[arg(long)]
        max_body: Option<String>,
        /// 431 over this head size (`16kb`).
        #[arg(long)]
        max_header: Option<String>,
        /// 429 past this many connections from one address.
        #[arg(long)]
        max_connections: Option<u32>,
        /// 504 when the app has not begun its answer by then (`30s`).
        #[arg(long)]
        request_timeout: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove rules set here: ranges, rates as shown (`100/1m`), or
    /// max-body, max-header, max-connections, request-timeout.
    Remove {
        #[arg(required = true)]
        rules: Vec<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove every rule set here (berth.toml's stay).
    Clear {
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// Serve a domain (www.example.org) for the app.
    Add {
        /// The domain.
        name: String,
        /// Where its certificate comes from: `auto` (the ACME CA's when the
        /// server has one and the name is public) or `internal` (berth's
        /// own CA's, for LAN names and names the CA cannot reach).
        #[arg(long, default_value = "auto", value_parser = ["auto", "internal"])]
        tls: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// List the custom domains of every app, or of one with --app.
    List {
        /// Only this app's.
        #[arg(short, long)]
        app: Option<String>,
    },
    /// Whether a domain can be served over HTTPS, and if not, why.
    Check {
        /// The domain.
        name: String,
    },
    /// Stop serving a domain for the app.
    Remove {
        /// The domain.
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumesCommand {
    /// List the app's volumes.
    List(AppArg),
    /// Delete a volume and its files.
    Destroy {
        /// The volume.
        name: String,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        app: AppArg,
    },
}

/// Checks flags for `berth server`: ones it takes, no subcommand, nothing a
/// unit file cannot hold (`--data` is the CLI's own flag wherever it is
/// written, so it never reaches these); gives them parsed.
pub fn parse_server_flags(flags: &[String]) -> anyhow::Result<ServerArgs> {
    if flags.iter().any(|flag| flag.chars().any(char::is_control)) {
        anyhow::bail!("a flag holds a control character, which a unit file cannot");
    }
    let mut argv = vec!["berth".to_string(), "server".to_string()];
    argv.extend(flags.iter().cloned());
    match <Cli as Parser>::try_parse_from(&argv) {
        Err(err) => anyhow::bail!("not flags `berth server` takes:\n{err}"),
        Ok(cli) => match cli.command {
            Command::Server(args) if args.action.is_none() => Ok(*args),
            _ => anyhow::bail!(
                "`berth server install` takes the flags of `berth server`, not a command"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rollback_takes_an_optional_version() {
        let cli = Cli::try_parse_from(["berth", "rollback", "3", "--app", "hello"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollback {
                target: Some(3),
                ..
            }
        ));
    }
}
