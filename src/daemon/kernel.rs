//! Instant detection in the loop: the kernel's events make the daemon poll at once, and a
//! socket they announced that closed before any poll saw it is recorded from what the
//! event carried: a short-lived listener (`EVENT_SOURCE=ebpf`, `LISTEN_LIFETIME_MS`).
//!
//! The snapshot stays the truth for what listens: an event never makes a listener by
//! itself while its socket is there for a poll to see.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::Daemon;
use crate::model::instant::{KernelEvent, Sightings, Wants};
use crate::model::{Event, EventKind, Inode, Listener, Now, Owner, Pid, Process, Protocol};
use crate::sink::record::{Record, priority};
use crate::source::instant::KernelProbe;
use crate::source::netns::Scope;

/// The most short-lived listeners recorded after one poll; more are counted and said in
/// one record (a flood must not become a flood of records).
pub const SHORT_LIVED_PER_POLL: usize = 1000;

/// Processes kept from the moment of their events (a process that exits before its
/// listener is judged is still named in full): at most this many,
const PROCESSES_KEPT: usize = 1024;
/// for this long, or while a socket of theirs waits for a poll.
const PROCESSES_FOR: Duration = Duration::from_secs(10);

/// Instant detection as the daemon was given it.
#[derive(Debug)]
pub enum InstantDetection {
    /// `instant = "off"`.
    Off,
    /// Loaded and attached.
    On(Box<KernelProbe>),
    /// Asked for, and refused: why.
    Refused(String),
}

/// Counts of what the kernel's events did, for the status line and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    pub events: u64,
    /// Polls run at once because of an event.
    pub triggered_polls: u64,
    /// Listeners recorded that no poll saw.
    pub short_lived: u64,
    /// Events the kernel had no room for in the ring buffer.
    pub lost: u64,
}

/// What the daemon keeps of the kernel's events between polls.
#[derive(Debug, Default)]
pub struct KernelWatch {
    sightings: Sightings,
    batch: Vec<KernelEvent>,
    /// Processes read when their events arrived, by pid and start, with when: kept
    /// [`PROCESSES_FOR`] (a program that binds again and again is read once), and while a
    /// socket of theirs waits for a poll.
    processes: HashMap<(u32, u64), (Arc<Process>, std::time::Instant)>,
    pub stats: KernelStats,
    /// Losses as last said, in [`Daemon::say_losses`]'s order, and when: said at most
    /// once every 10 s.
    said: [u64; 5],
    said_at: Option<std::time::Instant>,
    /// Short-lived listeners beyond [`SHORT_LIVED_PER_POLL`] at one poll, not recorded.
    pub flood_skipped: u64,
    /// Short-lived UDP sockets on ephemeral ports the policy allows (clients that bound
    /// port 0 and sent), not recorded.
    pub clients_skipped: u64,
    /// Whether the loop waits on the kernel's events.
    on: bool,
}

impl KernelWatch {
    /// `; instant detection: 12 events, 3 polls asked for, 1 short-lived listener(s), 0
    /// lost`, for the record that ends a run; empty when it was not on.
    pub fn summary(&self) -> String {
        if !self.on {
            return String::new();
        }
        let s = &self.stats;
        format!(
            "; instant detection: {} events, {} polls asked for, {} short-lived listener(s) recorded, {} UDP client(s) not, {} announced but never seen by a poll nor closed, {} lost",
            s.events,
            s.triggered_polls,
            s.short_lived,
            self.clients_skipped,
            self.sightings.unconfirmed,
            s.lost
        )
    }
}

/// How many polls the kernel's events may ask for at once; then one per gap.
pub const TRIGGER_BURST: u32 = 10;

/// When a poll the kernel's events ask for may run: at once while a burst's worth of
/// them is unspent, else one per gap (a token bucket). Sparse events are polled at once;
/// a flood costs at most [`TRIGGER_BURST`] polls, then one per gap.
#[derive(Debug)]
pub(super) struct TriggerBudget {
    gap: Duration,
    tokens: u32,
    since: tokio::time::Instant,
}

impl TriggerBudget {
    pub(super) fn new(gap: Duration, now: tokio::time::Instant) -> TriggerBudget {
        TriggerBudget {
            gap: gap.max(Duration::from_millis(1)),
            tokens: TRIGGER_BURST,
            since: now,
        }
    }

    fn refill(&mut self, now: tokio::time::Instant) {
        while self.tokens < TRIGGER_BURST && now >= self.since + self.gap {
            self.tokens += 1;
            self.since += self.gap;
        }
        if self.tokens == TRIGGER_BURST {
            self.since = now;
        }
    }

