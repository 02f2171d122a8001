//! A log record: journald fields, rendered as a native journal entry, a `key=value` text
//! line or a JSON line.
//!
//! Every value that comes from a process (name, exe, command line, unit) is escaped with
//! [`crate::text::escape_control`] before it becomes a field, so no sink can be made to
//! show a forged line or a terminal escape; the journal encoding is also length-prefixed
//! for any value that still holds a newline.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::model::expect::{ExpectEvent, ExpectKind};
use crate::model::{Event, EventKind, Owner, PortMatch};
use crate::text::{clip, escape_control, join_cmdline, truncate};

/// journald priorities (syslog levels).
pub mod priority {
    pub const ERR: u8 = 3;
    pub const WARNING: u8 = 4;
    pub const NOTICE: u8 = 5;
    pub const INFO: u8 = 6;
    pub const DEBUG: u8 = 7;
}

/// Message ids of the daemon's own records (events have theirs in [`EventKind`]).
pub mod message_id {
    pub const CONFIG_REJECTED: &str = "ced820f470394fc5974c79e332d3ec87";
    pub const CONFIG_RELOADED: &str = "d8e679d922b4497aacb5f48d119bbdde";
}

/// Longest command line kept in a record, in characters.
const CMDLINE_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: SystemTime,
    pub priority: u8,
    pub message: String,
    /// `(FIELD, value)`, in the order they are written; `MESSAGE`, `PRIORITY` and
    /// `SYSLOG_IDENTIFIER` are added by the renderers.
    pub fields: Vec<(&'static str, String)>,
}

impl Record {
    /// A plain daemon record (start-up, reload, a rejected config).
    /// The message is escaped here, like every field of every record: a record holds
    /// text in one escaped form, and each output writes it as it is.
    pub fn plain(priority: u8, message_id: Option<&'static str>, message: String) -> Record {
        let mut fields = Vec::new();
        if let Some(id) = message_id {
            fields.push(("MESSAGE_ID", id.to_owned()));
        }
        Record {
            time: SystemTime::now(),
            priority,
            message: escape_control(&message).into_owned(),
            fields,
        }
    }

