//! Every network namespace on the machine: which exist, what they are called, and how to
//! read the sockets of each.
//!
//! A namespace is found through a process in it (`/proc/PID/ns/net`, deduplicated by
//! inode), or a thread of one (`/proc/PID/task/TID/ns/net`: a thread may `unshare` or
//! `setns` alone, and its sockets are then in a namespace no process's main thread is in),
//! or a name (`/run/netns/NAME`, where `ip netns` keeps them, and the directories
//! container runtimes keep theirs in). Reading every pid's link each poll would cost what
//! the steady path must not, so the pids are listed again only when the kernel's count of
//! processes ever started (`processes` in `/proc/stat`) has moved, and only new pids'
//! links (and their threads') are read; a full look every [`FULL_EVERY`] polls catches a
//! process or thread that moved into a new namespace without starting another.
//!
//! A namespace is read with sock_diag from inside it when the daemon may enter it
//! (`setns` needs `CAP_SYS_ADMIN`: root at a shell, or the unit's documented drop-in),
//! else through `/proc/PID/net/{tcp,udp}[6]` of a process in it, which needs no
//! capability but cannot tell `IPV6_V6ONLY`.
//!
//! Either way the kernel walks its socket tables, which every namespace shares, for each
//! read: a sock_diag dump walks the listening and UDP tables, a `/proc/PID/net/tcp` read
//! the whole established table too (milliseconds on a large machine, whatever the
//! namespace holds). So a namespace is read again when its socket counts
//! (`/proc/PID/net/sockstat` and `sockstat6`, which cost no walk) have moved since the
//! last read; one whose counts stayed is read anyway after [`READ_EVERY`] polls with
//! sock_diag, and through `/proc/PID/net` one such namespace every
//! [`PROC_NET_DUE_EVERY`] polls, the one read longest ago. A listener that replaced
//! another within one interval, leaving every count as it was, is so seen within 10 polls,
//! or through `/proc/PID/net` within twice as many polls as there are namespaces. At most
//! [`CHECK_PER_POLL`] namespaces' counts are looked at per poll.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Backend, KernelSource, ProcNet, SockDiag, SocketSource, SourceError, SourceMode};
use crate::latch::Latch;
use crate::model::Socket;
use crate::model::listener::NetnsView;

/// Polls between two full looks at every pid's namespace.
pub const FULL_EVERY: u64 = 30;

/// Polls at most between two sock_diag reads of a namespace whose socket counts have
/// not moved.
pub const READ_EVERY: u32 = 10;

/// Polls between two reads, through `/proc/PID/net`, of a namespace whose counts have not
/// moved (the one read longest ago). Such a read costs milliseconds even for an empty
/// namespace: the kernel walks every connection on the machine for `tcp` and `tcp6`.
pub const PROC_NET_DUE_EVERY: u64 = 2;

/// Namespaces whose counts are looked at per poll, at most; with more, each is looked at
/// in turn. Namespaces cost the daemon time, and an unprivileged user can make thousands
/// (a user namespace each); this keeps a poll's cost bounded. A namespace not read before
/// is read at once all the same.
pub const CHECK_PER_POLL: usize = 256;

/// Where container runtimes and `ip netns` keep named namespaces.
pub const NAMED_DIRS: [&str; 2] = ["run/netns", "run/docker/netns"];

/// One namespace: its name, a process in it, the file that names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsEntry {
    pub name: Option<String>,
    pub pid: Option<u32>,
    /// `/run/netns/NAME` (or `/proc/PID/ns/net`): what `setns` opens.
    pub path: Option<PathBuf>,
}

/// The namespaces known now, shared by the source (which finds them) and the policy's
/// host view (which names them).
#[derive(Debug)]
pub struct NamespaceTable {
    host: u64,
    proc_root: PathBuf,
    entries: RwLock<HashMap<u64, NsEntry>>,
}

impl NamespaceTable {
    pub fn new(proc_root: &Path) -> Arc<NamespaceTable> {
        Arc::new(NamespaceTable {
            host: super::netns_inode(proc_root).unwrap_or(0),
            proc_root: proc_root.to_owned(),
            entries: RwLock::new(HashMap::new()),
        })
    }

