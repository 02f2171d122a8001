//! The daemon: tick → snapshot → attribute new inodes → diff → classify → dispatch.
//!
//! A thin loop around the pure core ([`Tracker`], [`Classifier`]). Its edges are values
//! passed in ([`Edges`]): the socket source, the owner lookup, the record sink, the
//! fan-out to subscribers and the desktop, the state store and the supervisor; its
//! requests (reload, stop, a new subscriber) come down a channel. So the loop runs the
//! same in-process under virtual time as it does under systemd. Nothing a sink does is
//! awaited inside a poll's turn, and a reload's file reading runs off the loop.

mod dispatch;
mod edges;
mod fleet;
mod judge;
mod kernel;
mod poll;
mod reload;
mod status;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{Config, Layers};
use crate::model::events::AlertedListeners;
use crate::model::expect::Watch;
use crate::model::policy::Host;
use crate::model::{Classifier, Now, Timing, Tracker};
use crate::registry::Registry;
use crate::sink::record::priority;
use crate::source::instant::KernelProbe;

pub use dispatch::Outputs;
pub use edges::{DaemonError, Edges, Request};
pub use fleet::Fleet;
use kernel::KernelWatch;
pub use kernel::{InstantDetection, KernelStats, SHORT_LIVED_PER_POLL};
pub use poll::{Look, Poller};
pub use reload::RELOAD_LIMIT;
use reload::{Reloading, start_reload};
pub use status::{PollStats, SdNotify, Supervisor, status_line};

/// The daemon's state between polls.
pub struct Daemon {
    layers: Layers,
    config: Config,
    registry: Registry,
    host: Box<dyn Host + Send>,
    poller: Poller,
    tracker: Tracker,
    /// The required `[[expect]]` entries, present or missing.
    watch: Watch,
    outputs: Outputs,
    supervisor: Box<dyn Supervisor>,
    pub stats: PollStats,
    /// When to give a flood's memory back.
    trim: crate::memory::TrimAfterDrop,
    /// What the kernel's events left to settle.
    pub kernel: KernelWatch,
    /// Until the loop takes it: instant detection as opened.
    instant: Option<InstantDetection>,
    /// The next `until` of an allow rule to pass.
    next_until: Option<SystemTime>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

fn timing(config: &Config) -> Timing {
    Timing {
        restart_grace: config.daemon.restart_grace,
        realert_after: config.daemon.realert_after,
    }
}

fn now() -> Now {
    Now {
        at: Instant::now().into_std(),
        wall: SystemTime::now(),
    }
}

impl Daemon {
    /// A daemon on a loaded config, with its edges. The alerts of a previous run are read
    /// from the state store: those still present are not raised again.
    pub fn new(layers: Layers, (config, registry): (Config, Registry), edges: Edges) -> Daemon {
        let outputs = Outputs::new(edges.records, edges.delivery, edges.state, edges.fleet);
        let restored: AlertedListeners = outputs.restore();
        let mut daemon = Daemon {
            tracker: Tracker::new(timing(&config), restored),
            watch: Watch::default(),
            poller: Poller::new(edges.source, edges.owners),
            host: edges.host,
            supervisor: edges.supervisor,
            layers,
            config,
            registry,
            outputs,
            stats: PollStats::default(),
            trim: crate::memory::TrimAfterDrop::default(),
            kernel: KernelWatch::default(),
            instant: Some(edges.instant),
            next_until: None,
        };
        daemon.plan_expiry();
        daemon.poller.set_sweep(daemon.config.daemon.owner_sweep);
        daemon
    }

    /// Instant detection as opened, for the metrics: refused (or for TCP only) means
    /// the polls alone see some listens.
    fn note_instant(&mut self) {
        match &self.instant {
            Some(InstantDetection::Refused(_)) => self.outputs.fleet.instant_refused(),
            Some(InstantDetection::On(p)) if p.udp_refused.is_some() => {
                self.outputs.fleet.instant_refused()
            }
            _ => {}
        }
    }

    pub fn interval(&self) -> Duration {
        self.config.daemon.interval
    }

    /// The tracker, and how to classify what it has not seen (split borrows of `self`).
    fn tracker_and_classifier(&mut self) -> (&mut Tracker, Classifier<'_>) {
        let c = Classifier {
            registry: &self.registry,
            policy: &self.config.policy,
            host: &*self.host,
        };
        (&mut self.tracker, c)
    }

