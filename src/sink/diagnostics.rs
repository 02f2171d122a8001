//! Diagnostics are records too: a `tracing` layer that turns every diagnostic (a source
//! falling back, a subscriber dropped, the desktop failing) into a [`Record`] and sends it
//! down the same path as the event records.
//!
//! So a daemon has one log path: one writer, one stderr fallback and one journald
//! backlog, and one format (`--log json` makes every line JSON; under systemd every line
//! is a native journal record). `tracing` stays the front end the rest of the code uses.

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::log::RecordSink;
use super::record::{Record, priority};

/// Sends each `tracing` event to a [`RecordSink`].
#[derive(Debug, Clone)]
pub struct RecordLayer {
    sink: Arc<dyn RecordSink>,
}

impl RecordLayer {
    pub fn new(sink: Arc<dyn RecordSink>) -> RecordLayer {
        RecordLayer { sink }
    }
}

/// The journal priority of a diagnostic's level.
fn priority_of(level: Level) -> u8 {
    match level {
        Level::ERROR => priority::ERR,
        Level::WARN => priority::WARNING,
        Level::INFO => priority::INFO,
        _ => priority::DEBUG,
    }
}

/// The message, then any other fields as `key=value`.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{rest}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RecordLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message::default();
        event.record(&mut message);
        let level = *event.metadata().level();
        self.sink
            .send(Record::plain(priority_of(level), None, message.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<Record>>);

    impl RecordSink for Collect {
        fn send(&self, record: Record) {
            self.0.lock().unwrap().push(record);
        }
    }

    #[test]
    fn a_warning_becomes_a_priority_4_record() {
        let sink = Arc::new(Collect::default());
        let subscriber =
            tracing_subscriber::Registry::default().with(RecordLayer::new(sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("sock_diag failed: {}", "EACCES");
            tracing::error!(pid = 7, "cannot read");
        });
        let got = sink.0.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].priority, got[0].message.as_str()),
            (4, "sock_diag failed: EACCES")
        );
        assert_eq!(
            (got[1].priority, got[1].message.as_str()),
            (3, "cannot read pid=7")
        );
    }
}