    /// The daemon's own namespace.
    pub fn host(&self) -> u64 {
        self.host
    }

    pub fn view(&self, inode: u64) -> NetnsView {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        NetnsView {
            inode,
            name: entries.get(&inode).and_then(|e| e.name.clone()),
            host: inode == self.host || inode == 0,
        }
    }

    /// `/proc/PID` of a process in the namespace (for its `net/` tables and sysctls).
    pub fn proc_dir(&self, inode: u64) -> Option<PathBuf> {
        if inode == self.host || inode == 0 {
            return Some(self.proc_root.join("self"));
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let pid = entries.get(&inode)?.pid?;
        Some(self.proc_root.join(pid.to_string()))
    }

    fn replace(&self, entries: HashMap<u64, NsEntry>) {
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    fn knows(&self, inode: u64) -> bool {
        inode == self.host
            || (self.entries.read().unwrap_or_else(|p| p.into_inner())).contains_key(&inode)
    }

    fn others(&self) -> Vec<(u64, NsEntry)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(u64, NsEntry)> = entries
            .iter()
            .filter(|(i, _)| **i != self.host)
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v
    }

    /// Finds a namespace by name (`vpn`), `host`, or `netns:<inode>`.
    pub fn find(&self, label: &str) -> Option<u64> {
        if label == "host" {
            return Some(self.host);
        }
        if let Some(n) = label.strip_prefix("netns:") {
            return n.parse().ok();
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|(_, e)| e.name.as_deref() == Some(label))
            .map(|(i, _)| *i)
    }
}

/// `vpn (netns:4026532301)`, or `netns:4026532301` for a namespace without a name.
fn label(inode: u64, e: &NsEntry) -> String {
    match &e.name {
        Some(name) => format!("{} (netns:{inode})", crate::text::escape_control(name)),
        None => format!("netns:{inode}"),
    }
}

/// `net:[4026531840]` → 4026531840.
fn ns_link_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Finds namespaces, cheaply when nothing has started.
#[derive(Debug)]
pub struct Discovery {
    proc_root: PathBuf,
    /// `processes` in `/proc/stat` at the last look.
    forks: Option<u64>,
    /// Every pid seen: its main thread's namespace, and its threads in others.
    pids: HashMap<u32, Tasks>,
    polls: u64,
    /// The next look reads every pid's namespace again: the kernel named a namespace
    /// not known (a process that unshared or entered one after its link was read).
    force_full: bool,
}

impl Discovery {
    pub fn new(proc_root: &Path) -> Discovery {
        Discovery {
            proc_root: proc_root.to_owned(),
            forks: None,
            pids: HashMap::new(),
            polls: 0,
            force_full: false,
        }
    }

    /// The namespaces now, or `None` when nothing can have changed since the last look
    /// (no process started, no name added or removed, not time for a full look).
    /// `named_before` is the other namespaces as last found; `host` the daemon's own,
    /// left out of the comparison whether it has a name or not.
    pub fn refresh(
        &mut self,
        named_before: &HashMap<u64, NsEntry>,
        host: u64,
    ) -> Option<HashMap<u64, NsEntry>> {
        self.polls += 1;
        let forks = forks(&self.proc_root);
        let named = self.named_paths();
        let full = self.polls % FULL_EVERY == 1 || std::mem::take(&mut self.force_full);
        let named_others = named.iter().filter(|(i, _)| **i != host);
        let named_same = named_others.clone().count()
            == named_before.values().filter(|e| e.name.is_some()).count()
            && named_others
                .into_iter()
                .all(|(i, (n, _))| named_before.get(i).and_then(|e| e.name.as_ref()) == Some(n));
        if !full && forks.is_some() && forks == self.forks && named_same {
            return None;
        }
        self.forks = forks;
        self.scan_pids(full);
        let mut entries: HashMap<u64, NsEntry> = HashMap::new();
        let mut pids: Vec<(&u32, &Tasks)> = self.pids.iter().collect();
        pids.sort_by_key(|(pid, _)| **pid);
        // A main thread stands for its namespace where there is one; else a thread, through
        // `/proc/TID` (which the kernel resolves though it does not list it).
        let mains = pids.iter().filter_map(|(pid, t)| Some((**pid, t.main?)));
        let threads = pids.iter().flat_map(|(_, t)| t.elsewhere.iter().copied());
        for (task, inode) in mains.chain(threads) {
            let e = entries.entry(inode).or_default();
            if e.pid.is_none() {
                e.pid = Some(task);
                e.path = Some(self.proc_root.join(task.to_string()).join("ns/net"));
            }
        }
        for (inode, (name, path)) in named {
            let e = entries.entry(inode).or_default();
            e.name = Some(name);
            e.path = Some(path);
        }
        Some(entries)
    }

