//! Who owns a socket: inode → pid from `/proc/*/fd`, then the pid's details.
//!
//! The expensive part is reading every process's fd table, so it runs only for inodes not
//! seen before, visits each pid at most once per poll, and stops as soon as every new inode
//! is found. It looks first at processes that appeared since the last look (a new listener
//! usually belongs to a new process), then at processes of the socket's uid, then the rest.
//! Owners are cached by inode and checked again within a budget each pass; once a minute
//! (`[daemon] owner_sweep`), every fd table is read to its end to find the other programs
//! that hold a socket beside its owner.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fds::{FdScanner, Holds, Sweep, attribution_order};
use super::procfs::Stat;
use crate::model::{Inode, Owner, Pid, Process, Socket, UnknownOwner};

/// Reads details of processes: name, exe, command line, user, unit.
pub trait ProcessDetails {
    /// Details of each pid that could be read; a pid missing from the map has exited.
    fn details(&mut self, pids: &[Pid]) -> HashMap<Pid, Arc<Process>>;
}

/// Finds who owns sockets: the daemon's edge to `/proc` ([`Attributor`]); tests script one.
pub trait OwnerSource {
    /// Makes sure every socket of `sockets` has an owner (or a reason it has none), and
    /// checks a bounded number of known owners again. `table_changed` is false when the
    /// sockets are the same as last time: then only the checks run.
    fn attribute(&mut self, sockets: &[Socket], table_changed: bool) -> AttributionStats;
    /// The owner of a socket [`attribute`](Self::attribute) has seen.
    fn owner_of(&self, socket: &Socket) -> Owner;
    /// The details of the process `pid` names now, if it is still the one that started at
    /// `start_time` (clock ticks after boot): what a kernel event's pid can be trusted for.
    fn process(&mut self, pid: Pid, start_time: u64) -> Option<Arc<Process>> {
        let _ = (pid, start_time);
        None
    }
    /// Processes running another program than the owner's that hold the socket too, as
    /// the last sweep of every fd table found them.
    fn also_held_by(&self, inode: Inode) -> Vec<Arc<Process>> {
        let _ = inode;
        Vec::new()
    }
    /// [`also_held_by`](Self::also_held_by) for the sockets of one listener, each
    /// process once.
    fn also_held_by_any(&self, inodes: &[Inode]) -> Vec<Arc<Process>> {
        let mut also: Vec<Arc<Process>> = Vec::new();
        for &inode in inodes {
            for p in self.also_held_by(inode) {
                if !also.iter().any(|a| a.pid == p.pid) {
                    also.push(p);
                }
            }
        }
        also
    }
    /// How often every fd table is read to its end for the other holders of each socket
    /// (`[daemon] owner_sweep`).
    fn set_sweep(&mut self, every: Duration) {
        let _ = every;
    }
}

impl<D: ProcessDetails> OwnerSource for Attributor<D> {
    fn attribute(&mut self, sockets: &[Socket], table_changed: bool) -> AttributionStats {
        Attributor::attribute(self, sockets, table_changed)
    }

    fn owner_of(&self, socket: &Socket) -> Owner {
        Attributor::owner_of(self, socket)
    }

    fn also_held_by(&self, inode: Inode) -> Vec<Arc<Process>> {
        self.also.get(&inode).cloned().unwrap_or_default()
    }

    fn set_sweep(&mut self, every: Duration) {
        Attributor::set_sweep(self, every);
    }

    fn process(&mut self, pid: Pid, start_time: u64) -> Option<Arc<Process>> {
        let same = |root: &Path| {
            super::procfs::stat(root, pid.0).is_some_and(|s| s.start_time == start_time)
        };
        if !same(&self.root) {
            return None;
        }
        let details = self.details.details(&[pid]).remove(&pid)?;
        // Read before and after: the pid must not have been reused in between.
        let stat = super::procfs::stat(&self.root, pid.0).filter(|s| s.start_time == start_time)?;
        let mut details = details;
        let p = Arc::make_mut(&mut details);
        let name = String::from_utf8_lossy(&stat.comm);
        p.name_lossy = matches!(name, std::borrow::Cow::Owned(_));
        p.name = name.into_owned();
        p.start_time = start_time;
        Some(details)
    }
}

/// Counters for one attribution pass, for benchmarks and the daemon's status line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttributionStats {
    pub new_inodes: usize,
    pub pids_read: usize,
    /// Checks of known owners: processes alive, descriptors read again.
    pub verified: usize,
    /// Some socket's owner is not what it was: the listeners must be worked out again.
    pub owners_changed: bool,
}

/// Owner processes checked per pass for being alive (one `stat` of `/proc/PID` each): an
/// owner that exits is noticed at the next poll while there are up to this many.
pub const ALIVE_PER_PASS: usize = 256;
/// Remembered descriptors read again per pass (one `readlink` each), round robin: an
/// owner that lets go of its socket but lives on is noticed within (owners / this) polls.
pub const VERIFY_PER_PASS: usize = 8;
/// An owner that could not be named is looked up again after 1, 2, 4 ... passes, at most
/// this many apart: an nfsd socket costs a full scan once a minute, not every second.
pub const RETRY_MAX: u64 = 64;
/// Descriptors a sweep for other holders reads per pass: about 30 ms of `readlink`s here.
/// A machine with more open files is swept over several passes.
pub const SWEEP_PER_PASS: usize = 8192;

/// What is known of one socket's owner.
#[derive(Debug, Clone)]
struct Known {
    owner: Owner,
    /// The socket's uid (who made it), for the order of a search and for telling a socket
    /// in flight from a kernel socket.
    uid: u32,
    /// The descriptor the owner holds it by, checked again on later passes.
    held_by: Option<(Pid, u32)>,
    /// The process owner let go of it and no holder was found, once: kept until the next
    /// pass says whether the socket still exists (most often it was closed after the
    /// table was read, and its owner did not change at all).
    unconfirmed: bool,
}

