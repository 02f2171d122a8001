//! From successive snapshots to events: opened, closed, restarted, alert raised/cleared.
//!
//! The [`Tracker`] keys listeners by identity (network namespace + [`ListenerKey`]: the
//! program, never the pid). A listener that disappears is not reported closed at once: it
//! waits out a grace window, and if the same program comes back on the same socket within
//! it, that is one `restarted` event, with no new alert. An alert that was raised, cleared
//! and comes back within the quiet time is not raised again (a flapping listener). Only new
//! listeners are classified; a config reload classifies them all again
//! ([`Tracker::rejudge`]).
//!
//! Pure: time comes in as an `Instant`, listeners as values, the policy as a function.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::classify::Classification;
use super::listener::{Inode, Listener, Owner, Pid};
use super::snapshot::ListenerKey;

/// What happened to a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Listening when the daemon started (the inventory).
    ListenerPresent,
    /// A new allowed listener (a new unexpected one is an `AlertRaised`).
    ListenerOpened,
    /// An allowed listener closed (an alerted one closing is an `AlertCleared`).
    ListenerClosed,
    /// The same program came back on the same socket within the grace window.
    ListenerRestarted,
    /// The same socket, another owner: the one recorded let go of it (exited, or handed
    /// it on), or one that could not be named before was found. Judged again.
    ListenerOwnerChanged,
    /// A listener the policy does not allow.
    AlertRaised,
    /// An alerted listener closed, or a config reload allowed it.
    AlertCleared,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::ListenerPresent,
        EventKind::ListenerOpened,
        EventKind::ListenerClosed,
        EventKind::ListenerRestarted,
        EventKind::ListenerOwnerChanged,
        EventKind::AlertRaised,
        EventKind::AlertCleared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ListenerPresent => "listener-present",
            EventKind::ListenerOpened => "listener-opened",
            EventKind::ListenerClosed => "listener-closed",
            EventKind::ListenerRestarted => "listener-restarted",
            EventKind::ListenerOwnerChanged => "listener-owner-changed",
            EventKind::AlertRaised => "alert-raised",
            EventKind::AlertCleared => "alert-cleared",
        }
    }

    /// The journal `MESSAGE_ID` of this kind (also in `systemd/portsentinel.catalog`).
    pub fn message_id(self) -> &'static str {
        match self {
            EventKind::AlertRaised => "72a41cfb5a384d3fb2b30ae71670a2d4",
            EventKind::AlertCleared => "6c1f78b8c548483ca17bac2de5cc91f1",
            EventKind::ListenerOpened => "0dcf950d46f843e0b92fa5fc0d864f04",
            EventKind::ListenerClosed => "7b136e655fa546a784f8b99efce4cae4",
            EventKind::ListenerRestarted => "49f933d131614fe1b4221e4540a094d5",
            EventKind::ListenerOwnerChanged => "e1d47527145a40c9bb34d62e1feb1cba",
            EventKind::ListenerPresent => "9284c68d023d4849a148696afefdebe6",
        }
    }
}

/// One thing that happened, with everything a record or a notification needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// When it was seen (wall clock, for records and the event socket).
    pub time: SystemTime,
    pub listener: Listener,
    /// Shared with the tracker's entry and every other event of this listener.
    pub class: Arc<Classification>,
    /// For `AlertCleared`: why ("listener closed", "allowed after config reload: ...").
    /// For `ListenerRestarted`: what changed.
    pub detail: Option<String>,
    /// For `ListenerRestarted`: the pid before the restart.
    pub previous_pid: Option<Pid>,
    /// For `ListenerOwnerChanged`: who held the socket before.
    pub previous_owner: Option<Owner>,
    /// True for a listener the policy does not allow whose alert is held back because it
    /// flapped within the quiet time.
    pub alert_suppressed: bool,
    /// Set when the kernel's events told of this listener (instant detection): its
    /// records say `EVENT_SOURCE=ebpf`.
    pub announced: Option<Announced>,
    /// For an alert: its line on the event socket when replayed to a new subscriber,
    /// serialized once and shared by every subscriber (filled by the event socket).
    pub replay_line: OnceLock<Arc<str>>,
}

impl Event {
    fn new(kind: EventKind, now: Now, l: &Listener, class: &Arc<Classification>) -> Event {
        Event {
            kind,
            time: now.wall,
            listener: l.clone(),
            class: Arc::clone(class),
            detail: None,
            previous_pid: None,
            previous_owner: None,
            alert_suppressed: false,
            announced: None,
            replay_line: OnceLock::new(),
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }
}

/// What the kernel's events said of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    /// How long it listened, from the kernel's own times of its opening and closing; on
    /// the records that close it, and on both records of a listener no poll saw.
    pub lifetime: Option<Duration>,
}

/// The moment of an update: the monotonic clock for grace and quiet times, the wall clock
/// for what records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub wall: SystemTime,
}

/// How the tracker treats time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a vanished listener may take to come back as the same one (a restart).
    pub restart_grace: Duration,
    /// After an alert is raised, the same listener is not alerted again for this long.
    pub realert_after: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlertState {
    None,
    Active,
    /// Not allowed, but raised within the quiet time already.
    Suppressed,
}

