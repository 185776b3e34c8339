//! `berth`: the one binary. CLI commands over the typed API client, and
//! `berth server`, which runs the server in the foreground.
//!
//! Layout: [`cli`] declares the commands and flags; [`connect`] finds (or
//! starts) a server and its token; [`commands`] carries each command out;
//! [`output`] prints for people (tables, progress) or scripts (`--json`).

/// `println!` for the CLI's output: once whoever reads stdout has gone
/// (`berth logs -f | head`), berth exits quietly, as `grep` would, instead
/// of panicking on the broken pipe.
macro_rules! say {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod args;
mod cli;
mod commands;
mod connect;
mod contexts;
mod domains;
mod drains;
mod edge;
mod jobs;
mod log_args;
mod logs;
mod one_off;
mod output;
mod registry_args;
mod registry_cli;
mod relay_cli;
mod remote;
mod resources;
mod run_args;
mod server_args;
mod server_control;
mod server_process;
mod server_restart;
mod server_unit;
mod status;
mod terminal;
mod tty;
mod usage_args;
mod usage_cli;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // An instance's init and waiting process are this binary re-executed.
    berth_runtime::run_instance_init_if_asked();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Server(args) if args.action.is_none() => commands::server(&cli.global, *args),
        cli::Command::Relay(args) if args.action.is_none() => relay_cli::run(args),
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(commands::run(cli.global, command))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
