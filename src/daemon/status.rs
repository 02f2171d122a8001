//! What the daemon tells its supervisor: readiness, reloads, the watchdog, and a `STATUS=`
//! line with counts and poll timing; the poll timing itself; and the record that opens a run.

use std::time::Duration;

use tokio::time::Instant;

use crate::sink::record::{Record, priority};
use crate::sink::{LogMode, RecordSink};

/// What the daemon tells systemd (`sd_notify`); tests collect it instead.
pub trait Supervisor: Send {
    fn ready(&self, status: &str);
    fn reloading(&self);
    fn status(&self, status: &str);
    fn watchdog(&self);
    fn stopping(&self);
    /// Half the watchdog interval systemd asked for, if it asked.
    fn watchdog_period(&self) -> Option<Duration>;
}

/// The real supervisor: `sd_notify` on `$NOTIFY_SOCKET`, which does nothing when systemd
/// did not start the daemon.
#[derive(Debug, Default, Clone, Copy)]
pub struct SdNotify;

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

impl Supervisor for SdNotify {
    fn ready(&self, status: &str) {
        use sd_notify::NotifyState::{Ready, Status};
        notify(&[Ready, Status(status)]);
    }
    fn reloading(&self) {
        notify(&[sd_notify::NotifyState::Reloading]);
    }
    fn status(&self, status: &str) {
        notify(&[sd_notify::NotifyState::Status(status)]);
    }
    fn watchdog(&self) {
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
    fn stopping(&self) {
        notify(&[sd_notify::NotifyState::Stopping]);
    }
    fn watchdog_period(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }
}

/// Poll timing, for `STATUS=` and the "late" warning.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub polls: u64,
    pub last_duration: Duration,
    pub max_duration: Duration,
    /// How far behind its schedule the latest poll started.
    pub last_late: Duration,
    pub max_late: Duration,
    pub events: u64,
    last_late_warning: Option<Instant>,
}

impl PollStats {
    /// Counts one poll that should have started at `scheduled`, started at `started` and
    /// took until now. A poll that starts more than an interval late is said at warning,
    /// at most once a minute.
    pub fn record(
        &mut self,
        scheduled: Instant,
        started: Instant,
        interval: Duration,
        records: &dyn RecordSink,
    ) {
        let late = started.saturating_duration_since(scheduled);
        let took = started.elapsed();
        self.polls += 1;
        self.last_duration = took;
        self.max_duration = self.max_duration.max(took);
        self.last_late = late;
        self.max_late = self.max_late.max(late);
        if late > interval
            && self
                .last_late_warning
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_late_warning = Some(Instant::now());
            let message = format!(
                "poll started {} ms late (interval {} ms): the machine is overloaded",
                late.as_millis(),
                interval.as_millis()
            );
            records.send(Record::plain(priority::WARNING, None, message));
        }
    }
}

/// `14 listener(s), 1 alert(s); poll every 1000 ms, last took 0.3 ms, max late 2 ms`.
pub fn status_line(listeners: usize, alerts: usize, interval: Duration, s: &PollStats) -> String {
    format!(
        "{listeners} listener(s), {alerts} alert(s); poll every {} ms, last took {:.1} ms, max late {} ms",
        interval.as_millis(),
        s.last_duration.as_secs_f64() * 1000.0,
        s.max_late.as_millis()
    )
}

impl super::Daemon {
    /// The record that opens a run: version, config, state directory, log mode.
    pub fn starting(&self, log: LogMode) {
        let message = format!(
            "portsentinel {} starting: {}; state in {}; log {}",
            env!("CARGO_PKG_VERSION"),
            self.config.describe(&self.registry),
            self.outputs.state_dir().display(),
            log.as_str()
        );
        self.outputs.send(priority::INFO, message);
        self.config_warnings();
        if let Some(instant) = &self.instant {
            self.outputs.records.send(self.instant_note(instant));
        }
    }

    /// Rules that can never match, said at warning (at the start and after a reload).
    pub(super) fn config_warnings(&self) {
        for warning in self.config.lint(&*self.host) {
            self.outputs
                .send(priority::WARNING, format!("config: {warning}"));
        }
    }
}
