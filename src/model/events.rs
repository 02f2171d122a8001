//! From successive snapshots to events: opened, closed, restarted, alert raised/cleared.
//!
//! The [`Tracker`] keys listeners by identity (network namespace + [`ListenerKey`]: the
//! program, never the pid). A listener that disappears is not reported closed at once: it
//! waits out a grace window, and if the same program comes back on the same socket within
//! it, that is one `restarted` event, with no new alert. An alert that was raised, cleared
//! and comes back within the quiet time is not raised again (a flapping listener). Only new
//! listeners are judged; a config reload re-judges them all ([`Tracker::rejudge`]).
//!
//! Pure: time comes in as an `Instant`, listeners as values, the policy as a function.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::listener::{Listener, Pid};
use super::policy::Verdict;
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
    /// A listener the policy does not allow.
    AlertRaised,
    /// An alerted listener closed, or a config reload allowed it.
    AlertCleared,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::ListenerPresent,
        EventKind::ListenerOpened,
        EventKind::ListenerClosed,
        EventKind::ListenerRestarted,
        EventKind::AlertRaised,
        EventKind::AlertCleared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ListenerPresent => "listener-present",
            EventKind::ListenerOpened => "listener-opened",
            EventKind::ListenerClosed => "listener-closed",
            EventKind::ListenerRestarted => "listener-restarted",
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
            EventKind::ListenerPresent => "9284c68d023d4849a148696afefdebe6",
        }
    }
}

/// One thing that happened, with everything a record or a notification needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub listener: Listener,
    pub verdict: Verdict,
    /// For `AlertCleared`: why ("listener closed", "allowed after config reload: ...").
    /// For `ListenerRestarted`: what changed.
    pub detail: Option<String>,
    /// For `ListenerRestarted`: the pid before the restart.
    pub previous_pid: Option<Pid>,
    /// True for a listener the policy does not allow whose alert is held back because it
    /// flapped within the quiet time.
    pub alert_suppressed: bool,
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
    listener: Listener,
    verdict: Verdict,
    alert: AlertState,
    /// Set while the listener is absent and within its grace window.
    gone_since: Option<Instant>,
    /// The last update that saw this listener (cheaper than a set of keys per update).
    seen_in: u64,
}

