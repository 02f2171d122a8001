//! The fleet sinks beside the loop: Prometheus metrics and Alertmanager. Each poll hands
//! them what it found; they copy what they need and never make a poll wait.

use std::sync::Arc;
use std::time::Duration;

use crate::model::expect::ExpectEvent;
use crate::model::{Event, Tracker};
use crate::sink::alertmanager::Alertmanager;
use crate::sink::fleet::AlertBook;
use crate::sink::metrics::Metrics;

/// The fleet sinks, each `None` when off (the default).
#[derive(Debug, Default)]
pub struct Fleet {
    book: AlertBook,
    pub metrics: Option<Metrics>,
    pub alertmanager: Option<Alertmanager>,
    /// The alert set changed since the last hand-over (or none was made yet).
    alerts_changed: bool,
    /// The listeners changed since the metrics last counted them.
    listeners_changed: bool,
}

impl Fleet {
    pub fn new(metrics: Option<Metrics>, alertmanager: Option<Alertmanager>) -> Fleet {
        Fleet {
            book: AlertBook::default(),
            metrics,
            alertmanager,
            alerts_changed: true,
            listeners_changed: true,
        }
    }

    fn on(&self) -> bool {
        self.metrics.is_some() || self.alertmanager.is_some()
    }

    /// A batch of events, as dispatched.
    pub fn events(&mut self, events: &[Arc<Event>]) {
        if !self.on() || events.is_empty() {
            return;
        }
        self.alerts_changed |= self.book.events(events);
        self.listeners_changed = true;
        if let Some(m) = &mut self.metrics {
            m.events(events, &[]);
        }
    }

    /// What the required listeners did.
    pub fn expectations(&mut self, events: &[ExpectEvent]) {
        if !self.on() || events.is_empty() {
            return;
        }
        self.alerts_changed |= self.book.expectations(events);
        if let Some(m) = &mut self.metrics {
            m.events(&[], events);
        }
    }

    /// A reload: the missing entries it removed are no longer alerts.
    pub fn reloaded(&mut self, expects: &[crate::model::rules::ExpectRule]) {
        self.book.keep_expectations(expects);
        self.alerts_changed = true;
    }

    /// A poll's figures: how long it took, which source read the table.
    pub fn polled(&mut self, took: Duration, backend: Option<crate::source::Backend>) {
        if let Some(m) = &mut self.metrics {
            m.poll(took, backend);
        }
    }

    /// Instant detection could not start: the daemon polls alone.
    pub fn instant_refused(&mut self) {
        if let Some(m) = &mut self.metrics {
            m.set_fallback("ebpf", true);
        }
    }

    /// After a poll or a re-judgement: what changed goes out.
    pub fn settle(&mut self, tracker: &Tracker) {
        if !self.on() {
            return;
        }
        if self.alerts_changed {
            self.alerts_changed = false;
            let active = self.book.active(tracker.active_alerts());
            let ended = self.book.take_short();
            if let Some(m) = &mut self.metrics {
                m.alerts(&active);
            }
            if let Some(am) = &self.alertmanager {
                am.update(active, ended);
            }
        }
        if let Some(m) = &mut self.metrics {
            if std::mem::take(&mut self.listeners_changed) {
                m.listeners(tracker);
            }
            m.flush();
        }
    }
}