/// inode → owner, cached while the socket lives and checked again while it does: an owner
/// that exits or lets go of the socket is looked for again, and so is an owner that could
/// not be named (no permission, in flight, kernel, vanished).
#[derive(Debug)]
pub struct Attributor<D> {
    root: PathBuf,
    fds: FdScanner,
    details: D,
    cache: HashMap<Inode, Known>,
    /// Owners not named: the pass at which to look again, and the gap after that. Kept
    /// apart from the cache, so a pass looks at these few, not at every socket.
    retry: HashMap<Inode, (u64, u64)>,
    /// Inodes with a process owner, in the order their descriptors are read again, and
    /// the distinct owner pids, in the order they are checked for being alive; rebuilt
    /// only after the cache changed.
    verify_order: Vec<Inode>,
    verify_at: usize,
    owner_pids: Vec<Pid>,
    alive_at: usize,
    rounds_stale: bool,
    passes: u64,
    previous_pids: HashSet<Pid>,
    /// Processes running other programs that hold a socket beside its owner, one per
    /// program, as the last sweep found them (a decoy kept alive beside the program that
    /// serves). Apart from the cache: almost every socket has none.
    also: HashMap<Inode, Vec<Arc<Process>>>,
    /// A holder beside an owner exited since the last pass.
    also_gone: bool,
    /// Every fd table is read to its end this often, for the other holders of each
    /// socket: at the first pass after [`set_sweep`](Self::set_sweep) (the daemon's
    /// first look, and the first after a reload), then at this interval.
    sweep_every: Duration,
    swept: Option<Instant>,
    /// The sweep under way, read on at every pass until it is done.
    sweeping: Option<Sweep>,
}

impl<D: ProcessDetails> Attributor<D> {
    pub fn new(proc_root: &Path, details: D) -> Attributor<D> {
        Attributor {
            root: proc_root.to_owned(),
            fds: FdScanner::new(proc_root),
            details,
            cache: HashMap::new(),
            retry: HashMap::new(),
            verify_order: Vec::new(),
            verify_at: 0,
            owner_pids: Vec::new(),
            alive_at: 0,
            rounds_stale: false,
            passes: 0,
            previous_pids: HashSet::new(),
            also: HashMap::new(),
            also_gone: false,
            sweep_every: Duration::from_secs(60),
            swept: Some(Instant::now()),
            sweeping: None,
        }
    }

    /// How often every fd table is read to its end for the other holders of each socket;
    /// the next pass sweeps.
    pub fn set_sweep(&mut self, every: Duration) {
        self.sweep_every = every;
        self.swept = None;
    }

    pub fn owner(&self, inode: Inode) -> Option<&Owner> {
        self.cache.get(&inode).map(|k| &k.owner)
    }

    /// Names the owner of every new socket, forgets inodes that are gone (when the table
    /// changed), and looks again for owners that are due: unknown ones on their retry
    /// schedule, known ones whose remembered descriptor no longer holds the socket.
    pub fn attribute(&mut self, sockets: &[Socket], table_changed: bool) -> AttributionStats {
        self.passes += 1;
        let mut wanted: HashMap<Inode, u32> = HashMap::new();
        if table_changed {
            self.forget_gone(sockets);
            for s in sockets {
                if s.inode.0 != 0 && !self.cache.contains_key(&s.inode) {
                    wanted.insert(s.inode, s.uid);
                }
            }
        }
        let new_inodes = wanted.len();
        let verified = self.due_again(&mut wanted);
        let mut stats = AttributionStats {
            new_inodes,
            verified,
            owners_changed: std::mem::take(&mut self.also_gone),
            ..AttributionStats::default()
        };
        if !wanted.is_empty() {
            let (pids_read, changed) = self.look_up(&wanted);
            stats.pids_read = pids_read;
            stats.owners_changed |= changed;
        }
        if self.sweeping.is_none() && self.swept.is_none_or(|t| t.elapsed() >= self.sweep_every) {
            self.swept = Some(Instant::now());
            self.sweeping = self.start_sweep();
        }
        if let Some(mut sweep) = self.sweeping.take() {
            if self.fds.sweep_step(&mut sweep, SWEEP_PER_PASS) {
                stats.pids_read += sweep.tables;
                stats.owners_changed |= self.finish_sweep(sweep);
            } else {
                self.sweeping = Some(sweep);
            }
        }
        stats
    }

    fn forget_gone(&mut self, sockets: &[Socket]) {
        let known = sockets
            .iter()
            .filter(|s| self.cache.contains_key(&s.inode))
            .count();
        if known == self.cache.len() {
            return;
        }
        let present: HashSet<Inode> = sockets.iter().map(|s| s.inode).collect();
        self.cache.retain(|inode, _| present.contains(inode));
        self.retry.retain(|inode, _| present.contains(inode));
        self.also.retain(|inode, _| present.contains(inode));
        self.rounds_stale = true;
        crate::model::events::shrink(&mut self.cache);
    }

