//! The policy: which listeners are expected, and why the others raise an alert.
//!
//! A verdict always carries its reason: the rule that decided (with its name and place in
//! the config file), or the registry fact that made it an alert. `[[expect]]` entries come
//! first (a port someone must hold is alerted when anyone else holds it, whatever the
//! other rules say), then `[[allow]]` entries in file order, then the built-in rules,
//! then the `alert_on` conditions; the first that decides wins.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::classify::{Iana, registry_clause};
use super::listener::{Kind, Listener};
pub use super::rules::{
    AddressMatch, AllowRule, ExpectRule, Holder, Host, Place, PortMatch, RuleMatch, UserMatch,
    held_by, strip_deleted,
};
use crate::registry::{PortRange, Status};

/// A class of listener that raises an alert unless a rule allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// 0-1023 and IANA never assigned it for this protocol (or no row covers it).
    WellKnownUnassigned,
    /// 0-1023 and IANA reserves it.
    WellKnownReserved,
    /// Any port in 0-1023.
    WellKnown,
    /// 1024-49151 and IANA never assigned it.
    RegisteredUnassigned,
    /// Every listener.
    Any,
    /// A packet socket, or a raw socket with a filter (or whose filter cannot be read):
    /// something that reads traffic without a port.
    Sniffer,
    /// A port an `[[expect]]` entry covers, held by another program than the one expected.
    /// Not an `alert_on` condition: it applies whenever such an entry exists.
    UnexpectedOwner,
}

impl Condition {
    pub const ALL: [Condition; 6] = [
        Condition::WellKnownUnassigned,
        Condition::WellKnownReserved,
        Condition::WellKnown,
        Condition::RegisteredUnassigned,
        Condition::Any,
        Condition::Sniffer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::WellKnownUnassigned => "well-known-unassigned",
            Condition::WellKnownReserved => "well-known-reserved",
            Condition::WellKnown => "well-known",
            Condition::RegisteredUnassigned => "registered-unassigned",
            Condition::Any => "any",
            Condition::Sniffer => "sniffer",
            Condition::UnexpectedOwner => "unexpected-owner",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub const DEFAULT: [Condition; 3] = [
        Condition::WellKnownUnassigned,
        Condition::WellKnownReserved,
        Condition::Sniffer,
    ];

    fn holds(self, l: &Listener, range: PortRange, facts: &Iana) -> bool {
        let filter = l.portless.as_deref().map(|p| p.filter);
        match l.protocol.kind() {
            _ if self == Condition::Any => return true,
            Kind::Packet => return self == Condition::Sniffer,
            Kind::Raw => {
                return self == Condition::Sniffer && filter.is_some_and(|f| f.may_be_attached());
            }
            Kind::Port if self == Condition::Sniffer => return false,
            Kind::Port => {}
        }
        match self {
            Condition::WellKnownUnassigned => {
                range == PortRange::WellKnown && facts.status == Status::Unassigned
            }
            Condition::WellKnownReserved => {
                range == PortRange::WellKnown && facts.status == Status::Reserved
            }
            Condition::WellKnown => range == PortRange::WellKnown,
            Condition::RegisteredUnassigned => {
                range == PortRange::Registered && facts.status == Status::Unassigned
            }
            Condition::Any => true,
            Condition::UnexpectedOwner | Condition::Sniffer => false,
        }
    }

    /// How bad a listener that meets this condition is, by where it can be reached from
    /// (for a sniffer, by whether a filter picks its packets).
    fn severity(self, l: &Listener) -> Severity {
        let external = l.reach().is_external();
        // A sniffer is as grave under `any` as under `sniffer`.
        let sniffer = match (l.protocol.kind(), l.portless.as_deref()) {
            (Kind::Port, _) => None,
            (_, Some(p)) if p.filter.may_be_attached() => Some(Severity::High),
            (Kind::Packet, _) => Some(Severity::Medium),
            (Kind::Raw, _) => None,
        };
        match self {
            Condition::Sniffer | Condition::Any if sniffer.is_some() => {
                sniffer.unwrap_or(Severity::High)
            }
            Condition::WellKnownUnassigned
            | Condition::WellKnownReserved
            | Condition::UnexpectedOwner
                if external =>
            {
                Severity::High
            }
            Condition::WellKnownUnassigned
            | Condition::WellKnownReserved
            | Condition::UnexpectedOwner => Severity::Medium,
            Condition::WellKnown | Condition::RegisteredUnassigned if external => Severity::Medium,
            _ => Severity::Low,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a verdict is. `Info` is what an allowed listener gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Alert conditions, expectations and allow rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub alert_on: BTreeSet<Condition>,
    pub expect: Vec<ExpectRule>,
    pub allow: Vec<AllowRule>,
    /// The built-in rules for programs that take a port no rule could name in advance
    /// ([`super::builtin`]), tried after `allow`.
    pub builtin_allow: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            alert_on: Condition::DEFAULT.into_iter().collect(),
            expect: Vec::new(),
            allow: Vec::new(),
            builtin_allow: true,
        }
    }
}

/// What the policy says about one listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub alert: bool,
    pub severity: Severity,
    pub reason: String,
    /// The alert condition that fired, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Index of the allow rule that matched, if any.
    #[serde(skip)]
    pub rule: Option<usize>,
    /// Index of the `[[expect]]` entry this listener satisfies, if any.
    #[serde(skip)]
    pub expect: Option<usize>,
}

