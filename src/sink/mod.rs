//! Where records and events go: the log (journald or stderr), the event socket, the desktop.
//!
//! Each sink has its own bounded queue and its own thread or task, so a slow or broken sink
//! never holds up polling, and the log record of every event is written whatever the other
//! sinks do. Sinks format what the model worked out; they never work it out again.

pub mod alertmanager;
pub mod desktop;
pub mod diagnostics;
pub mod fanout;
pub mod fleet;
pub mod log;
pub mod metrics;
pub mod record;
pub mod socket;

pub use log::{LogHandle, LogMode, LogSink, RecordSink};
pub use record::Record;