    /// Adds to `wanted` the unknown owners due for another look, and the known owners
    /// that exited or whose descriptor no longer holds their socket (bounded numbers of
    /// each checked per pass). Returns how many checks were made.
    fn due_again(&mut self, wanted: &mut HashMap<Inode, u32>) -> usize {
        let passes = self.passes;
        for (inode, &(at, _)) in &self.retry {
            if at <= passes
                && let Some(k) = self.cache.get(inode)
            {
                wanted.insert(*inode, k.uid);
            }
        }
        if self.rounds_stale {
            self.rebuild_rounds();
        }
        let mut checked = 0;
        // Owners that exited: their sockets are looked for again.
        let mut gone = Vec::new();
        for _ in 0..self.owner_pids.len().min(ALIVE_PER_PASS) {
            self.alive_at = (self.alive_at + 1) % self.owner_pids.len();
            let pid = self.owner_pids[self.alive_at];
            checked += 1;
            if !self.fds.is_alive(pid) {
                gone.push(pid);
            }
        }
        if !gone.is_empty() {
            for (inode, k) in &self.cache {
                if k.held_by.is_some_and(|(pid, _)| gone.contains(&pid)) {
                    wanted.insert(*inode, k.uid);
                }
            }
            for also in self.also.values_mut() {
                let before = also.len();
                also.retain(|p| !gone.contains(&p.pid));
                if also.len() != before {
                    self.also_gone = true;
                    self.rounds_stale = true;
                }
            }
            self.also.retain(|_, also| !also.is_empty());
        }
        // Owners that live on but let go of the socket.
        for _ in 0..self.verify_order.len().min(VERIFY_PER_PASS) {
            self.verify_at = (self.verify_at + 1) % self.verify_order.len();
            let inode = self.verify_order[self.verify_at];
            let Some(k) = self.cache.get(&inode) else {
                continue;
            };
            let Some((pid, fd)) = k.held_by else { continue };
            checked += 1;
            // Let go of the socket, or holds it still but runs another program now
            // (an `execve` keeps the pid, its start time and its descriptors).
            let exec = || match &k.owner {
                Owner::Process(p) => p.exe_file.is_some_and(|was| {
                    super::host::file_id(&self.root.join(pid.0.to_string()).join("exe"))
                        .is_some_and(|now| now != was)
                }),
                Owner::Unknown(_) => false,
            };
            match self.fds.still_holds(pid, fd, inode) {
                Holds::No => {
                    wanted.insert(inode, k.uid);
                }
                Holds::Yes if exec() => {
                    wanted.insert(inode, k.uid);
                }
                _ => {}
            }
        }
        checked
    }

    /// The rounds of checks, from the cache as it is now, each in a fixed order and
    /// resumed after the last one checked: a change of the cache (one new socket a poll
    /// is enough) must not send the rounds back to their start, or the owners at their
    /// end would never be checked again.
    fn rebuild_rounds(&mut self) {
        let last_pid = self.owner_pids.get(self.alive_at).copied();
        let last_inode = self.verify_order.get(self.verify_at).copied();
        self.verify_order.clear();
        self.owner_pids.clear();
        for (inode, k) in &self.cache {
            if let Some((pid, _)) = k.held_by {
                self.verify_order.push(*inode);
                self.owner_pids.push(pid);
            }
        }
        for also in self.also.values() {
            self.owner_pids.extend(also.iter().map(|p| p.pid));
        }
        self.verify_order.sort_unstable();
        self.owner_pids.sort_unstable();
        self.owner_pids.dedup();
        self.alive_at = resume_at(&self.owner_pids, last_pid);
        self.verify_at = resume_at(&self.verify_order, last_inode);
        self.rounds_stale = false;
    }

    /// Searches the fd tables for `wanted` and records what was found. Returns the fd
    /// tables read, and whether an owner known before is now a different one.
    fn look_up(&mut self, wanted: &HashMap<Inode, u32>) -> (usize, bool) {
        let (pids, listed) = match self.fds.list_pids() {
            Ok(p) => (p, true),
            Err(e) => {
                tracing::warn!(
                    "cannot list processes under /proc: {e}; owners stay unknown until it can"
                );
                (Vec::new(), false)
            }
        };
        let uids: HashSet<u32> = wanted.values().copied().collect();
        let order = attribution_order(&pids, &self.previous_pids, &uids);
        self.previous_pids = pids.iter().map(|p| p.pid).collect();
        let set: HashSet<Inode> = wanted.keys().copied().collect();
        let mut scan = self.fds.scan(&order, &set);
        // Before any socket is called no process's: the tables of threads too.
        let rest: HashSet<Inode> = set
            .iter()
            .filter(|i| !scan.found.contains_key(i))
            .copied()
            .collect();
        if !rest.is_empty() && listed {
            let threads = self.fds.scan_threads(&order, &rest);
            scan.pids_read += threads.pids_read;
            scan.denied |= threads.denied;
            scan.found.extend(threads.found);
        }
        scan.pids_read += self.prefer_parents(&mut scan.found);
        let mut owner_pids: Vec<Pid> = scan.found.values().map(|(p, _)| *p).collect();
        owner_pids.sort_unstable();
        owner_pids.dedup();
        let details = self.details_of(&owner_pids);
        let mut changed = false;
        for (&inode, &uid) in wanted {
            let found = scan.found.get(&inode).copied();
            let owner = match found {
                Some((pid, _)) => details
                    .get(&pid)
                    .map_or(Owner::Unknown(UnknownOwner::Vanished), |p| {
                        Owner::Process(Arc::clone(p))
                    }),
                None if scan.denied || !listed => Owner::Unknown(UnknownOwner::NoPermission),
                // A socket a user made cannot belong to the kernel: it is between holders.
                None if uid != 0 => Owner::Unknown(UnknownOwner::InFlight),
                None => Owner::Unknown(UnknownOwner::Kernel),
            };
            changed |= self.record(inode, uid, owner, found);
        }
        (scan.pids_read, changed)
    }

    /// A socket that a process and its parent both hold is the parent's: a child between
    /// fork and exec holds each of its parent's descriptors for a moment, and workers share
    /// their master's socket. Found in such a child, the socket would be reported as changing
    /// hands to it and back once it let go. Each parent's fd table is read once for all the
    /// sockets found in its child; pid 1 is left out, so a socket-activated service is named
    /// rather than its service manager. Returns the fd tables read.
    fn prefer_parents(&mut self, found: &mut HashMap<Inode, (Pid, u32)>) -> usize {
        const MAX_STEPS: usize = 8;
        let mut read = 0;
        let mut held: HashMap<Pid, HashSet<Inode>> = HashMap::new();
        for (inode, (pid, _)) in found.iter() {
            held.entry(*pid).or_default().insert(*inode);
        }
        for _ in 0..MAX_STEPS {
            let mut moved: HashMap<Pid, HashSet<Inode>> = HashMap::new();
            for (child, inodes) in &held {
                let Some(parent) = super::procfs::stat(&self.root, child.0)
                    .map(|s| Pid(s.ppid))
                    .filter(|p| p.0 > 1)
                else {
                    continue;
                };
                let up = self.fds.scan(&[parent], inodes);
                read += up.pids_read;
                for (inode, holder) in up.found {
                    found.insert(inode, holder);
                    moved.entry(parent).or_default().insert(inode);
                }
            }
            if moved.is_empty() {
                break;
            }
            held = moved;
        }
        read
    }