impl Verdict {
    fn allowed(reason: String) -> Verdict {
        Verdict {
            alert: false,
            severity: Severity::Info,
            reason,
            condition: None,
            rule: None,
            expect: None,
        }
    }

    fn alert(condition: Condition, l: &Listener, reason: String) -> Verdict {
        Verdict {
            alert: true,
            severity: condition.severity(l),
            reason,
            condition: Some(condition),
            rule: None,
            expect: None,
        }
    }
}

/// What a packet or raw socket is, for verdict reasons: `packet socket (all (0x0003)) on
/// all interfaces, with a filter of 6 instructions`.
pub fn portless_clause(l: &Listener) -> String {
    match l.portless.as_deref() {
        Some(p) => format!(
            "{} on {}, with {}",
            l.port_proto(),
            p.interface_words(),
            p.filter.words()
        ),
        None => l.port_proto(),
    }
}

impl Policy {
    /// The rules tried after the expectations: the config's, then the built-in ones.
    pub fn allow_rules(&self) -> impl Iterator<Item = &AllowRule> {
        let builtin: &[AllowRule] = if self.builtin_allow {
            &super::builtin::RULES
        } else {
            &[]
        };
        self.allow.iter().chain(builtin)
    }

    /// Judges one listener, given what IANA says about its port and what the host is.
    pub fn judge(&self, iana: &Iana, l: &Listener, host: &dyn Host) -> Verdict {
        if let Some(v) = self.expectation(l, host) {
            return v;
        }
        let mut near_miss = None;
        for (i, rule) in self.allow_rules().enumerate() {
            match rule.check(l, host) {
                RuleMatch::Yes => {
                    let mut v = Verdict::allowed(format!("allowed by {}", rule.describe()));
                    v.rule = Some(i);
                    v.severity = rule.severity.unwrap_or(v.severity);
                    return v;
                }
                RuleMatch::ExeNotHost(why) if near_miss.is_none() => {
                    near_miss = Some(format!("{} does not apply: {why}", rule.describe()));
                }
                _ => {}
            }
        }
        let range = PortRange::of(l.port);
        let mut fact = match l.protocol.kind() {
            Kind::Port => registry_clause(l, iana),
            _ => portless_clause(l),
        };
        if let Some(why) = near_miss {
            fact = format!("{why}; {fact}");
        }
        // Of the conditions that hold, the gravest decides (a sniffer under `any` is still
        // a sniffer); among equals, the first.
        let fired = self
            .alert_on
            .iter()
            .filter(|c| c.holds(l, range, iana))
            .rev()
            .max_by_key(|c| c.severity(l));
        match fired {
            Some(&condition) => Verdict::alert(
                condition,
                l,
                format!("{fact}; no [[allow]] rule matches (alert_on {condition})"),
            ),
            None => Verdict::allowed(format!("{fact}; no alert_on condition applies")),
        }
    }