    /// When the poll asked for now may run.
    pub(super) fn when(&mut self, now: tokio::time::Instant) -> tokio::time::Instant {
        self.refill(now);
        if self.tokens > 0 {
            now
        } else {
            self.since + self.gap
        }
    }

    /// The interval changed (a reload): tokens come back at the new pace from now on.
    pub(super) fn set_gap(&mut self, gap: Duration, now: tokio::time::Instant) {
        self.refill(now);
        self.gap = gap.max(Duration::from_millis(1));
    }

    /// A poll asked for runs.
    pub(super) fn spend(&mut self, now: tokio::time::Instant) {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(1);
    }
}

/// `CLOCK_BOOTTIME`, the kernel's clock for events.
fn boottime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The moment a kernel timestamp names, on the daemon's clocks.
fn moment(at_ns: u64, now_ns: u64, now: Now) -> Now {
    let ago = Duration::from_nanos(now_ns.saturating_sub(at_ns));
    Now {
        at: now.at.checked_sub(ago).unwrap_or(now.at),
        wall: now.wall.checked_sub(ago).unwrap_or(now.wall),
    }
}

/// Clock ticks after boot, as `/proc/PID/stat` counts a process's start.
fn start_ticks(start_ns: u64) -> u64 {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    start_ns / (1_000_000_000 / hz)
}

impl Daemon {
    /// The kernel's event source, for the loop to wait on; `None` without one.
    pub(super) fn take_probe(&mut self) -> Option<AsyncFd<KernelProbe>> {
        match self.instant.take()? {
            // `new` is deprecated for `register`, which is `unsafe` because a registered
            // descriptor must outlive its registration: here the AsyncFd owns the probe,
            // and so the ring buffer's descriptor, for as long as it is registered.
            #[allow(deprecated)]
            InstantDetection::On(probe) => match AsyncFd::new(*probe) {
                Ok(fd) => {
                    self.kernel.on = true;
                    Some(fd)
                }
                Err(e) => {
                    let message = format!(
                        "instant detection unavailable: cannot wait on its ring buffer: {e}"
                    );
                    self.outputs.send(priority::WARNING, message);
                    None
                }
            },
            _ => None,
        }
    }

    /// The ring buffer is readable: what the kernel said is read. `Some(true)` when it
    /// asks for a poll; `None` when the ring buffer cannot be waited on any more (said
    /// once; the polls go on alone).
    pub(super) fn ring_ready(
        &mut self,
        ready: std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, KernelProbe>>,
    ) -> Option<bool> {
        match ready {
            Ok(mut ready) => {
                let (wants, more) = self.heard(ready.get_inner_mut());
                if !more {
                    ready.clear_ready();
                }
                Some(wants)
            }
            Err(e) => {
                self.kernel_lost(&e);
                None
            }
        }
    }

    /// The ring buffer cannot be waited on any more: instant detection ends, said once.
    fn kernel_lost(&mut self, e: &std::io::Error) {
        self.kernel.on = false;
        self.outputs.fleet.instant_refused();
        let interval = humantime::format_duration(self.interval());
        let message = format!(
            "instant detection stopped: cannot wait on its ring buffer: {e}; polling every {interval} alone"
        );
        self.outputs.send(priority::WARNING, message);
    }

    /// The time between two polls that events ask for, once a burst of them is spent: a
    /// tenth of the interval, at most 100 ms.
    pub(super) fn trigger_gap(&self) -> Duration {
        (self.interval() / 10).min(Duration::from_millis(100))
    }

    /// Reads what the kernel said: sightings noted, each new process read while it may
    /// still run. Returns whether a poll is wanted, and whether more records wait.
    pub fn heard(&mut self, probe: &mut KernelProbe) -> (bool, bool) {
        let mut batch = std::mem::take(&mut self.kernel.batch);
        let more = probe.drain(&mut batch);
        self.kernel.stats.lost = probe.lost();
        let mut wants = false;
        for e in batch.drain(..) {
            // With `namespaces = "host"`, other namespaces are not the daemon's to watch;
            // a process outside its PID namespace (pid 0 in the event) is not in its world
            // at all (a daemon in a container must not report its host).
            let outside = e.happened.opens() && e.pid == 0;
            if outside
                || self.config.daemon.namespaces == Scope::Host && !self.host.netns(e.netns).host
            {
                continue;
            }
            if e.happened.opens() {
                self.poller.heard_of_namespace(e.netns);
            }
            let w = &mut self.kernel;
            w.stats.events += 1;
            let who = (e.pid, e.start_ns);
            if e.happened.opens()
                && !w.processes.contains_key(&who)
                && w.processes.len() < PROCESSES_KEPT
                && let Some(p) = self.poller.process(Pid(e.pid), start_ticks(e.start_ns))
            {
                let now = std::time::Instant::now();
                self.kernel.processes.insert(who, (p, now));
            }
            wants |= self.kernel.sightings.note(e) == Wants::Poll;
        }
        self.kernel.batch = batch;
        (wants, more)
    }

