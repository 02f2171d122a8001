//! One listener as scripts see it: the element of `scan --json`, also carried by events.
//!
//! Field names are a contract (README, "JSON output"): add fields, never rename them.

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::listener::{Listener, Owner, Process, Reach, display_address};
use super::policy::Verdict;
use crate::registry::{PortRange, Registry, Status};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub protocol: super::Protocol,
    /// The bound address, without brackets: `0.0.0.0`, `::`, `127.0.0.1`.
    pub address: String,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iana {
    pub status: Status,
    /// False when no registry row covers the port (it counts as unassigned).
    pub listed: bool,
    pub services: Vec<String>,
}

impl Iana {
    pub fn of(registry: &Registry, protocol: super::Protocol, port: u16) -> Iana {
        let facts = registry.lookup(protocol, port);
        Iana {
            status: facts.status,
            listed: facts.listed,
            services: facts.service_names(),
        }
    }
}

impl Report {
    pub fn new(l: &Listener, registry: &Registry, verdict: Verdict) -> Report {
        let (process, owner_unknown) = match &l.owner {
            Owner::Process(p) => (Some(Arc::clone(p)), None),
            Owner::Unknown(why) => (None, Some(*why)),
        };
        Report {
            protocol: l.protocol,
            address: l.address.to_string(),
            port: l.port,
            v6only: l.v6only,
            reach: Reach::of(l.address, l.v6only),
            iana: Iana::of(registry, l.protocol, l.port),
            range: PortRange::of(l.port),
            process,
            pids: l.pids.iter().map(|p| p.0).collect(),
            owner_unknown,
            uid: l.uid,
            inodes: l.inodes.iter().map(|i| i.0).collect(),
            verdict,
        }
    }

    /// `0.0.0.0:867` / `[::]:867`.
    pub fn endpoint(&self) -> String {
        match self.address.parse() {
            Ok(ip) => format!("{}:{}", display_address(ip), self.port),
            Err(_) => format!("{}:{}", self.address, self.port),
        }
    }
}