#[derive(Debug)]
struct Entry {
    /// The key it is filed under, shared with the socket index.
    key: Arc<ListenerKey>,
    listener: Listener,
    class: Arc<Classification>,
    alert: AlertState,
    /// While the alert is active: the event that raised it, which a new event-socket
    /// subscriber hears first.
    raised: Option<Arc<Event>>,
    /// Set while the listener is absent and within its grace window.
    gone_since: Option<Instant>,
    /// The last update that saw this listener (cheaper than a set of keys per update).
    seen_in: u64,
}

/// The listeners the daemon knows, and their alert state.
#[derive(Debug)]
pub struct Tracker {
    timing: Timing,
    /// Boxed: a table has up to twice as many slots as entries, and an empty slot then
    /// costs two pointers rather than a whole entry and its key (about 250 bytes). The key
    /// is shared with `by_inode`.
    entries: HashMap<Arc<ListenerKey>, Box<Entry>>,
    /// When each listener was last alerted, for the quiet time.
    /// Keyed by a hash of the identity, not the identity itself: after a flood this map
    /// outlives the listeners by the quiet time, and thousands of small keys scattered
    /// over the heap would keep the flood's memory from being returned.
    last_alert: HashMap<u64, Instant>,
    /// When each identity's last short life was recorded (by the same digest): its lives
    /// within `restart_grace` of that are one flapping listener, counted, not recorded
    /// one by one, or a loop of `listen`/`close` on one port would flood the journal.
    short_recorded: HashMap<u64, Instant>,
    /// Short lives folded so, since the daemon started.
    pub short_folded: u64,
    /// Alerts a previous run raised (from the state file), until the first snapshot.
    restored: Option<HashMap<ListenerKey, Listener>>,
    /// Which listener each socket belongs to: a new identity on a known socket is that
    /// socket with another owner, not a new listener.
    by_inode: HashMap<Inode, Arc<ListenerKey>>,
    /// Counts updates; entries remember the last one that saw them.
    generation: u64,
    /// Kept up to date by every change, so the steady path asks in O(1).
    counts: Counts,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    alerts: usize,
    pending: usize,
}

/// A stable 64-bit digest of an identity, for the quiet-time map.
fn fingerprint(key: &ListenerKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Releases a map's spare room once it is mostly empty.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to(map.len() * 2);
    }
}

/// Points `key`'s current sockets at it, and forgets the ones it no longer has.
fn reindex(
    by_inode: &mut HashMap<Inode, Arc<ListenerKey>>,
    before: &[Inode],
    now: &[Inode],
    key: &Arc<ListenerKey>,
) {
    if before == now {
        return;
    }
    for inode in before.iter().filter(|i| !now.contains(i)) {
        if by_inode.get(inode) == Some(key) {
            by_inode.remove(inode);
        }
    }
    for inode in now {
        by_inode.insert(*inode, Arc::clone(key));
    }
}

/// Alerts to carry over a daemon restart.
pub type AlertedListeners = Vec<(ListenerKey, Listener)>;

/// How a listener is classified: by the policy and registry in force.
pub type Classify<'a> = &'a dyn Fn(&Listener) -> Classification;

impl Tracker {
    /// A tracker whose first [`update`](Self::update) is the start-up inventory. `restored`
    /// holds the alerts a previous run raised: those still present are not alerted again.
    pub fn new(timing: Timing, restored: AlertedListeners) -> Tracker {
        Tracker {
            timing,
            entries: HashMap::new(),
            last_alert: HashMap::new(),
            short_recorded: HashMap::new(),
            short_folded: 0,
            restored: Some(restored.into_iter().collect()),
            by_inode: HashMap::new(),
            generation: 0,
            counts: Counts::default(),
        }
    }

    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// Folds in a new snapshot, appending the events it causes to `out`. Only listeners
    /// not seen before are classified.
    pub fn update(
        &mut self,
        now: Now,
        listeners: Vec<Listener>,
        classify: Classify<'_>,
        out: &mut Vec<Arc<Event>>,
    ) {
        let restored = self.restored.take();
        self.generation += 1;
        let mut new = Vec::new();
        for l in listeners {
            let key = ListenerKey::of(&l);
            match self.entries.get_mut(&key) {
                Some(e) => {
                    reindex(&mut self.by_inode, &e.listener.inodes, &l.inodes, &e.key);
                    // The same program back, but what the identity does not hold (its
                    // user, unit, container, the socket's maker) may judge it otherwise.
                    if Self::seen_again(e, self.generation, now, l, out) {
                        let class = (now, classify(&e.listener));
                        let last = &mut self.last_alert;
                        Self::judged_again(&key, e, last, class, "its restart", out);
                    }
                }
                None => new.push((key, l)),
            }
        }
        // After every known listener is folded in: a socket can only change hands once
        // its former owner's entry has had the chance to be seen.
        for (key, l) in new {
            match self.previous_holder(&key, &l) {
                Some(previous) if restored.is_none() => {
                    self.take_over(now, previous, key, l, classify, out);
                }
                _ => self.admit(now, key, l, restored.as_ref(), None, classify, out),
            }
        }
        if let Some(restored) = restored {
            self.clear_restored(now, restored, classify, out);
        }
        self.close_expired(now, out);
        let quiet = self.timing.realert_after;
        if !self.last_alert.is_empty() {
            self.last_alert
                .retain(|_, t| now.at.saturating_duration_since(*t) < quiet);
        }
        let grace = self.timing.restart_grace;
        if !self.short_recorded.is_empty() {
            self.short_recorded
                .retain(|_, t| now.at.saturating_duration_since(*t) < grace);
            shrink(&mut self.short_recorded);
        }
        // After a flood has come and gone, give its memory back.
        shrink(&mut self.entries);
        shrink(&mut self.last_alert);
        shrink(&mut self.by_inode);
        self.recount();
    }

