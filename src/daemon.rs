//! The daemon: tick → snapshot → attribute new inodes → diff → classify → dispatch.
//!
//! A thin shell around the pure core ([`Tracker`], [`Policy`]): it owns the OS edges
//! (socket source, `/proc`, state file, sinks), the clock and the signals. The steady path
//! — nothing changed since the last poll — is one kernel-filtered dump per family and
//! protocol and a comparison of sorted inode lists: no `/proc` work, no grouping, no diff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::MissedTickBehavior;

use crate::cmd::Failure;
use crate::config::{self, Config};
use crate::model::wire::WireEvent;
use crate::model::{Event, EventKind, Inode, Socket, Timing, Tracker, group_listeners};
use crate::registry::{Origin, Registry};
use crate::sink::desktop::Desktop;
use crate::sink::record::{message_id, priority};
use crate::sink::socket::{self, Hub};
use crate::sink::{LogMode, LogSink, Record};
use crate::source::{self, Attributor, KernelSource, SocketSource, SourceMode, SysinfoDetails};
use crate::state::{self, StateStore};

/// What `portsentinel run` was asked for on its command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub interval: Option<Duration>,
    pub log: Option<LogMode>,
    pub proc_root: Option<PathBuf>,
}

/// Poll timing, for STATUS= and the "late" warning.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub polls: u64,
    pub last_duration: Duration,
    pub max_duration: Duration,
    /// How far behind its schedule the latest poll started.
    pub last_late: Duration,
    pub max_late: Duration,
    pub events: u64,
}

pub struct Daemon {
    options: RunOptions,
    config: Config,
    registry: Registry,
    source: KernelSource,
    attributor: Attributor<SysinfoDetails>,
    tracker: Tracker,
    netns: Option<u64>,
    state: StateStore,
    state_failing: bool,
    log: LogSink,
    hub: Option<Arc<Hub>>,
    desktop: Option<tokio::sync::mpsc::Sender<WireEvent>>,
    desktop_dropped: u64,
    /// Events for the event socket and the desktop, delivered by [`Daemon::deliver`].
    outbox: Vec<WireEvent>,
    sockets: Vec<Socket>,
    inodes: Vec<Inode>,
    previous_inodes: Vec<Inode>,
    events: Vec<Event>,
    source_failing: bool,
    pub stats: PollStats,
    last_late_warning: Option<Instant>,
    /// When to give a flood's memory back.
    trim: crate::memory::TrimAfterDrop,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn timing(config: &Config) -> Timing {
    Timing {
        restart_grace: config.daemon.restart_grace,
        realert_after: config.daemon.realert_after,
    }
}

fn describe_config(config: &Config, registry: &Registry) -> String {
    let file = config.file.as_ref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    let registry = match registry.origin() {
        Origin::BuiltIn => "built-in IANA registry".to_owned(),
        Origin::File(p) => format!("IANA registry {}", p.display()),
    };
    let alert_on: Vec<&str> = config.policy.alert_on.iter().map(|c| c.as_str()).collect();
    format!(
        "config {file}: alert_on [{}], {} allow rule(s), {registry}, interval {}",
        alert_on.join(", "),
        config.policy.allow.len(),
        humantime::format_duration(config.daemon.interval)
    )
}

impl Daemon {
    /// Loads the config and opens every edge. A bad config is the only fatal error.
    pub fn start(options: RunOptions) -> Result<Daemon, Failure> {
        let mut config = config::load_or_default(options.config.as_deref())?;
        if let Some(i) = options.interval {
            config.daemon.interval = i;
        }
        let registry = config.registry()?;
        let log = LogSink::start(options.log.unwrap_or(config.daemon.log));
        let proc_root = source::proc_root(options.proc_root.as_deref());
        let details = SysinfoDetails::new(&proc_root).map_err(Failure::Unavailable)?;
        let netns = source::netns_inode(&proc_root);
        let state_dir = config
            .daemon
            .state_directory
            .clone()
            .unwrap_or_else(state::default_dir);
        let state = StateStore::new(state_dir, state::boot_id(&proc_root), netns);
        let restored = match ensure_dir(&state.dir).and_then(|()| state.load()) {
            Ok(r) => r,
            Err(e) => {
                log.send(Record::plain(
                    priority::WARNING,
                    None,
                    format!("state: {e}"),
                ));
                Vec::new()
            }
        };
        let tracker = Tracker::new(timing(&config), restored);
        log.send(Record::plain(
            priority::INFO,
            None,
            format!(
                "portsentinel {} starting: {}; state in {}; log {}",
                env!("CARGO_PKG_VERSION"),
                describe_config(&config, &registry),
                state.dir.display(),
                log.mode().as_str()
            ),
        ));
        Ok(Daemon {
            source: KernelSource::new(&proc_root, SourceMode::Auto),
            attributor: Attributor::new(&proc_root, details),
            options,
            config,
            registry,
            tracker,
            netns,
            state,
            state_failing: false,
            log,
            hub: None,
            desktop: None,
            desktop_dropped: 0,
            outbox: Vec::new(),
            sockets: Vec::new(),
            inodes: Vec::new(),
            previous_inodes: Vec::new(),
            events: Vec::new(),
            source_failing: false,
            stats: PollStats::default(),
            last_late_warning: None,
            trim: crate::memory::TrimAfterDrop::default(),
        })
    }

