//! `portsentinel`: parse the command line, set up logging, dispatch, map errors to exit
//! statuses. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

use portsentinel::cli::{Cli, Command};
use portsentinel::cmd;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTSENTINEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_target(false)
        .without_time()
        .init();
    let result = match &cli.command {
        Command::Scan(args) => cmd::scan::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::CheckConfig(args) => cmd::check_config::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("portsentinel: {failure}");
            failure.exit_code()
        }
    }
}
