//! The IANA "Service Name and Transport Protocol Port Number Registry", built in.
//!
//! The built-in table (`table.rs`) is generated from IANA's CSV export by
//! `cargo run --example gen-registry` and compiled into the binary, so a lookup costs a
//! binary search and no I/O. A user may load a newer official CSV at run time instead
//! (`[registry] csv = ...`); both go through the same [`csv`] builder, so the built-in
//! table is exactly what the loader would make of the CSV it came from (a test checks it).

pub mod csv;
#[rustfmt::skip]
mod table;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::Protocol;

/// What IANA says about one port for one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Assigned,
    Unassigned,
    Reserved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Assigned => "assigned",
            Status::Unassigned => "unassigned",
            Status::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IANA's three port ranges (RFC 6335 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortRange {
    /// 0-1023, the "system" ports.
    WellKnown,
    /// 1024-49151, the "user" ports.
    Registered,
    /// 49152-65535, never assigned, used for ephemeral ports.
    Dynamic,
}

impl PortRange {
    pub fn of(port: u16) -> PortRange {
        match port {
            0..=1023 => PortRange::WellKnown,
            1024..=49151 => PortRange::Registered,
            _ => PortRange::Dynamic,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PortRange::WellKnown => "well-known",
            PortRange::Registered => "registered",
            PortRange::Dynamic => "dynamic",
        }
    }

    pub fn bounds(self) -> (u16, u16) {
        match self {
            PortRange::WellKnown => (0, 1023),
            PortRange::Registered => (1024, 49151),
            PortRange::Dynamic => (49152, 65535),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Service names of a run: borrowed from the built-in table, or owned when loaded from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Services {
    Static(&'static [&'static str]),
    Owned(Box<[Box<str>]>),
}

impl Services {
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let (a, b): (&[&str], &[Box<str>]) = match self {
            Services::Static(s) => (s, &[]),
            Services::Owned(s) => (&[], s),
        };
        // One of the two is empty; chaining keeps a single iterator type.
        ServicesIter {
            a: a.iter(),
            b: b.iter(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Services::Static(s) => s.len(),
            Services::Owned(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

struct ServicesIter<'a> {
    a: std::slice::Iter<'a, &'static str>,
    b: std::slice::Iter<'a, Box<str>>,
}

impl<'a> Iterator for ServicesIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.a
            .next()
            .copied()
            .or_else(|| self.b.next().map(|s| &**s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.a.len() + self.b.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for ServicesIter<'_> {}

/// Consecutive ports with the same status and service names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: u16,
    pub last: u16,
    pub status: Status,
    pub services: Services,
}

impl Run {
    pub(crate) const fn builtin(
        first: u16,
        last: u16,
        status: Status,
        services: &'static [&'static str],
    ) -> Run {
        Run {
            first,
            last,
            status,
            services: Services::Static(services),
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != cb));
            prev = here;
        }
    }
    row[b.len()]
}

/// A lookup result.
#[derive(Clone, Copy, Debug)]
pub struct PortFacts<'r> {
    pub status: Status,
    /// False when no registry row covers the port: it counts as unassigned.
    pub listed: bool,
    /// The run of ports with the same facts that this port belongs to.
    pub run: Option<&'r Run>,
}

impl PortFacts<'_> {
    pub fn services(&self) -> impl Iterator<Item = &str> + '_ {
        self.run.into_iter().flat_map(|r| r.services.iter())
    }

    pub fn service_names(&self) -> Vec<String> {
        self.run.map(|r| r.services.to_vec()).unwrap_or_default()
    }
}

/// Where a registry came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    File(PathBuf),
}

/// Per-protocol tables of runs, sorted by port, not overlapping.
#[derive(Clone, Debug)]
pub struct Registry {
    tcp: Table,
    udp: Table,
    origin: Origin,
}

#[derive(Clone, Debug)]
enum Table {
    Static(&'static [Run]),
    Owned(Vec<Run>),
}

impl Table {
    fn runs(&self) -> &[Run] {
        match self {
            Table::Static(r) => r,
            Table::Owned(r) => r,
        }
    }
}

impl Registry {
    /// The table compiled into the binary.
    pub fn builtin() -> Registry {
        Registry {
            tcp: Table::Static(table::TCP),
            udp: Table::Static(table::UDP),
            origin: Origin::BuiltIn,
        }
    }

    /// A registry from tables the [`csv`] module built.
    pub fn from_tables(tables: csv::Tables, origin: Origin) -> Registry {
        Registry {
            tcp: Table::Owned(tables.tcp),
            udp: Table::Owned(tables.udp),
            origin,
        }
    }

