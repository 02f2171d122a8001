//! What the desktop should show for a stream of events: the pure half of the notifier.
//!
//! The [`Planner`] turns events into [`Action`]s on numbered slots (one slot = one
//! notification on screen); the agent maps slots to the notification server's ids. Rules:
//! an alert gets a notification unless one was already shown for that listener (so replays
//! after a reconnect or a daemon restart show nothing twice); when the listener closes, the
//! same notification is updated; alerts that arrive within `burst_window` of the previous
//! one are folded into one summary notification that counts them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::classify::{PortRange, Status};
use super::events::EventKind;
use super::listener::Reach;
use super::wire::WireEvent;
use crate::text::clip;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    Low,
    Normal,
    Critical,
}

/// A notification's content, as plain text (control characters already made visible).
/// The notifier escapes the body for servers that parse markup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub summary: String,
    pub body: String,
    pub urgency: Urgency,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Show a new notification in this slot.
    Show { slot: u64, note: Note },
    /// Replace the content of the notification in this slot.
    Update { slot: u64, note: Note },
}

#[derive(Debug)]
struct Burst {
    last: Instant,
    count: usize,
    /// Ports as `867/tcp`, in arrival order, the first few.
    ports: Vec<String>,
    critical: bool,
    summary_slot: Option<u64>,
}

/// Ports listed by name in a summary notification.
const SUMMARY_PORTS: usize = 5;

#[derive(Debug)]
pub struct Planner {
    burst_window: Duration,
    /// alert_id → the slot that shows it (its own, or a burst summary).
    shown: HashMap<String, Shown>,
    burst: Option<Burst>,
    next_slot: u64,
}

#[derive(Debug, Clone, Copy)]
struct Shown {
    slot: u64,
    /// False when the alert is counted in a summary rather than shown on its own.
    own: bool,
}

/// Escapes text for the freedesktop notification body markup: `&`, `<` and `>`, the
/// three characters the markup subset gives meaning to.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// True for the listeners a person must look at now: not allowed, on an unassigned
/// well-known port, reachable from other machines.
pub fn is_critical(e: &WireEvent) -> bool {
    let l = &e.listener;
    l.verdict.alert
        && l.range == PortRange::WellKnown
        && l.iana.status == Status::Unassigned
        && l.reach != Reach::Loopback
}

fn reach_words(e: &WireEvent) -> String {
    let l = &e.listener;
    let addr = super::display_address(l.address, l.zone.as_deref());
    let reach = match l.reach {
        Reach::Loopback => format!("loopback only ({addr})"),
        Reach::Address => format!("address {addr}"),
        Reach::Link => match l.portless.as_ref().and_then(|p| p.interface.as_deref()) {
            Some(interface) => format!("frames off {interface}"),
            None => "frames off every interface".to_owned(),
        },
        other => format!("{} ({addr})", other.describe()),
    };
    // Its addresses are a container's or a namespace's, not the host's: say so.
    match (&l.container, l.netns.host) {
        (Some(c), false) => format!("{reach}, in container {}", clip(c.label(), 40)),
        (Some(c), true) => format!(
            "{reach}, in container {} (host network)",
            clip(c.label(), 40)
        ),
        (None, false) => format!(
            "{reach}, in network namespace {}",
            clip(&l.netns.label(), 40)
        ),
        (None, true) => reach,
    }
}

fn iana_words(e: &WireEvent) -> String {
    let l = &e.listener;
    match &l.portless {
        None => format!("IANA: {}, {}", l.iana.words(), l.range.words()),
        // No port: what it reads, and through which filter.
        Some(p) => match (p.filter.attached, p.filter.instructions) {
            (Some(true), Some(n)) => format!("no port; a filter of {n} instructions"),
            (Some(false), _) => "no port; no filter".to_owned(),
            _ => "no port; its filter could not be read".to_owned(),
        },
    }
}