    pub fn interval(&self) -> Duration {
        self.config.daemon.interval
    }

    /// One poll. `scheduled` is when it should have started (for the lateness figure).
    pub fn poll(&mut self, scheduled: Instant) {
        let started = Instant::now();
        let late = started.saturating_duration_since(scheduled);
        match self.source.listeners(&mut self.sockets) {
            Ok(backend) => {
                if self.source_failing {
                    self.source_failing = false;
                    self.log.send(Record::plain(
                        priority::NOTICE,
                        None,
                        format!(
                            "listening sockets readable again (from {})",
                            backend.as_str()
                        ),
                    ));
                }
            }
            Err(e) => {
                // Without a snapshot nothing can be said: keep the last known state rather
                // than report every listener closed.
                if !self.source_failing {
                    self.source_failing = true;
                    self.log.send(Record::plain(
                        priority::ERR,
                        None,
                        format!("cannot read listening sockets: {e}; retrying every poll"),
                    ));
                }
                return;
            }
        }

        // The kernel walks an unchanged socket table in the same order every time, so the
        // inodes in dump order, equal to the last poll's, mean nothing changed; no sort
        // needed. Should the order move with the set unchanged (a hash table resized), the
        // poll takes the full path below and finds no event.
        self.inodes.clear();
        self.inodes.extend(self.sockets.iter().map(|s| s.inode));
        let unchanged = self.stats.polls > 0 && self.inodes == self.previous_inodes;
        if !unchanged || self.tracker.has_pending() {
            self.attributor.attribute(&self.sockets);
            let listeners = group_listeners(&self.sockets, |s| self.attributor.owner_of(s), false);
            let (policy, registry) = (&self.config.policy, &self.registry);
            self.tracker.update(
                started,
                listeners,
                &|l| policy.judge(registry, l),
                &mut self.events,
            );
            // Queued events count as held memory until they are dispatched.
            self.trim
                .note(self.tracker.listener_count() + self.events.len());
            self.dispatch();
        }
        if self.trim.observe(self.tracker.listener_count(), 1024) {
            crate::memory::release_free_memory();
        }
        std::mem::swap(&mut self.inodes, &mut self.previous_inodes);

        let took = started.elapsed();
        let s = &mut self.stats;
        s.polls += 1;
        s.last_duration = took;
        s.max_duration = s.max_duration.max(took);
        s.last_late = late;
        s.max_late = s.max_late.max(late);
        let interval = self.config.daemon.interval;
        if late > interval
            && self
                .last_late_warning
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_late_warning = Some(Instant::now());
            self.log.send(Record::plain(
                priority::WARNING,
                None,
                format!(
                    "poll started {} ms late (interval {} ms): the machine is overloaded",
                    late.as_millis(),
                    interval.as_millis()
                ),
            ));
        }
    }

    /// Sends the queued events to every sink, and saves the state when alerts changed.
    fn dispatch(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut alerts_changed = false;
        for e in self.events.drain(..) {
            alerts_changed |= matches!(e.kind, EventKind::AlertRaised | EventKind::AlertCleared);
            self.stats.events += 1;
            // The journal record first: it is written whatever the other sinks do.
            self.log
                .send(Record::from_event(&e, &self.registry, self.netns, now));
            if self.hub.is_some() || self.desktop.is_some() {
                self.outbox
                    .push(WireEvent::new(&e, &self.registry, self.netns, now));
            }
        }
        // An inventory of thousands must not pin its memory for the daemon's lifetime.
        if self.events.capacity() > 1024 {
            self.events.shrink_to(64);
        }
        if alerts_changed {
            self.save_state();
        }
    }