    /// The verdict of the first `[[expect]]` entry that covers the listener: the expected
    /// program holds it, or another does (an alert).
    fn expectation(&self, l: &Listener, host: &dyn Host) -> Option<Verdict> {
        let (i, e) = self
            .expect
            .iter()
            .enumerate()
            .find(|(_, e)| e.covers(l, host))?;
        let wanted = e.holder.describe();
        let verdict = match e.holder.check(l, host) {
            RuleMatch::Yes => {
                let mut v = Verdict::allowed(format!("held as expected by {}", e.describe()));
                v.expect = Some(i);
                v
            }
            outcome => {
                let mut reason = format!(
                    "{} is expected to be held by {wanted} ({}); held by {}",
                    l.port_proto(),
                    e.describe(),
                    held_by(l)
                );
                if let RuleMatch::ExeNotHost(why) = outcome {
                    reason.push_str(&format!(" ({why})"));
                }
                Verdict::alert(Condition::UnexpectedOwner, l, reason)
            }
        };
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::classify::{TestHost, path_file_id};
    use crate::model::{Classifier, Inode, Owner, Pid, Process, Protocol, UnknownOwner};
    use crate::registry::Registry;

    trait JudgeWith {
        fn judge_with(&self, registry: &Registry, l: &Listener) -> Verdict;
    }

    impl JudgeWith for Policy {
        fn judge_with(&self, registry: &Registry, l: &Listener) -> Verdict {
            let c = Classifier {
                registry,
                policy: self,
                host: &TestHost,
            };
            c.classify(l).verdict
        }
    }

    fn listener(proto: Protocol, addr: &str, port: u16, owner: Owner) -> Listener {
        Listener {
            protocol: proto,
            address: addr.parse().unwrap(),
            port,
            v6only: None,
            uid: 0,
            inodes: vec![Inode(1)],
            pids: vec![],
            netns: 0,
            owner,
            portless: None,
            zone: None,
        }
    }

    fn process(name: &str, exe: &str) -> Owner {
        Owner::Process(std::sync::Arc::new(Process {
            pid: Pid(100),
            name: name.into(),
            exe: Some(exe.into()),
            cmdline: vec![exe.into()],
            uid: Some(0),
            user: Some("root".into()),
            unit: Some("foo.service".into()),
            name_lossy: false,
            exe_file: Some(path_file_id(strip_deleted(exe))),
            mount_ns: Some(1),
            start_time: 1,
            container: None,
            ns_pid: None,
        }))
    }

    #[test]
    fn default_policy_alerts_on_unassigned_well_known_only() {
        let reg = Registry::builtin();
        let p = Policy::default();
        let v = p.judge_with(
            &reg,
            &listener(Protocol::Tcp, "0.0.0.0", 867, process("nc", "/usr/bin/nc")),
        );
        assert!(v.alert);
        assert_eq!(v.severity, Severity::High);
        assert!(
            v.reason.contains("867/tcp is unassigned by IANA"),
            "{}",
            v.reason
        );
        assert!(
            v.reason.contains("well-known range (0-1023)"),
            "{}",
            v.reason
        );

        let v = p.judge_with(
            &reg,
            &listener(
                Protocol::Tcp,
                "127.0.0.1",
                867,
                process("nc", "/usr/bin/nc"),
            ),
        );
        assert_eq!((v.alert, v.severity), (true, Severity::Medium));

        let v = p.judge_with(
            &reg,
            &listener(
                Protocol::Udp,
                "0.0.0.0",
                1023,
                Owner::Unknown(UnknownOwner::Kernel),
            ),
        );
        assert!(v.alert && v.reason.contains("reserved by IANA"));

        for (port, proto) in [
            (22, Protocol::Tcp),
            (8080, Protocol::Tcp),
            (60000, Protocol::Udp),
        ] {
            let v = p.judge_with(&reg, &listener(proto, "0.0.0.0", port, process("x", "/x")));
            assert!(!v.alert, "{port}/{proto}: {}", v.reason);
        }
        let v = p.judge_with(
            &reg,
            &listener(
                Protocol::Tcp,
                "0.0.0.0",
                22,
                process("sshd", "/usr/sbin/sshd"),
            ),
        );
        assert!(
            v.reason.contains("22/tcp is assigned to ssh by IANA"),
            "{}",
            v.reason
        );
    }

    /// `netns` and `container` keys: a namespace by name or `host`, a container by id
    /// prefix or name; a container in a user's own cgroup subtree only with `user` too.
    #[test]
    fn namespace_and_container_keys() {
        use crate::model::Container;
        use crate::model::rules::NetnsMatch;
        let reg = Registry::builtin();
        let allow = |netns: Vec<NetnsMatch>, containers: &[&str], users: Vec<UserMatch>| Policy {
            allow: vec![AllowRule {
                place: Place {
                    ports: vec![PortMatch::Range(867, 867)],
                    netns,
                    ..Place::default()
                },
                holder: Holder {
                    containers: containers.iter().map(|c| c.to_string()).collect(),
                    users,
                    ..Holder::default()
                },
                ..AllowRule::default()
            }],
            ..Policy::default()
        };
        let in_ns = |netns: u64, container: Option<Container>| {
            let Owner::Process(mut p) = process("nc", "/usr/bin/nc") else {
                unreachable!()
            };
            std::sync::Arc::make_mut(&mut p).container = container.map(std::sync::Arc::new);
            Listener {
                netns,
                ..listener(Protocol::Tcp, "0.0.0.0", 867, Owner::Process(p))
            }
        };
        let vpn = allow(vec![NetnsMatch::Name("ns7".into())], &[], vec![]);
        assert!(!vpn.judge_with(&reg, &in_ns(7, None)).alert);
        assert!(vpn.judge_with(&reg, &in_ns(8, None)).alert);
        assert!(vpn.judge_with(&reg, &in_ns(1, None)).alert);
        let host = allow(vec![NetnsMatch::Host], &[], vec![]);
        assert!(!host.judge_with(&reg, &in_ns(1, None)).alert);
        assert!(host.judge_with(&reg, &in_ns(7, None)).alert);
        let anywhere = allow(vec![NetnsMatch::Any], &[], vec![]);
        assert!(!anywhere.judge_with(&reg, &in_ns(7, None)).alert);

        let web = Container {
            runtime: "docker".into(),
            id: "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c".into(),
            name: Some("web-1".into()),
            pod: None,
            rootless_uid: None,
        };
        for key in ["web-1", "3f4e5d6c7b8a"] {
            let p = allow(vec![], &[key], vec![]);
            assert!(
                !p.judge_with(&reg, &in_ns(7, Some(web.clone()))).alert,
                "{key}"
            );
            assert!(p.judge_with(&reg, &in_ns(7, None)).alert, "{key}");
        }
        // A name that happens to be the start of the id ("3f4e" is hex) is not an id.
        for other in ["db", "3f4e", "3f4e5d6c7b8"] {
            let p = allow(vec![], &[other], vec![]);
            assert!(
                p.judge_with(&reg, &in_ns(7, Some(web.clone()))).alert,
                "{other}"
            );
        }
        // The same name in a user's own subtree: not without the user in the rule.
        let rootless = Container {
            rootless_uid: Some(0),
            ..web.clone()
        };
        let by_name = allow(vec![], &["web-1"], vec![]);
        assert!(
            by_name
                .judge_with(&reg, &in_ns(7, Some(rootless.clone())))
                .alert
        );
        let with_user = allow(vec![], &["web-1"], vec![UserMatch::Uid(0)]);
        assert!(!with_user.judge_with(&reg, &in_ns(7, Some(rootless))).alert);
    }

    #[test]
    fn allow_rules_need_every_key_to_match() {
        let reg = Registry::builtin();
        let rule = AllowRule {
            name: Some("lab".into()),
            origin: "c.toml:3".into(),
            place: Place {
                ports: vec![PortMatch::Range(860, 870)],
                protocol: Some(Protocol::Tcp),
                addresses: vec![
                    AddressMatch::Loopback,
                    AddressMatch::Net("10.0.0.0/8".parse().unwrap()),
                ],
                ..Place::default()
            },
            holder: Holder {
                exes: vec!["/usr/bin/nc".into()],
                ..Holder::default()
            },
            ..AllowRule::default()
        };
        let p = Policy {
            allow: vec![rule],
            ..Policy::default()
        };
        let nc = || process("nc", "/usr/bin/nc (deleted)");
        let v = p.judge_with(&reg, &listener(Protocol::Tcp, "127.0.0.1", 867, nc()));
        assert!(!v.alert);
        assert_eq!(v.reason, "allowed by [[allow]] \"lab\" (c.toml:3)");
        assert_eq!(v.rule, Some(0));
        assert!(
            !p.judge_with(&reg, &listener(Protocol::Tcp, "10.1.2.3", 867, nc()))
                .alert
        );
        assert!(
            !p.judge_with(&reg, &listener(Protocol::Tcp, "::ffff:10.1.2.3", 867, nc()))
                .alert
        );
        // Wrong address, protocol, exe or port: alert.
        assert!(
            p.judge_with(&reg, &listener(Protocol::Tcp, "0.0.0.0", 867, nc()))
                .alert
        );
        assert!(
            p.judge_with(&reg, &listener(Protocol::Udp, "127.0.0.1", 867, nc()))
                .alert
        );
        assert!(
            p.judge_with(
                &reg,
                &listener(Protocol::Tcp, "127.0.0.1", 867, process("nc", "/bin/nc"))
            )
            .alert
        );
        assert!(
            p.judge_with(&reg, &listener(Protocol::Tcp, "127.0.0.1", 871, nc()))
                .alert
        );
        assert!(
            p.judge_with(
                &reg,
                &listener(
                    Protocol::Tcp,
                    "127.0.0.1",
                    867,
                    Owner::Unknown(UnknownOwner::NoPermission)
                )
            )
            .alert
        );
    }

    #[test]
    fn users_units_and_wildcards() {
        let reg = Registry::builtin();
        let p = Policy {
            allow: vec![AllowRule {
                origin: "x:1".into(),
                place: Place {
                    addresses: vec![AddressMatch::Any],
                    ..Place::default()
                },
                holder: Holder {
                    users: vec![UserMatch::Name("root".into())],
                    units: vec!["foo.service".into()],
                    ..Holder::default()
                },
                ..AllowRule::default()
            }],
            ..Policy::default()
        };
        assert!(
            !p.judge_with(
                &reg,
                &listener(Protocol::Tcp, "::", 867, process("a", "/a"))
            )
            .alert
        );
        assert!(
            p.judge_with(
                &reg,
                &listener(Protocol::Tcp, "192.0.2.1", 867, process("a", "/a"))
            )
            .alert
        );
        let by_uid = Policy {
            allow: vec![AllowRule {
                origin: "x:1".into(),
                holder: Holder {
                    users: vec![UserMatch::Uid(0)],
                    ..Holder::default()
                },
                ..AllowRule::default()
            }],
            ..Policy::default()
        };
        // An unknown owner is matched on the socket's uid.
        assert!(
            !by_uid
                .judge_with(
                    &reg,
                    &listener(
                        Protocol::Tcp,
                        "::",
                        867,
                        Owner::Unknown(UnknownOwner::Kernel)
                    )
                )
                .alert
        );
    }

    #[test]
    fn stricter_conditions() {
        let reg = Registry::builtin();
        let p = Policy {
            alert_on: [Condition::WellKnown, Condition::RegisteredUnassigned].into(),
            ..Policy::default()
        };
        let v = p.judge_with(
            &reg,
            &listener(
                Protocol::Tcp,
                "0.0.0.0",
                22,
                process("sshd", "/usr/sbin/sshd"),
            ),
        );
        assert_eq!(
            (v.alert, v.severity, v.condition),
            (true, Severity::Medium, Some(Condition::WellKnown))
        );
        // 1024..: find an unassigned registered port in the table.
        let port = (1024..49151)
            .find(|&p| reg.lookup(Protocol::Tcp, p).status == Status::Unassigned)
            .unwrap();
        assert!(
            p.judge_with(
                &reg,
                &listener(Protocol::Tcp, "0.0.0.0", port, process("a", "/a"))
            )
            .alert
        );
        let any = Policy {
            alert_on: [Condition::Any].into(),
            ..Policy::default()
        };
        let v = any.judge_with(
            &reg,
            &listener(Protocol::Udp, "127.0.0.1", 60000, process("a", "/a")),
        );
        assert_eq!((v.alert, v.severity), (true, Severity::Low));
    }

    /// chronyd's command port is allowed where chronyd keeps it, 323/udp on loopback,
    /// by the file; on any other address, or by another program, alerted.
    #[test]
    fn chronyd_is_allowed_on_its_loopback_command_port_only() {
        let reg = Registry::builtin();
        let p = Policy::default();
        let chronyd = process("chronyd", "/usr/sbin/chronyd");
        let judge = |proto, addr: &str, owner: &Owner| {
            p.judge_with(&reg, &listener(proto, addr, 323, owner.clone()))
        };
        for addr in ["127.0.0.1", "::1"] {
            let v = judge(Protocol::Udp, addr, &chronyd);
            assert!(
                !v.alert && v.reason.contains("chronyd command port"),
                "{v:?}"
            );
        }
        assert!(
            judge(Protocol::Udp, "0.0.0.0", &chronyd).alert,
            "all interfaces"
        );
        assert!(
            judge(Protocol::Udp, "10.0.0.5", &chronyd).alert,
            "an address"
        );
        // 323/tcp is IANA's rpki-rtr: not alerted by default, and not by chronyd's rule.
        let tcp = judge(Protocol::Tcp, "127.0.0.1", &chronyd);
        assert!(!tcp.reason.contains("chronyd"), "{tcp:?}");
        let namesake = process("chronyd", "/tmp/chronyd");
        assert!(
            judge(Protocol::Udp, "127.0.0.1", &namesake).alert,
            "a namesake"
        );
        // The same file run by a user in a user and network namespace of their own (where
        // they are root, and may load code of their own into it): its socket's maker.
        let mut theirs = listener(Protocol::Udp, "127.0.0.1", 323, chronyd.clone());
        theirs.uid = 1000;
        if let Owner::Process(p) = &mut theirs.owner {
            std::sync::Arc::make_mut(p).uid = Some(1000);
        }
        let v = p.judge_with(&reg, &theirs);
        assert!(v.alert && !v.reason.contains("built-in"), "{v:?}");
        // A port from bindresvport, the same.
        let statd = process("rpc.statd", "/usr/sbin/rpc.statd");
        let mut l = listener(Protocol::Tcp, "0.0.0.0", 867, statd);
        assert!(!p.judge_with(&reg, &l).alert);
        l.uid = 1000;
        assert!(p.judge_with(&reg, &l).alert, "a user's rpc.statd");
    }

    /// tcpdump started by root opens its socket as root, then runs as `tcpdump`: allowed
    /// by the socket's maker, not the process's uid now. Anyone else's is alerted.
    #[test]
    fn a_capture_tool_is_allowed_when_root_made_its_socket() {
        use crate::model::Filter;
        let reg = Registry::builtin();
        let p = Policy::default();
        let mut tcpdump = process("tcpdump", "/usr/bin/tcpdump");
        if let Owner::Process(p) = &mut tcpdump {
            std::sync::Arc::make_mut(p).uid = Some(105);
        }
        let mut l = portless(Protocol::Packet, 3, Filter::Attached(4), tcpdump);
        let v = p.judge_with(&reg, &l);
        assert!(
            !v.alert && v.reason.contains("tcpdump run by root"),
            "{v:?}"
        );
        assert_eq!(v.severity, Severity::Low, "allowed, and still worth a look");
        l.uid = 1000;
        assert!(p.judge_with(&reg, &l).alert, "a user's own capture");
    }

    fn portless(
        protocol: Protocol,
        number: u16,
        filter: crate::model::Filter,
        owner: Owner,
    ) -> Listener {
        Listener {
            portless: Some(Box::new(crate::model::PortLess {
                socket_type: "raw".into(),
                ifindex: 2,
                interface: Some("eth0".into()),
                filter,
                fanout: None,
            })),
            ..listener(protocol, "0.0.0.0", number, owner)
        }
    }

    /// The built-in packet rules allow a socket root made (systemd-networkd's: its own
    /// user), not the same file run by a user in a namespace of their own.
    #[test]
    fn built_in_packet_rules_need_a_socket_root_made() {
        use crate::model::Filter;
        let reg = Registry::builtin();
        let p = Policy::default();
        let dhclient = process("dhclient", "/usr/sbin/dhclient");
        let mut l = portless(Protocol::Packet, 3, Filter::Attached(6), dhclient);
        assert!(!p.judge_with(&reg, &l).alert);
        l.uid = 1000;
        assert!(p.judge_with(&reg, &l).alert, "a user's dhclient");
        let mut networkd = process("systemd-networkd", "/usr/lib/systemd/systemd-networkd");
        if let Owner::Process(p) = &mut networkd {
            std::sync::Arc::make_mut(p).uid = Some(998);
        }
        let mut l = portless(Protocol::Packet, 3, Filter::Attached(6), networkd);
        l.uid = 998;
        let v = p.judge_with(&reg, &l);
        assert!(!v.alert && v.reason.contains("systemd-networkd"), "{v:?}");
    }

    /// Packet sockets and filtered raw sockets are sniffers: alerted unless the program's
    /// file is one the built-in rules or a `kind` rule allow; a name proves nothing, and a
    /// rule written for ports never allows one.
    #[test]
    fn sniffers() {
        use crate::model::Filter;
        let reg = Registry::builtin();
        let p = Policy::default();
        let judge = |p: &Policy, l: &Listener| p.judge_with(&reg, l);
        let bpfdoor = process("dhclient", "/tmp/.x");
        for (filter, severity) in [
            (Filter::Attached(6), Severity::High),
            (Filter::Unknown, Severity::High),
            (Filter::None, Severity::Medium),
        ] {
            let v = judge(&p, &portless(Protocol::Packet, 3, filter, bpfdoor.clone()));
            assert_eq!((v.alert, v.severity), (true, severity), "{v:?}");
            assert_eq!(v.condition, Some(Condition::Sniffer));
        }
        let v = judge(
            &p,
            &portless(Protocol::Packet, 3, Filter::Attached(6), bpfdoor.clone()),
        );
        assert!(
            v.reason
                .contains("packet socket (all (0x0003)) on eth0, with a filter of 6 instructions"),
            "{}",
            v.reason
        );
        // The real dhclient, by its file.
        let dhclient = process("dhclient", "/usr/sbin/dhclient");
        let v = judge(
            &p,
            &portless(Protocol::Packet, 3, Filter::Attached(6), dhclient.clone()),
        );
        assert!(
            !v.alert && v.reason.contains("built-in rule \"dhclient"),
            "{v:?}"
        );
        let off = Policy {
            builtin_allow: false,
            ..Policy::default()
        };
        assert!(judge(&off, &portless(Protocol::Packet, 3, Filter::None, dhclient)).alert);
        // Raw sockets: a sniffer when a filter is (or may be) attached.
        let raw = |f| portless(Protocol::Raw, 6, f, bpfdoor.clone());
        assert!(judge(&p, &raw(Filter::Unknown)).alert);
        assert!(!judge(&p, &raw(Filter::None)).alert);
        // A rule for ports does not allow a sniffer; one with `kind` does.
        let mut by_exe = AllowRule {
            name: Some("x".into()),
            origin: "c.toml:1".into(),
            holder: Holder {
                exes: vec!["/tmp/.x".into()],
                ..Holder::default()
            },
            ..AllowRule::default()
        };
        let with = |rule: &AllowRule| Policy {
            allow: vec![rule.clone()],
            ..Policy::default()
        };
        let sniffer = portless(Protocol::Packet, 3, Filter::None, bpfdoor.clone());
        assert!(judge(&with(&by_exe), &sniffer).alert);
        by_exe.place.kinds = vec![crate::model::Kind::Packet];
        by_exe.place.interfaces = vec!["eth1".into()];
        assert!(judge(&with(&by_exe), &sniffer).alert, "another interface");
        by_exe.place.interfaces = vec!["eth0".into()];
        assert!(!judge(&with(&by_exe), &sniffer).alert);
        // Port conditions say nothing of sniffers; `any` covers them too.
        let any = Policy {
            alert_on: [Condition::Any].into_iter().collect(),
            ..Policy::default()
        };
        assert!(judge(&any, &raw(Filter::None)).alert);
        let v = judge(&any, &raw(Filter::Unknown));
        assert_eq!(
            (v.condition, v.severity),
            (Some(Condition::Any), Severity::High)
        );
    }
}
