//! The event socket's format: one JSON object per line, each with a `version`.
//!
//! The daemon writes a `hello` line first, then every alert currently active (with
//! `replay: true`), then every event as it happens. `alert_id` names a listener's identity
//! (network namespace + [`ListenerKey`]) with a stable hash, so a subscriber can tell an
//! alert it has shown from a new one across daemon restarts and reconnects.

use serde::{Deserialize, Serialize};

use super::events::{Event, EventKind};
use super::report::Report;

/// The format version; bumped only for changes old readers would misread.
pub const VERSION: u32 = 1;

/// Longest line a reader accepts (a line is far shorter; this bounds a broken peer).
pub const MAX_LINE: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    Hello(Hello),
    Event(Box<WireEvent>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// `portsentinel 0.1.0`
    pub daemon: String,
    /// How many replayed alerts follow.
    pub active_alerts: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    pub version: u32,
    pub kind: EventKind,
    /// RFC 3339, UTC.
    pub time: String,
    /// Stable id of the listener's identity: the same listener has the same id in every
    /// event, across daemon restarts.
    pub alert_id: String,
    /// True for the active alerts sent to a new subscriber before live events.
    #[serde(default)]
    pub replay: bool,
    pub listener: Report,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub previous_pid: Option<u32>,
    #[serde(default)]
    pub alert_suppressed: bool,
    /// `ebpf` when the kernel's events told of this listener (instant detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How long it listened, in milliseconds, by the kernel's times: on the events that
    /// close it, and on both events of a listener that no poll saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<u64>,
}

impl WireEvent {
    pub fn new(e: &Event) -> WireEvent {
        WireEvent {
            version: VERSION,
            kind: e.kind,
            time: humantime::format_rfc3339_millis(e.time).to_string(),
            alert_id: e.class.alert_id.clone(),
            replay: false,
            listener: Report::new(&e.listener, &e.class),
            detail: e.detail.clone(),
            previous_pid: e.previous_pid.map(|p| p.0),
            alert_suppressed: e.alert_suppressed,
            source: e.announced.map(|_| "ebpf".to_owned()),
            lifetime_ms: e
                .announced
                .and_then(|a| a.lifetime)
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// An event's line, newline included, serialized from a borrowed event: the same bytes as
/// `Message::Event(..).to_line()`.
pub fn event_line(e: &WireEvent) -> String {
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "kebab-case")]
    enum Borrowed<'a> {
        Event(&'a WireEvent),
    }
    let mut s = crate::text::json::to_string(&Borrowed::Event(e));
    s.push('\n');
    s
}

impl Message {
    /// One line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = crate::text::json::to_string(self);
        s.push('\n');
        s
    }

    /// Parses one line. Unknown fields are ignored, so newer daemons can add them.
    pub fn from_line(line: &str) -> Result<Message, String> {
        if line.len() > MAX_LINE {
            return Err(format!("line of {} bytes is too long", line.len()));
        }
        let m: Message = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let version = match &m {
            Message::Hello(h) => h.version,
            Message::Event(e) => e.version,
        };
        if version != VERSION {
            return Err(format!(
                "format version {version}, this reader knows {VERSION}"
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::classify::alert_id;
    use crate::model::{Inode, Listener, ListenerKey, Owner, Pid, Process, Protocol};

    fn event() -> Event {
        let l = Listener {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 867,
            v6only: None,
            uid: 0,
            inodes: vec![Inode(1)],
            pids: vec![Pid(7)],
            netns: 0,
            owner: Owner::Process(std::sync::Arc::new(Process {
                pid: Pid(7),
                name: "<b>bold</b> & <i>".into(),
                exe: Some("/x".into()),
                cmdline: vec![],
                uid: Some(0),
                user: Some("root".into()),
                unit: None,
                name_lossy: false,
                exe_file: None,
                mount_ns: None,
                start_time: 0,
                container: None,
                ns_pid: None,
            })),
            portless: None,
            zone: None,
        };
        raise(l)
    }

    fn raise(l: Listener) -> Event {
        let e = crate::model::events::first_event(l);
        assert_eq!(e.kind, EventKind::AlertRaised);
        e
    }

    #[test]
    fn round_trip() {
        let w = WireEvent::new(&event());
        assert_eq!(w.time, "1970-01-01T00:00:00.000Z");
        let line = Message::Event(Box::new(w.clone())).to_line();
        assert_eq!(event_line(&w), line);
        assert!(
            line.starts_with("{\"type\":\"event\",\"version\":1,\"kind\":\"alert-raised\""),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(
            Message::from_line(line.trim_end()).unwrap(),
            Message::Event(Box::new(w))
        );
    }

    /// A packet socket's own fields reach the agent and read back the same.
    #[test]
    fn a_packet_socket_round_trips() {
        let mut l = event().listener;
        l.protocol = Protocol::Packet;
        l.port = 3;
        l.portless = Some(Box::new(crate::model::PortLess {
            socket_type: "raw".into(),
            ifindex: 2,
            interface: Some("eth0".into()),
            filter: crate::model::Filter::Attached(4),
            fanout: None,
        }));
        let w = WireEvent::new(&raise(l));
        let line = Message::Event(Box::new(w.clone())).to_line();
        assert!(line.contains("\"kind\":\"packet\""), "{line}");
        assert!(
            line.contains("\"filter\":{\"attached\":true,\"instructions\":4}"),
            "{line}"
        );
        let back = Message::from_line(line.trim_end()).unwrap();
        assert_eq!(back, Message::Event(Box::new(w)));
    }

    #[test]
    fn alert_id_is_stable_and_ignores_the_pid() {
        let a = event();
        let mut b = event();
        b.listener.pids = vec![Pid(8)];
        if let Owner::Process(p) = &mut b.listener.owner {
            std::sync::Arc::make_mut(p).pid = Pid(8);
        }
        let id = |e: &Event| alert_id(&ListenerKey::of(&e.listener));
        assert_eq!(id(&a), id(&b));
        assert_eq!(
            a.class.alert_id,
            id(&a),
            "the classification carries the same id"
        );
        assert_eq!(id(&a).len(), 16);
        let mut other_ns = ListenerKey::of(&a.listener);
        other_ns.netns = 2;
        assert_ne!(alert_id(&other_ns), id(&a));
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        assert!(
            Message::from_line(
                "{\"type\":\"hello\",\"version\":2,\"daemon\":\"x\",\"active_alerts\":0}"
            )
            .is_err()
        );
        assert!(Message::from_line("not json").is_err());
        assert!(Message::from_line("{}").is_err());
        let ok = Message::from_line(
            "{\"type\":\"hello\",\"version\":1,\"daemon\":\"x\",\"active_alerts\":0,\"new\":true}",
        );
        assert!(ok.is_ok(), "unknown fields are ignored");
    }
}
