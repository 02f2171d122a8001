//! Built-in allowances: programs that take a well-known port no rule could name in
//! advance, which the default policy would otherwise alert on at (almost) every start.
//!
//! Each is matched on its executable file (its real file, not a path a process could
//! bind-mount over, and never its name: a backdoor can call itself `rpc.statd`), on a
//! socket root made (these daemons start as root and open their sockets before they drop
//! to a user of their own; any user can run the same file in a user and network namespace
//! of their own, with code of their own loaded into it) and, where the port is fixed, on
//! that port and address. Found by starting real Debian daemons in
//! test namespaces: chrony's command port is 323/udp, which IANA lists as reserved; the
//! others take a port from `bindresvport()` (600 + pid % 424), which lands on a port IANA
//! never assigned or reserved in more than half of the starts. `[policy] builtin_allow =
//! false` turns them off.
//!
//! Packet sockets are allowed, also by their file and a socket root made (or, for
//! systemd-networkd, its own system user), for the programs that need them to do their
//! job: DHCP clients, LLDP, EAPOL (wpa_supplicant, hostapd), and the capture tools.

use std::sync::LazyLock;

use super::listener::{Kind, Protocol};
use super::rules::{AddressMatch, AllowRule, BUILT_IN, Holder, Place, PortMatch, UserMatch};

/// The ports `bindresvport()` hands out.
const BINDRESVPORT: PortMatch = PortMatch::Range(600, 1023);

fn rule(name: &str, exe: &str, place: Place) -> AllowRule {
    AllowRule {
        name: Some(name.to_owned()),
        origin: BUILT_IN.to_owned(),
        place,
        holder: Holder {
            exes: vec![exe.to_owned()],
            users: vec![UserMatch::SocketUid(0)],
            ..Holder::default()
        },
        until: None,
        severity: None,
    }
}

fn bindresvport(name: &str, exe: &str) -> AllowRule {
    let place = Place {
        ports: vec![BINDRESVPORT],
        ..Place::default()
    };
    rule(name, exe, place)
}

/// The built-in rules, tried after the config's own.
pub static RULES: LazyLock<Vec<AllowRule>> = LazyLock::new(|| {
    let mut rules = vec![
        rule(
            "chronyd command port",
            "/usr/sbin/chronyd",
            Place {
                ports: vec![PortMatch::Range(323, 323)],
                protocol: Some(Protocol::Udp),
                addresses: vec![AddressMatch::Loopback],
                ..Place::default()
            },
        ),
        bindresvport(
            "rpc.statd (NFS, port from bindresvport)",
            "/usr/sbin/rpc.statd",
        ),
        bindresvport(
            "sm-notify (NFS, port from bindresvport)",
            "/usr/sbin/sm-notify",
        ),
        bindresvport("ypbind (NIS, port from bindresvport)", "/usr/sbin/ypbind"),
        bindresvport("ypserv (NIS, port from bindresvport)", "/usr/sbin/ypserv"),
        bindresvport(
            "rpc.yppasswdd (NIS, port from bindresvport)",
            "/usr/sbin/rpc.yppasswdd",
        ),
        bindresvport(
            "rpc.ypxfrd (NIS, port from bindresvport)",
            "/usr/sbin/rpc.ypxfrd",
        ),
    ];
    rules.extend(
        PACKET_PROGRAMS
            .iter()
            .map(|&(name, exes, user)| packet(name, exes, user, false)),
    );
    rules.extend(
        CAPTURE_TOOLS
            .iter()
            .map(|&(name, exes)| packet(name, exes, None, true)),
    );
    rules
});

/// Programs that need packet sockets to do their job, each with the paths Debian and
/// others install it at, and the system user it opens them as when that is not root.
const PACKET_PROGRAMS: [(&str, &[&str], Option<&str>); 7] = [
    (
        "dhclient (DHCP client)",
        &["/usr/sbin/dhclient", "/sbin/dhclient"],
        None,
    ),
    (
        "dhcpcd (DHCP client)",
        &["/usr/sbin/dhcpcd", "/sbin/dhcpcd"],
        None,
    ),
    (
        "NetworkManager (DHCP, link checks)",
        &[
            "/usr/sbin/NetworkManager",
            "/usr/lib/NetworkManager/nm-dhcp-helper",
        ],
        None,
    ),
    (
        "systemd-networkd (DHCP, LLDP)",
        &[
            "/usr/lib/systemd/systemd-networkd",
            "/lib/systemd/systemd-networkd",
        ],
        // It runs as this user from the start, with the capabilities it needs.
        Some("systemd-network"),
    ),
    ("lldpd (LLDP)", &["/usr/sbin/lldpd"], None),
    (
        "wpa_supplicant (EAPOL)",
        &["/usr/sbin/wpa_supplicant", "/sbin/wpa_supplicant"],
        None,
    ),
    ("hostapd (EAPOL)", &["/usr/sbin/hostapd"], None),
];

/// Capture tools, allowed when root started them: their socket was made by root (they
/// may run as a user of their own by the time the daemon looks). Anyone else's is
/// alerted, and recorded as worth a look even when root's.
const CAPTURE_TOOLS: [(&str, &[&str]); 3] = [
    (
        "tcpdump run by root (capture)",
        &["/usr/bin/tcpdump", "/usr/sbin/tcpdump"],
    ),
    ("tshark run by root (capture)", &["/usr/bin/tshark"]),
    ("dumpcap run by root (capture)", &["/usr/bin/dumpcap"]),
];

/// A rule for the packet sockets of one program (by its file, never its name), made by
/// root or by `user`.
fn packet(name: &str, exes: &[&str], user: Option<&str>, capture: bool) -> AllowRule {
    AllowRule {
        name: Some(name.to_owned()),
        origin: BUILT_IN.to_owned(),
        place: Place {
            // Network managers also hold raw ICMPv6 sockets (router solicitations).
            kinds: if capture {
                vec![Kind::Packet]
            } else {
                vec![Kind::Packet, Kind::Raw]
            },
            ..Place::default()
        },
        holder: Holder {
            exes: exes.iter().map(|&e| e.to_owned()).collect(),
            users: std::iter::once(UserMatch::SocketUid(0))
                .chain(user.map(|u| UserMatch::Name(u.to_owned())))
                .collect(),
            ..Holder::default()
        },
        until: None,
        // A capture running is allowed, and still recorded as worth a look.
        severity: capture.then_some(super::policy::Severity::Low),
    }
}