    /// A known listener in this snapshot: back within its grace window, or taken over by
    /// a new pid, is a restart.
    /// Returns whether it was a restart.
    fn seen_again(
        e: &mut Entry,
        generation: u64,
        now: Now,
        l: Listener,
        out: &mut Vec<Arc<Event>>,
    ) -> bool {
        if e.seen_in == generation {
            return false; // same identity twice in one snapshot: already folded in
        }
        e.seen_in = generation;
        let old_pid = e.listener.owner.process().map(|p| p.pid);
        let new_pid = l.owner.process().map(|p| p.pid);
        let returned = e.gone_since.take().is_some();
        // A restart in place: every old pid has gone, a new one holds the socket.
        let replaced = old_pid.is_some_and(|p| !l.pids.contains(&p)) && new_pid.is_some();
        e.listener = l;
        if returned || replaced {
            let detail = match (old_pid, new_pid) {
                (Some(a), Some(b)) if a != b => format!("pid {a} replaced by pid {b}"),
                _ => "reopened by the same program".to_owned(),
            };
            let mut ev = Event::new(EventKind::ListenerRestarted, now, &e.listener, &e.class)
                .with_detail(detail);
            ev.previous_pid = old_pid;
            ev.alert_suppressed = e.alert == AlertState::Suppressed;
            out.push(Arc::new(ev));
        }
        returned || replaced
    }

