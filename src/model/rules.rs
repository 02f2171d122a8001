//! The rules of a policy: `[[allow]]` (listeners you expect) and `[[expect]]` (who must
//! hold a port, and whether it must be held at all), and how they match a listener.
//!
//! A rule matches on what a process cannot choose where it can: an `exe` is the file
//! itself (device and inode, through [`Host`]), a `user` is a uid (names resolved through
//! the system's user database). A `process` name is chosen by the process; it is matched
//! on its exact bytes, and only as one key among others is it worth anything.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use super::instant::ExeSeen;
use super::listener::{FileId, Kind, Listener, NetnsView, Owner, Process, Protocol, Reach};

/// What a policy needs to know about the host: the files an `exe` path names, the
/// daemon's mount namespace, the kernel's ephemeral port range, the user database, and
/// the time (for rules with `until`). The daemon reads the system; tests script it.
pub trait Host {
    /// The identity of the file at `path`, following symlinks.
    fn file_id(&self, path: &str) -> Option<FileId>;
    /// The file the kernel saw a process run (an event of instant detection), here: the
    /// path its names make and the file's identity as [`Host::file_id`] gives it, when that
    /// path is that very file in this mount namespace. `None` when it is not (a process in
    /// a mount namespace of its own can make any path name its own file).
    fn exe_seen(&self, seen: &ExeSeen) -> Option<(String, FileId)> {
        let path = seen.path.as_deref()?;
        let file = self.file_id(path).filter(|f| *f == seen.file)?;
        Some((path.to_owned(), file))
    }
    /// The host's mount namespace: init's (the shipped unit gives the daemon a private
    /// one of its own), or the daemon's where init's cannot be read.
    fn mount_ns(&self) -> Option<u64>;
    /// `net.ipv4.ip_local_port_range` of a network namespace.
    fn ephemeral_ports(&self, netns: u64) -> (u16, u16);
    /// A network namespace by its inode: its name, and whether it is the daemon's own.
    fn netns(&self, inode: u64) -> NetnsView;
    /// The uid of a user name, through the system's user database (NSS).
    fn uid_of(&self, name: &str) -> Option<u32>;
    /// Now, for rules that expire.
    fn now(&self) -> SystemTime;
}

/// A port a rule accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMatch {
    Range(u16, u16),
    /// Any port in the kernel's ephemeral range (`"ephemeral"`): programs that take a new
    /// one at each start.
    Ephemeral,
}

impl PortMatch {
    fn matches(self, port: u16, netns: u64, host: &dyn Host) -> bool {
        let (a, b) = match self {
            PortMatch::Range(a, b) => (a, b),
            PortMatch::Ephemeral => host.ephemeral_ports(netns),
        };
        (a..=b).contains(&port)
    }

    /// Whether the rule could cover this port whatever the host (for `explain`).
    fn may_cover(self, port: u16) -> bool {
        match self {
            PortMatch::Range(a, b) => (a..=b).contains(&port),
            PortMatch::Ephemeral => true,
        }
    }
}

/// An address a rule accepts.
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

/// A user a rule accepts: a name (resolved through NSS when matched), or a numeric uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserMatch {
    Name(String),
    Uid(u32),
    /// The uid the socket was made with, whatever its holder runs as now: a capture
    /// tool started by root opens its socket as root, then drops to a user of its own
    /// (Debian's tcpdump runs as `tcpdump`). Built-in rules only.
    SocketUid(u32),
}

/// A network namespace a rule accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsMatch {
    /// The daemon's own (the host's).
    Host,
    /// Every namespace (as when the key is not given).
    Any,
    /// A named one (`ip netns` name), or `netns:<inode>`.
    Name(String),
}

impl NetnsMatch {
    fn matches(&self, view: &NetnsView) -> bool {
        match self {
            NetnsMatch::Host => view.host,
            NetnsMatch::Any => true,
            NetnsMatch::Name(n) => view.name.as_deref() == Some(n) || view.label() == *n,
        }
    }
}

/// Where a socket is: the keys of a rule that say nothing of its owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub ports: Vec<PortMatch>,
    pub protocol: Option<Protocol>,
    pub addresses: Vec<AddressMatch>,
    /// Without it, a rule matches in every network namespace.
    pub netns: Vec<NetnsMatch>,
    /// `packet`, `raw` or `port`. Without it, a rule matches port listeners only: a rule
    /// written for ports never allows a sniffer.
    pub kinds: Vec<Kind>,
    /// The interface a packet socket is bound to (`"any"`: bound to none, every interface).
    pub interfaces: Vec<String>,
}

