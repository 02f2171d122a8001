//! What the kernel says listens, and who owns it.
//!
//! A [`Socket`] is one kernel socket as a source reports it; a [`Listener`] is what the
//! rest of the program reasons about: the sockets of one owner on one protocol, address and
//! port, grouped (a server with eight `SO_REUSEPORT` sockets on :443 is one listener).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A transport protocol the daemon watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// UDP-Lite (RFC 3828): UDP's port numbers, a checksum that may cover part of a packet.
    #[serde(rename = "udplite")]
    UdpLite,
    Sctp,
    /// A raw IP socket: it receives every packet of its IP protocol (the `port` field holds
    /// that protocol's number), whatever the port.
    Raw,
    /// An `AF_PACKET` socket: it receives frames off the link (the `port` field holds the
    /// ethertype it asked for; 3 is `ETH_P_ALL`, every frame).
    Packet,
}

/// What kind of receiver a listener is: on a port, or below ports altogether.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Port,
    Raw,
    Packet,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Port => "port",
            Kind::Raw => "raw",
            Kind::Packet => "packet",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Port, Kind::Raw, Kind::Packet]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a socket filter (classic BPF) is attached, as the kernel tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    None,
    /// A classic BPF program of this many instructions.
    Attached(u32),
    /// The kernel would not say: sock_diag reports filters only to `CAP_NET_ADMIN`, and
    /// `/proc/net` never does. Judged as if one were attached.
    Unknown,
}

impl Filter {
    /// Attached, or possibly so: an unknown filter is never taken for none.
    pub fn may_be_attached(self) -> bool {
        self != Filter::None
    }

    /// `filter of 6 instructions`, `no filter`, `filter unknown`.
    pub fn words(self) -> String {
        match self {
            Filter::None => "no filter".to_owned(),
            Filter::Attached(n) => format!("a filter of {n} instructions"),
            Filter::Unknown => "a filter that could not be read".to_owned(),
        }
    }
}

/// What a socket with no port listens to: packet and raw sockets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortLess {
    /// `SOCK_RAW` (whole frames) or `SOCK_DGRAM` (link header removed): `raw` or `dgram`.
    pub socket_type: String,
    /// The interface it is bound to: 0 for every interface.
    pub ifindex: u32,
    /// Its name, where the source could tell it.
    pub interface: Option<String>,
    pub filter: Filter,
    /// The fanout group (`PACKET_FANOUT`), id and mode, if it joined one.
    pub fanout: Option<u32>,
}

impl PortLess {
    /// `eth0`, `ifindex 7`, or `all interfaces`.
    pub fn interface_words(&self) -> String {
        match (&self.interface, self.ifindex) {
            (_, 0) => "all interfaces".to_owned(),
            (Some(name), _) => name.clone(),
            (None, i) => format!("ifindex {i}"),
        }
    }
}

/// The name of an ethertype (packet sockets) or IP protocol (raw sockets) people know.
pub fn portless_protocol_name(protocol: Protocol, number: u16) -> String {
    let known = match (protocol, number) {
        (Protocol::Packet, 0x0003) => "all",
        (Protocol::Packet, 0x0800) => "ip",
        (Protocol::Packet, 0x0806) => "arp",
        (Protocol::Packet, 0x86dd) => "ipv6",
        (Protocol::Packet, 0x88cc) => "lldp",
        (Protocol::Packet, 0x888e) => "eapol",
        (Protocol::Packet, 0) => "none",
        (Protocol::Raw, 1) => "icmp",
        (Protocol::Raw, 2) => "igmp",
        (Protocol::Raw, 6) => "tcp",
        (Protocol::Raw, 17) => "udp",
        (Protocol::Raw, 58) => "icmpv6",
        (Protocol::Raw, 112) => "vrrp",
        (Protocol::Raw, 255) => "raw",
        _ => "",
    };
    match (known, protocol) {
        ("", Protocol::Packet) => format!("0x{number:04x}"),
        ("", _) => number.to_string(),
        (name, Protocol::Packet) => format!("{name} (0x{number:04x})"),
        (name, _) => format!("{name} ({number})"),
    }
}

