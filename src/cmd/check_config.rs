//! `portsentinel check-config [FILE]`: validate, print a one-line summary, exit 0 or 78.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;
use crate::cli::CheckConfigArgs;
use crate::config;

pub fn run(args: &CheckConfigArgs) -> Result<ExitCode, Failure> {
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let config = config::load(&path)?;
    // A registry CSV that does not load would stop the daemon: check it too.
    let registry = config.registry()?;
    let alert_on: Vec<&str> = config.policy.alert_on.iter().map(|c| c.as_str()).collect();
    println!(
        "{}: valid: alert_on = [{}], {} allow rule(s), registry {}",
        path.display(),
        alert_on.join(", "),
        config.policy.allow.len(),
        match registry.origin() {
            crate::registry::Origin::BuiltIn => "built-in".to_owned(),
            crate::registry::Origin::File(p) => p.display().to_string(),
        }
    );
    Ok(ExitCode::SUCCESS)
}