    /// After a look at the socket table, with the events it caused: sightings the table
    /// has are the poll's (its records say the kernel announced them, and the closing
    /// ones how long they listened); those that closed unseen are recorded now, appended
    /// to `events`. Losses are said once each.
    pub(super) fn settle_sightings(&mut self, events: &mut Vec<Arc<Event>>) {
        self.say_losses();
        if self.kernel.sightings.is_idle() {
            self.forget_processes();
            return;
        }
        let sockets = self.poller.sockets();
        let inodes: HashSet<Inode> = sockets
            .iter()
            .filter(|s| s.protocol == Protocol::Tcp)
            .map(|s| s.inode)
            .collect();
        // UDP sockets by their cookie where the source gives it (sock_diag): two sockets
        // may share an address and port (`SO_REUSEADDR`), and a short-lived one beside a
        // lasting one must not pass for it. By place where it does not (`/proc/net`).
        let cookies: HashSet<u64> = sockets
            .iter()
            .filter(|s| s.protocol.is_datagram() && s.cookie != 0)
            .map(|s| s.cookie)
            .collect();
        let places: HashSet<(u64, Protocol, IpAddr, u16)> = sockets
            .iter()
            .filter(|s| s.protocol.is_datagram() && s.cookie == 0)
            .map(|s| (s.netns, s.protocol, s.address, s.port))
            .collect();
        let now_ns = boottime_ns();
        // A closed listener's record comes within the grace and two polls of its close.
        let keep = self.config.daemon.restart_grace + 2 * self.interval() + Duration::from_secs(1);
        self.kernel.sightings.keep_closed_ns =
            Some(u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX));
        let gone = self
            .kernel
            .sightings
            .resolve(now_ns, &|e| match e.protocol {
                Protocol::Tcp => inodes.contains(&Inode(e.key)),
                _ => {
                    cookies.contains(&e.key)
                        || places.contains(&(e.netns, e.protocol, e.address, e.port))
                }
            });
        self.annotate(events);
        let now = super::now();
        let mut recorded = 0;
        let mut ranges = HashMap::new();
        for s in gone {
            let l = self.listener_of(&s.opened);
            if self.is_udp_client_noise(&l, &mut ranges) {
                self.kernel.clients_skipped += 1;
                continue;
            }
            if recorded == SHORT_LIVED_PER_POLL {
                self.kernel.flood_skipped += 1;
                continue;
            }
            let closed = s.closed_ns.unwrap_or(now_ns);
            let times = (
                moment(s.opened.at_ns, now_ns, now),
                moment(closed, now_ns, now),
            );
            let (tracker, c) = self.tracker_and_classifier();
            let before = events.len();
            tracker.short_lived(times, l, &|l| c.classify(l), events);
            // Only what was recorded counts: the lives of a flapping listener are folded
            // (counted by the tracker) and cost no record.
            recorded += usize::from(events.len() > before);
        }
        self.kernel.stats.short_lived += recorded as u64;
        self.forget_processes();
    }

    /// Processes read more than [`PROCESSES_FOR`] ago whose sockets no longer wait.
    fn forget_processes(&mut self) {
        let w = &mut self.kernel;
        if w.processes.is_empty() {
            return;
        }
        let waiting: HashSet<(u32, u64)> = w
            .sightings
            .pending_events()
            .map(|e| (e.pid, e.start_ns))
            .collect();
        w.processes
            .retain(|who, (_, at)| at.elapsed() < PROCESSES_FOR || waiting.contains(who));
    }

    /// Marks the poll's events of listeners the kernel announced.
    fn annotate(&mut self, events: &mut [Arc<Event>]) {
        for e in events.iter_mut() {
            let closing = e.detail.as_deref() == Some("listener closed")
                && matches!(e.kind, EventKind::ListenerClosed | EventKind::AlertCleared);
            if let Some(a) = self.kernel.sightings.announced(&e.listener, closing) {
                Arc::make_mut(e).announced = Some(a);
            }
        }
    }

    /// Listeners the look found whose owner it could not read (the process was exiting,
    /// say), which a kernel event announced: owned by the process that listened, as the
    /// event names it. The kernel, not the process, says who that was.
    pub(super) fn owners_from_events(&self, listeners: &mut [Listener]) {
        for l in listeners.iter_mut() {
            if l.owner.process().is_some() {
                continue;
            }
            let Some(e) = self.kernel.sightings.announcing(l) else {
                continue;
            };
            let process = self.process_of(e);
            l.pids = vec![process.pid];
            l.owner = Owner::Process(process);
        }
    }

    /// A UDP socket on a port of the ephemeral range, which the policy allows: a client
    /// that bound port 0 and sent without connecting. Its short life is not recorded (a
    /// resolver would write one every query); one the policy alerts on always is.
    /// `ranges`: each namespace's ephemeral range, read once per settling.
    fn is_udp_client_noise(&self, l: &Listener, ranges: &mut HashMap<u64, (u16, u16)>) -> bool {
        if !l.protocol.is_datagram() {
            return false;
        }
        let (low, high) = *ranges
            .entry(l.netns)
            .or_insert_with(|| self.host.ephemeral_ports(l.netns));
        if !(low..=high).contains(&l.port) {
            return false;
        }
        let c = crate::model::Classifier {
            registry: &self.registry,
            policy: &self.config.policy,
            host: &*self.host,
        };
        !c.classify(l).verdict.alert
    }

    /// The listener an event announced, with what the event carried: the process as read
    /// when the event arrived if it was still running, else its pid, name, uid and the
    /// program file (with the path only when that path is the same file here).
    fn listener_of(&self, e: &KernelEvent) -> Listener {
        Listener {
            protocol: e.protocol,
            address: e.address,
            port: e.port,
            v6only: None,
            uid: e.uid,
            inodes: match e.protocol {
                Protocol::Tcp => vec![Inode(e.key)],
                _ => Vec::new(),
            },
            pids: vec![Pid(e.pid)],
            owner: Owner::Process(self.process_of(e)),
            netns: e.netns,
            portless: None,
            zone: None,
        }
    }

    /// The process an event names: as read from `/proc` when the event arrived, if it was
    /// still running; else what the event carried.
    ///
    /// A process read while it was exiting has no exe left to read (its memory is gone
    /// before its `/proc` entry): the file the kernel saw it run stands in, with its path
    /// and the identity `stat` gives it where that path is that file here (rules compare
    /// that identity), else as the kernel named it (which no rule's file is).
    fn process_of(&self, e: &KernelEvent) -> Arc<Process> {
        let seen = || match e.exe.as_ref() {
            None => (None, None),
            Some(exe) => match self.host.exe_seen(exe) {
                Some((path, file)) => (Some(path), Some(file)),
                None => (None, Some(exe.file)),
            },
        };
        match self.kernel.processes.get(&(e.pid, e.start_ns)) {
            Some((p, _)) if p.exe_file.is_none() && e.exe.is_some() => {
                let mut p = Process::clone(p);
                (p.exe, p.exe_file) = seen();
                Arc::new(p)
            }
            Some((p, _)) => Arc::clone(p),
            None => {
                let name = String::from_utf8_lossy(&e.comm);
                let (exe, exe_file) = seen();
                Arc::new(Process {
                    pid: Pid(e.pid),
                    name_lossy: matches!(name, std::borrow::Cow::Owned(_)),
                    name: name.into_owned(),
                    exe,
                    exe_file,
                    mount_ns: None,
                    cmdline: Vec::new(),
                    uid: Some(e.uid),
                    user: None,
                    unit: None,
                    start_time: start_ticks(e.start_ns),
                    container: None,
                    ns_pid: None,
                })
            }
        }
    }

    /// Events lost to a full ring buffer, sightings beyond the table's room, short-lived
    /// listeners beyond what one poll records, sightings forgotten unconfirmed, and short
    /// lives folded into a flapping listener's record: said at warning, what is new since
    /// the last word, at most once every 10 s (a sustained flood is one warning every
    /// 10 s, not one a poll).
    fn say_losses(&mut self) {
        let w = &mut self.kernel;
        let now = [
            w.stats.lost,
            w.sightings.overflowed,
            w.flood_skipped,
            w.sightings.unconfirmed,
            self.tracker.short_folded,
        ];
        if now == w.said
            || w.said_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        let what = [
            "kernel events lost (the ring buffer was full)".to_owned(),
            format!(
                "announced sockets not followed (more than {} at once)",
                crate::model::instant::MAX_SIGHTINGS
            ),
            format!(
                "short-lived listeners not recorded one by one (more than {SHORT_LIVED_PER_POLL} at one poll)"
            ),
            format!(
                "announced sockets neither seen by a poll nor closed within 30 s (their close \
                 lost, or in a namespace the daemon cannot find or read){}",
                named_last(&std::mem::take(&mut w.sightings.last_unconfirmed))
            ),
            "short lives of listeners not recorded one by one (each had one recorded less \
             than restart_grace before: flapping)"
                .to_owned(),
        ];
        let parts: Vec<String> = (now.iter().zip(w.said).zip(what))
            .filter(|((n, said), _)| **n > *said)
            .map(|((n, said), what)| format!("{} {what}", n - said))
            .collect();
        w.said = now;
        w.said_at = Some(std::time::Instant::now());
        let message = format!(
            "instant detection: {}; the polls still see what stays open",
            parts.join("; ")
        );
        self.outputs.send(priority::WARNING, message);
    }

    /// The record that says whether instant detection runs, and if not, why.
    pub(super) fn instant_note(&self, instant: &InstantDetection) -> Record {
        let interval = humantime::format_duration(self.interval());
        let (priority, message) = match instant {
            InstantDetection::Off => (
                priority::INFO,
                format!(
                    "instant detection off (daemon.instant = \"off\"): polling every {interval}"
                ),
            ),
            InstantDetection::Refused(why) => (
                priority::WARNING,
                format!("instant detection unavailable: {why}; polling every {interval} as before"),
            ),
            InstantDetection::On(probe) => match &probe.udp_refused {
                None => (
                    priority::INFO,
                    "instant detection on: the kernel reports TCP listens and UDP binds (eBPF)"
                        .to_owned(),
                ),
                Some(why) => (
                    priority::WARNING,
                    format!(
                        "instant detection for TCP only: UDP binds are seen by the polls alone: {why}"
                    ),
                ),
            },
        };
        Record::plain(priority, None, message)
    }
}

