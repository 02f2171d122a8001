//! What the kernel says the moment a socket starts or stops listening, and which of those
//! sockets no poll ever saw.
//!
//! The eBPF program (`bpf/instant.bpf.c`) sends one fixed-size record per event; [`parse`]
//! reads it. The snapshot stays the truth for what listens: an event only makes the
//! daemon poll at once. [`Sightings`] remembers each socket an event announced until a
//! poll has seen it (then the poll records it, as any listener) or the kernel says it
//! closed without any poll having seen it: a short-lived listener, recorded from what the
//! event carried.
//!
//! Pure: events come in as bytes and values, the snapshot as a predicate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::events::Announced;
use super::listener::{FileId, Listener, Protocol};

/// What happened to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Happened {
    /// A TCP socket entered LISTEN.
    Listen,
    /// ... and left it (closed, or shut down).
    Unlisten,
    /// A UDP or UDP-Lite socket was bound to a port.
    Bind,
    /// ... and closed.
    Unbind,
    /// ... or connected to a peer: a client, not a listener.
    Connect,
}

impl Happened {
    fn from_wire(b: u8) -> Option<Happened> {
        Some(match b {
            1 => Happened::Listen,
            2 => Happened::Unlisten,
            3 => Happened::Bind,
            4 => Happened::Unbind,
            5 => Happened::Connect,
            _ => return None,
        })
    }

    /// Whether a socket starts listening (rather than stops).
    pub fn opens(self) -> bool {
        matches!(self, Happened::Listen | Happened::Bind)
    }

    /// Which socket table its key belongs to: TCP keys are socket inodes, UDP keys cookies.
    fn table(self) -> Table {
        match self {
            Happened::Listen | Happened::Unlisten => Table::Tcp,
            Happened::Bind | Happened::Unbind | Happened::Connect => Table::Udp,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Table {
    Tcp,
    Udp,
}

/// The program file a process ran when the event fired.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExeSeen {
    /// Its device (its superblock's, in `stat`'s encoding: what `stat` shows but on
    /// overlayfs and btrfs) and inode: the file, whatever a path says.
    pub file: FileId,
    /// Its path, from the kernel's names of the file and the directories above it, in the
    /// process's own view of the mounts; `None` when the walk did not reach the root.
    pub path: Option<String>,
    /// When the file last changed (its ctime: seconds, nanoseconds), which no process can
    /// choose. On overlayfs and btrfs, `stat` shows a file on another device than the
    /// kernel's superblock, and inode numbers repeat across layers and subvolumes: this
    /// tells the file the kernel saw from another that looks like it.
    pub changed: (i64, u32),
}

/// One event, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    pub happened: Happened,
    /// TCP: the socket's inode (what sock_diag and `/proc/PID/fd` show); UDP: the socket's
    /// cookie, which matches its bind to its close.
    pub key: u64,
    /// `CLOCK_BOOTTIME`, in nanoseconds.
    pub at_ns: u64,
    /// For opening events: the protocol, the local address and the port it got.
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    /// The network namespace: the socket's (TCP), or the binding process's (UDP).
    pub netns: u64,
    /// The process the event fired in (the thread group: what `ps` calls the pid).
    pub pid: u32,
    /// TCP: the socket's uid; UDP: the binding process's uid.
    pub uid: u32,
    /// The process's name (`comm`): any bytes it chose.
    pub comm: Vec<u8>,
    /// When the process started (`CLOCK_BOOTTIME`, nanoseconds): a reused pid is another.
    pub start_ns: u64,
    pub exe: Option<ExeSeen>,
}

/// The size of one record from the eBPF program (`struct event`).
pub const EVENT_BYTES: usize = 368;
const CTIME_AT: usize = 352;
const PATH_AT: usize = 96;
const PATH_BYTES: usize = 256;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A device number as the kernel keeps it (`MAJOR << 20 | MINOR`) in the encoding `stat`
/// returns (glibc's `makedev`).
pub fn user_dev(kernel: u32) -> u64 {
    let (major, minor) = (u64::from(kernel >> 20), u64::from(kernel & 0xfffff));
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// Reads one record (little-endian, the layout of `struct event`). `None` for a record of
/// another size or with a kind this daemon does not know.
pub fn parse(b: &[u8]) -> Option<KernelEvent> {
    if b.len() != EVENT_BYTES {
        return None;
    }
    let happened = Happened::from_wire(b[52])?;
    let protocol = match (happened.table(), b[53]) {
        (Table::Tcp, _) => Protocol::Tcp,
        (Table::Udp, 136) => Protocol::UdpLite,
        (Table::Udp, _) => Protocol::Udp,
    };
    let raw: [u8; 16] = b[56..72].try_into().expect("16 bytes");
    let address = match b[54] {
        10 => IpAddr::V6(Ipv6Addr::from(raw)),
        _ => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
    };
    let comm = &b[72..88];
    let comm = comm[..comm.iter().position(|&c| c == 0).unwrap_or(16)].to_vec();
    let exe_ino = u64_at(b, 24);
    let exe = (exe_ino != 0).then(|| ExeSeen {
        file: FileId {
            dev: user_dev(u32_at(b, 32)),
            ino: exe_ino,
        },
        path: exe_path(
            &b[PATH_AT..PATH_AT + usize::from(u16_at(b, 88)).min(PATH_BYTES)],
            b[90] != 0,
        ),
        changed: (
            i64::from_le_bytes(b[CTIME_AT..CTIME_AT + 8].try_into().expect("8 bytes")),
            u32_at(b, CTIME_AT + 8),
        ),
    });
    Some(KernelEvent {
        happened,
        key: u64_at(b, 8),
        at_ns: u64_at(b, 0),
        protocol,
        address,
        port: u16_at(b, 48),
        netns: u64::from(u32_at(b, 36)),
        pid: u32_at(b, 40),
        uid: u32_at(b, 44),
        comm,
        start_ns: u64_at(b, 16),
        exe,
    })
}

/// The names the program gathered, leaf first and each ended by a NUL, as a path. A walk
/// that stopped before the root, or a name that is not UTF-8 or was cut, gives none.
fn exe_path(names: &[u8], truncated: bool) -> Option<String> {
    if truncated || names.last() != Some(&0) {
        return None;
    }
    let mut parts = Vec::new();
    for name in names[..names.len() - 1].split(|&c| c == 0) {
        if name.is_empty() || name.contains(&b'/') && name != b"/" {
            return None;
        }
        parts.push(std::str::from_utf8(name).ok()?);
    }
    // The root's own name is "/": the walk stops before it.
    let mut path = String::new();
    for name in parts.iter().rev().filter(|n| **n != "/") {
        path.push('/');
        path.push_str(name);
    }
    (!path.is_empty()).then_some(path)
}

/// A socket an event announced, until a poll sees it or it is known to be gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub opened: KernelEvent,
    /// When the kernel said it closed (`CLOCK_BOOTTIME` nanoseconds).
    pub closed_ns: Option<u64>,
}

impl Sighting {
    /// How long it listened, when it has closed.
    pub fn lifetime(&self) -> Option<std::time::Duration> {
        let closed = self.closed_ns?;
        Some(std::time::Duration::from_nanos(
            closed.saturating_sub(self.opened.at_ns),
        ))
    }
}

/// What [`Sightings::note`] asks of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    Nothing,
    /// A poll soon: a socket opened, or one no poll has seen closed.
    Poll,
}