fn program_words(e: &WireEvent) -> String {
    let l = &e.listener;
    match &l.process {
        Some(p) => {
            let mut s = format!("{} (pid {})", clip(&p.name, 40), p.pid);
            if let Some(exe) = &p.exe {
                let _ = write!(s, "\n{}", clip(exe, 120));
            }
            match (&p.user, p.uid) {
                (Some(u), _) => {
                    let _ = write!(s, "\nuser {}", clip(u, 32));
                }
                (None, Some(uid)) => {
                    let _ = write!(s, "\nuid {uid}");
                }
                _ => {}
            }
            s
        }
        None => format!(
            "unknown program ({}), socket uid {}",
            l.owner_unknown
                .map_or("owner not readable", |w| w.describe()),
            l.uid
        ),
    }
}

/// The notification for one alert.
/// `867/tcp`, or `packet socket (all (0x0003))`.
fn what(e: &WireEvent) -> String {
    let l = &e.listener;
    match l.portless {
        None => format!("{}/{}", l.port, l.protocol),
        Some(_) => format!(
            "{} socket ({})",
            l.kind,
            super::listener::portless_protocol_name(l.protocol, l.port)
        ),
    }
}

pub fn alert_note(e: &WireEvent) -> Note {
    let l = &e.listener;
    let body = format!(
        "{}\n{}\nlistening on {}",
        program_words(e),
        iana_words(e),
        reach_words(e)
    );
    Note {
        summary: match l.portless {
            None => format!("Unexpected listener on {}", what(e)),
            Some(_) => format!("Unexpected {}", what(e)),
        },
        body,
        urgency: if is_critical(e) {
            Urgency::Critical
        } else {
            Urgency::Normal
        },
    }
}

/// The update when an alerted listener goes away or is allowed.
pub fn cleared_note(e: &WireEvent) -> Note {
    let why = e.detail.as_deref().unwrap_or("listener closed");
    let body = format!("{}\n{}\n{why}", program_words(e), iana_words(e));
    Note {
        summary: format!("No longer alerting: {}", what(e)),
        body,
        urgency: Urgency::Low,
    }
}

fn summary_note(b: &Burst) -> Note {
    let mut ports = b.ports.join(", ");
    if b.count > b.ports.len() {
        let _ = write!(ports, " and {} more", b.count - b.ports.len());
    }
    Note {
        summary: format!("{} unexpected listeners", b.count),
        body: format!("{ports}\nRun `portsentinel scan` to see them all."),
        urgency: if b.critical {
            Urgency::Critical
        } else {
            Urgency::Normal
        },
    }
}

impl Planner {
    pub fn new(burst_window: Duration) -> Planner {
        Planner {
            burst_window,
            shown: HashMap::new(),
            burst: None,
            next_slot: 1,
        }
    }

    fn slot(&mut self) -> u64 {
        let s = self.next_slot;
        self.next_slot += 1;
        s
    }