    /// Named namespaces: the bind-mounted files under the runtimes' directories.
    fn named_paths(&self) -> HashMap<u64, (String, PathBuf)> {
        let root = self.proc_root.parent().unwrap_or(Path::new("/"));
        let mut out = HashMap::new();
        for dir in NAMED_DIRS {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                use std::os::unix::fs::MetadataExt as _;
                let path = entry.path();
                // A bind-mounted namespace file has the namespace's inode; the empty file
                // left after `ip netns delete` (or before the mount) does not count.
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if meta.dev() == 0 || !is_nsfs(&path) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                out.entry(meta.ino()).or_insert((name, path));
            }
        }
        out
    }

    /// Reads the namespace links of new pids and their threads (every pid's on a full
    /// look), and forgets pids that are gone.
    fn scan_pids(&mut self, full: bool) {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        let mut seen = HashSet::with_capacity(self.pids.len() + 16);
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            seen.insert(pid);
            if !full && self.pids.contains_key(&pid) {
                continue;
            }
            match Tasks::read(&entry.path(), pid) {
                Some(tasks) => {
                    self.pids.insert(pid, tasks);
                }
                None => {
                    self.pids.remove(&pid);
                }
            }
        }
        self.pids.retain(|pid, _| seen.contains(pid));
    }
}

/// The namespaces of one process's threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tasks {
    /// The main thread's (the one `/proc/PID/ns/net` names); `None` when it has exited
    /// while other threads run on (`pthread_exit` in `main`: the process shows as a
    /// zombie, with no namespace link and no descriptors of its own).
    main: Option<u64>,
    /// Threads in another namespace than the main thread's (any namespace, when it has
    /// exited): (tid, namespace), one for each namespace.
    elsewhere: Vec<(u32, u64)>,
}

impl Tasks {
    /// Reads the links of `/proc/PID` (`dir`) and of its threads; `None` when the
    /// process is gone or no link of it can be read.
    fn read(dir: &Path, pid: u32) -> Option<Tasks> {
        let main = link_inode(&dir.join("ns/net"));
        let mut elsewhere = Vec::new();
        // One directory read for a process of one thread. A thread that cannot be read
        // (it exited meanwhile) is left for the next look.
        if let Ok(tasks) = std::fs::read_dir(dir.join("task")) {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if tid == pid {
                    continue;
                }
                if let Some(inode) = link_inode(&task.path().join("ns/net"))
                    && Some(inode) != main
                {
                    elsewhere.push((tid, inode));
                }
            }
        }
        if main.is_none() && elsewhere.is_empty() {
            return None;
        }
        // One thread of each namespace is enough (the first, by tid).
        elsewhere.sort_unstable_by_key(|&(tid, inode)| (inode, tid));
        elsewhere.dedup_by_key(|(_, inode)| *inode);
        Some(Tasks { main, elsewhere })
    }
}

/// The namespace a `ns/net` link names.
fn link_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    ns_link_inode(target.as_os_str().as_encoded_bytes())
}

/// Whether a file is a namespace file (on nsfs), not the placeholder left behind.
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast, reason = "i64 on some targets only")]
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == NSFS_MAGIC)
}

/// The number of processes started since boot.
fn forks(proc_root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|n| n.trim().parse().ok())
}

/// What was read of a namespace, and its socket counts then.
#[derive(Default)]
struct LastRead {
    counts: Vec<u64>,
    sockets: Vec<Socket>,
    /// Polls since it was read.
    age: u32,
}