impl Protocol {
    /// Every protocol with ports whose listeners the daemon watches.
    pub const ALL: [Protocol; 4] = [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::UdpLite,
        Protocol::Sctp,
    ];
    /// The protocols the built-in IANA table has rows for.
    pub const IANA: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::UdpLite => "udplite",
            Protocol::Sctp => "sctp",
            Protocol::Raw => "raw",
            Protocol::Packet => "packet",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Protocol::Raw => Kind::Raw,
            Protocol::Packet => Kind::Packet,
            _ => Kind::Port,
        }
    }

    /// The registry table its ports are judged by: UDP-Lite uses UDP's port numbers (RFC
    /// 3828); SCTP has no table built in, so every SCTP port counts as unassigned there.
    pub fn registry_table(self) -> Option<Protocol> {
        match self {
            Protocol::Tcp => Some(Protocol::Tcp),
            Protocol::Udp | Protocol::UdpLite => Some(Protocol::Udp),
            Protocol::Sctp | Protocol::Raw | Protocol::Packet => None,
        }
    }

    /// Whether an unconnected socket listens (UDP and UDP-Lite), rather than one in LISTEN.
    pub fn is_datagram(self) -> bool {
        matches!(self, Protocol::Udp | Protocol::UdpLite)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "udplite" => Ok(Protocol::UdpLite),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(format!(
                "unknown protocol `{s}` (expected `tcp`, `udp`, `udplite` or `sctp`)"
            )),
        }
    }
}

/// A socket inode number (the `N` in `socket:[N]`), unique across the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Inode(pub u64);

/// A process id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pid(pub u32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One listening kernel socket: a TCP socket in LISTEN or an unconnected UDP socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Socket {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    /// `IPV6_V6ONLY` of an IPv6 socket: `Some(false)` on `[::]` means it also accepts IPv4.
    /// `None` for IPv4 sockets, and for IPv6 sockets when the source cannot tell
    /// (`/proc/net` does not say).
    pub v6only: Option<bool>,
    /// The socket's owner uid as the kernel records it (the creator's effective uid).
    pub uid: u32,
    /// 0 for a socket no file refers to (some kernel sockets).
    pub inode: Inode,
    /// The kernel's cookie for the socket (what eBPF programs see), from sock_diag; 0
    /// when the source cannot say (`/proc/net`).
    pub cookie: u64,
    /// The inode of the network namespace it lives in (0 until the source says).
    pub netns: u64,
    /// For packet and raw sockets: what they listen to.
    pub portless: Option<Box<PortLess>>,
    /// The interface of a link-local IPv6 address (`fe80::1%eth0`); `None` for any other
    /// address, and when the source cannot say (`/proc/net` does not). Boxed: most
    /// sockets have none, and a poll holds every socket.
    pub zone: Option<Box<Zone>>,
}

/// The interface a link-local IPv6 address belongs to: without it, `fe80::1` names no
/// one address (every interface has its own fe80::/64).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Zone {
    /// The interface's index in its network namespace.
    pub index: u32,
    /// Its name (`eth0`), when the kernel gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Zone {
    /// The zone of a socket bound to `address` on interface `index` (sock_diag's
    /// `idiag_if`): only a link-local IPv6 address has one.
    pub fn of(address: IpAddr, index: u32) -> Option<Zone> {
        match address {
            IpAddr::V6(a) if index != 0 && (a.segments()[0] & 0xffc0) == 0xfe80 => {
                Some(Zone { index, name: None })
            }
            _ => None,
        }
    }

    /// `eth0`, or the index when the name is unknown (`fe80::1%2` is valid too).
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// An address with its zone (an interface's name or index), as `ip` writes it:
/// `fe80::1%eth0`, `0.0.0.0`.
pub fn address_words(address: IpAddr, zone: Option<&str>) -> String {
    match zone {
        Some(z) => format!("{address}%{}", crate::text::escape_control(z)),
        None => address.to_string(),
    }
}

/// Where a listener can be reached from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reach {
    /// Bound to a loopback address: only this machine can connect.
    #[serde(rename = "loopback")]
    Loopback,
    /// Bound to the IPv4 wildcard `0.0.0.0`: every IPv4 interface.
    #[serde(rename = "all-ipv4")]
    AllIpv4,
    /// Bound to `[::]` with `IPV6_V6ONLY` off: every interface, IPv4 and IPv6.
    #[serde(rename = "dual-stack")]
    DualStack,
    /// Bound to `[::]` with `IPV6_V6ONLY` on: every IPv6 interface only.
    #[serde(rename = "ipv6-only")]
    AllIpv6,
    /// Bound to `[::]` and the source could not read `IPV6_V6ONLY`.
    #[serde(rename = "ipv6-v4-unknown")]
    AllIpv6MaybeIpv4,
    /// Bound to one specific non-loopback address.
    #[serde(rename = "address")]
    Address,
    /// A packet socket: frames off the link of its interface (or every interface).
    #[serde(rename = "link")]
    Link,
}

impl Reach {
    pub fn of(address: IpAddr, v6only: Option<bool>) -> Reach {
        if address.is_loopback() || is_v4_mapped_loopback(address) {
            return Reach::Loopback;
        }
        match address {
            IpAddr::V4(a) if a == Ipv4Addr::UNSPECIFIED => Reach::AllIpv4,
            IpAddr::V6(a) if a == Ipv6Addr::UNSPECIFIED => match v6only {
                Some(false) => Reach::DualStack,
                Some(true) => Reach::AllIpv6,
                None => Reach::AllIpv6MaybeIpv4,
            },
            _ => Reach::Address,
        }
    }