impl Place {
    fn matches(&self, l: &Listener, host: &dyn Host) -> bool {
        let kind = l.protocol.kind();
        let kind_ok = if self.kinds.is_empty() {
            kind == Kind::Port
        } else {
            self.kinds.contains(&kind)
        };
        kind_ok
            && (self.interfaces.is_empty() || {
                let bound = l
                    .portless
                    .as_deref()
                    .map(|p| (p.ifindex, p.interface.as_deref()));
                self.interfaces.iter().any(|want| match bound {
                    Some((0, _)) => want == "any",
                    Some((_, Some(name))) => want == name,
                    _ => false,
                })
            })
            && (self.ports.is_empty()
                || self.ports.iter().any(|p| p.matches(l.port, l.netns, host)))
            && self.protocol.is_none_or(|p| p == l.protocol)
            && (self.addresses.is_empty() || self.addresses.iter().any(|a| a.matches(l.address)))
            && (self.netns.is_empty() || {
                let view = host.netns(l.netns);
                self.netns.iter().any(|n| n.matches(&view))
            })
    }

    /// Whether these keys could ever match this port and protocol (for `explain`).
    pub fn covers_port(&self, protocol: Protocol, port: u16) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&protocol.kind()))
            && self.protocol.is_none_or(|p| p == protocol)
            && (self.ports.is_empty() || self.ports.iter().any(|p| p.may_cover(port)))
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
            && self.protocol.is_none()
            && self.addresses.is_empty()
            && self.netns.is_empty()
            && self.kinds.is_empty()
            && self.interfaces.is_empty()
    }
}

/// Who holds a socket: the keys of a rule about its owner. All given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub processes: Vec<String>,
    pub exes: Vec<String>,
    pub users: Vec<UserMatch>,
    pub units: Vec<String>,
    /// A container by id prefix or name.
    pub containers: Vec<String>,
}

/// How a rule fares against one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleMatch {
    Yes,
    No,
    /// Every key matches, but the program at the `exe` path is not the host's file at
    /// that path (or cannot be shown to be): the reason, for the verdict.
    ExeNotHost(String),
}

impl Holder {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.exes.is_empty()
            && self.users.is_empty()
            && self.units.is_empty()
            && self.containers.is_empty()
    }

    pub fn check(&self, l: &Listener, host: &dyn Host) -> RuleMatch {
        let process = l.owner.process();
        let others = (self.processes.is_empty()
            // A name is matched on its exact bytes: a lossy one matches nothing.
            || process.is_some_and(|p| !p.name_lossy && self.processes.contains(&p.name)))
            && (self.users.is_empty() || self.user_matches(l, host))
            && (self.units.is_empty()
                || process
                    .and_then(|p| p.unit.as_deref())
                    .is_some_and(|unit| self.units.iter().any(|u| u == unit)))
            && (self.containers.is_empty()
                || process.and_then(|p| p.container.as_ref()).is_some_and(|c| {
                    // A user names cgroups in their own subtree as they like: such a
                    // container is matched only by a rule that also says which user.
                    (c.rootless_uid.is_none() || !self.users.is_empty())
                        && self
                            .containers
                            .iter()
                            .any(|w| container_id_prefix(&c.id, w) || c.name.as_deref() == Some(w))
                }));
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

    /// The process's uid, or the socket's when the process cannot be read; a name is
    /// looked up in the system's user database.
    fn user_matches(&self, l: &Listener, host: &dyn Host) -> bool {
        let uid = l.owner.process().and_then(|p| p.uid).unwrap_or(l.uid);
        self.users.iter().any(|u| match u {
            UserMatch::Uid(n) => *n == uid,
            UserMatch::Name(n) => host.uid_of(n) == Some(uid),
            UserMatch::SocketUid(n) => *n == l.uid,
        })
    }

    /// `/usr/sbin/sshd`, else `unit ssh.service`, else `process sshd`, else `user root`:
    /// the program a rule names, for a reason.
    pub fn describe(&self) -> String {
        let join = |v: &[String]| v.join(" or ");
        if !self.exes.is_empty() {
            join(&self.exes)
        } else if !self.units.is_empty() {
            format!("unit {}", join(&self.units))
        } else if !self.processes.is_empty() {
            format!("a process named {}", join(&self.processes))
        } else if !self.containers.is_empty() {
            format!("container {}", join(&self.containers))
        } else {
            let users: Vec<String> = self
                .users
                .iter()
                .map(|u| match u {
                    UserMatch::Name(n) => n.clone(),
                    UserMatch::Uid(n) => n.to_string(),
                    UserMatch::SocketUid(n) => format!("{n} (the socket's maker)"),
                })
                .collect();
            format!("user {}", join(&users))
        }
    }
}