/// Every socket count of a namespace (`sockets: used`, and each protocol's `inuse`, for
/// IPv4 and IPv6), through a process in it; `None` when they cannot be read.
fn socket_counts(proc_dir: &Path) -> Option<Vec<u64>> {
    let mut counts = Vec::with_capacity(12);
    for file in ["net/sockstat", "net/sockstat6"] {
        let text = std::fs::read_to_string(proc_dir.join(file)).ok()?;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "inuse" || w == "used" {
                    counts.push(words.next()?.parse().ok()?);
                }
            }
        }
    }
    // sockstat has no count of packet sockets: their own table (short, one line a socket)
    // stands in, by its number of sockets and the sum of their inodes, so that one packet
    // socket opening as another socket closes still moves the counts.
    if let Ok(text) = std::fs::read_to_string(proc_dir.join("net/packet")) {
        let inodes = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().last());
        let (n, sum) = inodes.fold((0u64, 0u64), |(n, sum), i| {
            (n + 1, sum.wrapping_add(i.parse().unwrap_or(0)))
        });
        counts.extend([n, sum]);
    }
    Some(counts)
}

/// Whether the `i`-th of `n` namespaces is in the window that starts at `start`.
fn in_window(i: usize, start: usize, n: usize) -> bool {
    (i + n - start.min(n)) % n.max(1) < CHECK_PER_POLL
}

/// Where the window after the one at `start` starts.
fn next_window(start: usize, n: usize) -> usize {
    if n > CHECK_PER_POLL {
        (start + CHECK_PER_POLL) % n
    } else {
        0
    }
}

/// How the daemon may read another namespace.
enum Reader {
    /// sock_diag, opened from inside the namespace.
    Diag(SockDiag),
    /// `/proc/PID/net` of a process in it.
    ProcNet,
}

/// Which namespaces a source covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scope {
    /// Every namespace on the machine.
    #[default]
    All,
    /// The daemon's own only.
    Host,
}

/// The sockets of every namespace: the host's through [`KernelSource`], the others as
/// the daemon may read them.
pub struct MultiSource {
    host: KernelSource,
    table: Arc<NamespaceTable>,
    discovery: Discovery,
    readers: HashMap<u64, Reader>,
    last: HashMap<u64, LastRead>,
    scope: Scope,
    /// Whether `setns` works (`None` until tried).
    may_enter: Option<bool>,
    proc_root: PathBuf,
    scratch: Vec<Socket>,
    failing: Latch,
    polls: u64,
    /// Where this poll's window of [`CHECK_PER_POLL`] namespaces starts.
    check_at: usize,
}

impl std::fmt::Debug for MultiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiSource")
            .field("scope", &self.scope)
            .field("may_enter", &self.may_enter)
            .finish_non_exhaustive()
    }
}

impl MultiSource {
    pub fn new(
        proc_root: &Path,
        mode: SourceMode,
        scope: Scope,
        table: Arc<NamespaceTable>,
    ) -> MultiSource {
        MultiSource {
            host: KernelSource::new(proc_root, mode),
            table,
            discovery: Discovery::new(proc_root),
            readers: HashMap::new(),
            last: HashMap::new(),
            scope,
            may_enter: None,
            proc_root: proc_root.to_owned(),
            scratch: Vec::new(),
            failing: Latch::new(
                "cannot read a network namespace",
                "its listeners are not seen until it can be read",
                "network namespaces readable again",
            ),
            polls: 0,
            check_at: 0,
        }
    }

    /// Finds namespaces (when something may have changed) and drops readers of the ones
    /// gone: a sock_diag socket would keep a namespace alive.
    fn discover(&mut self) {
        let before: HashMap<u64, NsEntry> = self.table.others().into_iter().collect();
        let host = self.table.host();
        if let Some(entries) = self.discovery.refresh(&before, host) {
            for (inode, e) in &entries {
                if *inode != host && !before.contains_key(inode) {
                    tracing::debug!("watching network namespace {}", label(*inode, e));
                }
            }
            for (inode, e) in &before {
                if !entries.contains_key(inode) {
                    tracing::debug!("network namespace {} is gone", label(*inode, e));
                }
            }
            self.readers.retain(|inode, _| entries.contains_key(inode));
            self.last.retain(|inode, _| entries.contains_key(inode));
            self.table.replace(entries);
        }
    }

