//! From sockets to listeners: grouping by identity.
//!
//! A listener's identity is (protocol, address, port, owner identity), and
//! the owner identity is the program, not the pid: its exe path, else its systemd unit,
//! else its name. Sockets that share an identity — `SO_REUSEPORT` workers, a pre-forked
//! server — are one listener. The daemon adds the network namespace to the key.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::listener::{Listener, Owner, Protocol, Socket, Zone};
use super::policy::strip_deleted;

/// Who a listener belongs to, stable across restarts of the same program.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum OwnerKey {
    Exe(String),
    Unit(String),
    Name(String),
    /// Owner not readable; the socket's uid keeps different users' sockets apart.
    Unknown(u32),
}

impl OwnerKey {
    pub fn of(owner: &Owner, socket_uid: u32) -> OwnerKey {
        match owner {
            Owner::Process(p) => {
                if let Some(exe) = &p.exe {
                    OwnerKey::Exe(strip_deleted(exe).to_owned())
                } else if let Some(unit) = &p.unit {
                    OwnerKey::Unit(unit.clone())
                } else {
                    OwnerKey::Name(p.name.clone())
                }
            }
            Owner::Unknown(_) => OwnerKey::Unknown(socket_uid),
        }
    }
}

/// A listener's identity: its network namespace, protocol, address and port, and its
/// program.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenerKey {
    /// The network namespace's inode (0 in a state file written before namespaces).
    #[serde(default)]
    pub netns: u64,
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
    /// The interface index of a link-local address (0 for any other): `fe80::1%eth0` and
    /// `fe80::1%eth1` are two listeners.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zone: u32,
    // Not `IPV6_V6ONLY`: the /proc/net fallback cannot read it, and a switch between the
    // sources must not make every IPv6 listener look new.
    pub owner: OwnerKey,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ListenerKey {
    /// The one constructor: where the socket is, and who owns it.
    pub fn new(
        netns: u64,
        protocol: Protocol,
        (address, zone): (IpAddr, Option<&Zone>),
        port: u16,
        owner: &Owner,
        socket_uid: u32,
    ) -> ListenerKey {
        ListenerKey {
            netns,
            protocol,
            port,
            address,
            zone: zone.map_or(0, |z| z.index),
            owner: OwnerKey::of(owner, socket_uid),
        }
    }

    pub fn of(l: &Listener) -> ListenerKey {
        let at = (l.address, l.zone.as_deref());
        ListenerKey::new(l.netns, l.protocol, at, l.port, &l.owner, l.uid)
    }
}

/// Groups sockets into listeners, sorted by protocol, port and address.
///
/// `owner_of` gives each socket's owner; with `per_socket` every socket is its own listener
/// (`scan --all`).
pub fn group_listeners(
    sockets: &[Socket],
    owner_of: impl Fn(&Socket) -> Owner,
    per_socket: bool,
) -> Vec<Listener> {
    let mut groups: BTreeMap<(ListenerKey, u64), Listener> = BTreeMap::new();
    for s in sockets {
        let owner = owner_of(s);
        let at = (s.address, s.zone.as_deref());
        let key = ListenerKey::new(s.netns, s.protocol, at, s.port, &owner, s.uid);
        let split = if per_socket { s.inode.0 } else { 0 };
        match groups.entry((key, split)) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let l = e.get_mut();
                l.inodes.push(s.inode);
                // Sockets of one program that read the same frames: the listener shows the
                // one with a filter (or one that may have one), never a decoy's "none".
                if let (Some(seen), Some(this)) = (&l.portless, &s.portless)
                    && this.filter.may_be_attached()
                    && !seen.filter.may_be_attached()
                {
                    l.portless = s.portless.clone();
                }
                if let Owner::Process(p) = &owner
                    && !l.pids.contains(&p.pid)
                {
                    l.pids.push(p.pid);
                }
                // Keep the lowest pid as the listener's face: usually the parent.
                if let (Owner::Process(new), Owner::Process(cur)) = (&owner, &l.owner)
                    && new.pid < cur.pid
                {
                    l.owner = owner;
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Listener {
                    protocol: s.protocol,
                    address: s.address,
                    port: s.port,
                    v6only: s.v6only,
                    uid: s.uid,
                    inodes: vec![s.inode],
                    pids: owner.process().map(|p| vec![p.pid]).unwrap_or_default(),
                    owner,
                    netns: s.netns,
                    portless: s.portless.clone(),
                    zone: s.zone.clone(),
                });
            }
        }
    }
    groups
        .into_values()
        .map(|mut l| {
            l.inodes.sort_unstable();
            l.pids.sort_unstable();
            l
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Inode, Pid, Process};

    fn sock(port: u16, inode: u64) -> Socket {
        Socket {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port,
            v6only: None,
            uid: 33,
            inode: Inode(inode),
            cookie: 0,
            netns: 0,
            portless: None,
            zone: None,
        }
    }

    fn proc_(pid: u32, exe: &str) -> Owner {
        Owner::Process(std::sync::Arc::new(Process {
            pid: Pid(pid),
            name: "nginx".into(),
            exe: Some(exe.into()),
            cmdline: vec![],
            uid: Some(33),
            user: None,
            unit: None,
            name_lossy: false,
            exe_file: None,
            mount_ns: None,
            start_time: 0,
            container: None,
            ns_pid: None,
        }))
    }

    #[test]
    fn reuseport_workers_are_one_listener() {
        let sockets = [sock(443, 3), sock(443, 1), sock(443, 2), sock(80, 9)];
        let owner = |s: &Socket| proc_(100 + s.inode.0 as u32, "/usr/sbin/nginx");
        let ls = group_listeners(&sockets, owner, false);
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0].port, 80);
        assert_eq!(ls[1].inodes, [Inode(1), Inode(2), Inode(3)]);
        assert_eq!(ls[1].owner.process().unwrap().pid, Pid(101));
        assert_eq!(ls[1].pids, [Pid(101), Pid(102), Pid(103)]);
        assert_eq!(group_listeners(&sockets, owner, true).len(), 4);
    }

    #[test]
    fn a_filtered_packet_socket_is_not_hidden_behind_an_unfiltered_one() {
        use crate::model::{Filter, PortLess};
        let packet = |inode: u64, filter: Filter| Socket {
            protocol: Protocol::Packet,
            port: 3,
            portless: Some(Box::new(PortLess {
                socket_type: "raw".into(),
                ifindex: 0,
                interface: None,
                filter,
                fanout: None,
            })),
            ..sock(0, inode)
        };
        // The dump lists the newest first: the decoy (no filter) before the real one.
        let sockets = [packet(2, Filter::None), packet(1, Filter::Attached(6))];
        let ls = group_listeners(&sockets, |_| proc_(7, "/tmp/x"), false);
        assert_eq!(ls.len(), 1);
        let p = ls[0].portless.as_deref().unwrap();
        assert_eq!(p.filter, Filter::Attached(6));
    }

    #[test]
    fn different_programs_stay_apart() {
        let sockets = [sock(443, 1), sock(443, 2)];
        let owner = |s: &Socket| proc_(1, if s.inode.0 == 1 { "/a" } else { "/b" });
        assert_eq!(group_listeners(&sockets, owner, false).len(), 2);
    }

    #[test]
    fn deleted_exe_is_the_same_program() {
        let a = OwnerKey::of(&proc_(1, "/usr/sbin/nginx (deleted)"), 0);
        assert_eq!(a, OwnerKey::of(&proc_(2, "/usr/sbin/nginx"), 0));
    }
}
