//! `portsentinel`: parse the command line, set up logging, dispatch, map errors to exit
//! statuses. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use portsentinel::cli::{Cli, Command};
use portsentinel::cmd;
use portsentinel::sink::LogMode;

/// Diagnostics (not events) go through `tracing`: to journald under systemd, else stderr.
fn init_tracing(daemon: Option<LogMode>) {
    let default = if daemon.is_some() { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("PORTSENTINEL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let journald = match daemon.map(LogMode::resolve) {
        Some(LogMode::Journald) => tracing_journald::layer().ok(),
        _ => None,
    };
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .without_time(),
            )
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon_log = match &cli.command {
        Command::Run(args) => Some(args.log.unwrap_or_default()),
        Command::NotifyAgent(_) => Some(LogMode::Text),
        _ => None,
    };
    init_tracing(daemon_log);
    let result = match &cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::CheckConfig(args) => cmd::check_config::run(args),
        Command::NotifyAgent(args) => cmd::notify_agent::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("portsentinel: {failure}");
            failure.exit_code()
        }
    }
}