    /// The details of every pid found, keeping only pids that still name the process found
    /// holding the socket (its start time the same before and after), with the name read
    /// from `/proc/PID/stat` as the bytes it is.
    fn details_of(&mut self, owner_pids: &[Pid]) -> HashMap<Pid, Arc<Process>> {
        let root = &self.root;
        let stats = |pids: &[Pid]| -> HashMap<Pid, Stat> {
            pids.iter()
                .filter_map(|&p| super::procfs::stat(root, p.0).map(|s| (p, s)))
                .collect()
        };
        let before = stats(owner_pids);
        let mut details = self.details.details(owner_pids);
        let after = stats(owner_pids);
        details.retain(|pid, p| match (before.get(pid), after.get(pid)) {
            (Some(s0), Some(s1)) if s0.start_time == s1.start_time => {
                let name = String::from_utf8_lossy(&s1.comm);
                let lossy = matches!(name, std::borrow::Cow::Owned(_));
                if p.start_time != s1.start_time || p.name != name || p.name_lossy != lossy {
                    let p = Arc::make_mut(p);
                    p.start_time = s1.start_time;
                    p.name = name.into_owned();
                    p.name_lossy = lossy;
                }
                true
            }
            _ => false,
        });
        details
    }

    /// Stores what was found for one inode; true when it replaces a different owner.
    ///
    /// A process owner is not replaced by an unknown one at the first miss: a socket
    /// closed after the table was read is found in no process either, and it would be
    /// recorded as changing hands in the moment it closed. The next pass, on a table read
    /// after this one, looks again if the socket is still there.
    fn record(&mut self, inode: Inode, uid: u32, owner: Owner, found: Option<(Pid, u32)>) -> bool {
        if let Owner::Unknown(_) = owner
            && let Some(k) = self.cache.get_mut(&inode)
            && matches!(k.owner, Owner::Process(_))
            && !k.unconfirmed
        {
            k.unconfirmed = true;
            k.held_by = None;
            self.retry.insert(inode, (self.passes + 1, 1));
            self.rounds_stale = true;
            return false;
        }
        let previous = self.cache.get(&inode);
        let changed = previous.is_some_and(|k| !same_owner(&k.owner, &owner));
        let held_by = match owner {
            Owner::Process(_) => found,
            Owner::Unknown(_) => None,
        };
        if held_by.is_some() {
            self.retry.remove(&inode);
        } else {
            let gap = self
                .retry
                .get(&inode)
                .map_or(1, |&(_, gap)| (gap * 2).min(RETRY_MAX));
            self.retry.insert(inode, (self.passes + gap, gap));
        }
        self.rounds_stale = true;
        // The other holders stay, but for the one that is now the owner.
        if let (Owner::Process(p), Some(also)) = (&owner, self.also.get_mut(&inode)) {
            also.retain(|a| a.pid != p.pid && a.exe_file != p.exe_file);
            if also.is_empty() {
                self.also.remove(&inode);
            }
        }
        self.cache.insert(
            inode,
            Known {
                owner,
                uid,
                held_by,
                unconfirmed: false,
            },
        );
        changed
    }

    /// Reads every fd table to its end at once, for a one-off look (`scan --all-holders`):
    /// the other holders of each owned socket, every pid of them (workers of the owner's
    /// own program too), lowest first; and, as a sweep of the daemon's does, the holders
    /// running other programs noted for [`also_held_by`](OwnerSource::also_held_by).
    /// Pid 1 is left out, as in every sweep.
    pub fn sweep_now(&mut self) -> HashMap<Inode, Vec<Pid>> {
        let Some(mut sweep) = self.start_sweep() else {
            return HashMap::new();
        };
        while !self.fds.sweep_step(&mut sweep, usize::MAX) {}
        let held = sweep.held.clone();
        self.swept = Some(Instant::now());
        self.finish_sweep(sweep);
        held
    }

    /// A sweep of every fd table to its end for the sockets that have an owner (none when
    /// no socket has one, or `/proc` cannot be listed), to be read on at every pass.
    fn start_sweep(&mut self) -> Option<Sweep> {
        let owners: HashMap<Inode, Pid> = self
            .cache
            .iter()
            .filter_map(|(i, k)| k.held_by.map(|(pid, _)| (*i, pid)))
            .collect();
        if owners.is_empty() {
            return None;
        }
        let pids = self.fds.list_pids().ok()?;
        let order: Vec<Pid> = pids.iter().map(|p| p.pid).filter(|p| p.0 != 1).collect();
        Some(Sweep::new(order, owners))
    }