    /// Hands the queued events to subscribers and the desktop, a slice at a time, letting
    /// the subscribers' tasks write in between: a burst of thousands of events reaches a
    /// subscriber that reads, instead of overflowing its queue in one go.
    pub async fn deliver(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        // A subscriber that makes no room for 250 ms is dropped, and a burst waits for
        // subscribers at most one interval in all: the polls stay within twice their
        // interval.
        let mut budget = self.config.daemon.interval;
        // Small enough that a subscriber which reads keeps up between two slices.
        let slice = self
            .hub
            .as_ref()
            .map_or(128, |h| (h.capacity() / 2).clamp(1, 128));
        let outbox = std::mem::take(&mut self.outbox);
        for (i, wire) in outbox.into_iter().enumerate() {
            if let Some(tx) = &self.desktop
                && tx.try_send(wire.clone()).is_err()
            {
                // The journal has every event; the desktop may miss some in a flood.
                self.desktop_dropped += 1;
                if self.desktop_dropped.is_power_of_two() {
                    self.log.send(Record::plain(
                        priority::WARNING,
                        None,
                        format!(
                            "desktop notifications fell behind: {} event(s) not shown",
                            self.desktop_dropped
                        ),
                    ));
                }
            }
            if let Some(hub) = &self.hub {
                let patience = budget.min(Duration::from_millis(250));
                budget = budget.saturating_sub(hub.publish(wire, patience).await);
            }
            if (i + 1) % slice == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    pub fn save_state(&mut self) {
        match self
            .state
            .save(self.tracker.active_alerts().map(|(k, l, _)| (k, l)))
        {
            Ok(()) => {
                if self.state_failing {
                    self.state_failing = false;
                    self.log.send(Record::plain(
                        priority::NOTICE,
                        None,
                        "state saved again".into(),
                    ));
                }
            }
            Err(e) => {
                if !self.state_failing {
                    self.state_failing = true;
                    self.log.send(Record::plain(
                        priority::ERR,
                        None,
                        format!("{e}; monitoring continues, but a restart may repeat alerts"),
                    ));
                }
            }
        }
    }

    /// SIGHUP: load the config again; apply it and re-judge every listener, or keep the
    /// running one and say why at priority err.
    pub fn reload(&mut self) {
        let loaded = config::load_or_default(self.options.config.as_deref()).and_then(|mut c| {
            if let Some(i) = self.options.interval {
                c.daemon.interval = i;
            }
            let r = c.registry()?;
            Ok((c, r))
        });
        match loaded {
            Err(e) => {
                let mut r = Record::plain(
                    priority::ERR,
                    Some(message_id::CONFIG_REJECTED),
                    format!("config reload rejected, the running config stays in force: {e}"),
                );
                r.fields.push(("CONFIG_ERROR", e.to_string()));
                self.log.send(r);
            }
            Ok((config, registry)) => {
                let mut later = Vec::new();
                if config.daemon.log != self.config.daemon.log && self.options.log.is_none() {
                    later.push("daemon.log");
                }
                if config.daemon.state_directory != self.config.daemon.state_directory {
                    later.push("daemon.state_directory");
                }
                if config.events != self.config.events {
                    later.push("[events]");
                }
                if config.notify != self.config.notify {
                    later.push("[notify]");
                }
                let note = if later.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; changes to {} take effect at the next restart",
                        later.join(", ")
                    )
                };
                self.config = config;
                self.registry = registry;
                self.tracker.set_timing(timing(&self.config));
                self.log.send(Record::plain(
                    priority::NOTICE,
                    Some(message_id::CONFIG_RELOADED),
                    format!(
                        "config reloaded: {}{note}",
                        describe_config(&self.config, &self.registry)
                    ),
                ));
                let (policy, registry) = (&self.config.policy, &self.registry);
                self.tracker.rejudge(
                    Instant::now(),
                    &|l| policy.judge(registry, l),
                    &mut self.events,
                );
                self.dispatch();
            }
        }
    }