/// The listeners the daemon knows, and their alert state.
#[derive(Debug)]
pub struct Tracker {
    timing: Timing,
    entries: HashMap<ListenerKey, Entry>,
    /// When each listener was last alerted, for the quiet time.
    /// Keyed by a hash of the identity, not the identity itself: after a flood this map
    /// outlives the listeners by the quiet time, and thousands of small keys scattered
    /// over the heap would keep the flood's memory from being returned.
    last_alert: HashMap<u64, Instant>,
    /// Alerts a previous run raised (from the state file), until the first snapshot.
    restored: Option<HashMap<ListenerKey, Listener>>,
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

/// Alerts to carry over a daemon restart.
pub type AlertedListeners = Vec<(ListenerKey, Listener)>;

impl Tracker {
    /// A tracker whose first [`update`](Self::update) is the start-up inventory. `restored`
    /// holds the alerts a previous run raised: those still present are not alerted again.
    pub fn new(timing: Timing, restored: AlertedListeners) -> Tracker {
        Tracker {
            timing,
            entries: HashMap::new(),
            last_alert: HashMap::new(),
            restored: Some(restored.into_iter().collect()),
            generation: 0,
            counts: Counts::default(),
        }
    }

    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// Folds in a new snapshot, appending the events it causes to `out`. Only listeners
    /// not seen before are judged.
    pub fn update(
        &mut self,
        now: Instant,
        listeners: Vec<Listener>,
        judge: &dyn Fn(&Listener) -> Verdict,
        out: &mut Vec<Event>,
    ) {
        let restored = self.restored.take();
        let inventory = restored.is_some();
        self.generation += 1;
        let generation = self.generation;
        for l in listeners {
            let key = ListenerKey::of(&l);
            if let Some(e) = self.entries.get_mut(&key) {
                if e.seen_in == generation {
                    continue; // same identity twice in one snapshot: already folded in
                }
                e.seen_in = generation;
                let old_pid = e.listener.owner.process().map(|p| p.pid);
                let new_pid = l.owner.process().map(|p| p.pid);
                let returned = e.gone_since.take().is_some();
                // A restart in place: every old pid has gone, a new one holds the socket.
                let replaced = old_pid.is_some_and(|p| !l.pids.contains(&p)) && new_pid.is_some();
                e.listener = l;
                if returned || replaced {
                    out.push(Event {
                        kind: EventKind::ListenerRestarted,
                        listener: e.listener.clone(),
                        verdict: e.verdict.clone(),
                        detail: Some(match (old_pid, new_pid) {
                            (Some(a), Some(b)) if a != b => format!("pid {a} replaced by pid {b}"),
                            _ => "reopened by the same program".to_owned(),
                        }),
                        previous_pid: old_pid,
                        alert_suppressed: e.alert == AlertState::Suppressed,
                    });
                }
                continue;
            }
            let verdict = judge(&l);
            let mut alert = AlertState::None;
            if inventory {
                out.push(self.event(EventKind::ListenerPresent, &l, &verdict, None));
            }
            if verdict.alert {
                let already = restored.as_ref().is_some_and(|r| r.contains_key(&key));
                let recent = self
                    .last_alert
                    .get(&fingerprint(&key))
                    .is_some_and(|&t| now.saturating_duration_since(t) < self.timing.realert_after);
                if already {
                    // Alerted before the daemon restarted, and still there: not again.
                    alert = AlertState::Active;
                } else if recent {
                    alert = AlertState::Suppressed;
                    if !inventory {
                        let mut e = self.event(EventKind::ListenerOpened, &l, &verdict, None);
                        e.alert_suppressed = true;
                        e.detail =
                            Some("alerted within the quiet time already (realert_after)".into());
                        out.push(e);
                    }
                } else {
                    alert = AlertState::Active;
                    self.last_alert.insert(fingerprint(&key), now);
                    out.push(self.event(EventKind::AlertRaised, &l, &verdict, None));
                }
            } else if !inventory {
                out.push(self.event(EventKind::ListenerOpened, &l, &verdict, None));
            }
            self.entries.insert(
                key,
                Entry {
                    listener: l,
                    verdict,
                    alert,
                    gone_since: None,
                    seen_in: generation,
                },
            );
        }

        // Alerts of a previous run whose listener is gone by now.
        for (key, l) in restored.into_iter().flatten() {
            if self
                .entries
                .get(&key)
                .is_none_or(|e| e.seen_in != generation)
            {
                let mut e = self.event(EventKind::AlertCleared, &l, &judge(&l), None);
                e.detail = Some("listener closed while portsentinel was not running".into());
                out.push(e);
            }
        }

        let grace = self.timing.restart_grace;
        let mut closed = Vec::new();
        for (key, e) in self.entries.iter_mut() {
            if e.seen_in == generation {
                continue;
            }
            let since = *e.gone_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= grace {
                closed.push(key.clone());
            }
        }
        for key in closed {
            let e = self.entries.remove(&key).expect("collected above");
            let kind = match e.alert {
                AlertState::Active => EventKind::AlertCleared,
                AlertState::None | AlertState::Suppressed => EventKind::ListenerClosed,
            };
            let mut ev = self.event(
                kind,
                &e.listener,
                &e.verdict,
                Some("listener closed".into()),
            );
            ev.alert_suppressed = e.alert == AlertState::Suppressed;
            out.push(ev);
        }

        let quiet = self.timing.realert_after;
        if !self.last_alert.is_empty() {
            self.last_alert
                .retain(|_, t| now.saturating_duration_since(*t) < quiet);
        }
        // After a flood has come and gone, give its memory back.
        shrink(&mut self.entries);
        shrink(&mut self.last_alert);
        self.recount();
    }

