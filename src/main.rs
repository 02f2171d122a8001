//! `portsentinel`: parse the command line, dispatch, map errors to exit statuses.
//! Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

use portsentinel::cli::{Cli, Command};
use portsentinel::cmd;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon and the agent set up their own log path (diagnostics as records).
    cmd::set_verbosity(cli.verbosity);
    if !matches!(cli.command, Command::Run(_) | Command::NotifyAgent(_)) {
        cmd::init_diagnostics(None);
    }
    let result = match &cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::CheckConfig(args) => cmd::check_config::run(args),
        Command::Baseline(args) => cmd::baseline::run(args),
        Command::History(args) => cmd::history::run(args),
        Command::NotifyAgent(args) => cmd::notify_agent::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            // Every error on its own line: a config can have several.
            for line in failure.to_string().lines() {
                eprintln!("portsentinel: {line}");
            }
            failure.exit_code()
        }
    }
}