    /// What was read of a namespace last, for a poll that could not read it through its
    /// process; the next look finds another process in it (or finds it gone).
    fn stand_in(&mut self, inode: u64, out: &mut Vec<Socket>) {
        self.discovery.force_full = true;
        if let Some(last) = self.last.get_mut(&inode) {
            last.age = last.age.saturating_add(1);
            out.extend_from_slice(&last.sockets);
        }
    }

    /// sock_diag opened inside the namespace, when the daemon may enter it.
    fn open_reader(&mut self, entry: &NsEntry) -> Reader {
        if self.may_enter == Some(false) {
            return Reader::ProcNet;
        }
        let Some(path) = entry.path.clone() else {
            return Reader::ProcNet;
        };
        match open_inside(&path) {
            Ok(diag) => {
                self.may_enter = Some(true);
                Reader::Diag(diag)
            }
            // This namespace is gone, or its process: read it as best as can be, and try
            // entering the next one as usual.
            Err((false, e)) => {
                tracing::debug!("cannot enter a network namespace: {e}");
                Reader::ProcNet
            }
            Err((true, e)) => {
                // The shipped unit's way (no CAP_SYS_ADMIN): said once, not as a problem.
                if self.may_enter.is_none() {
                    tracing::info!(
                        "reading other network namespaces through /proc/PID/net, where \
                         IPV6_V6ONLY is unknown (entering them to use sock_diag failed: {e}; it \
                         needs CAP_SYS_ADMIN, see the README, \"Namespaces and containers\")"
                    );
                }
                self.may_enter = Some(false);
                Reader::ProcNet
            }
        }
    }

    /// The namespace read through `/proc/PID/net` longest ago: read this poll whatever its
    /// counts say.
    fn oldest_proc_net(&self, others: &[(u64, NsEntry)]) -> Option<u64> {
        others
            .iter()
            .filter(|(inode, _)| matches!(self.readers.get(inode), Some(Reader::ProcNet)))
            .max_by_key(|(inode, _)| self.last.get(inode).map_or(u32::MAX, |l| l.age))
            .map(|(inode, _)| *inode)
    }

    /// Appends the listeners of one other namespace to `out`: what was read before when
    /// it is not in this poll's window, or its socket counts have not moved and it is not
    /// `due` (or, on sock_diag, old).
    fn read_one(
        &mut self,
        inode: u64,
        entry: &NsEntry,
        (due, in_window): (bool, bool),
        out: &mut Vec<Socket>,
    ) -> Result<(), String> {
        if !in_window
            && !due
            && let Some(last) = self.last.get_mut(&inode)
        {
            last.age = last.age.saturating_add(1);
            out.extend_from_slice(&last.sockets);
            return Ok(());
        }
        let counts = entry
            .pid
            .and_then(|pid| socket_counts(&self.proc_root.join(pid.to_string())));
        let diag = matches!(self.readers.get(&inode), Some(Reader::Diag(_)));
        if let (Some(counts), Some(last)) = (&counts, self.last.get_mut(&inode))
            && last.counts == *counts
            && !due
            && (!diag || last.age + 1 < READ_EVERY)
        {
            last.age += 1;
            out.extend_from_slice(&last.sockets);
            return Ok(());
        }
        let at = out.len();
        let read = self.read_now(inode, entry, out);
        // The process it was read through must still be in it: one that exited (or left)
        // fails the read or, its pid reused, shows another namespace's tables as this
        // one's. Then what was read before stands for a poll, and the next poll looks for
        // another process in it. (Checked after a read only: counts that did not move
        // mean the last read stands anyway.)
        if let Some(pid) = entry.pid
            && !pid_in(&self.proc_root, pid, inode)
        {
            out.truncate(at);
            self.stand_in(inode, out);
            return Ok(());
        }
        match (&read, counts) {
            (Ok(()), Some(counts)) => {
                let last = self.last.entry(inode).or_default();
                last.counts = counts;
                last.sockets.clear();
                last.sockets.extend_from_slice(&out[at..]);
                last.age = 0;
            }
            _ => {
                self.last.remove(&inode);
            }
        }
        read
    }