/// How many sockets announced by events, and not yet seen by a poll, are remembered: a
/// flood beyond this is counted, and the polls still see whatever stays open.
pub const MAX_SIGHTINGS: usize = 4096;

/// How long an announced socket that no poll finds and that never closes is remembered
/// (nanoseconds): a UDP socket that connected without the program seeing it, or a
/// listener in a namespace the daemon does not read.
pub const FORGET_AFTER_NS: u64 = 30_000_000_000;

/// Forgotten sockets a warning names, at most (the rest it counts).
pub const NAMED_UNCONFIRMED: usize = 3;

/// Where a UDP socket listens: namespace, protocol, address, port.
type Place = (u64, Protocol, IpAddr, u16);

/// The sockets events announced: those no poll has seen yet, and those a poll has seen,
/// until the records that close them are written (they carry the kernel's lifetime).
#[derive(Debug, Default)]
pub struct Sightings {
    pending: HashMap<(Table, u64), Sighting>,
    seen: HashMap<(Table, u64), Sighting>,
    /// The seen UDP sockets by place: the poll's listeners have no cookie.
    seen_udp: HashMap<Place, u64>,
    /// Announced sockets not remembered: the table was full.
    pub overflowed: u64,
    /// Announced sockets forgotten: never seen by a poll, never closed.
    pub unconfirmed: u64,
    /// The last [`NAMED_UNCONFIRMED`] of them not yet said, oldest first: what the kernel
    /// said of each, for the warning that counts them (a listener in a namespace the daemon
    /// cannot find is known from this alone).
    pub last_unconfirmed: Vec<KernelEvent>,
    /// How long a socket a poll has seen is remembered after the kernel said it closed,
    /// for the record that closes it (the daemon's grace and two polls); `None`:
    /// [`FORGET_AFTER_NS`].
    pub keep_closed_ns: Option<u64>,
}