    /// Notes beside each owner the processes a finished sweep found holding its socket
    /// too while running another program (another executable file): one per program,
    /// lowest pid first. A decoy that an allowed program plays while it keeps the socket
    /// cannot hide the program that serves on it. Pid 1 is left out: a service manager
    /// holds the sockets it activates for its services. Returns whether any owner's
    /// company changed.
    fn finish_sweep(&mut self, sweep: Sweep) -> bool {
        let held = sweep.held;
        let mut files = HashMap::new();
        let mut others: HashMap<Inode, Vec<Pid>> = HashMap::new();
        for (inode, pids) in &held {
            let Some(Owner::Process(owner)) = self.cache.get(inode).map(|k| &k.owner) else {
                continue;
            };
            let mut programs = vec![owner.exe_file];
            // The owner may have changed while the sweep went on.
            for &pid in pids.iter().filter(|&&p| p != owner.pid) {
                let file = *files.entry(pid).or_insert_with(|| {
                    super::host::file_id(&self.root.join(pid.0.to_string()).join("exe"))
                });
                if !programs.contains(&file) {
                    programs.push(file);
                    others.entry(*inode).or_default().push(pid);
                }
            }
        }
        let mut pids: Vec<Pid> = others.values().flatten().copied().collect();
        pids.sort_unstable();
        pids.dedup();
        let details = if pids.is_empty() {
            HashMap::new()
        } else {
            self.details_of(&pids)
        };
        let found: HashMap<Inode, Vec<Arc<Process>>> = others
            .into_iter()
            .map(|(inode, pids)| {
                let also: Vec<Arc<Process>> = pids
                    .iter()
                    .filter_map(|p| details.get(p).cloned())
                    .collect();
                (inode, also)
            })
            .filter(|(_, also)| !also.is_empty())
            .collect();
        let same = |a: &[Arc<Process>], b: &[Arc<Process>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_process(a, b))
        };
        let changed = found.len() != self.also.len()
            || found
                .iter()
                .any(|(inode, also)| !self.also.get(inode).is_some_and(|was| same(was, also)));
        self.also = found;
        self.rounds_stale |= changed;
        changed
    }

    /// The owner of every socket: cached, or the reason it is unknown.
    pub fn owner_of(&self, socket: &Socket) -> Owner {
        if socket.inode.0 == 0 {
            return Owner::Unknown(UnknownOwner::Kernel);
        }
        self.cache
            .get(&socket.inode)
            .map_or(Owner::Unknown(UnknownOwner::Vanished), |k| k.owner.clone())
    }
}

/// The same owner: the same process (pid and start time), or the same reason for none.
fn same_owner(a: &Owner, b: &Owner) -> bool {
    match (a, b) {
        (Owner::Process(x), Owner::Process(y)) => same_process(x, y),
        (Owner::Unknown(x), Owner::Unknown(y)) => x == y,
        _ => false,
    }
}

/// The same process (pid and start time), running the same program.
fn same_process(x: &Process, y: &Process) -> bool {
    x.pid == y.pid && x.start_time == y.start_time && x.exe_file == y.exe_file
}

/// Process details through `sysinfo`, refreshing only the pids asked for, plus the unit
/// from `/proc/PID/cgroup` and the user's name through the system's user database (NSS:
/// LDAP and systemd-homed users, uids above 65535, accounts with no login shell).
pub struct SysinfoDetails {
    proc_root: PathBuf,
    system: sysinfo::System,
    /// uid → name, kept a minute: a directory server is not asked for every socket.
    users: HashMap<u32, (Option<String>, std::time::Instant)>,
    /// Container id → name.
    containers: HashMap<String, Option<String>>,
    /// Command lines, read apart: sysinfo's read of one could wait forever.
    cmdlines: super::cmdline::Cmdlines,
}

impl std::fmt::Debug for SysinfoDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SysinfoDetails")
            .field("proc_root", &self.proc_root)
            .finish()
    }
}

impl SysinfoDetails {
    pub fn new(proc_root: &Path) -> Result<SysinfoDetails, String> {
        let system =
            sysinfo::System::new().map_err(|e| format!("cannot read process details: {e}"))?;
        Ok(SysinfoDetails {
            proc_root: proc_root.to_owned(),
            system,
            users: HashMap::new(),
            containers: HashMap::new(),
            cmdlines: super::cmdline::Cmdlines::new(proc_root),
        })
    }

    /// A Docker container's name, from its state on disk (kept: it does not change).
    fn container_name(&mut self, id: &str) -> Option<String> {
        if let Some(name) = self.containers.get(id) {
            return name.clone();
        }
        let root = self.proc_root.parent().unwrap_or(Path::new("/"));
        let name = super::cgroup::docker_name(root, id);
        if self.containers.len() > 4096 {
            self.containers.clear();
        }
        self.containers.insert(id.to_owned(), name.clone());
        name
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        if let Some((name, at)) = self.users.get(&uid)
            && at.elapsed() < std::time::Duration::from_secs(60)
        {
            return name.clone();
        }
        let name = super::host::user_name(uid);
        if self.users.len() > 4096 {
            self.users.clear();
        }
        self.users
            .insert(uid, (name.clone(), std::time::Instant::now()));
        name
    }
}

impl ProcessDetails for SysinfoDetails {
    fn details(&mut self, pids: &[Pid]) -> HashMap<Pid, Arc<Process>> {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, UpdateKind};
        let sys_pids: Vec<sysinfo::Pid> =
            pids.iter().map(|p| sysinfo::Pid::from_u32(p.0)).collect();
        // A fresh table each time: sysinfo keeps every process it has read (with its whole
        // command line) until that pid is refreshed again, which for an owner that exited
        // would be never. What the daemon keeps is its own capped copy.
        if let Ok(fresh) = sysinfo::System::new() {
            self.system = fresh;
        }
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&sys_pids),
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_exe(UpdateKind::Always)
                .with_user(UpdateKind::Always),
        );
        let mut out = HashMap::with_capacity(pids.len());
        let mut found = Vec::with_capacity(pids.len());
        for &pid in pids {
            let Some(p) = self.system.process(sysinfo::Pid::from_u32(pid.0)) else {
                continue;
            };
            let uid = p.user_id().map(|u| **u);
            let dir = self.proc_root.join(pid.0.to_string());
            // As bytes: a cgroup path, like a name, may hold any byte (a directory
            // made with one must not hide the unit and container of the rest).
            let read = |name: &str| {
                std::fs::read(dir.join(name)).map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            let cgroup = read("cgroup").unwrap_or_default();
            let unit = super::cgroup::unit_from_cgroup(&cgroup);
            let container = super::cgroup::container_from_cgroup(&cgroup);
            let process = Process {
                pid,
                name: p.name().to_string_lossy().into_owned(),
                exe: p.exe().map(|e| e.to_string_lossy().into_owned()),
                cmdline: Vec::new(),
                uid,
                user: None,
                unit,
                name_lossy: false,
                // The file itself, through the magic link: not the path it shows.
                exe_file: super::host::file_id(&dir.join("exe")),
                mount_ns: super::ns_inode(&self.proc_root, &pid.0.to_string(), "mnt"),
                start_time: p.start_time(),
                container: container.map(Arc::new),
                ns_pid: read("status").ok().and_then(|s| ns_pid(&s)),
            };
            found.push(process);
        }
        let pids: Vec<Pid> = found.iter().map(|p| p.pid).collect();
        let mut cmdlines = self.cmdlines.read(&pids);
        for mut process in found {
            process.cmdline = cmdlines.remove(&process.pid).unwrap_or_default();
            if let Some(uid) = process.uid {
                process.user = self.user_name(uid);
            }
            if let Some(c) = process
                .container
                .as_mut()
                .filter(|c| c.runtime == "docker" && c.rootless_uid.is_none())
            {
                let name = self.container_name(&c.id);
                Arc::make_mut(c).name = name;
            }
            out.insert(process.pid, Arc::new(process));
        }
        out
    }
}

