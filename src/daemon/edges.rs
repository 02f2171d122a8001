//! What the loop is given: its edges to the system, the requests it answers, and why it
//! may fail to start.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Supervisor;
use crate::config::ConfigErrors;
use crate::model::policy::Host;
use crate::sink::RecordSink;
use crate::sink::fanout::Delivery;
use crate::sink::socket::Join;
use crate::source::{OwnerSource, SocketSource};
use crate::state::StateStore;

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Unavailable(String),
}

/// What the daemon can be asked while it runs.
#[derive(Debug)]
pub enum Request {
    /// Load the config again (`SIGHUP`).
    Reload,
    /// Stop cleanly (`SIGTERM`, `SIGINT`).
    Stop,
    /// A new event-socket subscriber.
    Subscribe(Join),
}

/// The daemon's edges to the system.
pub struct Edges {
    pub source: Box<dyn SocketSource + Send>,
    pub owners: Box<dyn OwnerSource + Send>,
    /// What `exe` rules' paths are on this host.
    pub host: Box<dyn Host + Send>,
    pub records: Arc<dyn RecordSink>,
    /// To the fan-out task, when there is an event socket or a desktop.
    pub delivery: Option<mpsc::UnboundedSender<Delivery>>,
    pub state: StateStore,
    pub supervisor: Box<dyn Supervisor>,
    /// The kernel's listen and bind events, when they could be had.
    pub instant: super::InstantDetection,
    /// Prometheus metrics and Alertmanager, when configured.
    pub fleet: super::fleet::Fleet,
}

impl std::fmt::Debug for Edges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edges")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
