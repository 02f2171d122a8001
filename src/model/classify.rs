//! A listener's classification: what the registry and the policy say about it, worked out
//! once.
//!
//! When a listener identity first appears (and again when a reload changes the policy or
//! the registry), [`Classifier::classify`] looks the port up, words the facts and judges the
//! listener. The result is shared (`Arc`) by the tracker's entry and every event of that
//! listener; the journal record, the event socket, the desktop, `scan` and `explain` only
//! format it. Each fact has one wording for people, here: [`Iana::words`] for the IANA
//! status, [`PortRange::words`] for the range.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::listener::{Container, Listener, NetnsView, Owner, Process, Reach};
use super::policy::{Host, Policy, Verdict};
use super::snapshot::ListenerKey;
use crate::registry::{PortFacts, Registry};
pub use crate::registry::{PortRange, Status};

/// What IANA says about one port for one protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iana {
    pub status: Status,
    /// False when no registry row covers the port (it counts as unassigned).
    pub listed: bool,
    /// Every service name IANA lists for the port.
    pub services: Vec<String>,
}

impl Iana {
    pub fn of(facts: &PortFacts<'_>) -> Iana {
        Iana {
            status: facts.status,
            listed: facts.listed,
            services: facts.service_names(),
        }
    }

    /// The status in words, the one wording every output uses: `assigned to ssh`,
    /// `unassigned`, `reserved`, `unassigned (no registry row)`.
    pub fn words(&self) -> String {
        match self.status {
            Status::Assigned => format!("assigned to {}", self.services.join(", ")),
            Status::Unassigned if !self.listed => "unassigned (no registry row)".to_owned(),
            other => other.as_str().to_owned(),
        }
    }

    /// The table's short form: the service names of an assigned port, else the status,
    /// with `*` when no registry row covers the port.
    pub fn column(&self) -> String {
        match self.status {
            Status::Assigned => self.services.join(","),
            Status::Unassigned if !self.listed => "unassigned*".to_owned(),
            other => other.as_str().to_owned(),
        }
    }
}

impl PortRange {
    /// `well-known range (0-1023)`.
    pub fn words(self) -> String {
        let (lo, hi) = self.bounds();
        format!("{self} range ({lo}-{hi})")
    }
}

/// FNV-1a, 64 bit: stable across runs and builds, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The stable id of a listener's identity (network namespace + [`ListenerKey`]): the same
/// for every event of that listener, across daemon restarts. Hashed from the same bytes as
/// before namespaces were part of the key, so a host listener keeps its id.
pub fn alert_id(key: &ListenerKey) -> String {
    #[derive(serde::Serialize)]
    struct Identity<'a> {
        protocol: super::Protocol,
        port: u16,
        address: std::net::IpAddr,
        // Only a link-local address has one: every other id is as it was.
        #[serde(skip_serializing_if = "is_zero")]
        zone: u32,
        owner: &'a super::OwnerKey,
    }
    fn is_zero(n: &u32) -> bool {
        *n == 0
    }
    let identity = Identity {
        protocol: key.protocol,
        port: key.port,
        address: key.address,
        zone: key.zone,
        owner: &key.owner,
    };
    let json = serde_json::to_vec(&(Some(key.netns), identity)).unwrap_or_default();
    format!("{:016x}", fnv1a(&json))
}

/// Everything said about one listener identity, worked out once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub alert_id: String,
    pub iana: Iana,
    pub range: PortRange,
    pub reach: Reach,
    pub verdict: Verdict,
    /// The network namespace it listens in.
    pub netns: NetnsView,
    /// The container its program runs in, if any.
    pub container: Option<Arc<Container>>,
}

impl Classification {
    /// `in container web-1`, `in network namespace vpn`, or nothing on the host: where a
    /// listener's addresses belong, for people.
    pub fn place_words(&self) -> Option<String> {
        place_words(&self.netns, self.container.as_deref())
    }

    /// The reach in words, for this listener's namespace: `0.0.0.0` in a container is its
    /// interfaces, not the host's.
    pub fn reach_words(&self) -> String {
        reach_words(self.reach, &self.netns, self.container.as_deref())
    }
}

/// Where a listener is, when that is not the host: `in docker container web-1`, `in
/// network namespace vpn`.
pub fn place_words(netns: &NetnsView, container: Option<&Container>) -> Option<String> {
    if let Some(c) = container {
        // A container on the host's network (`--network host`, a hostNetwork pod):
        // its addresses are the host's.
        let host_network = if netns.host { " (host network)" } else { "" };
        return Some(format!(
            "in {} container {}{host_network}",
            c.runtime,
            c.label()
        ));
    }
    (!netns.host).then(|| format!("in network namespace {}", netns.label()))
}

/// The reach in words, for the listener's namespace: `0.0.0.0` in a container reaches the
/// container's interfaces, not the host's.
pub fn reach_words(reach: Reach, netns: &NetnsView, container: Option<&Container>) -> String {
    match place_words(netns, container) {
        Some(place) if reach != Reach::Loopback => format!("{}, {place}", reach.describe()),
        Some(place) => format!("loopback only, {place}"),
        None => reach.describe().to_owned(),
    }
}

