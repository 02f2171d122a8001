//! A reload off the loop: the config files are read on the blocking pool, within a time
//! limit, while the loop keeps polling; the result is applied between two polls.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::error::Elapsed;

use super::{Daemon, timing};
use crate::config::{Config, ConfigError, ConfigErrors, Layers};
use crate::registry::Registry;
use crate::sink::record::{Record, message_id, priority};

/// How long a reload may take to read its files before it is given up.
pub const RELOAD_LIMIT: Duration = Duration::from_secs(10);

type Loaded = Result<(Config, Registry), ConfigErrors>;
pub(super) type Reloading = Pin<Box<tokio::time::Timeout<oneshot::Receiver<Loaded>>>>;

/// Loads the config on the blocking pool, within [`RELOAD_LIMIT`]: the loop keeps polling
/// meanwhile.
pub(super) fn start_reload(layers: &Layers) -> Reloading {
    let (tx, rx) = oneshot::channel();
    let layers = layers.clone();
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(layers.load());
    });
    Box::pin(tokio::time::timeout(RELOAD_LIMIT, rx))
}

impl Daemon {
    /// A reload that finished, failed or timed out.
    pub(super) fn reloaded(
        &mut self,
        result: Result<Result<Loaded, oneshot::error::RecvError>, Elapsed>,
    ) {
        let loaded = match result {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(_)) => Err(self.reload_error("the loader stopped".to_owned()).into()),
            Err(_) => Err(self
                .reload_error(format!(
                    "reading it took longer than {} s",
                    RELOAD_LIMIT.as_secs()
                ))
                .into()),
        };
        self.apply(loaded);
        self.supervisor.ready(&self.status_line());
    }

    /// Applies a reloaded config, or says why it was rejected and keeps the running one.
    pub fn apply(&mut self, loaded: Result<(Config, Registry), ConfigErrors>) {
        let (config, registry) = match loaded {
            Ok(l) => l,
            Err(e) => {
                let mut r = Record::plain(
                    priority::ERR,
                    Some(message_id::CONFIG_REJECTED),
                    format!(
                        "config reload rejected, the running config stays in force: {}",
                        e.one_line()
                    ),
                );
                r.push("CONFIG_ERROR", &e.to_string());
                return self.outputs.records.send(r);
            }
        };
        let later = self.config.restart_needed(&config);
        let note = if later.is_empty() {
            String::new()
        } else {
            let later = later.join(", ");
            format!("; changes to {later} take effect at the next restart")
        };
        self.config = config;
        self.registry = registry;
        self.tracker.set_timing(timing(&self.config));
        self.poller.set_sweep(self.config.daemon.owner_sweep);
        self.plan_expiry();
        self.outputs.fleet.reloaded(&self.config.policy.expect);
        let message = format!(
            "config reloaded: {}{note}",
            self.config.describe(&self.registry)
        );
        let r = Record::plain(priority::NOTICE, Some(message_id::CONFIG_RELOADED), message);
        self.outputs.records.send(r);
        self.rejudge_all();
        self.config_warnings();
    }

    fn reload_error(&self, message: String) -> ConfigError {
        let file = self
            .layers
            .file
            .as_deref()
            .unwrap_or(std::path::Path::new(crate::config::DEFAULT_PATH));
        ConfigError {
            file: file.display().to_string(),
            location: None,
            message,
        }
    }
}
