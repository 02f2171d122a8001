//! `portsentinel run`: the daemon in the foreground, on a single-threaded tokio runtime
//! (the poll work is short and the sinks have threads of their own).

use std::process::ExitCode;

use super::Failure;
use crate::cli::RunArgs;
use crate::daemon::{self, RunOptions};

pub fn run(args: &RunArgs) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime.block_on(daemon::run(RunOptions {
        config: args.config.config.clone(),
        interval: args.interval,
        log: args.log,
        proc_root: None,
    }))?;
    Ok(ExitCode::SUCCESS)
}