impl Sightings {
    /// Folds in one event.
    pub fn note(&mut self, event: KernelEvent) -> Wants {
        let slot = (event.happened.table(), event.key);
        match event.happened {
            Happened::Listen | Happened::Bind => {
                if self.pending.len() >= MAX_SIGHTINGS && !self.pending.contains_key(&slot) {
                    self.overflowed += 1;
                } else {
                    let s = Sighting {
                        opened: event,
                        closed_ns: None,
                    };
                    self.pending.insert(slot, s);
                }
                Wants::Poll
            }
            Happened::Unlisten | Happened::Unbind => match self.pending.get_mut(&slot) {
                Some(s) if s.closed_ns.is_none() => {
                    s.closed_ns = Some(event.at_ns);
                    Wants::Poll
                }
                Some(_) => Wants::Nothing,
                None => {
                    // A poll has it: the close record, when the poll sees it gone, tells
                    // how long it listened.
                    if let Some(s) = self.seen.get_mut(&slot) {
                        s.closed_ns.get_or_insert(event.at_ns);
                    }
                    Wants::Nothing
                }
            },
            Happened::Connect => {
                self.pending.remove(&slot);
                self.forget_seen(slot);
                Wants::Nothing
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// After a poll: sightings the snapshot has (`present`) are the poll's to record and
    /// are forgotten; the closed ones it does not have are short-lived listeners, returned
    /// oldest first. `now_ns` is `CLOCK_BOOTTIME` now.
    pub fn resolve(
        &mut self,
        now_ns: u64,
        present: &dyn Fn(&KernelEvent) -> bool,
    ) -> Vec<Sighting> {
        let mut gone = Vec::new();
        let mut unconfirmed = 0;
        let mut forgotten: Vec<KernelEvent> = Vec::new();
        let mut seen = Vec::new();
        self.pending.retain(|slot, s| {
            if present(&s.opened) {
                seen.push((*slot, s.clone()));
                return false;
            }
            if s.closed_ns.is_some() {
                gone.push(s.clone());
                return false;
            }
            let keep = now_ns.saturating_sub(s.opened.at_ns) < FORGET_AFTER_NS;
            if !keep {
                unconfirmed += 1;
                // Only the latest few are named: a clone of each of thousands would be
                // dropped at once.
                let at = (s.opened.at_ns, s.opened.key);
                if forgotten.len() < NAMED_UNCONFIRMED
                    || forgotten.iter().any(|e| (e.at_ns, e.key) < at)
                {
                    forgotten.push(s.opened.clone());
                    forgotten.sort_by_key(|e| (e.at_ns, e.key));
                    forgotten.drain(..forgotten.len().saturating_sub(NAMED_UNCONFIRMED));
                }
            }
            keep
        });
        self.unconfirmed += unconfirmed;
        if !forgotten.is_empty() {
            let last = &mut self.last_unconfirmed;
            last.append(&mut forgotten);
            last.sort_by_key(|e| (e.at_ns, e.key));
            last.drain(..last.len().saturating_sub(NAMED_UNCONFIRMED));
        }
        // Seen ones stay until their close is recorded; closed ones the poll never closed
        // (it saw them come back as a restart) are forgotten in time.
        let keep = self.keep_closed_ns.unwrap_or(FORGET_AFTER_NS);
        let stale: Vec<(Table, u64)> = self
            .seen
            .iter()
            .filter(|(_, s)| {
                s.closed_ns
                    .is_some_and(|c| now_ns.saturating_sub(c) >= keep)
            })
            .map(|(slot, _)| *slot)
            .collect();
        for slot in stale {
            self.forget_seen(slot);
        }
        for (slot, s) in seen {
            if self.seen.len() < MAX_SIGHTINGS {
                if slot.0 == Table::Udp {
                    let o = &s.opened;
                    self.seen_udp
                        .insert((o.netns, o.protocol, o.address, o.port), slot.1);
                }
                self.seen.insert(slot, s);
            }
        }
        gone.sort_by_key(|s| (s.opened.at_ns, s.opened.key));
        if self.pending.capacity() > 1024 && self.pending.capacity() > 4 * self.pending.len() {
            self.pending.shrink_to(self.pending.len() * 2);
        }
        gone
    }

    fn forget_seen(&mut self, slot: (Table, u64)) {
        if let Some(s) = self.seen.remove(&slot)
            && slot.0 == Table::Udp
        {
            let o = &s.opened;
            self.seen_udp
                .remove(&(o.netns, o.protocol, o.address, o.port));
        }
    }

    fn seen_slot(&self, l: &Listener) -> Option<(Table, u64)> {
        if l.protocol == Protocol::Tcp {
            l.inodes
                .iter()
                .map(|i| (Table::Tcp, i.0))
                .find(|slot| self.seen.contains_key(slot))
        } else {
            let cookie = self
                .seen_udp
                .get(&(l.netns, l.protocol, l.address, l.port))?;
            Some((Table::Udp, *cookie))
        }
    }

    /// What the kernel's events said of a listener a poll found: `None` when no event
    /// announced it. With `closing`, the record closes it: its lifetime, by the kernel's
    /// times, if the kernel said it closed; and it is forgotten.
    pub fn announced(&mut self, l: &Listener, closing: bool) -> Option<Announced> {
        if self.seen.is_empty() {
            return None;
        }
        let slot = self.seen_slot(l)?;
        let lifetime = self.seen.get(&slot)?.lifetime();
        if !closing {
            return Some(Announced { lifetime: None });
        }
        self.forget_seen(slot);
        Some(Announced { lifetime })
    }

    /// The event that announced a listener the poll found, while no poll has seen it yet:
    /// who listened, when the poll could not read who holds it now (a process exiting).
    pub fn announcing(&self, l: &Listener) -> Option<&KernelEvent> {
        if self.pending.is_empty() {
            return None;
        }
        if l.protocol == Protocol::Tcp {
            return l
                .inodes
                .iter()
                .find_map(|i| self.pending.get(&(Table::Tcp, i.0)))
                .map(|s| &s.opened);
        }
        self.pending.values().map(|s| &s.opened).find(|o| {
            (o.netns, o.protocol, o.address, o.port) == (l.netns, l.protocol, l.address, l.port)
        })
    }

    /// The events of the sockets no poll has seen yet.
    pub fn pending_events(&self) -> impl Iterator<Item = &KernelEvent> {
        self.pending.values().map(|s| &s.opened)
    }

    /// Whether nothing at all is remembered (no announced listener waits for a record).
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the eBPF program lays it out.
    pub(crate) fn record(kind: u8, key: u64, at_ns: u64, port: u16, path: &[&str]) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_BYTES];
        b[0..8].copy_from_slice(&at_ns.to_le_bytes());
        b[8..16].copy_from_slice(&key.to_le_bytes());
        b[16..24].copy_from_slice(&7_000_000u64.to_le_bytes());
        b[24..32].copy_from_slice(&4242u64.to_le_bytes());
        b[32..36].copy_from_slice(&((254u32 << 20) | 1).to_le_bytes());
        b[36..40].copy_from_slice(&4026531840u32.to_le_bytes());
        b[40..44].copy_from_slice(&1234u32.to_le_bytes());
        b[44..48].copy_from_slice(&1000u32.to_le_bytes());
        b[48..50].copy_from_slice(&port.to_le_bytes());
        b[52] = kind;
        b[53] = if kind <= 2 { 6 } else { 17 };
        b[54] = 2;
        b[56..60].copy_from_slice(&[0, 0, 0, 0]);
        b[72..77].copy_from_slice(b"evil\xff");
        let mut off = PATH_AT;
        for name in path.iter().rev() {
            b[off..off + name.len()].copy_from_slice(name.as_bytes());
            off += name.len() + 1;
        }
        b[88..90].copy_from_slice(&((off - PATH_AT) as u16).to_le_bytes());
        b[CTIME_AT..CTIME_AT + 8].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        b[CTIME_AT + 8..CTIME_AT + 12].copy_from_slice(&123_456_789u32.to_le_bytes());
        b
    }

    #[test]
    fn a_record_reads_back_with_its_exe_path_root_first() {
        let e = parse(&record(1, 99, 5, 867, &["usr", "bin", "evil"])).unwrap();
        assert_eq!(e.happened, Happened::Listen);
        assert_eq!((e.key, e.port, e.pid, e.uid), (99, 867, 1234, 1000));
        assert_eq!(e.protocol, Protocol::Tcp);
        assert_eq!(e.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(e.comm, b"evil\xff");
        let exe = e.exe.unwrap();
        assert_eq!(exe.path.as_deref(), Some("/usr/bin/evil"));
        // major 254, minor 1, as stat(2) gives it.
        assert_eq!(
            exe.file,
            FileId {
                dev: 254 * 256 + 1,
                ino: 4242
            }
        );
        assert_eq!(exe.changed, (1_700_000_000, 123_456_789));
    }

    #[test]
    fn a_cut_walk_or_odd_names_give_no_path() {
        let mut b = record(1, 1, 1, 867, &["usr", "bin", "evil"]);
        b[90] = 1; // the walk did not reach the root
        assert_eq!(parse(&b).unwrap().exe.unwrap().path, None);
        let b = record(1, 1, 1, 867, &["usr", "", "evil"]);
        assert_eq!(parse(&b).unwrap().exe.unwrap().path, None);
        let b = record(1, 1, 1, 867, &["usr", "a/b"]);
        assert_eq!(parse(&b).unwrap().exe.unwrap().path, None);
        assert!(parse(&record(9, 1, 1, 1, &[])).is_none());
        assert!(parse(&[0u8; 12]).is_none());
    }

    #[test]
    fn kernel_device_numbers_become_stat_ones() {
        assert_eq!(user_dev((8 << 20) | 1), 0x801);
        assert_eq!(user_dev((259 << 20) | 300), libc_makedev(259, 300));
    }

    fn libc_makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }

    fn event(kind: u8, key: u64, at_ns: u64) -> KernelEvent {
        parse(&record(kind, key, at_ns, 867, &["x"])).unwrap()
    }

    #[test]
    fn a_listener_the_poll_saw_is_the_polls_and_a_closed_unseen_one_is_short_lived() {
        let mut s = Sightings::default();
        assert_eq!(s.note(event(1, 10, 100)), Wants::Poll);
        assert_eq!(s.note(event(1, 11, 200)), Wants::Poll);
        // 10 is in the snapshot; 11 is not, and still open: wait.
        assert!(s.resolve(300, &|e| e.key == 10).is_empty());
        assert_eq!(s.len(), 1);
        // Its close: a poll is wanted, and that poll does not find it.
        assert_eq!(s.note(event(2, 11, 5_000_300)), Wants::Poll);
        let gone = s.resolve(6_000_000, &|_| false);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            gone[0].lifetime(),
            Some(std::time::Duration::from_nanos(5_000_100))
        );
        assert!(s.is_empty());
        // A close of a socket no event announced (or the poll had): nothing.
        assert_eq!(s.note(event(2, 10, 7_000_000)), Wants::Nothing);
    }