    fn recount(&mut self) {
        let mut c = Counts::default();
        for e in self.entries.values() {
            c.alerts += usize::from(e.alert == AlertState::Active);
            c.pending += usize::from(e.gone_since.is_some());
        }
        self.counts = c;
    }

    /// Judges every known listener again (after a config reload): newly disallowed ones
    /// raise an alert, newly allowed ones clear theirs.
    pub fn rejudge(
        &mut self,
        now: Instant,
        judge: &dyn Fn(&Listener) -> Verdict,
        out: &mut Vec<Event>,
    ) {
        let mut events = Vec::new();
        for (key, e) in self.entries.iter_mut() {
            let verdict = judge(&e.listener);
            let was = e.alert;
            e.verdict = verdict;
            match (was, e.verdict.alert) {
                (AlertState::Active, false) => {
                    e.alert = AlertState::None;
                    let detail = format!("allowed after config reload: {}", e.verdict.reason);
                    events.push((
                        EventKind::AlertCleared,
                        e.listener.clone(),
                        e.verdict.clone(),
                        Some(detail),
                    ));
                }
                (AlertState::Suppressed, false) => e.alert = AlertState::None,
                (AlertState::None, true) => {
                    e.alert = AlertState::Active;
                    self.last_alert.insert(fingerprint(key), now);
                    events.push((
                        EventKind::AlertRaised,
                        e.listener.clone(),
                        e.verdict.clone(),
                        None,
                    ));
                }
                _ => {}
            }
        }
        self.recount();
        for (kind, listener, verdict, detail) in events {
            out.push(Event {
                kind,
                listener,
                verdict,
                detail,
                previous_pid: None,
                alert_suppressed: false,
            });
        }
    }

    fn event(&self, kind: EventKind, l: &Listener, v: &Verdict, detail: Option<String>) -> Event {
        Event {
            kind,
            listener: l.clone(),
            verdict: v.clone(),
            detail,
            previous_pid: None,
            alert_suppressed: false,
        }
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

    /// Alerts raised and not cleared: what a restart must not raise again, and what a new
    /// event-socket subscriber hears first.
    pub fn active_alerts(&self) -> impl Iterator<Item = (&ListenerKey, &Listener, &Verdict)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.alert == AlertState::Active)
            .map(|(k, e)| (k, &e.listener, &e.verdict))
    }

    pub fn alert_count(&self) -> usize {
        self.counts.alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Inode, Owner, Policy, Process, Protocol};
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
            owner: Owner::Process(std::sync::Arc::new(Process {
                pid: Pid(pid),
                name: exe.rsplit('/').next().unwrap().into(),
                exe: Some(exe.into()),
                cmdline: vec![],
                uid: Some(0),
                user: Some("root".into()),
                unit: None,
                start_time: 0,
            })),
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

        fn at(&mut self, secs: u64, listeners: Vec<Listener>) -> Vec<(EventKind, u16)> {
            let (reg, pol) = (&self.registry, &self.policy);
            let mut out = Vec::new();
            self.tracker.update(
                self.t0 + Duration::from_secs(secs),
                listeners,
                &|l| pol.judge(reg, l),
                &mut out,
            );
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
        let mut out = Vec::new();
        let (reg, pol) = (&s.registry, &s.policy);
        s.tracker.update(
            s.t0 + Duration::from_secs(3),
            vec![
                listener(22, 30, "/usr/sbin/sshd"),
                listener(867, 21, "/tmp/x"),
            ],
            &|l| pol.judge(reg, l),
            &mut out,
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
                ports: vec![(867, 867)],
                ..Default::default()
            }],
            alert_on: [crate::model::Condition::WellKnown].into(),
        };
        let mut out = Vec::new();
        let reg = &s.registry;
        s.tracker
            .rejudge(s.t0, &|l| allow_867.judge(reg, l), &mut out);
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
}
