//! The policy: which listeners are expected, and why the others raise an alert.
//!
//! A verdict always carries its reason: the `[[allow]]` rule that matched (with its name
//! and place in the config file), or the registry fact that made it an alert. Allow rules
//! are tried first, in file order; the first match wins.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::classify::{Iana, registry_clause};
use super::listener::{FileId, Listener, Process, Protocol, Reach};
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
}

impl Condition {
    pub const ALL: [Condition; 5] = [
        Condition::WellKnownUnassigned,
        Condition::WellKnownReserved,
        Condition::WellKnown,
        Condition::RegisteredUnassigned,
        Condition::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::WellKnownUnassigned => "well-known-unassigned",
            Condition::WellKnownReserved => "well-known-reserved",
            Condition::WellKnown => "well-known",
            Condition::RegisteredUnassigned => "registered-unassigned",
            Condition::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub const DEFAULT: [Condition; 2] =
        [Condition::WellKnownUnassigned, Condition::WellKnownReserved];

    fn holds(self, range: PortRange, facts: &Iana) -> bool {
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
        }
    }

    /// How bad a listener that meets this condition is, by where it can be reached from.
    fn severity(self, reach: Reach) -> Severity {
        let external = reach.is_external();
        match self {
            Condition::WellKnownUnassigned | Condition::WellKnownReserved if external => {
                Severity::High
            }
            Condition::WellKnownUnassigned | Condition::WellKnownReserved => Severity::Medium,
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

/// An address an allow rule accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressMatch {
    /// 127.0.0.0/8, ::1 and IPv4-mapped loopback.
    Loopback,
    /// The wildcard addresses 0.0.0.0 and `::` ("listening on any address").
    Any,
    /// An address or network.
    Net(IpNet),
}

impl AddressMatch {
    fn matches(&self, address: IpAddr) -> bool {
        match self {
            AddressMatch::Loopback => Reach::of(address, None) == Reach::Loopback,
            AddressMatch::Any => address.is_unspecified(),
            AddressMatch::Net(net) => {
                net.contains(&address)
                    || match address {
                        // `[::ffff:10.1.2.3]` is the IPv4 address to a person writing a rule.
                        IpAddr::V6(v6) => v6
                            .to_ipv4_mapped()
                            .is_some_and(|v4| net.contains(&IpAddr::V4(v4))),
                        IpAddr::V4(_) => false,
                    }
            }
        }
    }
}

/// A user an allow rule accepts: a name, or a numeric uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserMatch {
    Name(String),
    Uid(u32),
}

/// One validated `[[allow]]` entry. Within a key the values are alternatives; all keys
/// given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowRule {
    pub name: Option<String>,
    /// Where the rule was written: `config.toml:14` (or `built-in`).
    pub origin: String,
    pub ports: Vec<(u16, u16)>,
    pub protocol: Option<Protocol>,
    pub addresses: Vec<AddressMatch>,
    pub processes: Vec<String>,
    pub exes: Vec<String>,
    pub users: Vec<UserMatch>,
    pub units: Vec<String>,
}

/// Files as the daemon sees them in its own mount namespace: what an `exe` rule's path
/// is on this host. The daemon stats the path; tests script it.
pub trait HostFiles {
    /// The identity of the file at `path`, following symlinks.
    fn file_id(&self, path: &str) -> Option<FileId>;
    /// The daemon's own mount namespace.
    fn mount_ns(&self) -> Option<u64>;
}

/// How one rule fares against one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleMatch {
    Yes,
    No,
    /// Every key matches, but the program at the `exe` path is not the host's file at
    /// that path (or cannot be shown to be): the reason, for the verdict.
    ExeNotHost(String),
}

impl AllowRule {
    pub fn check(&self, l: &Listener, host: &dyn HostFiles) -> RuleMatch {
        let process = l.owner.process();
        let any_or = |empty: bool, f: &dyn Fn() -> bool| empty || f();
        let others = any_or(self.ports.is_empty(), &|| {
            self.ports.iter().any(|&(a, b)| (a..=b).contains(&l.port))
        }) && self.protocol.is_none_or(|p| p == l.protocol)
            && any_or(self.addresses.is_empty(), &|| {
                self.addresses.iter().any(|a| a.matches(l.address))
            })
            && any_or(self.processes.is_empty(), &|| {
                // A name is matched on its exact bytes: a lossy one matches nothing.
                process.is_some_and(|p| !p.name_lossy && self.processes.contains(&p.name))
            })
            && any_or(self.users.is_empty(), &|| {
                let uid = process.and_then(|p| p.uid).unwrap_or(l.uid);
                let name = process.and_then(|p| p.user.as_deref());
                self.users.iter().any(|u| match u {
                    UserMatch::Uid(n) => *n == uid,
                    UserMatch::Name(n) => Some(n.as_str()) == name,
                })
            })
            && any_or(self.units.is_empty(), &|| {
                process
                    .and_then(|p| p.unit.as_deref())
                    .is_some_and(|unit| self.units.iter().any(|u| u == unit))
            });
        if !others {
            return RuleMatch::No;
        }
        if self.exes.is_empty() {
            return RuleMatch::Yes;
        }
        let Some((p, exe)) = process.and_then(|p| Some((p, p.exe.as_deref()?))) else {
            return RuleMatch::No;
        };
        let Some(path) = self.exes.iter().find(|e| *e == strip_deleted(exe)) else {
            return RuleMatch::No;
        };
        match exe_is_hosts(p, exe, path, host) {
            Ok(()) => RuleMatch::Yes,
            Err(why) => RuleMatch::ExeNotHost(why),
        }
    }

