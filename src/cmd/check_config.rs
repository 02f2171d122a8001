//! `portsentinel check-config [FILE]`: validate, say what will not work as written, print
//! a one-line summary; exit 0 or 78.
//!
//! Every error of every file is reported (the main file and the `config.d/` drop-ins),
//! each as `FILE:LINE:COL: key: what is wrong; what is allowed`. Warnings (users the
//! system does not know, rules that expired, units no process runs in) go to stderr and
//! leave the status 0.

use std::path::{Path, PathBuf};

use std::process::ExitCode;

use super::Failure;
use crate::cli::CheckConfigArgs;
use crate::config::{self, Config};
use crate::registry::Registry;
use crate::source::SystemHost;

pub fn run(args: &CheckConfigArgs) -> Result<ExitCode, Failure> {
    let default = Path::new(config::DEFAULT_PATH);
    let (label, config) = match args.path() {
        Some(path) => (format!("{}: valid", path.display()), config::load(path)?),
        None if default.exists() => (
            format!("{}: valid", default.display()),
            config::load(default)?,
        ),
        None => {
            let config = config::load_or_default(None)?;
            let label = format!(
                "no config file at {}: the built-in defaults apply",
                default.display()
            );
            (label, config)
        }
    };
    // A registry CSV that does not load would stop the daemon: check it too.
    let registry = config.registry()?;
    let proc_root = crate::source::proc_root(None);
    let namespaces = crate::source::netns::NamespaceTable::new(&proc_root);
    let host = SystemHost::new(&proc_root, namespaces);
    for warning in config.lint(&host) {
        eprintln!("warning: {warning}");
    }
    println!("{label}: {}", summary(&config, &registry));
    Ok(ExitCode::SUCCESS)
}

fn summary(config: &Config, registry: &Registry) -> String {
    let alert_on: Vec<&str> = config.policy.alert_on.iter().map(|c| c.as_str()).collect();
    let drop_ins: Vec<PathBuf> = config.drop_ins.clone();
    let mut s = format!(
        "alert_on = [{}], {} allow rule(s)",
        alert_on.join(", "),
        config.policy.allow.len()
    );
    if !config.policy.expect.is_empty() {
        s.push_str(&format!(", {} expectation(s)", config.policy.expect.len()));
    }
    if !drop_ins.is_empty() {
        let names: Vec<String> = drop_ins.iter().map(|p| p.display().to_string()).collect();
        s.push_str(&format!(" (with {})", names.join(", ")));
    }
    if !config.policy.builtin_allow {
        s.push_str(", built-in rules off");
    }
    s.push_str(&format!(
        ", registry {}",
        match registry.origin() {
            crate::registry::Origin::BuiltIn => "built-in".to_owned(),
            crate::registry::Origin::File(p) => p.display().to_string(),
        }
    ));
    s
}