    #[test]
    fn a_connected_udp_socket_is_a_client_and_forgotten() {
        let mut s = Sightings::default();
        s.note(event(3, 5, 1));
        assert_eq!(s.note(event(5, 5, 2)), Wants::Nothing);
        assert_eq!(s.note(event(4, 5, 3)), Wants::Nothing);
        assert!(s.resolve(4, &|_| false).is_empty());
        // TCP and UDP keys are different tables: inode 5 is not cookie 5.
        s.note(event(1, 5, 10));
        s.note(event(4, 5, 11));
        assert!(s.resolve(12, &|_| false).is_empty());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn sightings_are_bounded_and_forgotten_when_never_confirmed() {
        let mut s = Sightings::default();
        for key in 0..(MAX_SIGHTINGS as u64 + 10) {
            s.note(event(3, key, 1));
        }
        assert_eq!((s.len(), s.overflowed), (MAX_SIGHTINGS, 10));
        assert!(s.resolve(FORGET_AFTER_NS + 1, &|_| false).is_empty());
        assert_eq!((s.len(), s.unconfirmed), (0, MAX_SIGHTINGS as u64));
    }

    /// The warning that counts forgotten sockets names the last few the kernel announced,
    /// in the order they were announced.
    #[test]
    fn the_last_socket_forgotten_is_kept_for_the_warning() {
        let mut s = Sightings::default();
        let keys = |s: &Sightings| s.last_unconfirmed.iter().map(|e| e.key).collect::<Vec<_>>();
        s.note(event(1, 7, 200));
        s.note(event(1, 8, 100));
        assert!(s.resolve(FORGET_AFTER_NS, &|_| false).is_empty());
        assert_eq!((s.unconfirmed, keys(&s)), (0, vec![]));
        s.resolve(FORGET_AFTER_NS + 150, &|_| false);
        assert_eq!(keys(&s), [8]);
        s.resolve(FORGET_AFTER_NS + 250, &|_| false);
        assert_eq!(keys(&s), [8, 7]);
        assert_eq!(s.unconfirmed, 2);
        // Beyond the few named, the latest are kept.
        for key in 20..30 {
            s.note(event(1, key, 1000 + key));
        }
        s.resolve(FORGET_AFTER_NS + 2000, &|_| false);
        assert_eq!(keys(&s), [27, 28, 29]);
        assert_eq!(s.unconfirmed, 12);
    }
}
