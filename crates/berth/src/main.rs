//! `berth`: the one binary. CLI commands over the typed API client, and
//! `berth server`, which runs the server in the foreground.
//!
//! Layout: [`cli`] declares the commands and flags; [`connect`] finds (or
//! starts) a server and its token; [`commands`] carries each command out;
//! [`output`] prints for people (tables, progress) or scripts (`--json`).

mod cli;
mod commands;
mod connect;
mod output;
mod resources;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // An instance's init and waiting process are this binary re-executed.
    berth_runtime::run_instance_init_if_asked();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Server(args) => commands::server(&cli.global, args),
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