/// The registry and policy in force, and what the host is.
#[derive(Clone, Copy)]
pub struct Classifier<'a> {
    pub registry: &'a Registry,
    pub policy: &'a Policy,
    pub host: &'a dyn Host,
}

impl std::fmt::Debug for Classifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").finish_non_exhaustive()
    }
}

/// For tests: a host where every path is a file of its own, in mount namespace 1, with
/// Linux's default ephemeral range, users `root` (0) and `alice` (1000), and the clock.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestHost;

#[cfg(test)]
impl Host for TestHost {
    fn file_id(&self, path: &str) -> Option<super::listener::FileId> {
        Some(path_file_id(path))
    }
    fn mount_ns(&self) -> Option<u64> {
        Some(1)
    }
    fn ephemeral_ports(&self, _netns: u64) -> (u16, u16) {
        (32768, 60999)
    }
    fn netns(&self, inode: u64) -> NetnsView {
        NetnsView {
            inode,
            name: (inode > 1).then(|| format!("ns{inode}")),
            host: inode <= 1,
        }
    }
    fn uid_of(&self, name: &str) -> Option<u32> {
        match name {
            "root" => Some(0),
            "alice" => Some(1000),
            "systemd-network" => Some(998),
            _ => None,
        }
    }
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

/// For tests: the identity [`TestHost`] gives the file at `path`.
#[cfg(test)]
pub(crate) fn path_file_id(path: &str) -> super::listener::FileId {
    super::listener::FileId {
        dev: 1,
        ino: fnv1a(path.as_bytes()),
    }
}

impl Classifier<'_> {
    pub fn classify(&self, l: &Listener) -> Classification {
        let iana = Iana::of(&self.registry.lookup(l.protocol, l.port));
        let verdict = self.policy.judge(&iana, l, self.host);
        Classification {
            alert_id: alert_id(&ListenerKey::of(l)),
            range: PortRange::of(l.port),
            reach: l.reach(),
            iana,
            verdict,
            netns: self.host.netns(l.netns),
            container: l.owner.process().and_then(|p| p.container.clone()),
        }
    }

    /// A listener whose sockets other programs hold too (`also`, besides its owner) is
    /// judged as each of them: when the policy allows its owner but not another holder,
    /// the listener becomes that holder's (added to its pids). A decoy an allowed program
    /// plays does not vouch for the program that serves on the socket.
    pub fn judge_as_holders(&self, l: &mut Listener, also: Vec<Arc<Process>>) {
        if also.is_empty() || self.classify(l).verdict.alert {
            return;
        }
        for p in also {
            let mut other = l.clone();
            let pid = p.pid;
            other.owner = Owner::Process(p);
            if self.classify(&other).verdict.alert {
                if !other.pids.contains(&pid) {
                    other.pids.push(pid);
                    other.pids.sort_unstable();
                }
                *l = other;
                return;
            }
        }
    }
}

/// The registry's facts as one clause: `867/tcp is unassigned by IANA, in the well-known
/// range (0-1023)`, used in verdict reasons.
pub fn registry_clause(l: &Listener, iana: &Iana) -> String {
    format!(
        "{} is {} by IANA, in the {}",
        l.port_proto(),
        iana.words(),
        PortRange::of(l.port).words()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn one_wording_per_status() {
        let reg = Registry::builtin();
        let words = |proto, port| Iana::of(&reg.lookup(proto, port)).words();
        assert_eq!(words(Protocol::Tcp, 22), "assigned to ssh");
        assert_eq!(words(Protocol::Tcp, 867), "unassigned");
        assert_eq!(words(Protocol::Tcp, 1023), "reserved");
        assert_eq!(PortRange::of(867).words(), "well-known range (0-1023)");
        let unlisted = Iana {
            status: Status::Unassigned,
            listed: false,
            services: vec![],
        };
        assert_eq!(unlisted.words(), "unassigned (no registry row)");
        assert_eq!(unlisted.column(), "unassigned*");
    }

    #[test]
    fn a_containers_addresses_are_its_own_unless_it_is_on_the_host_network() {
        let web = Container {
            runtime: "docker".into(),
            id: "3f4e5d6c7b8a9f0e".into(),
            name: Some("web-1".into()),
            pod: None,
            rootless_uid: None,
        };
        let netns = |host| NetnsView {
            inode: 4026532000,
            name: None,
            host,
        };
        let all = Reach::AllIpv4;
        assert_eq!(
            reach_words(all, &netns(false), Some(&web)),
            format!("{}, in docker container web-1", all.describe())
        );
        assert_eq!(
            reach_words(all, &netns(true), Some(&web)),
            format!(
                "{}, in docker container web-1 (host network)",
                all.describe()
            )
        );
        assert_eq!(
            reach_words(all, &netns(false), None),
            format!("{}, in network namespace netns:4026532000", all.describe())
        );
        assert_eq!(reach_words(all, &netns(true), None), all.describe());
    }
}