    /// A listener identity not seen before: classify it once, record it, alert on it.
    /// `previous_owner` is set when it is a known socket that changed hands.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one update, each needed"
    )]
    fn admit(
        &mut self,
        now: Now,
        key: ListenerKey,
        l: Listener,
        restored: Option<&HashMap<ListenerKey, Listener>>,
        previous_owner: Option<Owner>,
        classify: Classify<'_>,
        out: &mut Vec<Arc<Event>>,
    ) {
        let inventory = restored.is_some();
        let class = Arc::new(classify(&l));
        let key = Arc::new(key);
        reindex(&mut self.by_inode, &[], &l.inodes, &key);
        let mut entry = Entry {
            key: Arc::clone(&key),
            listener: l,
            class,
            alert: AlertState::None,
            raised: None,
            gone_since: None,
            seen_in: self.generation,
        };
        let event = |kind| Event::new(kind, now, &entry.listener, &entry.class);
        // What is said of its appearance: present (inventory), changed hands, or opened.
        let mut first = if inventory {
            Some(event(EventKind::ListenerPresent))
        } else if let Some(before) = previous_owner {
            let mut e = event(EventKind::ListenerOwnerChanged);
            e.previous_pid = before.process().map(|p| p.pid);
            e.previous_owner = Some(before);
            Some(e)
        } else {
            Some(event(EventKind::ListenerOpened))
        };
        if entry.class.verdict.alert {
            let already = restored.is_some_and(|r| r.contains_key(&key));
            let recent = self
                .last_alert
                .get(&fingerprint(&key))
                .is_some_and(|&t| now.at.saturating_duration_since(t) < self.timing.realert_after);
            let raise = Arc::new(event(EventKind::AlertRaised));
            if already {
                // Alerted before the daemon restarted, and still there: not again.
                entry.alert = AlertState::Active;
                entry.raised = Some(raise);
            } else if recent {
                entry.alert = AlertState::Suppressed;
                if let Some(e) = first
                    .as_mut()
                    .filter(|e| e.kind != EventKind::ListenerPresent)
                {
                    e.alert_suppressed = true;
                    if e.kind == EventKind::ListenerOpened {
                        e.detail =
                            Some("alerted within the quiet time already (realert_after)".into());
                    }
                }
            } else {
                entry.alert = AlertState::Active;
                self.last_alert.insert(fingerprint(&key), now.at);
                entry.raised = Some(Arc::clone(&raise));
                // An alert stands for "opened": the record says both.
                if first
                    .as_ref()
                    .is_some_and(|e| e.kind == EventKind::ListenerOpened)
                {
                    first = None;
                }
                out.extend(first.take().map(Arc::new));
                out.push(raise);
            }
        }
        out.extend(first.map(Arc::new));
        self.entries.insert(key, Box::new(entry));
    }

    /// The known listener one of `l`'s sockets belonged to, if it was another identity.
    fn previous_holder(&self, key: &ListenerKey, l: &Listener) -> Option<Arc<ListenerKey>> {
        l.inodes.iter().find_map(|inode| {
            let holder = self.by_inode.get(inode)?;
            let e = self.entries.get(holder)?;
            (**holder != *key && e.listener.inodes.contains(inode)).then(|| Arc::clone(holder))
        })
    }

    /// A known socket under a new owner: the old entry goes (its alert cleared, the
    /// socket is not closed), the new owner is judged and recorded as a change of hands.
    fn take_over(
        &mut self,
        now: Now,
        previous: Arc<ListenerKey>,
        key: ListenerKey,
        l: Listener,
        classify: Classify<'_>,
        out: &mut Vec<Arc<Event>>,
    ) {
        let before = self
            .entries
            .get(&previous)
            .expect("found by previous_holder");
        let previous_owner = before.listener.owner.clone();
        if before.seen_in != self.generation {
            let old = self.entries.remove(&previous).expect("present");
            for inode in &old.listener.inodes {
                if self.by_inode.get(inode) == Some(&previous) {
                    self.by_inode.remove(inode);
                }
            }
            if old.alert == AlertState::Active {
                let e = Event::new(EventKind::AlertCleared, now, &old.listener, &old.class)
                    .with_detail("the socket changed hands");
                out.push(Arc::new(e));
            }
        }
        self.admit(now, key, l, None, Some(previous_owner), classify, out);
    }

    /// Alerts of a previous run whose listener is gone by now.
    fn clear_restored(
        &self,
        now: Now,
        restored: HashMap<ListenerKey, Listener>,
        classify: Classify<'_>,
        out: &mut Vec<Arc<Event>>,
    ) {
        for (key, l) in restored {
            if self
                .entries
                .get(&key)
                .is_none_or(|e| e.seen_in != self.generation)
            {
                let class = Arc::new(classify(&l));
                let e = Event::new(EventKind::AlertCleared, now, &l, &class)
                    .with_detail("listener closed while portsentinel was not running");
                out.push(Arc::new(e));
            }
        }
    }

    /// Listeners absent for longer than the grace window: closed.
    fn close_expired(&mut self, now: Now, out: &mut Vec<Arc<Event>>) {
        let grace = self.timing.restart_grace;
        let generation = self.generation;
        let mut closed = Vec::new();
        for (key, e) in self.entries.iter_mut() {
            if e.seen_in == generation {
                continue;
            }
            let since = *e.gone_since.get_or_insert(now.at);
            if now.at.saturating_duration_since(since) >= grace {
                closed.push(key.clone());
            }
        }
        for key in closed {
            let e = self.entries.remove(&key).expect("collected above");
            for inode in &e.listener.inodes {
                if self.by_inode.get(inode) == Some(&key) {
                    self.by_inode.remove(inode);
                }
            }
            let kind = match e.alert {
                AlertState::Active => EventKind::AlertCleared,
                AlertState::None | AlertState::Suppressed => EventKind::ListenerClosed,
            };
            let mut ev =
                Event::new(kind, now, &e.listener, &e.class).with_detail("listener closed");
            ev.alert_suppressed = e.alert == AlertState::Suppressed;
            out.push(Arc::new(ev));
        }
    }

    fn recount(&mut self) {
        let mut c = Counts::default();
        for e in self.entries.values() {
            c.alerts += usize::from(e.alert == AlertState::Active);
            c.pending += usize::from(e.gone_since.is_some());
        }
        self.counts = c;
    }

    /// Classifies every known listener again (after a config reload): newly disallowed
    /// ones raise an alert, newly allowed ones clear theirs.
    pub fn rejudge(&mut self, now: Now, classify: Classify<'_>, out: &mut Vec<Arc<Event>>) {
        for (key, e) in self.entries.iter_mut() {
            let class = classify(&e.listener);
            Self::judged_again(
                key,
                e,
                &mut self.last_alert,
                (now, class),
                "config reload",
                out,
            );
        }
        self.recount();
    }

    /// One listener judged again (after a reload, or a restart by another process that
    /// the identity does not tell apart: another user, unit or container): what changed
    /// is raised or cleared.
    fn judged_again(
        key: &ListenerKey,
        e: &mut Entry,
        last_alert: &mut HashMap<u64, Instant>,
        (now, class): (Now, Classification),
        after: &str,
        out: &mut Vec<Arc<Event>>,
    ) {
        e.class = Arc::new(class);
        match (e.alert, e.class.verdict.alert) {
            (AlertState::Active, false) => {
                e.alert = AlertState::None;
                e.raised = None;
                let detail = format!("allowed after {after}: {}", e.class.verdict.reason);
                let ev = Event::new(EventKind::AlertCleared, now, &e.listener, &e.class);
                out.push(Arc::new(ev.with_detail(detail)));
            }
            (AlertState::Active, true) => {
                // Still alerted: a new subscriber hears the current reason.
                let time = e.raised.as_ref().map_or(now.wall, |r| r.time);
                let mut ev = Event::new(EventKind::AlertRaised, now, &e.listener, &e.class);
                ev.time = time;
                e.raised = Some(Arc::new(ev));
            }
            (AlertState::Suppressed, false) => e.alert = AlertState::None,
            (AlertState::None, true) => {
                e.alert = AlertState::Active;
                last_alert.insert(fingerprint(key), now.at);
                let raise = Arc::new(Event::new(
                    EventKind::AlertRaised,
                    now,
                    &e.listener,
                    &e.class,
                ));
                e.raised = Some(Arc::clone(&raise));
                out.push(raise);
            }
            _ => {}
        }
    }

    /// A listener that opened and closed between two polls, known from the kernel's events
    /// alone: judged like any new one, and recorded as opened (or alerted) at `opened`, then
    /// closed (or cleared) at `closed`. The quiet time applies as for any alert. Nothing is
    /// recorded when its identity is listening now: the polls already speak of it, nor
    /// when the same identity's last short life was recorded less than `restart_grace`
    /// before it opened (a flapping listener, counted in `short_folded`).
    pub fn short_lived(
        &mut self,
        (opened, closed): (Now, Now),
        l: Listener,
        classify: Classify<'_>,
        out: &mut Vec<Arc<Event>>,
    ) {
        let key = ListenerKey::of(&l);
        if self.entries.contains_key(&key) {
            return;
        }
        let digest = fingerprint(&key);
        let grace = self.timing.restart_grace;
        if let Some(&at) = self.short_recorded.get(&digest)
            && opened.at.saturating_duration_since(at) < grace
        {
            self.short_folded += 1;
            return;
        }
        self.short_recorded.insert(digest, opened.at);
        let class = Arc::new(classify(&l));
        let lifetime = closed.at.saturating_duration_since(opened.at);
        let event = |kind, now| {
            let mut e = Event::new(kind, now, &l, &class);
            e.announced = Some(Announced {
                lifetime: Some(lifetime),
            });
            e
        };
        let recent = self
            .last_alert
            .get(&fingerprint(&key))
            .is_some_and(|&t| closed.at.saturating_duration_since(t) < self.timing.realert_after);
        let (first, last) = if class.verdict.alert && !recent {
            self.last_alert.insert(fingerprint(&key), opened.at);
            let last = event(EventKind::AlertCleared, closed).with_detail("listener closed");
            (event(EventKind::AlertRaised, opened), last)
        } else {
            let mut first = event(EventKind::ListenerOpened, opened);
            let mut last = event(EventKind::ListenerClosed, closed).with_detail("listener closed");
            if class.verdict.alert {
                first.detail = Some("alerted within the quiet time already (realert_after)".into());
                first.alert_suppressed = true;
                last.alert_suppressed = true;
            }
            (first, last)
        };
        out.push(Arc::new(first));
        out.push(Arc::new(last));
    }

    /// True while some vanished listener waits out its grace window: the next poll must
    /// run the diff even if the socket list did not change.
    pub fn has_pending(&self) -> bool {
        self.counts.pending > 0
    }

    /// Listeners currently present (including those within their grace window).
    pub fn listener_count(&self) -> usize {
        self.entries.len()
    }

    /// Every listener known now (including those within their grace window), with its
    /// classification.
    pub fn present(&self) -> impl Iterator<Item = (&Listener, &Classification)> {
        self.entries.values().map(|e| (&e.listener, &*e.class))
    }

    /// The events that raised the alerts active now: what a new event-socket subscriber
    /// hears first.
    pub fn active_alerts(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.entries.values().filter_map(|e| e.raised.as_ref())
    }

    /// The listeners alerted on now: what a restart of the daemon must not alert on again.
    pub fn alerted(&self) -> impl Iterator<Item = (&ListenerKey, &Listener)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.alert == AlertState::Active)
            .map(|(k, e)| (&**k, &e.listener))
    }

    pub fn alert_count(&self) -> usize {
        self.counts.alerts
    }

    /// The `[[expect]]` entries that a listener present now satisfies.
    pub fn satisfied(&self) -> std::collections::HashSet<usize> {
        self.entries
            .values()
            .filter(|e| e.gone_since.is_none())
            .filter_map(|e| e.class.verdict.expect)
            .collect()
    }
}