    /// Whether the rule could ever match this port and protocol (for `explain`).
    pub fn covers_port(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && (self.ports.is_empty() || self.ports.iter().any(|&(a, b)| (a..=b).contains(&port)))
    }

    /// `[[allow]] "ssh" (config.toml:14)` style, for reasons.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("[[allow]] \"{name}\" ({})", self.origin),
            None => format!("[[allow]] at {}", self.origin),
        }
    }
}

/// Whether the program a process runs is the host's file at `path`, not only a file that
/// its own mount namespace shows at that path: the same device and inode. A binary
/// replaced on disk since the process started (an upgrade: `... (deleted)`) has no file
/// left to compare; it passes when the process shares the daemon's mount namespace,
/// where nothing but root can have put another file at that path.
fn exe_is_hosts(p: &Process, exe: &str, path: &str, host: &dyn HostFiles) -> Result<(), String> {
    let replaced = exe.ends_with(" (deleted)");
    if replaced && p.mount_ns.is_some() && p.mount_ns == host.mount_ns() {
        return Ok(());
    }
    match (p.exe_file, host.file_id(path)) {
        (Some(theirs), Some(ours)) if theirs == ours && !replaced => Ok(()),
        (None, _) => Err(format!(
            "exe {path} could not be verified (its file is not readable)"
        )),
        _ => Err(format!("exe {path} is not the host's {path}")),
    }
}

/// The exe of a process whose binary was replaced on disk (an upgrade) reads
/// `/usr/sbin/nginx (deleted)`; it is still that program.
pub fn strip_deleted(exe: &str) -> &str {
    exe.strip_suffix(" (deleted)").unwrap_or(exe)
}

/// Alert conditions plus allow rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub alert_on: BTreeSet<Condition>,
    pub allow: Vec<AllowRule>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            alert_on: Condition::DEFAULT.into_iter().collect(),
            allow: Vec::new(),
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
}

impl Policy {
    /// Judges one listener, given what IANA says about its port and what files are on the
    /// host.
    pub fn judge(&self, iana: &Iana, l: &Listener, host: &dyn HostFiles) -> Verdict {
        let mut near_miss = None;
        for (i, rule) in self.allow.iter().enumerate() {
            match rule.check(l, host) {
                RuleMatch::Yes => {
                    return Verdict {
                        alert: false,
                        severity: Severity::Info,
                        reason: format!("allowed by {}", rule.describe()),
                        condition: None,
                        rule: Some(i),
                    };
                }
                RuleMatch::ExeNotHost(why) if near_miss.is_none() => {
                    near_miss = Some(format!("{} does not apply: {why}", rule.describe()));
                }
                _ => {}
            }
        }
        let range = PortRange::of(l.port);
        let mut fact = registry_clause(l, iana);
        if let Some(why) = near_miss {
            fact = format!("{why}; {fact}");
        }
        match self.alert_on.iter().find(|c| c.holds(range, iana)) {
            Some(&condition) => Verdict {
                alert: true,
                severity: condition.severity(l.reach()),
                reason: format!("{fact}; no [[allow]] rule matches (alert_on {condition})"),
                condition: Some(condition),
                rule: None,
            },
            None => Verdict {
                alert: false,
                severity: Severity::Info,
                reason: format!("{fact}; no alert_on condition applies"),
                condition: None,
                rule: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::classify::{PathFiles, path_file_id};
    use crate::model::{Classifier, Inode, Owner, Pid, Process, UnknownOwner};
    use crate::registry::Registry;

    trait JudgeWith {
        fn judge_with(&self, registry: &Registry, l: &Listener) -> Verdict;
    }

    impl JudgeWith for Policy {
        fn judge_with(&self, registry: &Registry, l: &Listener) -> Verdict {
            let c = Classifier {
                registry,
                policy: self,
                host: &PathFiles,
                netns: None,
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
            owner,
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

    #[test]
    fn allow_rules_need_every_key_to_match() {
        let reg = Registry::builtin();
        let rule = AllowRule {
            name: Some("lab".into()),
            origin: "c.toml:3".into(),
            ports: vec![(860, 870)],
            protocol: Some(Protocol::Tcp),
            addresses: vec![
                AddressMatch::Loopback,
                AddressMatch::Net("10.0.0.0/8".parse().unwrap()),
            ],
            exes: vec!["/usr/bin/nc".into()],
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
                addresses: vec![AddressMatch::Any],
                users: vec![UserMatch::Name("root".into())],
                units: vec!["foo.service".into()],
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
                users: vec![UserMatch::Uid(0)],
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
            allow: vec![],
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
            allow: vec![],
        };
        let v = any.judge_with(
            &reg,
            &listener(Protocol::Udp, "127.0.0.1", 60000, process("a", "/a")),
        );
        assert_eq!((v.alert, v.severity), (true, Severity::Low));
    }
}