    /// Reads the listeners of one other namespace into `out`.
    fn read_now(
        &mut self,
        inode: u64,
        entry: &NsEntry,
        out: &mut Vec<Socket>,
    ) -> Result<(), String> {
        if !self.readers.contains_key(&inode) {
            let reader = self.open_reader(entry);
            self.readers.insert(inode, reader);
        }
        self.scratch.clear();
        let diag_result = match self.readers.get_mut(&inode) {
            Some(Reader::Diag(d)) => Some(
                d.listeners(&mut self.scratch)
                    .map_err(|e| e.to_string())
                    .and_then(|()| match entry.pid {
                        // Raw sockets come from /proc, through a process in it. One that
                        // has just exited fails no read: the next look finds another.
                        // So do the protocols whose diag module the kernel lacks.
                        Some(pid) => {
                            let dir = self.proc_root.join(pid.to_string());
                            let net = ProcNet::new(&dir);
                            let read = net
                                .raw(&mut self.scratch)
                                .and_then(|()| net.fill_in(d.unsupported(), &mut self.scratch));
                            match read {
                                Err(_) if !dir.exists() => Ok(()),
                                other => other.map_err(|e| e.to_string()),
                            }
                        }
                        None => Ok(()),
                    }),
            ),
            _ => None,
        };
        match diag_result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.readers.remove(&inode);
                return Err(e);
            }
            None => {
                let read = entry
                    .pid
                    .ok_or_else(|| "no process in it to read it through".to_owned())
                    .and_then(|pid| {
                        let dir = self.proc_root.join(pid.to_string());
                        ProcNet::new(&dir)
                            .listeners(&mut self.scratch)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = read {
                    // Where the daemon may enter namespaces, the next look tries again.
                    if self.may_enter != Some(false) {
                        self.readers.remove(&inode);
                    }
                    return Err(e);
                }
            }
        }
        out.extend(self.scratch.drain(..).map(|mut s| {
            s.netns = inode;
            s
        }));
        Ok(())
    }
}

/// Whether `pid` is (still) in the network namespace `inode`.
fn pid_in(proc_root: &Path, pid: u32, inode: u64) -> bool {
    link_inode(&proc_root.join(pid.to_string()).join("ns/net")) == Some(inode)
}

/// Opens a sock_diag socket inside the namespace at `path`, from a thread of its own
/// (`setns` changes the calling thread's namespace; the socket stays in the namespace it
/// was made in).
///
/// The error says whether entering was refused (`true`: the daemon may not enter any
/// namespace) or this one could not be opened (it went away, its process exited).
fn open_inside(path: &Path) -> Result<SockDiag, (bool, String)> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&path).map_err(|e| (false, format!("{}: {e}", path.display())))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| {
            let refused = matches!(e, rustix::io::Errno::PERM | rustix::io::Errno::ACCESS);
            (refused, format!("setns: {e}"))
        })?;
        SockDiag::open().map_err(|e| (false, e.to_string()))
    })
    .join()
    .unwrap_or_else(|_| Err((false, "the thread that enters namespaces failed".to_owned())))
}

impl SocketSource for MultiSource {
    fn heard_of_namespace(&mut self, inode: u64) {
        if self.scope == Scope::All && inode != 0 && !self.table.knows(inode) {
            self.discovery.force_full = true;
        }
    }