/// One `[[allow]]` entry. Within a key the values are alternatives; all keys given must
/// match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowRule {
    pub name: Option<String>,
    /// Where the rule was written: `config.toml:14`, or `built-in`.
    pub origin: String,
    pub place: Place,
    pub holder: Holder,
    /// The rule matches nothing from this moment on.
    pub until: Option<SystemTime>,
    /// The severity of what it allows, when that is more than `info`: allowed, not
    /// alerted, but worth a look (a capture tool). Built-in rules only.
    pub severity: Option<super::policy::Severity>,
}

impl AllowRule {
    pub fn check(&self, l: &Listener, host: &dyn Host) -> RuleMatch {
        if self.until.is_some_and(|t| host.now() >= t) || !self.place.matches(l, host) {
            return RuleMatch::No;
        }
        self.holder.check(l, host)
    }

    /// `[[allow]] "ssh" (config.toml:14)` style, for reasons.
    pub fn describe(&self) -> String {
        if self.origin == BUILT_IN {
            return format!("built-in rule \"{}\"", self.name.as_deref().unwrap_or(""));
        }
        match &self.name {
            Some(name) => format!("[[allow]] \"{name}\" ({})", self.origin),
            None => format!("[[allow]] at {}", self.origin),
        }
    }
}

/// The origin of the built-in rules.
pub const BUILT_IN: &str = "built-in";

/// Whether a rule's `container` value is the start of this id: at least the 12 digits
/// `docker ps` shows, since a shorter one (`db`, `cafe`) is the start of one id in a
/// few hundred, and anyone who may start containers can retry until one matches.
fn container_id_prefix(id: &str, value: &str) -> bool {
    value.len() >= 12 && id.starts_with(value)
}

/// An `[[expect]]` entry's key from its name and origin (`config.toml:14`): the name and
/// the file, not the line. Records carry the origin (`EXPECT_RULE`), so `history` keys
/// them the same way.
pub fn expect_key(name: &str, origin: &str) -> String {
    let file = origin.rsplit_once(':').map_or(origin, |(f, _)| f);
    format!("{name}:{file}")
}

/// One `[[expect]]` entry: the program that must hold a port (whoever else holds it is
/// alerted, whatever the other rules say), and with `required`, that something must.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectRule {
    pub name: String,
    pub origin: String,
    pub place: Place,
    pub holder: Holder,
    pub required: bool,
}

impl ExpectRule {
    /// Whether the rule covers this listener's port, protocol and address.
    pub fn covers(&self, l: &Listener, host: &dyn Host) -> bool {
        self.place.matches(l, host)
    }

    /// What a required entry's state is kept under: its name and its file, not its
    /// line, so that a reload of an edited file keeps the state of an entry it kept.
    pub fn key(&self) -> String {
        expect_key(&self.name, &self.origin)
    }

    /// `[[expect]] "ssh" (config.toml:3)`.
    pub fn describe(&self) -> String {
        format!("[[expect]] \"{}\" ({})", self.name, self.origin)
    }

    /// `22/tcp` or `22` or `600-1023/udp`: where it expects a listener, for people.
    pub fn where_(&self) -> String {
        let ports: Vec<String> = self
            .place
            .ports
            .iter()
            .map(|p| match p {
                PortMatch::Range(a, b) if a == b => a.to_string(),
                PortMatch::Range(a, b) => format!("{a}-{b}"),
                PortMatch::Ephemeral => "ephemeral".to_owned(),
            })
            .collect();
        let ports = if ports.is_empty() {
            "any port".to_owned()
        } else {
            ports.join(",")
        };
        match self.place.protocol {
            Some(p) => format!("{ports}/{p}"),
            None => ports,
        }
    }
}

/// Whether the program a process runs is the host's file at `path`, not only a file that
/// its own mount namespace shows at that path: the same device and inode. A binary
/// replaced on disk since the process started (an upgrade: `... (deleted)`) has no file
/// left to compare; it passes when the process runs in the host's mount namespace
/// (init's), where nothing but root can have put another file at that path.
fn exe_is_hosts(p: &Process, exe: &str, path: &str, host: &dyn Host) -> Result<(), String> {
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

/// `/tmp/x (pid 4242)`, or why the owner is unknown: the program holding a socket, for a
/// reason.
pub fn held_by(l: &Listener) -> String {
    match &l.owner {
        Owner::Process(p) => {
            let program = p.exe.as_deref().unwrap_or(&p.name);
            format!("{} (pid {})", crate::text::clip(program, 200), p.pid)
        }
        Owner::Unknown(why) => format!("an unknown owner ({}, socket uid {})", why.as_str(), l.uid),
    }
}