    /// Opens the event socket (when configured) and returns its accept loop to spawn.
    /// Failure is a warning: the daemon works without it.
    pub fn open_event_socket(&mut self) -> Option<impl std::future::Future<Output = ()> + use<>> {
        let path = self.config.events.socket.clone()?;
        let hub = Arc::new(Hub::new(self.config.events.buffer, self.log.handle()));
        match socket::bind(&path, self.config.events.group.as_deref()) {
            Ok((listener, warning)) => {
                let who = match (&warning, self.config.events.group.as_deref()) {
                    (None, Some(g)) => format!("root and group {g}"),
                    _ => "root only".to_owned(),
                };
                if let Some(w) = warning {
                    self.log.send(Record::plain(priority::WARNING, None, w));
                }
                self.log.send(Record::plain(
                    priority::INFO,
                    None,
                    format!("event socket {} open to {who}", path.display()),
                ));
                self.hub = Some(hub.clone());
                Some(socket::serve(listener, hub))
            }
            Err(e) => {
                self.log.send(Record::plain(
                    priority::WARNING,
                    None,
                    format!("no event socket: {e}; desktop agents cannot subscribe, monitoring continues"),
                ));
                None
            }
        }
    }

    /// With `[notify] desktop = true`: the task that shows notifications itself.
    pub fn open_desktop(&mut self) -> Option<impl std::future::Future<Output = ()> + use<>> {
        if !self.config.notify.desktop {
            return None;
        }
        // Room for a flood of alerts: the planner folds them into one summary anyway.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WireEvent>(16 * 1024);
        self.desktop = Some(tx);
        let mut desktop = Desktop::new(self.config.notify.burst_window);
        Some(async move {
            loop {
                let due = desktop.next_flush();
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => {
                            desktop.plan(&e);
                            while let Ok(more) = rx.try_recv() {
                                desktop.plan(&more);
                            }
                            desktop.flush().await;
                        }
                        None => return,
                    },
                    _ = crate::sink::desktop::until(due), if due.is_some() => desktop.flush().await,
                }
            }
        })
    }

    /// Listeners and active alerts.
    pub fn counts(&self) -> (usize, usize) {
        (self.tracker.listener_count(), self.tracker.alert_count())
    }

    pub fn status_line(&self) -> String {
        format!(
            "{} listener(s), {} alert(s); poll every {} ms, last took {:.1} ms, max late {} ms",
            self.tracker.listener_count(),
            self.tracker.alert_count(),
            self.config.daemon.interval.as_millis(),
            self.stats.last_duration.as_secs_f64() * 1000.0,
            self.stats.max_late.as_millis()
        )
    }

    pub fn stop(&mut self) {
        self.save_state();
        self.log.send(Record::plain(
            priority::INFO,
            None,
            format!("portsentinel stopping: {}", self.status_line()),
        ));
        self.log.close();
    }
}

fn ensure_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create {}: {e}; alerts will not survive a restart",
            dir.display()
        )
    })
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Not under systemd: NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(states);
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    // After a stall, keep the rhythm rather than fire a burst of catch-up polls.
    t.set_missed_tick_behavior(MissedTickBehavior::Skip);
    t
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<(), Failure> {
    let mut daemon = Daemon::start(options)?;
    // Before the first poll, so an agent that connects early hears the inventory's alerts.
    let server = daemon.open_event_socket().map(tokio::spawn);
    let desktop = daemon.open_desktop().map(tokio::spawn);
    let mut hup = signal(SignalKind::hangup()).map_err(anyhow::Error::from)?;
    let mut term = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let mut int = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let mut poll = ticker(daemon.interval());
    let watchdog_period = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut watchdog = ticker(watchdog_period.unwrap_or(Duration::from_secs(3600)));
    let mut status = ticker(Duration::from_secs(10));
    let mut last_counts = (usize::MAX, usize::MAX);

    // The inventory, then READY=1: a unit that is "active" has looked at least once.
    daemon.poll(Instant::now());
    daemon.deliver().await;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&daemon.status_line()),
    ]);

    loop {
        tokio::select! {
            tick = poll.tick() => {
                daemon.poll(tick.into_std());
                daemon.deliver().await;
                // Counts changed: say so now; timing figures follow every 10 s.
                let counts = daemon.counts();
                if counts != last_counts {
                    last_counts = counts;
                    notify(&[sd_notify::NotifyState::Status(&daemon.status_line())]);
                }
            }
            _ = status.tick() => {
                notify(&[sd_notify::NotifyState::Status(&daemon.status_line())]);
            }
            _ = watchdog.tick(), if watchdog_period.is_some() => {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                let before = daemon.interval();
                daemon.reload();
                daemon.deliver().await;
                if daemon.interval() != before {
                    poll = ticker(daemon.interval());
                }
                notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&daemon.status_line())]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    for task in [server, desktop].into_iter().flatten() {
        task.abort();
    }
    daemon.stop();
    Ok(())
}
