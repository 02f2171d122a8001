//! A reload off the loop: the config files are read on the blocking pool, within a time
//! limit, while the loop keeps polling; the result is applied between two polls.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::error::Elapsed;

use super::Daemon;
use crate::config::{Config, ConfigError, ConfigErrors, Layers};
use crate::registry::Registry;

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
