//! Where a poll's events go: the journal record first, then the event socket and the
//! desktop (through the fan-out task, beside the loop), then the state file when alerts
//! changed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::latch::Latch;
use crate::model::events::AlertedListeners;
use crate::model::{Event, EventKind, Tracker};
use crate::sink::RecordSink;
use crate::sink::fanout::Delivery;
use crate::sink::record::{Record, priority};
use crate::sink::socket::Join;
use crate::state::StateStore;

/// The daemon's sinks.
pub struct Outputs {
    pub records: Arc<dyn RecordSink>,
    /// To the fan-out task (event socket and desktop), when either is on.
    delivery: Option<mpsc::UnboundedSender<Delivery>>,
    state: StateStore,
    state_latch: Latch,
    /// Prometheus and Alertmanager, when configured.
    pub fleet: super::fleet::Fleet,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Outputs {
    pub fn new(
        records: Arc<dyn RecordSink>,
        delivery: Option<mpsc::UnboundedSender<Delivery>>,
        state: StateStore,
        fleet: super::fleet::Fleet,
    ) -> Outputs {
        Outputs {
            records,
            delivery,
            state,
            fleet,
            state_latch: Latch::new(
                "saving state failed",
                "monitoring continues, but a restart may repeat alerts",
                "state saved again",
            ),
        }
    }

    pub fn send(&self, priority: u8, message: String) {
        self.records.send(Record::plain(priority, None, message));
    }

    /// The alerts a previous run raised; a state that cannot be read is a warning.
    pub fn restore(&self) -> AlertedListeners {
        let loaded = std::fs::create_dir_all(&self.state.dir)
            .map_err(|e| {
                format!(
                    "cannot create {}: {e}; alerts will not survive a restart",
                    self.state.dir.display()
                )
            })
            .and_then(|()| self.state.load());
        loaded.unwrap_or_else(|e| {
            self.send(priority::WARNING, format!("state: {e}"));
            Vec::new()
        })
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.state.dir
    }

    /// Records every event, hands them to the fan-out task (which may wait for
    /// subscribers `budget` in all, on its own time), and saves the state when alerts
    /// changed.
    pub fn dispatch(&mut self, events: Vec<Arc<Event>>, tracker: &Tracker, budget: Duration) {
        if events.is_empty() {
            return;
        }
        let mut alerts_changed = false;
        for e in &events {
            alerts_changed |= matches!(e.kind, EventKind::AlertRaised | EventKind::AlertCleared);
            // The journal record first: it is written whatever the other sinks do.
            self.records.send(Record::from_event(e));
        }
        self.fleet.events(&events);
        if let Some(tx) = &self.delivery {
            let _ = tx.send(Delivery::Events { events, budget });
        }
        if alerts_changed {
            self.save_state(tracker);
        }
    }

    /// A new event-socket subscriber: it hears the alerts active now, then every event
    /// after them (the fan-out task keeps the order).
    pub fn subscribe(&self, join: Join, tracker: &Tracker) {
        if let Some(tx) = &self.delivery {
            let replay = tracker.active_alerts().cloned().collect();
            let _ = tx.send(Delivery::Join { join, replay });
        }
    }

    pub fn save_state(&mut self, tracker: &Tracker) {
        match self.state.save(tracker.alerted()) {
            Ok(()) => {
                if let Some(back) = self.state_latch.recover() {
                    self.send(priority::NOTICE, back);
                }
            }
            Err(e) => {
                if let Some(problem) = self.state_latch.fail(e) {
                    self.send(priority::ERR, problem);
                }
            }
        }
    }
}
