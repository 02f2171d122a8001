//! `portsentinel baseline`: the listeners present now, as `[[allow]]` entries.
//!
//! One entry per listener identity (protocol, port, address, program), in a stable order,
//! so two runs on the same machine print the same rules (only the comments, with pids and
//! the time seen, differ). A port in the kernel's ephemeral range is written `"ephemeral"`:
//! programs that pick a new one at each start stay allowed. Saved as
//! `/etc/portsentinel/config.d/50-baseline.toml` with `alert_on = ["any"]`, anything that
//! listens later and is not in it raises an alert.
//!
//! Process names and paths are chosen by processes: values are written as TOML strings
//! (quoted and escaped by the `toml` crate) and comments are escaped, so a hostile name
//! cannot add a line to the file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::SystemTime;

use super::{Failure, snapshot, write_stdout};
use crate::cli::BaselineArgs;
use crate::model::rules::Host as _;
use crate::model::rules::strip_deleted;
use crate::model::{Classifier, Kind, Listener, NetnsView, Owner, Protocol, Reach, UnknownOwner};
use crate::source::SourceMode;
use crate::source::host::user_name;
use crate::text::escape_control;

/// One rule, as its keys will be written: also the order of the output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    protocol: String,
    /// `Some(port)`, or `None` for "ephemeral" (sorted after every port).
    port: PortKey,
    address: String,
    /// Where: `("netns", "host" or a name or netns:INODE)`, or `("container", name or id)`
    /// for a container's listener (its namespace is made anew at each start).
    place: (&'static str, String),
    /// `("exe", path)`, `("unit", name)` or `("process", name)`; none for an owner that
    /// could not be read.
    owner: Option<(&'static str, String)>,
    user: Option<String>,
    /// A packet socket's interface (`"any"` when bound to none); `None` for the others.
    interface: Option<String>,
}

/// Who was seen behind one rule, and what the config in force says of them now.
#[derive(Debug, Default)]
struct Seen {
    /// `sshd[812]`, one per listener.
    who: Vec<String>,
    /// The verdicts of those the config in force alerts on: a baseline allows what is
    /// there, a backdoor too, so these are marked for a person to look at.
    alerted: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PortKey {
    Port(u16),
    Ephemeral,
}

pub fn run(args: &BaselineArgs) -> Result<ExitCode, Failure> {
    let until = match &args.until {
        Some(t) => Some(crate::config::parse_moment(t).map_err(|e| {
            Failure::Usage(format!(
                "--until `{t}` is not a date-time ({e}); write it as RFC 3339, e.g. 2026-12-31T18:00:00Z"
            ))
        })?),
        None => None,
    };
    // The config in force: its alert_on goes into the header, as a reminder, and what
    // it alerts on now is marked.
    let (config, registry) = super::load_config(args.config.config.as_deref())?;
    let snap = snapshot(SourceMode::Auto, false, &args.netns.netns, |_| true)?;
    let host = snap.host();
    let classifier = Classifier {
        registry: &registry,
        policy: &config.policy,
        host: &host,
    };
    // Identical entries (the IPv4 and IPv6 wildcard of one program) are one rule; the
    // comments keep every program and pid seen.
    let mut entries: BTreeMap<Entry, Seen> = BTreeMap::new();
    let mut alerted = Vec::new();
    for l in &snap.listeners {
        let seen = entries
            // The range of the listener's own namespace: the one its rule is matched in.
            .entry(entry(
                l,
                host.ephemeral_ports(l.netns),
                &host.netns(l.netns),
            ))
            .or_default();
        seen.who.push(who(l));
        let verdict = classifier.classify(l).verdict;
        if verdict.alert {
            alerted.push(format!("{} ({})", l.port_proto(), who(l)));
            seen.alerted.push(format!(
                "{} ({}): {}",
                who(l),
                verdict.severity,
                verdict.reason
            ));
        }
    }
    if !alerted.is_empty() {
        eprintln!(
            "warning: the config in force alerts on {} listener(s) that this baseline allows: \
             {}; each is marked `# ALERTED NOW` in it: look at them before you install it",
            alerted.len(),
            escape_control(&alerted.join(", "))
        );
    }
    let unread = (snap.listeners.iter())
        .filter(|l| matches!(l.owner, Owner::Unknown(UnknownOwner::NoPermission)))
        .count();
    if unread > 0 {
        eprintln!(
            "warning: the owners of {unread} listener(s) could not be read (run as root); \
             their rules name only the port and the socket's user"
        );
    }
    let alert_on: Vec<&str> = config.policy.alert_on.iter().map(|c| c.as_str()).collect();
    let mut text = render(&entries, until, SystemTime::now());
    // After the header's four lines: what the config in force alerts on.
    let at = text
        .match_indices('\n')
        .nth(3)
        .map_or(text.len(), |(i, _)| i + 1);
    text.insert_str(
        at,
        &format!("# (The config in force has alert_on = {alert_on:?}.)\n"),
    );
    write_stdout(|out| out.write_all(text.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}

fn entry(l: &Listener, (lo, hi): (u16, u16), netns: &NetnsView) -> Entry {
    let portless = l.portless.as_deref();
    let address = match (l.reach(), l.address) {
        (Reach::Loopback, _) => "loopback".to_owned(),
        (_, a) if a.is_unspecified() => "any".to_owned(),
        (_, IpAddr::V4(a)) => a.to_string(),
        (_, IpAddr::V6(a)) => a.to_string(),
    };
    let (owner, uid) = match &l.owner {
        Owner::Process(p) => {
            let owner = if let Some(exe) = &p.exe {
                Some(("exe", strip_deleted(exe).to_owned()))
            } else if let Some(unit) = &p.unit {
                Some(("unit", unit.clone()))
            } else if !p.name_lossy {
                Some(("process", p.name.clone()))
            } else {
                None
            };
            (owner, p.uid.unwrap_or(l.uid))
        }
        Owner::Unknown(_) => (None, l.uid),
    };
    // "Any port of the range" only for a named program: a rule with no owner key
    // (a kernel socket, an owner that could not be read) would let every program of
    // that user listen on every port of the range.
    let port = if portless.is_none() && owner.is_some() && (lo..=hi).contains(&l.port) {
        PortKey::Ephemeral
    } else {
        PortKey::Port(l.port)
    };
    let container = match &l.owner {
        Owner::Process(p) => p.container.as_ref(),
        Owner::Unknown(_) => None,
    };
    let place = match container {
        Some(c) if !netns.host => (
            "container",
            c.name.clone().unwrap_or_else(|| c.short_id().to_owned()),
        ),
        _ => ("netns", netns.label()),
    };
    Entry {
        protocol: l.protocol.to_string(),
        port,
        address,
        place,
        owner,
        user: Some(user_name(uid).unwrap_or_else(|| uid.to_string())),
        interface: portless
            .filter(|_| l.protocol == Protocol::Packet)
            .map(|p| match (&p.interface, p.ifindex) {
                (_, 0) => "any".to_owned(),
                (Some(name), _) => name.clone(),
                (None, i) => format!("ifindex {i}"),
            }),
    }
}

/// `sshd[812]` or `unknown owner (kernel)`: who was seen, for a comment.
fn who(l: &Listener) -> String {
    match &l.owner {
        Owner::Process(p) => format!("{}[{}]", p.name, p.pid),
        Owner::Unknown(why) => format!("an owner that could not be named ({})", why.as_str()),
    }
}

/// A TOML string, quoted and escaped.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn render(entries: &BTreeMap<Entry, Seen>, until: Option<SystemTime>, now: SystemTime) -> String {
    let now = humantime::format_rfc3339_seconds(now);
    let mut out = format!(
        "# portsentinel baseline: the {} listener(s) present at {now}.\n\
         # Save it as /etc/portsentinel/config.d/50-baseline.toml; with\n\
         # [policy] alert_on = [\"any\"], anything that listens later and is not here\n\
         # raises an alert.\n",
        entries.len()
    );
    for (e, seen) in entries {
        let program = e.owner.as_ref().map_or_else(
            || "unknown owner".to_owned(),
            |(_, v)| v.rsplit('/').next().unwrap_or(v).to_owned(),
        );
        let port = match e.port {
            PortKey::Port(p) => p.to_string(),
            PortKey::Ephemeral => "an ephemeral port".to_owned(),
        };
        let _ = writeln!(out, "\n[[allow]]");
        // Names are the processes' own: escaped, so none can end the comment's line.
        let _ = writeln!(
            out,
            "# {}, seen {now}",
            escape_control(&seen.who.join(", "))
        );
        for alert in &seen.alerted {
            let _ = writeln!(
                out,
                "# ALERTED NOW by the config in force: {}",
                escape_control(alert)
            );
        }
        let kind = write_name(&mut out, e, &program, &port);
        match e.port {
            PortKey::Port(p) => {
                let _ = writeln!(out, "port = {p}");
            }
            PortKey::Ephemeral => out.push_str("port = \"ephemeral\"\n"),
        }
        if kind != Kind::Packet {
            let _ = writeln!(out, "address = {}", quoted(&e.address));
        }
        if let Some(interface) = &e.interface {
            let _ = writeln!(out, "interface = {}", quoted(interface));
        }
        let _ = writeln!(out, "{} = {}", e.place.0, quoted(&e.place.1));
        if let Some((key, value)) = &e.owner {
            let _ = writeln!(out, "{key} = {}", quoted(value));
        }
        if let Some(user) = &e.user {
            let _ = writeln!(out, "user = {}", quoted(user));
        }
        if let Some(t) = until {
            let _ = writeln!(
                out,
                "until = {}",
                quoted(&humantime::format_rfc3339_seconds(t).to_string())
            );
        }
    }
    out
}

/// The entry's `name`, and its `protocol` (a port listener) or `kind` (a packet or raw
/// socket, with no port and no protocol key); returns the kind.
fn write_name(out: &mut String, e: &Entry, program: &str, port: &str) -> Kind {
    let kind = match e.protocol.parse::<Protocol>() {
        Ok(p) => p.kind(),
        Err(_) if e.protocol == "packet" => Kind::Packet,
        Err(_) => Kind::Raw,
    };
    if kind == Kind::Port {
        let name = format!("{program} on {port}/{}", e.protocol);
        let _ = writeln!(out, "name = {}", quoted(&name));
        let _ = writeln!(out, "protocol = {}", quoted(&e.protocol));
    } else {
        // No port and no protocol key: its kind, and the ethertype or IP protocol.
        let number = match e.port {
            PortKey::Port(p) => p,
            PortKey::Ephemeral => 0,
        };
        let proto = if kind == Kind::Packet {
            Protocol::Packet
        } else {
            Protocol::Raw
        };
        let what = crate::model::listener::portless_protocol_name(proto, number);
        let name = format!("{program}: {kind} socket ({what})");
        let _ = writeln!(out, "name = {}", quoted(&name));
        let _ = writeln!(out, "kind = {}", quoted(kind.as_str()));
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_a_named_program_gets_the_whole_ephemeral_range() {
        let netns = NetnsView {
            inode: 1,
            name: None,
            host: true,
        };
        let mut l = Listener {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 40000,
            v6only: None,
            uid: 0,
            inodes: vec![crate::model::Inode(1)],
            pids: vec![],
            netns: 1,
            owner: Owner::Unknown(UnknownOwner::Kernel),
            portless: None,
            zone: None,
        };
        // A kernel socket: no owner key, so its exact port, not any port of the range.
        let e = entry(&l, (32768, 60999), &netns);
        assert_eq!((e.owner, e.port), (None, PortKey::Port(40000)));
        l.owner = Owner::Unknown(UnknownOwner::NoPermission);
        assert_eq!(entry(&l, (32768, 60999), &netns).port, PortKey::Port(40000));
        // Outside the range: the port, whoever holds it.
        l.port = 5353;
        assert_eq!(entry(&l, (32768, 60999), &netns).port, PortKey::Port(5353));
    }

    #[test]
    fn the_output_is_a_valid_drop_in_that_a_name_cannot_break() {
        let mut entries = BTreeMap::new();
        entries.insert(
            Entry {
                protocol: "tcp".into(),
                port: PortKey::Port(867),
                address: "any".into(),
                place: ("netns", "host".into()),
                owner: Some(("exe", "/tmp/x\"\n[[allow]]\nport = 1".into())),
                user: Some("root".into()),
                interface: None,
            },
            Seen {
                who: vec!["evil\n[[allow]]".into()],
                alerted: vec!["evil[7] (high): 867/tcp\n[[allow]]".into()],
            },
        );
        entries.insert(
            Entry {
                protocol: "udp".into(),
                port: PortKey::Ephemeral,
                address: "loopback".into(),
                place: ("container", "web".into()),
                owner: Some(("process", "avahi".into())),
                user: Some("avahi".into()),
                interface: None,
            },
            Seen {
                who: vec!["avahi[9]".into()],
                alerted: Vec::new(),
            },
        );
        entries.insert(
            Entry {
                protocol: "packet".into(),
                port: PortKey::Port(3),
                address: "any".into(),
                place: ("netns", "host".into()),
                owner: Some(("exe", "/usr/sbin/dhclient".into())),
                user: Some("root".into()),
                interface: Some("eth0".into()),
            },
            Seen {
                who: vec!["dhclient[640]".into()],
                alerted: Vec::new(),
            },
        );
        let until = humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let text = render(&entries, Some(until), SystemTime::UNIX_EPOCH);
        let (allow, expect, _) =
            crate::config::parse_drop_in(&text, Path::new("50-baseline.toml")).unwrap();
        assert_eq!(allow.len(), 3, "{text}");
        assert!(
            text.contains(
                "# ALERTED NOW by the config in force: evil[7] (high): 867/tcp\\n[[allow]]\n"
            ),
            "{text}"
        );
        assert!(expect.is_empty());
        // The packet socket: its kind and interface, no protocol and no address.
        assert_eq!(allow[0].place.kinds, [Kind::Packet], "{text}");
        assert_eq!(allow[0].place.interfaces, ["eth0"]);
        assert_eq!(allow[0].place.protocol, None);
        let [_, allow_1, allow_2] = &allow[..] else {
            unreachable!()
        };
        assert_eq!(allow_1.holder.exes, ["/tmp/x\"\n[[allow]]\nport = 1"]);
        assert_eq!(allow_2.place.ports, [crate::model::PortMatch::Ephemeral]);
        assert_eq!(allow_2.until, Some(until));
        assert_eq!(allow_1.place.netns, [crate::model::rules::NetnsMatch::Host]);
        assert_eq!(allow_2.holder.containers, ["web"]);
    }
}