/// For tests elsewhere: the event a fresh tracker makes of `l` appearing after the
/// inventory, under the default policy and the built-in registry.
#[cfg(test)]
pub(crate) fn first_event(l: Listener) -> Event {
    let (registry, policy) = (
        crate::registry::Registry::builtin(),
        super::Policy::default(),
    );
    let c = super::Classifier {
        registry: &registry,
        policy: &policy,
        host: &crate::model::classify::TestHost,
    };
    let timing = Timing {
        restart_grace: Duration::ZERO,
        realert_after: Duration::ZERO,
    };
    let mut tracker = Tracker::new(timing, vec![]);
    let now = Now {
        at: Instant::now(),
        wall: SystemTime::UNIX_EPOCH,
    };
    let mut out = Vec::new();
    tracker.update(now, vec![], &|l| c.classify(l), &mut out);
    tracker.update(now, vec![l], &|l| c.classify(l), &mut out);
    (*out.pop().expect("one event")).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Classifier, Inode, Owner, Policy, Process, Protocol};
    use crate::registry::Registry;
    use std::collections::HashSet;

    const GRACE: Duration = Duration::from_secs(3);
    const QUIET: Duration = Duration::from_secs(600);

    fn listener(port: u16, pid: u32, exe: &str) -> Listener {
        Listener {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port,
            v6only: None,
            uid: 0,
            inodes: vec![Inode(u64::from(pid) * 100 + u64::from(port))],
            pids: vec![Pid(pid)],
            netns: 0,
            owner: Owner::Process(std::sync::Arc::new(Process {
                pid: Pid(pid),
                name: exe.rsplit('/').next().unwrap().into(),
                exe: Some(exe.into()),
                cmdline: vec![],
                uid: Some(0),
                user: Some("root".into()),
                unit: None,
                name_lossy: false,
                exe_file: Some(crate::model::classify::path_file_id(exe)),
                mount_ns: Some(1),
                start_time: 0,
                container: None,
                ns_pid: None,
            })),
            portless: None,
            zone: None,
        }
    }

    struct Script {
        tracker: Tracker,
        t0: Instant,
        registry: Registry,
        policy: Policy,
    }

    impl Script {
        fn new(restored: AlertedListeners) -> Script {
            Script {
                tracker: Tracker::new(
                    Timing {
                        restart_grace: GRACE,
                        realert_after: QUIET,
                    },
                    restored,
                ),
                t0: Instant::now(),
                registry: Registry::builtin(),
                policy: Policy::default(),
            }
        }

        fn now(&self, secs: u64) -> Now {
            Now {
                at: self.t0 + Duration::from_secs(secs),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            }
        }

        fn events(&mut self, secs: u64, listeners: Vec<Listener>) -> Vec<Arc<Event>> {
            let now = self.now(secs);
            let c = Classifier {
                registry: &self.registry,
                policy: &self.policy,
                host: &crate::model::classify::TestHost,
            };
            let mut out = Vec::new();
            self.tracker
                .update(now, listeners, &|l| c.classify(l), &mut out);
            out
        }

        fn at(&mut self, secs: u64, listeners: Vec<Listener>) -> Vec<(EventKind, u16)> {
            let out = self.events(secs, listeners);
            out.iter().map(|e| (e.kind, e.listener.port)).collect()
        }
    }

    use EventKind::*;

    #[test]
    fn inventory_then_opened_and_alerts() {
        let mut s = Script::new(vec![]);
        let ev = s.at(
            0,
            vec![
                listener(22, 10, "/usr/sbin/sshd"),
                listener(867, 11, "/tmp/x"),
            ],
        );
        assert_eq!(
            ev,
            [
                (ListenerPresent, 22),
                (ListenerPresent, 867),
                (AlertRaised, 867)
            ]
        );
        assert_eq!(s.tracker.alert_count(), 1);
        let ev = s.at(
            1,
            vec![
                listener(22, 10, "/usr/sbin/sshd"),
                listener(867, 11, "/tmp/x"),
                listener(80, 12, "/usr/sbin/nginx"),
            ],
        );
        assert_eq!(ev, [(ListenerOpened, 80)]);
        // Nothing changed: nothing happens.
        let ev = s.at(
            2,
            vec![
                listener(22, 10, "/usr/sbin/sshd"),
                listener(867, 11, "/tmp/x"),
                listener(80, 12, "/usr/sbin/nginx"),
            ],
        );
        assert!(ev.is_empty());
    }

    #[test]
    fn close_waits_for_the_grace_window() {
        let mut s = Script::new(vec![]);
        s.at(0, vec![]);
        assert_eq!(
            s.at(1, vec![listener(867, 11, "/tmp/x")]),
            [(AlertRaised, 867)]
        );
        assert!(s.at(2, vec![]).is_empty(), "within grace: not closed yet");
        assert!(s.at(4, vec![]).is_empty());
        assert_eq!(s.at(5, vec![]), [(AlertCleared, 867)]);
        assert_eq!(s.tracker.listener_count(), 0);
        assert_eq!(s.tracker.alert_count(), 0);
    }

    /// A rule that names a user: the same program back within the grace, run by
    /// another user, is one restart and judged again (what the identity does not hold
    /// may change the verdict).
    #[test]
    fn a_restart_by_another_user_is_judged_again() {
        use crate::model::rules::{AllowRule, Holder, Place, UserMatch};
        let mut s = Script::new(vec![]);
        s.policy.allow = vec![AllowRule {
            name: Some("x".into()),
            origin: "c.toml:1".into(),
            place: Place {
                ports: vec![crate::model::PortMatch::Range(867, 867)],
                ..Place::default()
            },
            holder: Holder {
                exes: vec!["/tmp/x".into()],
                users: vec![UserMatch::Uid(0)],
                ..Holder::default()
            },
            ..AllowRule::default()
        }];
        assert_eq!(
            s.at(0, vec![listener(867, 11, "/tmp/x")]),
            [(ListenerPresent, 867)]
        );
        assert_eq!(s.tracker.alert_count(), 0);
        assert!(s.at(1, vec![]).is_empty());
        let mut theirs = listener(867, 12, "/tmp/x");
        if let Owner::Process(p) = &mut theirs.owner {
            std::sync::Arc::make_mut(p).uid = Some(1000);
        }
        assert_eq!(
            s.at(2, vec![theirs]),
            [(ListenerRestarted, 867), (AlertRaised, 867)]
        );
        // Root's back: cleared, with why.
        assert!(s.at(3, vec![]).is_empty());
        let out = s.events(4, vec![listener(867, 13, "/tmp/x")]);
        assert_eq!(out[1].kind, AlertCleared);
        assert!(
            (out[1].detail.as_deref().unwrap_or("")).starts_with("allowed after its restart"),
            "{:?}",
            out[1].detail
        );
    }

    #[test]
    fn restart_within_grace_is_one_restarted_event_and_no_new_alert() {
        let mut s = Script::new(vec![]);
        s.at(
            0,
            vec![
                listener(22, 10, "/usr/sbin/sshd"),
                listener(867, 11, "/tmp/x"),
            ],
        );
        assert!(s.at(1, vec![]).is_empty());
        let ev = s.at(
            2,
            vec![
                listener(22, 20, "/usr/sbin/sshd"),
                listener(867, 21, "/tmp/x"),
            ],
        );
        assert_eq!(ev, [(ListenerRestarted, 22), (ListenerRestarted, 867)]);
        assert_eq!(s.tracker.alert_count(), 1, "the alert stays raised, once");
        // A restart in place (new pid between two polls) is a restart too.
        let out = s.events(
            3,
            vec![
                listener(22, 30, "/usr/sbin/sshd"),
                listener(867, 21, "/tmp/x"),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].kind, out[0].previous_pid),
            (ListenerRestarted, Some(Pid(20)))
        );
        assert_eq!(out[0].detail.as_deref(), Some("pid 20 replaced by pid 30"));
    }

    #[test]
    fn a_different_program_on_the_same_port_is_a_new_listener() {
        let mut s = Script::new(vec![]);
        s.at(0, vec![listener(867, 11, "/tmp/x")]);
        let ev = s.at(1, vec![listener(867, 12, "/tmp/y")]);
        assert_eq!(ev, [(AlertRaised, 867)]);
        assert_eq!(
            s.at(4, vec![listener(867, 12, "/tmp/y")]),
            [(AlertCleared, 867)]
        );
    }

    #[test]
    fn flapping_is_alerted_again_only_after_the_quiet_time() {
        let mut s = Script::new(vec![]);
        s.at(0, vec![]);
        assert_eq!(
            s.at(1, vec![listener(867, 11, "/tmp/x")]),
            [(AlertRaised, 867)]
        );
        assert!(s.at(10, vec![]).is_empty());
        assert_eq!(s.at(13, vec![]), [(AlertCleared, 867)]);
        // Back after the grace window but within the quiet time: recorded, not alerted.
        assert_eq!(
            s.at(20, vec![listener(867, 12, "/tmp/x")]),
            [(ListenerOpened, 867)]
        );
        assert_eq!(s.tracker.alert_count(), 0);
        assert!(s.at(30, vec![]).is_empty());
        assert_eq!(s.at(33, vec![]), [(ListenerClosed, 867)]);
        // After the quiet time: alerted again.
        assert_eq!(
            s.at(700, vec![listener(867, 13, "/tmp/x")]),
            [(AlertRaised, 867)]
        );
    }

    impl Script {
        fn short_lived(&mut self, from: u64, to: u64, l: Listener) -> Vec<Arc<Event>> {
            let times = (self.now(from), self.now(to));
            let c = Classifier {
                registry: &self.registry,
                policy: &self.policy,
                host: &crate::model::classify::TestHost,
            };
            let mut out = Vec::new();
            self.tracker
                .short_lived(times, l, &|l| c.classify(l), &mut out);
            out
        }
    }

    #[test]
    fn a_short_lived_listener_is_alerted_and_cleared_with_its_lifetime_once_per_quiet_time() {
        let mut s = Script::new(vec![]);
        s.at(0, vec![]);
        let ev = s.short_lived(1, 3, listener(867, 11, "/tmp/x"));
        let kinds: Vec<EventKind> = ev.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [AlertRaised, AlertCleared]);
        for e in &ev {
            let lifetime = e.announced.and_then(|a| a.lifetime);
            assert_eq!(lifetime, Some(Duration::from_secs(2)), "{e:?}");
        }
        assert_eq!(ev[0].time, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(ev[1].time, SystemTime::UNIX_EPOCH + Duration::from_secs(3));
        // Nothing stays behind: no listener, no active alert.
        assert_eq!(
            (s.tracker.listener_count(), s.tracker.alert_count()),
            (0, 0)
        );
        // Again within the quiet time: recorded, not alerted.
        let kinds: Vec<EventKind> = s
            .short_lived(5, 6, listener(867, 12, "/tmp/x"))
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, [ListenerOpened, ListenerClosed]);
        // An allowed one: opened and closed.
        let kinds: Vec<EventKind> = s
            .short_lived(7, 8, listener(8080, 13, "/tmp/x"))
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, [ListenerOpened, ListenerClosed]);
        // The same identity listening now: the polls speak of it, nothing more.
        s.at(9, vec![listener(9999, 14, "/tmp/y")]);
        assert!(
            s.short_lived(9, 10, listener(9999, 15, "/tmp/y"))
                .is_empty()
        );
    }

    #[test]
    fn a_flapping_short_lived_listener_is_one_record_per_grace() {
        let mut s = Script::new(vec![]);
        s.at(0, vec![]);
        let mut recorded = 0;
        // `listen`/`close` on one port in a loop: 200 lives in 2 s.
        for i in 0..200u32 {
            let t = 10 + u64::from(i / 100);
            recorded += s.short_lived(t, t, listener(4444, 100 + i, "/tmp/x")).len();
        }
        assert_eq!(recorded, 2, "one opened/closed pair within the grace");
        assert_eq!(s.tracker.short_folded, 199);
        // Past the grace of the last record: recorded again.
        assert_eq!(
            s.short_lived(14, 14, listener(4444, 400, "/tmp/x")).len(),
            2
        );
        // Another port is another listener, whatever the flapping one does.
        assert_eq!(
            s.short_lived(14, 14, listener(4445, 401, "/tmp/x")).len(),
            2
        );
    }

    #[test]
    fn restored_alerts_are_not_raised_twice() {
        let still = listener(867, 11, "/tmp/x");
        let gone = listener(868, 12, "/tmp/y");
        let restored = vec![
            (ListenerKey::of(&still), still.clone()),
            (ListenerKey::of(&gone), gone),
        ];
        let mut s = Script::new(restored);
        // The same program, a new pid after the daemon's restart: still the same identity.
        let ev = s.at(0, vec![listener(867, 99, "/tmp/x")]);
        assert_eq!(ev, [(ListenerPresent, 867), (AlertCleared, 868)]);
        assert_eq!(s.tracker.alert_count(), 1);
    }

    #[test]
    fn rejudge_clears_and_raises() {
        let mut s = Script::new(vec![]);
        s.at(
            0,
            vec![
                listener(867, 11, "/tmp/x"),
                listener(22, 10, "/usr/sbin/sshd"),
            ],
        );
        let allow_867: Policy = Policy {
            allow: vec![crate::model::AllowRule {
                origin: "c:1".into(),
                place: crate::model::Place {
                    ports: vec![crate::model::PortMatch::Range(867, 867)],
                    ..Default::default()
                },
                ..Default::default()
            }],
            alert_on: [crate::model::Condition::WellKnown].into(),
            ..Policy::default()
        };
        let mut out = Vec::new();
        let c = Classifier {
            registry: &s.registry,
            policy: &allow_867,
            host: &crate::model::classify::TestHost,
        };
        s.tracker.rejudge(s.now(0), &|l| c.classify(l), &mut out);
        let mut got: Vec<_> = out.iter().map(|e| (e.kind, e.listener.port)).collect();
        got.sort_by_key(|e| e.1);
        assert_eq!(got, [(AlertRaised, 22), (AlertCleared, 867)]);
        let cleared = out.iter().find(|e| e.kind == AlertCleared).unwrap();
        assert!(
            cleared
                .detail
                .as_deref()
                .unwrap()
                .starts_with("allowed after config reload: allowed by [[allow]]")
        );
    }

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let ids: HashSet<_> = EventKind::ALL.iter().map(|k| k.message_id()).collect();
        assert_eq!(ids.len(), EventKind::ALL.len());
        for id in ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    fn on_inode(mut l: Listener, inode: u64) -> Listener {
        l.inodes = vec![Inode(inode)];
        l
    }

    /// The same socket, another program: a change of hands, judged again, not a new
    /// listener and not a close.
    #[test]
    fn a_socket_that_changes_hands_is_judged_again() {
        let mut s = Script::new(vec![]);
        s.policy.allow.push(crate::model::AllowRule {
            origin: "c:1".into(),
            holder: crate::model::Holder {
                exes: vec!["/usr/bin/sleep".into()],
                ..Default::default()
            },
            ..Default::default()
        });
        s.at(0, vec![]);
        let decoy = on_inode(listener(868, 11, "/usr/bin/sleep"), 5);
        assert_eq!(s.at(1, vec![decoy]), [(ListenerOpened, 868)]);
        let real = on_inode(listener(868, 12, "/tmp/backdoor"), 5);
        let out = s.events(2, vec![real.clone()]);
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [ListenerOwnerChanged, AlertRaised]);
        assert_eq!(out[0].previous_pid, Some(Pid(11)));
        assert!(
            matches!(&out[0].previous_owner, Some(Owner::Process(p)) if p.exe.as_deref() == Some("/usr/bin/sleep"))
        );
        // The decoy's entry is gone without a close; nothing more happens after grace.
        assert!(s.at(10, vec![real.clone()]).is_empty());
        assert_eq!(s.tracker.alert_count(), 1);
        // Handed back to an allowed program: the alert clears, no close.
        let back = on_inode(listener(868, 13, "/usr/bin/sleep"), 5);
        let kinds: Vec<_> = s.events(11, vec![back]).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [AlertCleared, ListenerOwnerChanged]);
        assert_eq!(s.tracker.alert_count(), 0);
    }
}