/// The cursor of a round over `sorted` that last checked `last`: the index before the
/// first element after it (the rounds step first, then check).
fn resume_at<T: Ord + Copy>(sorted: &[T], last: Option<T>) -> usize {
    let (Some(last), false) = (last, sorted.is_empty()) else {
        return 0;
    };
    let next = sorted.partition_point(|x| *x <= last);
    (next + sorted.len() - 1) % sorted.len()
}

/// The pid in the innermost PID namespace, from `/proc/PID/status`'s `NSpid:` line, when
/// the process is in a namespace of its own (the line has more than one pid).
fn ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Vec<&str> = line.split_whitespace().collect();
    match pids.as_slice() {
        [_, .., last] => last.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn the_pid_inside_a_pid_namespace() {
        assert_eq!(ns_pid("Name:\tx\nNSpid:\t4242\t7\nNSpgid:\t1\n"), Some(7));
        assert_eq!(ns_pid("NSpid:\t4242\t900\t1\n"), Some(1));
        assert_eq!(ns_pid("NSpid:\t4242\n"), None);
        assert_eq!(ns_pid("Name:\tx\n"), None);
    }

    use std::cell::Cell;

    /// A `/proc` fixture: `PID/fd/N -> socket:[INODE]` links and `PID/stat` files.
    fn fake_proc(procs: &[(u32, &[u64])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for &(pid, inodes) in procs {
            let fd = dir.path().join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd).unwrap();
            std::os::unix::fs::symlink("/dev/null", fd.join("0")).unwrap();
            for (i, inode) in inodes.iter().enumerate() {
                std::os::unix::fs::symlink(
                    format!("socket:[{inode}]"),
                    fd.join((i + 3).to_string()),
                )
                .unwrap();
            }
            write_stat(dir.path(), pid, 1000 + u64::from(pid));
        }
        dir
    }

    fn write_stat(root: &Path, pid: u32, start: u64) {
        let stat = format!("{pid} (p{pid}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
        std::fs::write(root.join(format!("{pid}/stat")), stat).unwrap();
    }

    fn sock(inode: u64) -> Socket {
        Socket {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 1,
            v6only: None,
            uid: 0,
            inode: Inode(inode),
            cookie: 0,
            netns: 0,
            portless: None,
            zone: None,
        }
    }

    /// Names every pid it is asked about; optionally rewrites a pid's start time while it
    /// does, as if the kernel had handed the pid to another program meanwhile.
    struct Fake {
        root: PathBuf,
        reuse: Option<u32>,
        calls: Cell<usize>,
    }

    impl ProcessDetails for Fake {
        fn details(&mut self, pids: &[Pid]) -> HashMap<Pid, Arc<Process>> {
            self.calls.set(self.calls.get() + 1);
            if let Some(pid) = self.reuse {
                write_stat(&self.root, pid, 999_999);
            }
            pids.iter()
                .map(|&pid| {
                    let p = Process {
                        pid,
                        name: format!("p{pid}"),
                        exe: Some(format!("/bin/p{pid}")),
                        cmdline: vec![],
                        uid: Some(0),
                        user: None,
                        unit: None,
                        name_lossy: false,
                        // The fixture's `PID/exe`, where it has one.
                        exe_file: super::super::host::file_id(
                            &self.root.join(pid.0.to_string()).join("exe"),
                        ),
                        mount_ns: None,
                        start_time: 0,
                        container: None,
                        ns_pid: None,
                    };
                    (pid, Arc::new(p))
                })
                .collect()
        }
    }

    #[test]
    fn finds_owners_in_a_fixture_tree_and_caches_them() {
        let root = fake_proc(&[(10, &[100]), (20, &[200, 201])]);
        let fake = Fake {
            root: root.path().into(),
            reuse: None,
            calls: Cell::new(0),
        };
        let mut a = Attributor::new(root.path(), fake);
        let sockets = [sock(100), sock(201), sock(0)];
        let stats = a.attribute(&sockets, true);
        assert_eq!(stats.new_inodes, 2);
        match a.owner_of(&sockets[1]) {
            Owner::Process(p) => assert_eq!((p.pid, p.start_time), (Pid(20), 1020)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.owner_of(&sockets[2]),
            Owner::Unknown(UnknownOwner::Kernel)
        );
        // Nothing new: no fd table read; the two owner processes are checked for being
        // alive and the two descriptors read again.
        let again = a.attribute(&sockets, true);
        assert_eq!((again.new_inodes, again.pids_read), (0, 0));
        assert_eq!((again.verified, again.owners_changed), (4, false));
        assert_eq!(a.details.calls.get(), 1);
        // An inode no process holds is a kernel socket.
        a.attribute(&[sock(100), sock(300)], true);
        assert_eq!(a.owner_of(&sock(300)), Owner::Unknown(UnknownOwner::Kernel));
    }

    #[test]
    fn every_owner_is_checked_again_though_the_table_changes_at_every_pass() {
        // More owners than one pass checks (ALIVE_PER_PASS), and a new socket at every
        // pass, as any user can make.
        let owners: Vec<(u32, Vec<u64>)> = (0..300u32)
            .map(|i| (10 + i, vec![1000 + u64::from(i)]))
            .collect();
        let procs: Vec<(u32, &[u64])> = owners.iter().map(|(p, i)| (*p, &i[..])).collect();
        let root = fake_proc(&procs);
        let fake = Fake {
            root: root.path().into(),
            reuse: None,
            calls: Cell::new(0),
        };
        let mut a = Attributor::new(root.path(), fake);
        let mut sockets: Vec<Socket> = (1000..1300).map(sock).collect();
        a.attribute(&sockets, true);
        // The last owner in pid order exits; its socket lives on (passed on, say).
        let last = sock(1299);
        assert!(matches!(a.owner_of(&last), Owner::Process(p) if p.pid == Pid(309)));
        std::fs::remove_dir_all(root.path().join("309")).unwrap();
        for pass in 0..4u32 {
            let (pid, inode) = (400 + pass, 2000 + u64::from(pass));
            let fd = root.path().join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd).unwrap();
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd.join("3")).unwrap();
            write_stat(root.path(), pid, 5000);
            sockets.push(sock(inode));
            a.attribute(&sockets, true);
        }
        assert!(
            !matches!(a.owner_of(&last), Owner::Process(_)),
            "an owner that exited is still the owner: {:?}",
            a.owner_of(&last)
        );
    }

    #[test]
    fn rounds_resume_after_the_last_checked() {
        assert_eq!(resume_at(&[1, 5, 9], Some(5)), 1);
        assert_eq!(resume_at(&[1, 5, 9], Some(6)), 1);
        assert_eq!(resume_at(&[1, 5, 9], Some(9)), 2);
        assert_eq!(resume_at(&[1, 5, 9], Some(0)), 2, "wraps to the first");
        assert_eq!(resume_at::<u32>(&[], Some(3)), 0);
        assert_eq!(resume_at(&[1, 5], None), 0);
    }

    /// A pid reused by another program between finding the socket and reading the details
    /// is not reported as the owner.
    #[test]
    fn a_pid_that_changed_hands_is_not_the_owner() {
        let root = fake_proc(&[(10, &[100])]);
        let fake = Fake {
            root: root.path().into(),
            reuse: Some(10),
            calls: Cell::new(0),
        };
        let mut a = Attributor::new(root.path(), fake);
        a.attribute(&[sock(100)], true);
        assert_eq!(
            a.owner_of(&sock(100)),
            Owner::Unknown(UnknownOwner::Vanished)
        );
        // Looked up again next time rather than cached as unknown.
        a.details.reuse = None;
        a.attribute(&[sock(100)], true);
        assert!(matches!(a.owner_of(&sock(100)), Owner::Process(p) if p.pid == Pid(10)));
    }

    /// A process that vanishes between listing and reading (its directory gone) is skipped.
    #[test]
    fn a_vanished_fd_directory_is_skipped() {
        let root = fake_proc(&[(10, &[100]), (20, &[200])]);
        std::fs::remove_dir_all(root.path().join("10/fd")).unwrap();
        let fake = Fake {
            root: root.path().into(),
            reuse: None,
            calls: Cell::new(0),
        };
        let mut a = Attributor::new(root.path(), fake);
        a.attribute(&[sock(100), sock(200)], true);
        assert_eq!(a.owner_of(&sock(100)), Owner::Unknown(UnknownOwner::Kernel));
        assert!(matches!(a.owner_of(&sock(200)), Owner::Process(_)));
    }

    fn fake(root: &tempfile::TempDir) -> Fake {
        Fake {
            root: root.path().into(),
            reuse: None,
            calls: Cell::new(0),
        }
    }

    /// Moves a socket's descriptor from one fixture process to another.
    fn hand_over(root: &Path, inode: u64, from: u32, to: u32) {
        std::fs::remove_file(root.join(format!("{from}/fd/3"))).unwrap();
        let fd = root.join(format!("{to}/fd/9"));
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd).unwrap();
    }

    /// The decoy: the process recorded as the owner lets go of the socket (it exits, or
    /// hands it back); the next pass notices without any change in the socket table, and
    /// names the process that holds it now.
    #[test]
    fn an_owner_that_lets_go_is_looked_for_again() {
        let root = fake_proc(&[(10, &[100]), (20, &[])]);
        let mut a = Attributor::new(root.path(), fake(&root));
        a.attribute(&[sock(100)], true);
        assert!(matches!(a.owner_of(&sock(100)), Owner::Process(p) if p.pid == Pid(10)));
        let steady = a.attribute(&[sock(100)], false);
        assert!(!steady.owners_changed && steady.pids_read == 0);
        hand_over(root.path(), 100, 10, 20);
        let moved = a.attribute(&[sock(100)], false);
        assert!(moved.owners_changed, "{moved:?}");
        assert!(matches!(a.owner_of(&sock(100)), Owner::Process(p) if p.pid == Pid(20)));
    }

    /// No holder: a user's socket is in flight, root's is the kernel's; neither is cached
    /// for good, and a holder that appears later is found.
    #[test]
    fn unknown_owners_are_looked_up_again() {
        let root = fake_proc(&[(10, &[]), (20, &[])]);
        let mut a = Attributor::new(root.path(), fake(&root));
        let user = Socket {
            uid: 1000,
            ..sock(300)
        };
        a.attribute(&[sock(200), user.clone()], true);
        assert_eq!(a.owner_of(&sock(200)), Owner::Unknown(UnknownOwner::Kernel));
        assert_eq!(a.owner_of(&user), Owner::Unknown(UnknownOwner::InFlight));
        let fd = root.path().join("20/fd/5");
        std::os::unix::fs::symlink("socket:[300]", fd).unwrap();
        let mut passes = 0;
        while !a
            .attribute(&[sock(200), user.clone()], false)
            .owners_changed
        {
            passes += 1;
            assert!(passes < 4, "looked up again within a few passes");
        }
        assert!(matches!(a.owner_of(&user), Owner::Process(p) if p.pid == Pid(20)));
        // The kernel's socket is looked at less and less often: at most once per RETRY_MAX.
        let scans: usize = (0..200)
            .map(|_| a.attribute(&[sock(200), user.clone()], false).pids_read)
            .filter(|&n| n > 0)
            .count();
        assert!(scans <= 200 / 16, "{scans} full scans in 200 passes");
    }

    /// An owner that lets go, with no other holder found: most often the socket was
    /// closed after the table was read, so the owner stays until a pass on a later table
    /// still finds the socket without a holder.
    #[test]
    fn a_socket_without_its_holder_is_unknown_only_when_a_later_table_has_it() {
        let root = fake_proc(&[(10, &[100, 101])]);
        let mut a = Attributor::new(root.path(), fake(&root));
        let user = |inode| Socket {
            uid: 1000,
            ..sock(inode)
        };
        a.attribute(&[user(100), user(101)], true);
        // Both closed after this table was read: no change, and the next table lacks them.
        std::fs::remove_dir_all(root.path().join("10")).unwrap();
        let closed = a.attribute(&[user(100), user(101)], false);
        assert!(!closed.owners_changed, "{closed:?}");
        assert!(matches!(a.owner_of(&user(100)), Owner::Process(p) if p.pid == Pid(10)));
        // The next table has 101 only: 100 is forgotten, and 101, still there without a
        // holder, is in flight now, and said so.
        let next = a.attribute(&[user(101)], true);
        assert!(next.owners_changed, "{next:?}");
        assert!(!a.cache.contains_key(&Inode(100)));
        assert_eq!(
            a.owner_of(&user(101)),
            Owner::Unknown(UnknownOwner::InFlight)
        );
    }

    /// An owner that exits is noticed by its missing /proc entry, at the next pass.
    #[test]
    fn an_owner_that_exits_is_looked_for_again() {
        let root = fake_proc(&[(10, &[100]), (20, &[])]);
        let mut a = Attributor::new(root.path(), fake(&root));
        a.attribute(&[sock(100)], true);
        std::fs::remove_dir_all(root.path().join("10")).unwrap();
        let fd = root.path().join("20/fd/7");
        std::os::unix::fs::symlink("socket:[100]", fd).unwrap();
        assert!(a.attribute(&[sock(100)], false).owners_changed);
        assert!(matches!(a.owner_of(&sock(100)), Owner::Process(p) if p.pid == Pid(20)));
    }

    /// Gives the fixture's `PID/exe` a file of its own name under `files`.
    fn run(root: &Path, pid: u32, files: &Path, program: &str) {
        let file = files.join(program);
        if !file.exists() {
            std::fs::write(&file, program).unwrap();
        }
        std::os::unix::fs::symlink(&file, root.join(format!("{pid}/exe"))).unwrap();
    }

    #[test]
    fn the_sweep_finds_another_program_holding_an_owned_socket() {
        // 10 owns 100 (found first: lowest pid); 20 holds it too and runs another program
        // (the decoy's partner); 30 holds it and runs 10's program (a worker).
        let root = fake_proc(&[(10, &[100]), (20, &[100]), (30, &[100]), (40, &[])]);
        let files = tempfile::tempdir().unwrap();
        run(root.path(), 10, files.path(), "sleep");
        run(root.path(), 20, files.path(), "backdoor");
        run(root.path(), 30, files.path(), "sleep");
        run(root.path(), 40, files.path(), "other");
        let fake = Fake {
            root: root.path().into(),
            reuse: None,
            calls: Cell::new(0),
        };
        let mut a = Attributor::new(root.path(), fake);
        // The first pass names the first holder found; the other holders wait for the
        // sweep, which is not due yet.
        a.attribute(&[sock(100)], true);
        assert!(matches!(a.owner_of(&sock(100)), Owner::Process(p) if p.pid == Pid(10)));
        let quiet = |a: &mut Attributor<Fake>| a.attribute(&[sock(100)], false).owners_changed;
        for _ in 2..10 {
            assert!(!quiet(&mut a));
            assert!(a.also_held_by(Inode(100)).is_empty());
        }
        a.set_sweep(Duration::ZERO);
        assert!(quiet(&mut a));
        let also: Vec<Pid> = a.also_held_by(Inode(100)).iter().map(|p| p.pid).collect();
        assert_eq!(also, [Pid(20)]);
        // A holder that comes later is found by the next sweep, not before.
        a.set_sweep(Duration::from_secs(3600));
        assert!(!quiet(&mut a), "swept again at once: nothing new");
        std::os::unix::fs::symlink("socket:[100]", root.path().join("40/fd/3")).unwrap();
        for _ in 1..10 {
            assert!(!quiet(&mut a));
            assert_eq!(a.also_held_by(Inode(100)).len(), 1);
        }
        a.set_sweep(Duration::ZERO);
        assert!(quiet(&mut a));
        let also: Vec<Pid> = a.also_held_by(Inode(100)).iter().map(|p| p.pid).collect();
        assert_eq!(
            also,
            [Pid(20), Pid(40)],
            "30 runs the owner's program: no other"
        );
        a.set_sweep(Duration::from_secs(3600));
        assert!(!quiet(&mut a));
        // One that exits is dropped at the next pass (its pid is checked with the owners').
        std::fs::remove_dir_all(root.path().join("20")).unwrap();
        assert!(a.attribute(&[sock(100)], false).owners_changed);
        let also: Vec<Pid> = a.also_held_by(Inode(100)).iter().map(|p| p.pid).collect();
        assert_eq!(also, [Pid(40)]);
        assert!(!a.attribute(&[sock(100)], false).owners_changed);
    }
}