    /// The word scripts and the table use: `loopback`, `all-ipv4`, `dual-stack`,
    /// `ipv6-only`, `ipv6-v4-unknown`, `address`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Loopback => "loopback",
            Reach::AllIpv4 => "all-ipv4",
            Reach::DualStack => "dual-stack",
            Reach::AllIpv6 => "ipv6-only",
            Reach::AllIpv6MaybeIpv4 => "ipv6-v4-unknown",
            Reach::Address => "address",
            Reach::Link => "link",
        }
    }

    /// True when machines other than this one can connect.
    pub fn is_external(self) -> bool {
        self != Reach::Loopback
    }

    /// Words for a person: "all interfaces (IPv4 + IPv6)", "loopback only", ...
    pub fn describe(self) -> &'static str {
        match self {
            Reach::Loopback => "loopback only",
            Reach::AllIpv4 => "all IPv4 interfaces",
            Reach::DualStack => "all interfaces, IPv4 and IPv6: dual-stack",
            Reach::AllIpv6 => "all IPv6 interfaces, IPv6 only",
            Reach::AllIpv6MaybeIpv4 => "all IPv6 interfaces, IPv4 unknown",
            Reach::Address => "one specific address",
            Reach::Link => "frames off the link",
        }
    }
}

fn is_v4_mapped_loopback(address: IpAddr) -> bool {
    match address {
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// Text for an address as `ss` users know it: `0.0.0.0`, `[::]`, `[fe80::1%eth0]`.
pub fn display_address(address: IpAddr, zone: Option<&str>) -> String {
    match address {
        IpAddr::V4(_) => address_words(address, zone),
        IpAddr::V6(_) => format!("[{}]", address_words(address, zone)),
    }
}

/// A file's identity: device and inode. Unlike a path, a process cannot choose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The process that holds a socket, as far as it could be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: Pid,
    /// The kernel's `comm` (at most 15 bytes), which is what `ps` and `ss` show. The
    /// process chose it; bytes that are not UTF-8 are shown as U+FFFD.
    pub name: String,
    /// True when `name` is not the exact bytes (they were not UTF-8): no rule matches it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_lossy: bool,
    /// `/proc/PID/exe`; `None` when it cannot be read (kernel thread, no permission).
    pub exe: Option<String>,
    /// The file `/proc/PID/exe` is, whatever its path says (a path can be bind-mounted
    /// over in the process's own mount namespace; the device and inode cannot).
    #[serde(skip)]
    pub exe_file: Option<FileId>,
    /// The process's mount namespace (`/proc/PID/ns/mnt`), where its exe path means
    /// something.
    #[serde(skip)]
    pub mount_ns: Option<u64>,
    pub cmdline: Vec<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// The systemd unit the process runs in (`nginx.service`, `session-2.scope`).
    pub unit: Option<String>,
    /// Start time in clock ticks since boot: with the pid, it tells a reused pid apart.
    pub start_time: u64,
    /// The container it runs in, from its cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<Container>>,
    /// Its pid inside its own PID namespace (the last of `NSpid`), when that is not the
    /// host's: what `ps` inside the container shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
}

/// A network namespace, as people know it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsView {
    pub inode: u64,
    /// Its name under `/run/netns` (`ip netns`), or where a container runtime keeps it.
    pub name: Option<String>,
    /// The daemon's own namespace (the host's, under the shipped unit).
    pub host: bool,
}

impl NetnsView {
    /// `host`, the name, or `netns:<inode>`: the NETNS column and the records.
    pub fn label(&self) -> String {
        match (&self.name, self.host) {
            (_, true) => "host".to_owned(),
            (Some(name), false) => name.clone(),
            (None, false) => format!("netns:{}", self.inode),
        }
    }
}

/// The container a process runs in, as its cgroup path says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// `docker`, `podman`, `containerd`, `cri-o`, `kubernetes`.
    pub runtime: String,
    /// The full id (64 hex digits for the runtimes that use them).
    pub id: String,
    /// Its name, where the runtime's state on disk gives it.
    pub name: Option<String>,
    /// The Kubernetes pod's uid, for a container in a pod.
    pub pod: Option<String>,
    /// The user whose own cgroup subtree holds it (`user@UID.service`, which systemd
    /// delegates to that user): a rootless container, or any process of that user that
    /// made a cgroup with a container-like name. Only a rule that also names the user
    /// matches it by container, and no runtime's state names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootless_uid: Option<u32>,
}

impl Container {
    /// The 12-character id people use.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// `web-1`, else the short id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.short_id())
    }
}