    /// Adds a field of the daemon's own text (an error message, a path), escaped.
    pub fn push(&mut self, name: &'static str, value: &str) {
        self.fields.push((name, escape_control(value).into_owned()));
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The journal priority of an event.
    pub fn priority_of(e: &Event) -> u8 {
        match e.kind {
            EventKind::AlertRaised => priority::WARNING,
            EventKind::AlertCleared | EventKind::ListenerOwnerChanged => priority::NOTICE,
            _ if e.alert_suppressed => priority::NOTICE,
            _ => priority::INFO,
        }
    }

    /// An event's record: its classification formatted, nothing worked out again.
    pub fn from_event(e: &Event) -> Record {
        let l = &e.listener;
        let class = &e.class;
        let mut f: Vec<(&'static str, String)> = Vec::with_capacity(24);
        f.push(("MESSAGE_ID", e.kind.message_id().to_owned()));
        f.push(("PORTSENTINEL_EVENT", e.kind.as_str().to_owned()));
        f.push(("LISTEN_PROTO", l.protocol.to_string()));
        f.push(("LISTEN_KIND", l.protocol.kind().to_string()));
        match l.portless.as_deref() {
            None => {
                f.push(("LISTEN_ADDRESS", l.address_words()));
                f.push(("LISTEN_PORT", l.port.to_string()));
            }
            Some(p) => portless_fields(l, p, &mut f),
        }
        f.push(("LISTEN_REACH", class.reach.as_str().to_owned()));
        container_fields(e, &mut f);
        if l.portless.is_none() {
            f.push(("IANA_STATUS", class.iana.status.to_string()));
            if !class.iana.services.is_empty() {
                f.push(("IANA_SERVICE", class.iana.services.join(",")));
            }
            f.push(("PORT_RANGE", class.range.to_string()));
        }
        owner_fields(e, &mut f);
        f.push(("LISTENER_ID", class.alert_id.clone()));
        if let Some(pid) = e.previous_pid {
            f.push(("LISTENER_PREVIOUS_PID", pid.to_string()));
        }
        match &e.previous_owner {
            Some(Owner::Process(p)) => {
                if let Some(exe) = &p.exe {
                    f.push(("LISTENER_PREVIOUS_EXE", escape_control(exe).into_owned()));
                }
            }
            Some(Owner::Unknown(why)) => f.push(("LISTENER_PREVIOUS_UNKNOWN", serde_plain(why))),
            None => {}
        }
        let verdict = &class.verdict;
        if verdict.alert {
            f.push(("ALERT_REASON", verdict.reason.clone()));
            f.push(("ALERT_SEVERITY", verdict.severity.to_string()));
        } else {
            f.push(("VERDICT_REASON", verdict.reason.clone()));
            // Allowed, yet worth a look (a capture tool running).
            if verdict.severity != crate::model::Severity::Info {
                f.push(("VERDICT_SEVERITY", verdict.severity.to_string()));
            }
        }
        if e.alert_suppressed {
            f.push(("ALERT_SUPPRESSED", "flapping".to_owned()));
        }
        if let Some(d) = &e.detail {
            f.push(("EVENT_DETAIL", d.clone()));
        }
        if let Some(a) = e.announced {
            f.push(("EVENT_SOURCE", "ebpf".to_owned()));
            if let Some(t) = a.lifetime {
                f.push(("LISTEN_LIFETIME_MS", t.as_millis().to_string()));
            }
        }
        Record {
            time: e.time,
            priority: Self::priority_of(e),
            message: event_message(e),
            fields: f,
        }
    }

    /// A required listener gone missing (priority 4) or come back (5).
    pub fn from_expectation(e: &ExpectEvent) -> Record {
        let rule = &e.rule;
        let wanted = rule.holder.describe();
        let (priority, message) = match e.kind {
            ExpectKind::Missing => (
                priority::WARNING,
                format!(
                    "expected listener missing: nothing held by {wanted} listens on {} ({}), for {} s",
                    rule.where_(),
                    rule.describe(),
                    e.missing_for.as_secs()
                ),
            ),
            ExpectKind::Restored => (
                priority::NOTICE,
                format!(
                    "expected listener back: {wanted} listens on {} again ({}), after {} s",
                    rule.where_(),
                    rule.describe(),
                    e.missing_for.as_secs()
                ),
            ),
        };
        let mut r = Record::plain(priority, Some(e.kind.message_id()), message);
        r.time = e.time;
        r.fields
            .push(("PORTSENTINEL_EVENT", e.kind.as_str().to_owned()));
        r.push("EXPECT_NAME", &rule.name);
        r.push("EXPECT_RULE", &rule.origin);
        r.push("EXPECT_HOLDER", &wanted);
        if let [PortMatch::Range(a, b)] = rule.place.ports[..]
            && a == b
        {
            r.fields.push(("LISTEN_PORT", a.to_string()));
        }
        if let Some(p) = rule.place.protocol {
            r.fields.push(("LISTEN_PROTO", p.to_string()));
        }
        r.fields
            .push(("MISSING_SECONDS", e.missing_for.as_secs().to_string()));
        r
    }

    /// `2026-11-26T06:34:00.123Z <4> alert-raised MESSAGE="..." LISTEN_PROTO=tcp ...`
    pub fn to_text_line(&self) -> String {
        let mut out = String::with_capacity(256);
        let _ = write!(
            out,
            "{} <{}> MESSAGE={}",
            humantime::format_rfc3339_millis(self.time),
            self.priority,
            quote(&self.message)
        );
        for (k, v) in &self.fields {
            let _ = write!(out, " {k}={}", quote(v));
        }
        out.push('\n');
        out
    }

    /// One JSON object with the journal's field names, and `__REALTIME_TIMESTAMP`.
    pub fn to_json_line(&self) -> String {
        let mut map = serde_json::Map::new();
        let micros = self
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        map.insert("__REALTIME_TIMESTAMP".into(), micros.to_string().into());
        map.insert("PRIORITY".into(), self.priority.to_string().into());
        map.insert("SYSLOG_IDENTIFIER".into(), IDENTIFIER.into());
        map.insert("MESSAGE".into(), self.message.clone().into());
        for (k, v) in &self.fields {
            map.insert((*k).into(), v.clone().into());
        }
        let mut s = crate::text::json::to_string(&serde_json::Value::Object(map));
        s.push('\n');
        s
    }

    /// The native journal protocol: `FIELD=value\n`, or for a value holding a newline,
    /// `FIELD\n` + 64-bit little-endian length + value + `\n`.
    pub fn to_journal_datagram(&self, buf: &mut Vec<u8>) {
        buf.clear();
        let mut put = |k: &str, v: &str| {
            if v.contains('\n') {
                buf.extend_from_slice(k.as_bytes());
                buf.push(b'\n');
                buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
                buf.extend_from_slice(v.as_bytes());
            } else {
                buf.extend_from_slice(k.as_bytes());
                buf.push(b'=');
                buf.extend_from_slice(v.as_bytes());
            }
            buf.push(b'\n');
        };
        put("PRIORITY", &self.priority.to_string());
        put("SYSLOG_IDENTIFIER", IDENTIFIER);
        put("MESSAGE", &self.message);
        // When it happened: journald stamps arrival, which differs for records held back
        // while journald was away.
        put(
            "PORTSENTINEL_TIME",
            &humantime::format_rfc3339_micros(self.time).to_string(),
        );
        for (k, v) in &self.fields {
            put(k, v);
        }
    }
}

/// What a packet or raw socket listens to; no port and no IANA facts, which it has not.
fn portless_fields(
    l: &crate::model::Listener,
    p: &crate::model::PortLess,
    f: &mut Vec<(&'static str, String)>,
) {
    use crate::model::{Filter, Protocol};
    let name = crate::model::listener::portless_protocol_name(l.protocol, l.port);
    if l.protocol == Protocol::Packet {
        f.push(("PACKET_PROTOCOL", name));
        f.push(("PACKET_TYPE", p.socket_type.clone()));
        f.push(("PACKET_INTERFACE", p.interface_words()));
    } else {
        f.push(("LISTEN_ADDRESS", l.address.to_string()));
        f.push(("RAW_PROTOCOL", name));
    }
    match p.filter {
        Filter::Attached(n) => f.push(("FILTER_INSTRUCTIONS", n.to_string())),
        Filter::None => f.push(("FILTER_INSTRUCTIONS", "0".to_owned())),
        Filter::Unknown => f.push(("FILTER_INSTRUCTIONS", "unknown".to_owned())),
    }
    if let Some(group) = p.fanout {
        f.push(("PACKET_FANOUT", group.to_string()));
    }
}

/// Where the listener is: its network namespace (and its name), its container.
fn container_fields(e: &Event, f: &mut Vec<(&'static str, String)>) {
    let ns = &e.class.netns;
    if ns.inode != 0 {
        f.push(("LISTEN_NETNS", ns.inode.to_string()));
    }
    if ns.host {
        f.push(("LISTEN_NETNS_NAME", "host".to_owned()));
    } else if let Some(name) = &ns.name {
        f.push(("LISTEN_NETNS_NAME", escape_control(name).into_owned()));
    }
    if let Some(c) = &e.class.container {
        f.push(("CONTAINER_RUNTIME", c.runtime.clone()));
        f.push(("CONTAINER_ID", c.short_id().to_owned()));
        if let Some(name) = &c.name {
            f.push(("CONTAINER_NAME", escape_control(name).into_owned()));
        }
        if let Some(pod) = &c.pod {
            f.push(("POD_UID", pod.clone()));
        }
        if let Some(uid) = c.rootless_uid {
            f.push(("CONTAINER_ROOTLESS_UID", uid.to_string()));
        }
    }
}

/// The owner's fields: the process where it was read, else why not.
fn owner_fields(e: &Event, f: &mut Vec<(&'static str, String)>) {
    let l = &e.listener;
    match &l.owner {
        Owner::Process(p) => {
            f.push(("LISTENER_PID", p.pid.to_string()));
            if let Some(pid) = p.ns_pid {
                f.push(("LISTENER_NS_PID", pid.to_string()));
            }
            f.push(("LISTENER_COMM", escape_control(&p.name).into_owned()));
            if let Some(exe) = &p.exe {
                f.push(("LISTENER_EXE", escape_control(exe).into_owned()));
            }
            if !p.cmdline.is_empty() {
                f.push((
                    "LISTENER_CMDLINE",
                    truncate(join_cmdline(&p.cmdline).into(), CMDLINE_MAX).into_owned(),
                ));
            }
            f.push(("LISTENER_UID", p.uid.unwrap_or(l.uid).to_string()));
            if let Some(user) = &p.user {
                f.push(("LISTENER_USER", escape_control(user).into_owned()));
            }
            if let Some(unit) = &p.unit {
                f.push(("LISTENER_UNIT", escape_control(unit).into_owned()));
            }
        }
        Owner::Unknown(why) => {
            f.push(("LISTENER_UID", l.uid.to_string()));
            f.push(("LISTENER_UNKNOWN", serde_plain(why)));
        }
    }
}

pub const IDENTIFIER: &str = "portsentinel";

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Quotes a value for the text line when it needs it. The value is already escaped (no
/// control character, backslashes doubled), so it is written as it is; only a quote
/// inside it is written `\x22`, in the same escape scheme, never escaping twice.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '"', '=']) && !v.chars().any(crate::text::is_hidden) {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 8);
    out.push('"');
    // Nothing hidden is expected here; should any be, it is shown, not written raw.
    for c in escape_control_keep_backslash(v).chars() {
        if c == '"' {
            out.push_str("\\x22");
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Escapes hidden characters without doubling backslashes: for text already escaped.
fn escape_control_keep_backslash(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.chars().any(crate::text::is_hidden) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        if crate::text::is_hidden(c) {
            out.push_str(&escape_control(c.encode_utf8(&mut [0; 4])));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn who(e: &Event) -> String {
    owner_words(&e.listener.owner, e.listener.uid)
}

/// `nc[456] (/usr/bin/nc, user alice)`, or why the owner is unknown.
fn owner_words(owner: &Owner, socket_uid: u32) -> String {
    match owner {
        Owner::Process(p) => {
            let mut s = format!("{}[{}]", clip(&p.name, 32), p.pid);
            let mut extra = Vec::new();
            if let Some(exe) = &p.exe {
                extra.push(clip(exe, 200).into_owned());
            }
            if let Some(u) = &p.user {
                extra.push(format!("user {}", clip(u, 32)));
            } else if let Some(uid) = p.uid {
                extra.push(format!("uid {uid}"));
            }
            if let Some(unit) = &p.unit {
                extra.push(clip(unit, 64).into_owned());
            }
            if !extra.is_empty() {
                let _ = write!(s, " ({})", extra.join(", "));
            }
            s
        }
        Owner::Unknown(why) => format!(
            "an unknown owner ({}; socket uid {socket_uid})",
            why.describe()
        ),
    }
}

fn event_message(e: &Event) -> String {
    let text = event_words(e);
    match e.announced.and_then(|a| a.lifetime) {
        // Between two polls: say so, and for how long.
        Some(t) if matches!(e.kind, EventKind::AlertRaised | EventKind::ListenerOpened) => {
            format!("{text} (listened {} ms, between two polls)", t.as_millis())
        }
        Some(t) => format!("{text} (listened {} ms)", t.as_millis()),
        None => text,
    }
}

fn event_words(e: &Event) -> String {
    let l = &e.listener;
    let at = match l.portless.as_deref() {
        None => format!(
            "{}/{} on {} ({})",
            l.port,
            l.protocol,
            l.display_address(),
            e.class.reach_words()
        ),
        Some(_) => {
            let place = e
                .class
                .place_words()
                .map(|w| format!(", {w}"))
                .unwrap_or_default();
            format!("{}{place}", crate::model::policy::portless_clause(l))
        }
    };
    let iana = match l.portless {
        None => format!("IANA: {}", e.class.iana.words()),
        Some(_) => "no port".to_owned(),
    };
    let verdict = &e.class.verdict;
    let whom = who(e);
    match e.kind {
        EventKind::AlertRaised => format!("ALERT: {at} by {whom}: {}", verdict.reason),
        EventKind::AlertCleared => format!(
            "alert cleared: {at} by {whom}: {}",
            e.detail.as_deref().unwrap_or("listener closed")
        ),
        EventKind::ListenerOpened if e.alert_suppressed => {
            format!(
                "listener opened again, not alerted again (flapping): {at} by {whom}: {}",
                verdict.reason
            )
        }
        EventKind::ListenerOpened => format!("listener opened: {at} by {whom} [{iana}]"),
        EventKind::ListenerClosed => format!("listener closed: {at} by {whom}"),
        EventKind::ListenerRestarted => format!(
            "listener restarted: {at} by {whom}: {}",
            e.detail.as_deref().unwrap_or("reopened")
        ),
        EventKind::ListenerOwnerChanged => {
            let before = e
                .previous_owner
                .as_ref()
                .map_or_else(|| "an unknown owner".to_owned(), |o| owner_words(o, l.uid));
            format!(
                "listener changed hands: {at} now held by {whom}, before by {before}: {}",
                verdict.reason
            )
        }
        EventKind::ListenerPresent => {
            let verdict = if verdict.alert {
                "not allowed"
            } else {
                "allowed"
            };
            format!("listening at start: {at} by {whom} [{iana}; {verdict}]")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Inode, Listener, Pid, Process, Protocol};

    /// The alert of a program called `name` (pid 42) listening on 0.0.0.0:867.
    pub(crate) fn event(name: &str) -> Event {
        let l = Listener {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 867,
            v6only: None,
            uid: 1000,
            inodes: vec![Inode(5)],
            pids: vec![Pid(42)],
            netns: 0,
            owner: Owner::Process(std::sync::Arc::new(Process {
                pid: Pid(42),
                name: name.into(),
                exe: Some(format!("/tmp/{name}")),
                cmdline: vec![format!("/tmp/{name}"), "--flag".into()],
                uid: Some(1000),
                user: Some("alice".into()),
                unit: Some("session-2.scope".into()),
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
        crate::model::events::first_event(l)
    }

    #[test]
    fn alert_record_has_the_contract_fields() {
        let r = Record::from_event(&event("listen"));
        assert_eq!(r.priority, 4);
        for (k, v) in [
            ("MESSAGE_ID", "72a41cfb5a384d3fb2b30ae71670a2d4"),
            ("LISTEN_PROTO", "tcp"),
            ("LISTEN_ADDRESS", "0.0.0.0"),
            ("LISTEN_PORT", "867"),
            ("IANA_STATUS", "unassigned"),
            ("PORT_RANGE", "well-known"),
            ("LISTENER_PID", "42"),
            ("LISTENER_COMM", "listen"),
            ("LISTENER_EXE", "/tmp/listen"),
            ("LISTENER_UID", "1000"),
            ("LISTENER_UNIT", "session-2.scope"),
        ] {
            assert_eq!(r.field(k), Some(v), "{k}");
        }
        assert!(
            r.field("ALERT_REASON")
                .unwrap()
                .contains("unassigned by IANA")
        );
        assert!(r.message.starts_with("ALERT: 867/tcp on 0.0.0.0 (all IPv4 interfaces) by listen[42] (/tmp/listen, user alice, session-2.scope)"), "{}", r.message);
    }

    #[test]
    fn injected_names_stay_in_their_field() {
        let r = Record::from_event(&event("evil\nPRIORITY=0\nMESSAGE=forged\x1b[2J"));
        assert_eq!(
            r.field("LISTENER_COMM"),
            Some("evil\\nPRIORITY=0\\nMESSAGE=forged\\x1b[2J")
        );
        let line = r.to_text_line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\x1b'));
        let json = r.to_json_line();
        assert_eq!(json.matches('\n').count(), 1);
        let mut d = Vec::new();
        r.to_journal_datagram(&mut d);
        let text = String::from_utf8(d).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("PRIORITY=")).count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("MESSAGE=")).count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn journal_datagram_length_prefixes_multiline_values() {
        // Records escape their text, so this takes one built by hand: the encoder must
        // still be safe for a value that holds a newline.
        let mut r = Record::plain(priority::ERR, None, String::new());
        r.message = "two\nlines".into();
        r.fields.push(("X", "y".into()));
        let mut d = Vec::new();
        r.to_journal_datagram(&mut d);
        let mut want = b"PRIORITY=3\nSYSLOG_IDENTIFIER=portsentinel\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\nPORTSENTINEL_TIME=");
        want.extend_from_slice(
            humantime::format_rfc3339_micros(r.time)
                .to_string()
                .as_bytes(),
        );
        want.extend_from_slice(b"\nX=y\n");
        assert_eq!(d, want);
    }

    /// Each field is escaped once, in every output: the command line as much as the name.
    #[test]
    fn every_field_is_escaped_once_in_every_output() {
        let mut e = event("a\nb");
        if let Owner::Process(p) = &mut e.listener.owner {
            std::sync::Arc::make_mut(p).cmdline = vec!["/tmp/a\nb".into(), "x\\y".into()];
        }
        let r = Record::from_event(&e);
        assert_eq!(r.field("LISTENER_COMM"), Some("a\\nb"));
        assert_eq!(r.field("LISTENER_CMDLINE"), Some("/tmp/a\\nb x\\\\y"));
        let line = r.to_text_line();
        assert!(line.contains(" LISTENER_COMM=a\\nb "), "{line}");
        assert!(
            line.contains(" LISTENER_CMDLINE=\"/tmp/a\\nb x\\\\y\" "),
            "{line}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(json["LISTENER_COMM"], "a\\nb");
        assert_eq!(json["LISTENER_CMDLINE"], "/tmp/a\\nb x\\\\y");
        let plain = Record::plain(priority::ERR, None, "bad\u{200b}\nconfig".into());
        assert_eq!(plain.message, "bad\\u{200b}\\nconfig");
    }

    #[test]
    fn text_line_quotes_what_needs_it() {
        let mut r = Record::plain(priority::INFO, None, "hello world".into());
        r.fields.push(("A", "plain".into()));
        r.fields.push(("B", "has \"quote\"".into()));
        let line = r.to_text_line();
        assert!(
            line.ends_with(" <6> MESSAGE=\"hello world\" A=plain B=\"has \\x22quote\\x22\"\n"),
            "{line}"
        );
    }
}
