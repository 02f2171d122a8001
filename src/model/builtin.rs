//! Built-in allowances: programs that take a well-known port no rule could name in
//! advance, which the default policy would otherwise alert on at (almost) every start.
//!
//! Each is matched on its executable file (its real file, not a path a process could
//! bind-mount over, and never its name: a backdoor can call itself `rpc.statd`) and, where
//! the port is fixed, on that port and address. Found by starting real Debian daemons in
//! test namespaces: chrony's command port is 323/udp, which IANA lists as reserved; the
//! others take a port from `bindresvport()` (600 + pid % 424), which lands on a port IANA
//! never assigned or reserved in more than half of the starts. `[policy] builtin_allow =
//! false` turns them off.

use std::sync::LazyLock;

use super::listener::Protocol;
use super::rules::{AddressMatch, AllowRule, BUILT_IN, Holder, Place, PortMatch};

/// The ports `bindresvport()` hands out.
const BINDRESVPORT: PortMatch = PortMatch::Range(600, 1023);

fn rule(name: &str, exe: &str, place: Place) -> AllowRule {
    AllowRule {
        name: Some(name.to_owned()),
        origin: BUILT_IN.to_owned(),
        place,
        holder: Holder {
            exes: vec![exe.to_owned()],
            ..Holder::default()
        },
        until: None,
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
    vec![
        rule(
            "chronyd command port",
            "/usr/sbin/chronyd",
            Place {
                ports: vec![PortMatch::Range(323, 323)],
                protocol: Some(Protocol::Udp),
                addresses: vec![AddressMatch::Loopback],
                netns: Vec::new(),
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
    ]
});