    /// Loads an official IANA CSV export (`service-names-port-numbers.csv`).
    pub fn from_csv_file(path: &std::path::Path) -> Result<Registry, csv::CsvError> {
        // A regular file of a sane size (a FIFO named here must not hang a reload), that
        // only root or the reader could have written: it says which ports are assigned.
        let bytes = crate::files::read_trusted(path).map_err(|e| csv::CsvError::Open {
            path: path.to_owned(),
            reason: e.reason(),
        })?;
        let tables = csv::build_tables(bytes.as_slice()).map_err(|e| e.in_file(path))?;
        Ok(Registry::from_tables(tables, Origin::File(path.to_owned())))
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn runs(&self, protocol: Protocol) -> &[Run] {
        match protocol.registry_table() {
            Some(Protocol::Tcp) => self.tcp.runs(),
            Some(_) => self.udp.runs(),
            None => &[],
        }
    }

    /// Every port IANA assigns to `service` (any case), for `protocol` or both.
    pub fn ports_named(&self, service: &str, protocol: Option<Protocol>) -> Vec<(Protocol, u16)> {
        let mut out = Vec::new();
        for p in Protocol::IANA
            .into_iter()
            .filter(|p| protocol.is_none_or(|q| q == *p))
        {
            for run in self.runs(p) {
                if run.services.iter().any(|s| s.eq_ignore_ascii_case(service)) {
                    out.extend((run.first..=run.last).map(|port| (p, port)));
                }
            }
        }
        out.sort_by_key(|&(p, port)| (port, p));
        out
    }

    /// The service names closest to `name` (by edit distance), for a hint.
    pub fn closest_names(&self, name: &str, n: usize) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        let mut all: Vec<(usize, &str)> = Protocol::IANA
            .into_iter()
            .flat_map(|p| self.runs(p).iter())
            .flat_map(|r| r.services.iter())
            .map(|s| (edit_distance(&name, &s.to_ascii_lowercase()), s))
            .collect();
        all.sort();
        all.dedup_by(|a, b| a.1 == b.1);
        all.into_iter().take(n).map(|(_, s)| s.to_owned()).collect()
    }

    pub fn lookup(&self, protocol: Protocol, port: u16) -> PortFacts<'_> {
        let runs = self.runs(protocol);
        let i = runs.partition_point(|r| r.last < port);
        match runs.get(i) {
            Some(run) if run.first <= port => PortFacts {
                status: run.status,
                listed: true,
                run: Some(run),
            },
            _ => PortFacts {
                status: Status::Unassigned,
                listed: false,
                run: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &Registry, proto: Protocol, port: u16) -> Vec<String> {
        r.lookup(proto, port).service_names()
    }

    #[test]
    fn builtin_table_is_sorted_and_disjoint() {
        let r = Registry::builtin();
        for proto in Protocol::IANA {
            let runs = r.runs(proto);
            assert!(runs.len() > 1000, "{proto}: only {} runs", runs.len());
            for run in runs {
                assert!(run.first <= run.last, "{proto}: {run:?}");
                let mut seen = std::collections::HashSet::new();
                for s in run.services.iter() {
                    assert!(seen.insert(s), "{proto} {}: {s} twice", run.first);
                }
                assert_eq!(
                    run.status == Status::Assigned,
                    !run.services.is_empty(),
                    "{run:?}"
                );
            }
            for pair in runs.windows(2) {
                assert!(
                    pair[0].last < pair[1].first,
                    "{proto}: {:?} overlaps {:?}",
                    pair[0],
                    pair[1]
                );
                // Runs are maximal: neighbours with the same facts would have been merged.
                if pair[0].last + 1 == pair[1].first {
                    assert!(
                        pair[0].status != pair[1].status || pair[0].services != pair[1].services,
                        "{proto}: {:?} and {:?} should be one run",
                        pair[0],
                        pair[1]
                    );
                }
            }
        }
    }

    #[test]
    fn landmarks() {
        let r = Registry::builtin();
        assert_eq!(r.lookup(Protocol::Tcp, 22).status, Status::Assigned);
        assert_eq!(names(&r, Protocol::Tcp, 22), ["ssh"]);
        assert_eq!(names(&r, Protocol::Udp, 53), ["domain"]);
        assert_eq!(names(&r, Protocol::Tcp, 631), ["ipp", "ipps"]);
        assert_eq!(names(&r, Protocol::Udp, 631), ["ipp"]);
        for proto in Protocol::IANA {
            let f = r.lookup(proto, 867);
            assert_eq!(f.status, Status::Unassigned, "867/{proto}");
            assert!(f.listed, "867/{proto} is an explicit Unassigned row");
            assert_eq!(f.services().count(), 0);
        }
        assert_eq!(r.lookup(Protocol::Tcp, 1023).status, Status::Reserved);
        assert_eq!(r.lookup(Protocol::Tcp, 0).status, Status::Reserved);
        // 1008/tcp: no row at all, so as good as unassigned.
        let f = r.lookup(Protocol::Tcp, 1008);
        assert_eq!((f.status, f.listed), (Status::Unassigned, false));
        assert_eq!(r.lookup(Protocol::Tcp, 65535).status, Status::Unassigned);
        // UDP-Lite is judged by UDP's rows; SCTP has no table: no row, unassigned.
        assert_eq!(names(&r, Protocol::UdpLite, 53), ["domain"]);
        let sctp = r.lookup(Protocol::Sctp, 22);
        assert_eq!((sctp.status, sctp.listed), (Status::Unassigned, false));
    }

    /// IANA's own counts for 0-1023 (see the registry notes shipped with the CSV).
    #[test]
    fn well_known_counts_match_iana() {
        let r = Registry::builtin();
        let count = |proto| {
            let mut c = [0usize; 4];
            for port in 0..=1023 {
                let f = r.lookup(proto, port);
                let i = if !f.listed { 3 } else { f.status as usize };
                c[i] += 1;
            }
            c
        };
        // assigned, unassigned, reserved, no row
        assert_eq!(count(Protocol::Tcp), [682, 281, 49, 12]);
        assert_eq!(count(Protocol::Udp), [678, 282, 54, 10]);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(PortRange::of(0), PortRange::WellKnown);
        assert_eq!(PortRange::of(1023), PortRange::WellKnown);
        assert_eq!(PortRange::of(1024), PortRange::Registered);
        assert_eq!(PortRange::of(49151), PortRange::Registered);
        assert_eq!(PortRange::of(49152), PortRange::Dynamic);
        assert_eq!(PortRange::of(65535), PortRange::Dynamic);
    }
}