/// `, the last: A; B`, naming the sockets forgotten last.
fn named_last(forgotten: &[KernelEvent]) -> String {
    if forgotten.is_empty() {
        return String::new();
    }
    let named: Vec<String> = forgotten.iter().map(announced_as).collect();
    format!(", the last: {}", named.join("; "))
}

/// What the kernel said of an announced socket, for a warning: `867/tcp on 0.0.0.0 in
/// netns:4026532301 by pid 4242 (python3, uid 1000)`.
fn announced_as(e: &KernelEvent) -> String {
    let comm = String::from_utf8_lossy(&e.comm);
    format!(
        "{}/{} on {} in netns:{} by pid {} ({}, uid {})",
        e.port,
        e.protocol,
        e.address,
        e.netns,
        e.pid,
        crate::text::escape_control(&comm),
        e.uid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_events_poll_at_once_and_a_flood_one_per_gap_after_a_burst() {
        let t0 = tokio::time::Instant::now();
        let gap = Duration::from_millis(100);
        let mut b = TriggerBudget::new(gap, t0);
        let ms = |n| t0 + Duration::from_millis(n);
        // A flood: the burst at once, then one per gap.
        for _ in 0..TRIGGER_BURST {
            assert_eq!(b.when(t0), t0);
            b.spend(t0);
        }
        assert_eq!(b.when(t0), ms(100));
        b.spend(ms(100));
        assert_eq!(b.when(ms(100)), ms(200));
        // Quiet for a second: the burst is back, and a lone event is polled at once.
        assert_eq!(b.when(ms(1300)), ms(1300));
        for _ in 0..TRIGGER_BURST {
            b.spend(ms(1300));
        }
        assert_eq!(b.when(ms(1300)), ms(1400));
    }

    #[test]
    fn a_reload_to_a_longer_interval_spaces_a_flood_out_at_the_new_gap() {
        let t0 = tokio::time::Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = TriggerBudget::new(Duration::from_millis(20), t0);
        for _ in 0..TRIGGER_BURST {
            b.spend(t0);
        }
        assert_eq!(b.when(t0), ms(20));
        b.set_gap(Duration::from_millis(100), t0);
        assert_eq!(b.when(t0), ms(100));
    }
}
