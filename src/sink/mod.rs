//! Where records and events go: the log (journald or stderr), the event socket, the desktop.
//!
//! Each sink has its own bounded queue and its own thread or task, so a slow or broken sink
//! never holds up polling, and the log record of every event is written whatever the other
//! sinks do.

pub mod desktop;
pub mod log;
pub mod record;
pub mod socket;

pub use log::{LogHandle, LogMode, LogSink};
pub use record::Record;