    /// One poll. `scheduled` is when it should have started (for the lateness figure).
    /// `kernel`: the kernel's events, read after the look, so that every listener the look
    /// found has its announcement read (the kernel reports a listen before the socket
    /// shows in the table).
    pub fn poll(&mut self, scheduled: Instant, kernel: Option<&mut KernelProbe>) {
        let started = Instant::now();
        let force = self.tracker.has_pending();
        let mut events = Vec::new();
        let look = self.poller.look(force, &*self.outputs.records);
        if let Some(k) = kernel {
            self.heard(k);
        }
        let (changed, failed) = (
            matches!(look, Look::Listeners(_)),
            matches!(look, Look::Failed),
        );
        if let Look::Listeners(mut listeners) = look {
            self.owners_from_events(&mut listeners);
            self.judge_holders(&mut listeners);
            let (tracker, c) = self.tracker_and_classifier();
            tracker.update(now(), listeners, &|l| c.classify(l), &mut events);
        }
        if !failed {
            // What the kernel's events announced: the poll's, or gone before it looked.
            self.settle_sightings(&mut events);
        }
        if !events.is_empty() {
            // Queued events count as held memory until they are written.
            self.trim.note(self.tracker.listener_count() + events.len());
            self.stats.events += events.len() as u64;
            let budget = self.interval();
            self.outputs.dispatch(events, &self.tracker, budget);
        }
        if changed || self.watch.pending() {
            self.check_expectations();
        }
        if self.trim.observe(self.tracker.listener_count(), 1024) {
            crate::memory::release_free_memory();
        }
        let interval = self.interval();
        self.stats
            .record(scheduled, started, interval, &*self.outputs.records);
        let backend = self.poller.backend();
        self.outputs.fleet.polled(self.stats.last_duration, backend);
        self.outputs.fleet.settle(&self.tracker);
    }

    pub fn status_line(&self) -> String {
        let (listeners, alerts) = self.counts();
        status_line(listeners, alerts, self.interval(), &self.stats)
    }

    /// Listeners and active alerts.
    pub fn counts(&self) -> (usize, usize) {
        (self.tracker.listener_count(), self.tracker.alert_count())
    }

    fn stop(&mut self) {
        self.supervisor.stopping();
        self.outputs.save_state(&self.tracker);
        let message = format!(
            "portsentinel stopping: {}{}",
            self.status_line(),
            self.kernel.summary()
        );
        self.outputs.send(priority::INFO, message);
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    // After a stall, keep the rhythm rather than fire a burst of catch-up polls.
    t.set_missed_tick_behavior(MissedTickBehavior::Skip);
    t
}

/// Runs the daemon until it is asked to stop (or every requester is gone).
pub async fn run(mut daemon: Daemon, mut requests: mpsc::Receiver<Request>) {
    // The inventory, then READY=1: a unit that is "active" has looked at least once.
    daemon.note_instant();
    daemon.poll(Instant::now(), None);
    daemon.supervisor.ready(&daemon.status_line());
    let mut poll = ticker(daemon.interval());
    poll.reset();
    let watchdog_period = daemon.supervisor.watchdog_period();
    let mut watchdog = ticker(watchdog_period.unwrap_or(Duration::from_secs(3600)));
    let mut status = ticker(Duration::from_secs(10));
    let mut last_counts = daemon.counts();
    let mut reload: Option<Reloading> = None;
    // A reload asked while one reads: the edit may be newer than that read.
    let mut reload_again = false;
    let mut kernel = daemon.take_probe();
    // A poll the kernel's events asked for: at once, unless a flood has spent the burst
    // (then one per tenth of the interval).
    let mut triggered: Option<Instant> = None;
    let mut budget = kernel::TriggerBudget::new(daemon.trigger_gap(), Instant::now());
    loop {
        let expiry = daemon.next_expiry();
        tokio::select! {
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                daemon.expired();
            }
            ready = async { kernel.as_mut().expect("guarded").readable_mut().await }, if kernel.is_some() => {
                match daemon.ring_ready(ready) {
                    Some(true) if triggered.is_none() => triggered = Some(budget.when(Instant::now())),
                    Some(_) => {}
                    None => kernel = None,
                }
            }
            _ = tokio::time::sleep_until(triggered.unwrap_or_else(Instant::now)), if triggered.is_some() => {
                triggered = None;
                let now = Instant::now();
                budget.spend(now);
                daemon.kernel.stats.triggered_polls += 1;
                daemon.poll(now, kernel.as_mut().map(AsyncFd::get_mut));
            }
            tick = poll.tick() => {
                daemon.poll(tick, kernel.as_mut().map(AsyncFd::get_mut));
                // Counts changed: say so now; timing figures follow every 10 s.
                if daemon.counts() != last_counts {
                    last_counts = daemon.counts();
                    daemon.supervisor.status(&daemon.status_line());
                }
            }
            _ = status.tick() => daemon.supervisor.status(&daemon.status_line()),
            _ = watchdog.tick(), if watchdog_period.is_some() => daemon.supervisor.watchdog(),
            result = async { reload.as_mut().expect("guarded").await }, if reload.is_some() => {
                reload = std::mem::take(&mut reload_again).then(|| start_reload(&daemon.layers));
                let before = daemon.interval();
                daemon.reloaded(result);
                if daemon.interval() != before {
                    poll = ticker(daemon.interval());
                    poll.reset();
                    budget.set_gap(daemon.trigger_gap(), Instant::now());
                }
            }
            request = requests.recv() => match request {
                Some(Request::Reload) if reload.is_some() => reload_again = true,
                Some(Request::Reload) => {
                    daemon.supervisor.reloading();
                    reload = Some(start_reload(&daemon.layers));
                }
                Some(Request::Subscribe(join)) => daemon.outputs.subscribe(join, &daemon.tracker),
                Some(Request::Stop) | None => break,
            },
        }
    }
    daemon.stop();
}