    fn listeners(&mut self, out: &mut Vec<Socket>) -> Result<Backend, SourceError> {
        let backend = self.host.listeners(out)?;
        let host = self.table.host();
        for s in out.iter_mut() {
            s.netns = host;
        }
        if self.scope == Scope::Host {
            return Ok(backend);
        }
        self.discover();
        let mut failed = None;
        let others = self.table.others();
        self.polls += 1;
        let due = if self.polls.is_multiple_of(PROC_NET_DUE_EVERY) {
            self.oldest_proc_net(&others)
        } else {
            None
        };
        let (n, start) = (others.len(), self.check_at);
        self.check_at = next_window(start, n);
        for (i, (inode, entry)) in others.into_iter().enumerate() {
            let in_window = in_window(i, start, n);
            if let Err(e) = self.read_one(inode, &entry, (due == Some(inode), in_window), out) {
                // A namespace whose last process just exited: its listeners close with it.
                if entry.name.is_some()
                    || entry
                        .pid
                        .is_some_and(|p| self.proc_root.join(p.to_string()).exists())
                {
                    failed = Some(format!("{}: {e}", self.table.view(inode).label()));
                }
            }
        }
        match failed {
            Some(problem) => {
                if let Some(warning) = self.failing.fail(problem) {
                    tracing::warn!("{warning}");
                }
            }
            None => {
                if let Some(back) = self.failing.recover() {
                    tracing::info!("{back}");
                }
            }
        }
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_checked_against_the_namespace_it_stands_for() {
        let root = Path::new("/proc");
        let me = std::process::id();
        let mine = NamespaceTable::new(root).host();
        assert!(pid_in(root, me, mine));
        assert!(!pid_in(root, me, mine + 1), "another namespace's pid");
        assert!(!pid_in(root, u32::MAX, mine), "a pid that is gone");
    }

    #[test]
    fn a_packet_socket_moves_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        let sockstat =
            "sockets: used 5\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 0\nUDP: inuse 1 mem 0\n";
        std::fs::write(dir.path().join("net/sockstat"), sockstat).unwrap();
        std::fs::write(dir.path().join("net/sockstat6"), "TCP6: inuse 0\n").unwrap();
        let header = "sk       RefCnt Type Proto  Iface R Rmem   User   Inode\n";
        let packet = |inode: u64| {
            format!("{header}0000000000000000 3      3    0003   2     1 0      0      {inode}\n")
        };
        std::fs::write(dir.path().join("net/packet"), packet(4242)).unwrap();
        let before = socket_counts(dir.path()).unwrap();
        // One packet socket closed, another opened: the same number, not the same set.
        std::fs::write(dir.path().join("net/packet"), packet(4343)).unwrap();
        assert_ne!(socket_counts(dir.path()).unwrap(), before);
    }

    #[test]
    fn namespace_links() {
        assert_eq!(ns_link_inode(b"net:[4026531840]"), Some(4026531840));
        assert_eq!(ns_link_inode(b"mnt:[4026531840]"), None);
        assert_eq!(ns_link_inode(b"net:[]"), None);
    }

    /// With more namespaces than a poll looks at, every one is looked at in turn: each
    /// within ceil(n / CHECK_PER_POLL) polls, and as often as any other.
    #[test]
    fn windows_cover_every_namespace_in_turn() {
        for n in [0, 1, CHECK_PER_POLL, CHECK_PER_POLL + 1, 1000, 10_000] {
            let polls = n.div_ceil(CHECK_PER_POLL).max(1);
            let mut looked = vec![0usize; n];
            let mut start = 0;
            for _ in 0..polls * 3 {
                let window: Vec<usize> = (0..n).filter(|&i| in_window(i, start, n)).collect();
                assert_eq!(window.len(), n.min(CHECK_PER_POLL), "n = {n}");
                for i in window {
                    looked[i] += 1;
                }
                start = next_window(start, n);
            }
            let (min, max) = (looked.iter().min(), looked.iter().max());
            assert!(looked.iter().all(|&c| c >= 3), "n = {n}: {min:?}");
            assert!(
                max.zip(min).is_none_or(|(a, b)| a - b <= 3),
                "n = {n}: {min:?}..{max:?}"
            );
        }
    }

    #[test]
    fn this_process_namespace_is_found() {
        let root = Path::new("/proc");
        let table = NamespaceTable::new(root);
        let mut d = Discovery::new(root);
        let entries = d
            .refresh(&HashMap::new(), table.host())
            .expect("a first look");
        assert!(entries.contains_key(&table.host()), "{entries:?}");
        assert!(table.view(table.host()).host);
        assert_eq!(table.find("host"), Some(table.host()));
    }
}