    /// The actions one event calls for.
    pub fn on_event(&mut self, now: Instant, e: &WireEvent) -> Vec<Action> {
        match e.kind {
            EventKind::AlertRaised => self.on_alert(now, e),
            EventKind::AlertCleared => match self.shown.remove(&e.alert_id) {
                Some(Shown { slot, own: true }) => vec![Action::Update {
                    slot,
                    note: cleared_note(e),
                }],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn on_alert(&mut self, now: Instant, e: &WireEvent) -> Vec<Action> {
        if self.shown.contains_key(&e.alert_id) {
            return Vec::new(); // shown before this reconnect or daemon restart
        }
        let port = what(e);
        let critical = is_critical(e);
        let in_burst = self
            .burst
            .as_ref()
            .is_some_and(|b| now.saturating_duration_since(b.last) < self.burst_window);
        if !in_burst {
            let slot = self.slot();
            self.burst = Some(Burst {
                last: now,
                count: 1,
                ports: vec![port],
                critical,
                summary_slot: None,
            });
            self.shown
                .insert(e.alert_id.clone(), Shown { slot, own: true });
            return vec![Action::Show {
                slot,
                note: alert_note(e),
            }];
        }
        let fresh = self.next_slot;
        let b = self.burst.as_mut().expect("in a burst");
        b.last = now;
        b.count += 1;
        b.critical |= critical;
        if b.ports.len() < SUMMARY_PORTS {
            b.ports.push(port);
        }
        let note = summary_note(b);
        let action = match b.summary_slot {
            Some(slot) => Action::Update { slot, note },
            None => {
                b.summary_slot = Some(fresh);
                self.next_slot += 1;
                Action::Show { slot: fresh, note }
            }
        };
        let slot = match &action {
            Action::Show { slot, .. } | Action::Update { slot, .. } => *slot,
        };
        self.shown
            .insert(e.alert_id.clone(), Shown { slot, own: false });
        vec![action]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::classify::Iana;
    use crate::model::report::Report;
    use crate::model::{Pid, Process};
    use crate::model::{Protocol, Severity, Verdict};

    fn alert(id: &str, port: u16, addr: &str, name: &str) -> WireEvent {
        let reach = Reach::of(addr.parse().unwrap(), None);
        WireEvent {
            version: 1,
            kind: EventKind::AlertRaised,
            time: String::new(),
            alert_id: id.into(),
            replay: false,
            listener: Report {
                protocol: Protocol::Tcp,
                address: addr.parse().unwrap(),
                port,
                v6only: None,
                reach,
                iana: Iana {
                    status: Status::Unassigned,
                    listed: true,
                    services: vec![],
                },
                range: PortRange::of(port),
                process: Some(std::sync::Arc::new(Process {
                    pid: Pid(4242),
                    name: name.into(),
                    exe: Some("/usr/bin/evil".into()),
                    cmdline: vec![],
                    uid: Some(1000),
                    user: Some("alice".into()),
                    unit: None,
                    name_lossy: false,
                    exe_file: None,
                    mount_ns: None,
                    start_time: 0,
                    container: None,
                    ns_pid: None,
                })),
                pids: vec![4242],
                owner_unknown: None,
                uid: 1000,
                inodes: vec![1],
                verdict: Verdict {
                    alert: true,
                    severity: Severity::High,
                    reason: "r".into(),
                    condition: None,
                    rule: None,
                    expect: None,
                },
                netns: crate::model::listener::NetnsView {
                    inode: 1,
                    name: None,
                    host: true,
                },
                container: None,
                kind: crate::model::Kind::Port,
                portless: None,
                zone: None,
            },
            detail: None,
            previous_pid: None,
            alert_suppressed: false,
            source: None,
            lifetime_ms: None,
        }
    }

    fn cleared(mut e: WireEvent) -> WireEvent {
        e.kind = EventKind::AlertCleared;
        e.detail = Some("listener closed".into());
        e
    }

    /// A sniffer's notification says what it is, with no port and no IANA words.
    #[test]
    fn a_packet_socket_note_says_what_it_reads() {
        use crate::model::report::{FilterReport, PortLessReport};
        let mut e = alert("p", 3, "0.0.0.0", "kworker/0:1");
        e.listener.protocol = Protocol::Packet;
        e.listener.kind = crate::model::Kind::Packet;
        e.listener.reach = Reach::Link;
        e.listener.portless = Some(PortLessReport {
            ethertype: Some(3),
            ip_protocol: None,
            socket_type: "raw".into(),
            interface: Some("eth0".into()),
            filter: FilterReport {
                attached: Some(true),
                instructions: Some(4),
            },
            fanout: None,
        });
        let note = alert_note(&e);
        assert_eq!(note.summary, "Unexpected packet socket (all (0x0003))");
        assert!(
            note.body.contains("a filter of 4 instructions"),
            "{}",
            note.body
        );
        assert!(note.body.contains("frames off eth0"), "{}", note.body);
        assert!(!note.body.contains("IANA"), "{}", note.body);
    }

    #[test]
    fn one_alert_then_its_close_updates_the_same_slot() {
        let mut p = Planner::new(Duration::from_secs(2));
        let t = Instant::now();
        let a = alert("a", 867, "0.0.0.0", "nc");
        let acts = p.on_event(t, &a);
        let [Action::Show { slot, note }] = acts.as_slice() else {
            panic!("{acts:?}")
        };
        assert_eq!(note.summary, "Unexpected listener on 867/tcp");
        assert_eq!(note.urgency, Urgency::Critical);
        assert!(
            note.body.contains("nc (pid 4242)") && note.body.contains("unassigned"),
            "{}",
            note.body
        );
        assert!(
            note.body.contains("all IPv4 interfaces (0.0.0.0)"),
            "{}",
            note.body
        );
        let acts = p.on_event(t + Duration::from_secs(10), &cleared(a));
        assert!(
            matches!(acts.as_slice(), [Action::Update { slot: s, note }] if s == slot && note.urgency == Urgency::Low)
        );
    }

    #[test]
    fn replays_are_not_shown_twice() {
        let mut p = Planner::new(Duration::from_secs(2));
        let t = Instant::now();
        let a = alert("a", 867, "0.0.0.0", "nc");
        assert_eq!(p.on_event(t, &a).len(), 1);
        let mut replay = a.clone();
        replay.replay = true;
        assert!(p.on_event(t + Duration::from_secs(30), &replay).is_empty());
        assert_eq!(
            p.on_event(
                t + Duration::from_secs(31),
                &alert("b", 868, "0.0.0.0", "nc")
            )
            .len(),
            1
        );
    }

    #[test]
    fn loopback_is_normal_urgency() {
        let mut p = Planner::new(Duration::from_secs(2));
        let acts = p.on_event(Instant::now(), &alert("a", 867, "127.0.0.1", "nc"));
        assert!(
            matches!(&acts[..], [Action::Show { note, .. }] if note.urgency == Urgency::Normal)
        );
    }

    #[test]
    fn a_burst_is_one_summary_that_counts() {
        let mut p = Planner::new(Duration::from_secs(2));
        let t = Instant::now();
        let mut shows = 0;
        let mut last = None;
        for i in 0..50u16 {
            let at = t + Duration::from_millis(u64::from(i) * 20);
            for a in p.on_event(at, &alert(&format!("id{i}"), 800 + i, "0.0.0.0", "x")) {
                match a {
                    Action::Show { note, .. } => {
                        shows += 1;
                        last = Some(note);
                    }
                    Action::Update { note, .. } => last = Some(note),
                }
            }
        }
        assert_eq!(shows, 2, "the first alert, then one summary");
        let last = last.unwrap();
        assert_eq!(last.summary, "50 unexpected listeners");
        assert!(
            last.body
                .starts_with("800/tcp, 801/tcp, 802/tcp, 803/tcp, 804/tcp and 45 more"),
            "{}",
            last.body
        );
        // After the window, alerts stand alone again.
        let later = t + Duration::from_secs(10);
        assert!(
            matches!(&p.on_event(later, &alert("z", 900, "0.0.0.0", "x"))[..], [Action::Show { note, .. }] if note.summary.contains("900/tcp"))
        );
    }

    #[test]
    fn markup_from_processes_is_escaped() {
        let note = alert_note(&alert("a", 867, "0.0.0.0", "<b>bold</b> & <i>"));
        let body = escape_markup(&note.body);
        assert!(
            body.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;"),
            "{body}"
        );
        assert!(!body.contains("<b>"));
        // The notifier's own line breaks stay; a newline from a process is made visible.
        let evil = alert_note(&alert("a", 867, "0.0.0.0", "x\ny"));
        assert!(
            evil.body.starts_with("x\\ny (pid 4242)\n/usr/bin/evil\n"),
            "{}",
            evil.body
        );
    }
}
