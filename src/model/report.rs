//! One listener as scripts see it: the element of `scan --json`, also carried by events.
//!
//! Field names are a contract (README, "JSON output"): add fields, never rename them.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::classify::{Classification, Iana, PortRange};
use super::listener::{
    Container, Filter, Kind, Listener, NetnsView, Owner, Process, Protocol, Reach, display_address,
};
use super::policy::Verdict;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub protocol: super::Protocol,
    /// The bound address, without brackets: `0.0.0.0`, `::`, `127.0.0.1`.
    pub address: IpAddr,
    /// The interface of a link-local IPv6 address (`eth0` in `fe80::1%eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub port: u16,
    /// `IPV6_V6ONLY` for IPv6 sockets (null for IPv4, or when the source cannot tell).
    pub v6only: Option<bool>,
    pub reach: Reach,
    pub iana: Iana,
    pub range: PortRange,
    /// The owner (shared with the daemon's caches, not copied per row).
    pub process: Option<Arc<Process>>,
    /// Every pid holding one of the listener's sockets.
    pub pids: Vec<u32>,
    /// Why `process` is null: "no-permission", "kernel" or "vanished".
    pub owner_unknown: Option<super::UnknownOwner>,
    /// The uid that owns the socket (known even when the process is not).
    pub uid: u32,
    pub inodes: Vec<u64>,
    pub verdict: Verdict,
    /// The network namespace: `inode`, `name` (or null), `host`.
    pub netns: NetnsView,
    /// The container of its program: `runtime`, `id`, `name`, `pod` (or null).
    pub container: Option<std::sync::Arc<Container>>,
    /// `port`, `packet` or `raw`.
    #[serde(default = "port_kind")]
    pub kind: Kind,
    /// For packet and raw sockets: what they listen to.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub portless: Option<PortLessReport>,
}

fn port_kind() -> Kind {
    Kind::Port
}

/// A packet or raw socket's own fields in `scan --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLessReport {
    /// A packet socket's ethertype (3: every frame, `ETH_P_ALL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    /// A raw socket's IP protocol (6: TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol: Option<u16>,
    /// `raw` or `dgram`.
    pub socket_type: String,
    /// The interface it is bound to, by name where known (`ifindex N` otherwise); null
    /// when bound to none (every interface).
    pub interface: Option<String>,
    /// `attached` (null: the kernel would not say) and `instructions`.
    pub filter: FilterReport,
    /// Its `PACKET_FANOUT` group, if any.
    pub fanout: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterReport {
    pub attached: Option<bool>,
    pub instructions: Option<u32>,
}

impl PortLessReport {
    fn of(l: &Listener) -> Option<PortLessReport> {
        let p = l.portless.as_deref()?;
        let packet = l.protocol == Protocol::Packet;
        Some(PortLessReport {
            ethertype: packet.then_some(l.port),
            ip_protocol: (!packet).then_some(l.port),
            socket_type: p.socket_type.clone(),
            interface: (p.ifindex != 0).then(|| p.interface_words()),
            filter: match p.filter {
                Filter::None => FilterReport {
                    attached: Some(false),
                    instructions: None,
                },
                Filter::Attached(n) => FilterReport {
                    attached: Some(true),
                    instructions: Some(n),
                },
                Filter::Unknown => FilterReport {
                    attached: None,
                    instructions: None,
                },
            },
            fanout: p.fanout,
        })
    }
}

impl Report {
    /// The listener as shown: its classification formatted, not worked out again.
    pub fn new(l: &Listener, class: &Classification) -> Report {
        let (process, owner_unknown) = match &l.owner {
            Owner::Process(p) => (Some(Arc::clone(p)), None),
            Owner::Unknown(why) => (None, Some(*why)),
        };
        Report {
            protocol: l.protocol,
            address: l.address,
            zone: l.zone_label(),
            port: l.port,
            v6only: l.v6only,
            reach: class.reach,
            iana: class.iana.clone(),
            range: class.range,
            process,
            pids: l.pids.iter().map(|p| p.0).collect(),
            owner_unknown,
            uid: l.uid,
            inodes: l.inodes.iter().map(|i| i.0).collect(),
            verdict: class.verdict.clone(),
            netns: class.netns.clone(),
            container: class.container.clone(),
            kind: l.protocol.kind(),
            portless: PortLessReport::of(l),
        }
    }

    /// `0.0.0.0:867` / `[::]:867` / `[fe80::1%eth0]:867`.
    pub fn endpoint(&self) -> String {
        format!(
            "{}:{}",
            display_address(self.address, self.zone.as_deref()),
            self.port
        )
    }
}