/// Why a socket's owner is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownOwner {
    /// Some processes' `/proc/PID/fd` could not be read (run as root, or with
    /// `CAP_DAC_READ_SEARCH` + `CAP_SYS_PTRACE`).
    NoPermission,
    /// No process holds the socket: it belongs to the kernel (nfsd, lockd, wireguard, ...).
    /// Said only when every process was read; the socket's uid is root's.
    Kernel,
    /// No process holds the socket now, and a user made it: it is in flight between two
    /// processes (passed over a Unix socket), or its holder let go of it. Looked up again.
    InFlight,
    /// The socket closed, or its process exited, while it was being looked up.
    Vanished,
}

impl UnknownOwner {
    pub const ALL: [UnknownOwner; 4] = [
        UnknownOwner::NoPermission,
        UnknownOwner::Kernel,
        UnknownOwner::InFlight,
        UnknownOwner::Vanished,
    ];

    /// `no-permission`, `kernel`, `in-flight`, `vanished`: the word of the JSON and the
    /// journal.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownOwner::NoPermission => "no-permission",
            UnknownOwner::Kernel => "kernel",
            UnknownOwner::InFlight => "in-flight",
            UnknownOwner::Vanished => "vanished",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            UnknownOwner::NoPermission => "owner not readable: no permission (run as root)",
            UnknownOwner::Kernel => {
                "kernel socket: no process here holds it (or one in another PID namespace)"
            }
            UnknownOwner::Vanished => "owner exited while it was being looked up",
            UnknownOwner::InFlight => {
                "no process holds it now: in flight between processes (passed over a Unix socket)"
            }
        }
    }
}

/// The owner of a socket: a process, or the reason none could be named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// Shared: the attribution cache, the tracker and events hold the same one.
    Process(Arc<Process>),
    Unknown(UnknownOwner),
}

impl Owner {
    pub fn process(&self) -> Option<&Process> {
        match self {
            Owner::Process(p) => Some(p),
            Owner::Unknown(_) => None,
        }
    }
}

/// A listener: one or more sockets of one owner on one protocol, address and port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub v6only: Option<bool>,
    pub uid: u32,
    /// The inodes of the grouped sockets, lowest first.
    pub inodes: Vec<Inode>,
    /// Every pid found holding one of the sockets, lowest first.
    pub pids: Vec<Pid>,
    pub owner: Owner,
    /// The inode of its network namespace.
    #[serde(default)]
    pub netns: u64,
    /// For packet and raw sockets: what they listen to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portless: Option<Box<PortLess>>,
    /// The interface of a link-local IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<Box<Zone>>,
}

impl Listener {
    /// `fe80::1%eth0`, `0.0.0.0`: the address with its zone.
    pub fn address_words(&self) -> String {
        address_words(self.address, self.zone_label().as_deref())
    }

    /// `[fe80::1%eth0]`, `0.0.0.0`: as `ss` writes it before a port.
    pub fn display_address(&self) -> String {
        display_address(self.address, self.zone_label().as_deref())
    }

    /// The interface of a link-local address: its name, else its index.
    pub fn zone_label(&self) -> Option<String> {
        self.zone.as_deref().map(Zone::label)
    }

    pub fn reach(&self) -> Reach {
        match self.protocol {
            Protocol::Packet => Reach::Link,
            _ => Reach::of(self.address, self.v6only),
        }
    }

    /// `867/tcp` style; `packet socket (all (0x0003))`, `raw socket (tcp (6))`.
    pub fn port_proto(&self) -> String {
        match self.protocol.kind() {
            Kind::Port => format!("{}/{}", self.port, self.protocol),
            kind => format!(
                "{kind} socket ({})",
                portless_protocol_name(self.protocol, self.port)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_tells_dual_stack_from_ipv6_only() {
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        assert_eq!(Reach::of(any6, Some(false)), Reach::DualStack);
        assert_eq!(Reach::of(any6, Some(true)), Reach::AllIpv6);
        assert_eq!(Reach::of(any6, None), Reach::AllIpv6MaybeIpv4);
        assert_eq!(
            Reach::of("127.0.0.53".parse().unwrap(), None),
            Reach::Loopback
        );
        assert_eq!(
            Reach::of("::ffff:127.0.0.1".parse().unwrap(), Some(false)),
            Reach::Loopback
        );
        assert_eq!(Reach::of("0.0.0.0".parse().unwrap(), None), Reach::AllIpv4);
        assert_eq!(
            Reach::of("192.0.2.7".parse().unwrap(), None),
            Reach::Address
        );
        assert!(!Reach::Loopback.is_external());
        assert!(Reach::Address.is_external());
    }

    #[test]
    fn protocol_parses_case_insensitively() {
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert_eq!("SCTP".parse::<Protocol>(), Ok(Protocol::Sctp));
        assert!("dccp".parse::<Protocol>().is_err());
    }
}
