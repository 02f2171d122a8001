//! Who owns a socket: inode → pid from `/proc/*/fd`, then the pid's details.
//!
//! The expensive part is reading every process's fd table, so it runs only for inodes not
//! seen before, visits each pid at most once per poll, and stops as soon as every new inode
//! is found. It looks first at processes that appeared since the last look (a new listener
//! usually belongs to a new process), then at processes of the socket's uid, then the rest.
//! Owners are cached by inode: while the socket exists, its owner does not change.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags};

use crate::model::{Inode, Owner, Pid, Process, Socket, UnknownOwner};

/// Reads details of processes: name, exe, command line, user, unit.
pub trait ProcessDetails {
    /// Details of each pid that could be read; a pid missing from the map has exited.
    fn details(&mut self, pids: &[Pid]) -> HashMap<Pid, Arc<Process>>;
}

/// What one pass over the fd tables found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FdScan {
    pub found: HashMap<Inode, Pid>,
    /// Some fd table could not be read for lack of permission.
    pub denied: bool,
    /// Fd tables read in this pass.
    pub pids_read: usize,
}

/// Lists pids and reads their fd tables under a `/proc` root (injectable for tests).
#[derive(Debug)]
pub struct FdScanner {
    root: PathBuf,
    link_buf: Vec<u8>,
}

impl FdScanner {
    pub fn new(proc_root: &Path) -> FdScanner {
        FdScanner {
            root: proc_root.to_owned(),
            link_buf: vec![0; 64],
        }
    }

    /// Pids under the root, in directory order, with the uid of their `/proc/PID`
    /// directory (the process's effective uid) and the size of their fd table.
    pub fn list_pids(&self) -> std::io::Result<Vec<ProcEntry>> {
        let root_fd = open_dir(&self.root)?;
        let mut dir = Dir::read_from(&root_fd)?;
        let mut pids = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let Some(pid) = parse_pid(entry.file_name()) else {
                continue;
            };
            let uid = rustix::fs::statat(&root_fd, entry.file_name(), AtFlags::empty())
                .ok()
                .map(|st| st.st_uid);
            // Since Linux 6.2 the size of /proc/PID/fd is the number of open files (0
            // before, which orders nothing).
            let mut fd_dir = [0u8; 24];
            let fds = fd_path(&mut fd_dir, pid)
                .and_then(|p| rustix::fs::statat(&root_fd, p, AtFlags::empty()).ok())
                .map_or(0, |st| st.st_size.max(0) as u64);
            pids.push(ProcEntry {
                pid: Pid(pid),
                uid,
                fds,
            });
        }
        Ok(pids)
    }

    /// Reads fd tables of `order`'s pids in turn until every inode of `wanted` is found.
    pub fn scan(&mut self, order: &[Pid], wanted: &HashSet<Inode>) -> FdScan {
        let mut scan = FdScan::default();
        let mut missing = wanted.len();
        let mut path = String::with_capacity(32);
        for &pid in order {
            if missing == 0 {
                break;
            }
            path.clear();
            use std::fmt::Write as _;
            let _ = write!(path, "{}/{}/fd", self.root.display(), pid.0);
            let fd_dir = match open_dir(Path::new(&path)) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    scan.denied = true;
                    continue;
                }
                Err(_) => continue, // exited, or not a process
            };
            scan.pids_read += 1;
            let Ok(mut dir) = Dir::read_from(&fd_dir) else {
                continue;
            };
            while let Some(Ok(entry)) = dir.read() {
                let name = entry.file_name();
                if name.to_bytes().first() == Some(&b'.') {
                    continue;
                }
                let Some(inode) = self.socket_inode(&fd_dir, name) else {
                    continue;
                };
                if wanted.contains(&inode) && !scan.found.contains_key(&inode) {
                    scan.found.insert(inode, pid);
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
        }
        scan
    }

    /// `socket:[N]` → N for one fd link.
    fn socket_inode(&mut self, fd_dir: &OwnedFd, name: &CStr) -> Option<Inode> {
        // Socket links are short; a longer target (a file path) is cut off and then
        // fails to parse, which is what we want.
        let n = rustix::fs::readlinkat_raw(fd_dir, name, &mut self.link_buf[..]).ok()?;
        parse_socket_link(&self.link_buf[..n.min(self.link_buf.len())])
    }
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn parse_pid(name: &CStr) -> Option<u32> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses a `socket:[12345]` fd link target.
pub fn parse_socket_link(link: &[u8]) -> Option<Inode> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok().map(Inode)
}

/// One process as [`FdScanner::list_pids`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: Pid,
    /// The owner of `/proc/PID`: the process's effective uid.
    pub uid: Option<u32>,
    /// Open files (0 where the kernel does not say).
    pub fds: u64,
}

/// `PID/fd` as a C string in `buf`, without allocating.
fn fd_path(buf: &mut [u8; 24], pid: u32) -> Option<&std::ffi::CStr> {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{pid}/fd\0").ok()?;
    let n = cursor.position() as usize;
    std::ffi::CStr::from_bytes_with_nul(&buf[..n]).ok()
}

/// The order in which to read fd tables: pids that appeared since the last look first,
/// then pids whose uid owns one of the new sockets, then every other pid; within each
/// group, smaller fd tables first (cheap to read, and a process holding thousands of
/// connections is rarely the one that just opened a listener), then lower pids (a
/// parent before the workers that share its socket).
pub fn attribution_order(
    pids: &[ProcEntry],
    previous: &HashSet<Pid>,
    socket_uids: &HashSet<u32>,
) -> Vec<Pid> {
    let rank = |p: &ProcEntry| {
        if !previous.is_empty() && !previous.contains(&p.pid) {
            0
        } else if p.uid.is_some_and(|u| socket_uids.contains(&u)) {
            1
        } else {
            2
        }
    };
    let mut ordered: Vec<_> = pids.iter().map(|p| (rank(p), p.fds, p.pid)).collect();
    ordered.sort_unstable();
    ordered.into_iter().map(|(_, _, pid)| pid).collect()
}

/// Finds who owns sockets: the daemon's edge to `/proc` ([`Attributor`]); tests script one.
pub trait OwnerSource {
    /// Makes sure every socket of `sockets` has an owner (or a reason it has none).
    fn attribute(&mut self, sockets: &[Socket]) -> AttributionStats;
    /// The owner of a socket [`attribute`](Self::attribute) has seen.
    fn owner_of(&self, socket: &Socket) -> Owner;
}

impl<D: ProcessDetails> OwnerSource for Attributor<D> {
    fn attribute(&mut self, sockets: &[Socket]) -> AttributionStats {
        Attributor::attribute(self, sockets)
    }

    fn owner_of(&self, socket: &Socket) -> Owner {
        Attributor::owner_of(self, socket)
    }
}

/// Counters for one attribution pass, for benchmarks and the daemon's status line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttributionStats {
    pub new_inodes: usize,
    pub pids_read: usize,
}

/// inode → owner, with a cache that keeps the owners of inodes still present.
#[derive(Debug)]
pub struct Attributor<D> {
    root: PathBuf,
    fds: FdScanner,
    details: D,
    cache: HashMap<Inode, Owner>,
    previous_pids: HashSet<Pid>,
    /// Reused between polls to avoid reallocating on the steady path.
    wanted: HashSet<Inode>,
}

impl<D: ProcessDetails> Attributor<D> {
    pub fn new(proc_root: &Path, details: D) -> Attributor<D> {
        Attributor {
            root: proc_root.to_owned(),
            fds: FdScanner::new(proc_root),
            details,
            cache: HashMap::new(),
            previous_pids: HashSet::new(),
            wanted: HashSet::new(),
        }
    }

    pub fn owner(&self, inode: Inode) -> Option<&Owner> {
        self.cache.get(&inode)
    }

    /// Makes sure every socket of `sockets` has a cached owner, and forgets inodes that are
    /// gone. Does no `/proc` work when no socket is new.
    pub fn attribute(&mut self, sockets: &[Socket]) -> AttributionStats {
        self.wanted.clear();
        let mut uids = HashSet::new();
        let mut with_inode = 0;
        for s in sockets {
            if s.inode.0 == 0 {
                continue;
            }
            with_inode += 1;
            if !self.cache.contains_key(&s.inode) && self.wanted.insert(s.inode) {
                uids.insert(s.uid);
            }
        }
        // More cached + new inodes than sockets: some cached inodes are gone.
        if self.cache.len() + self.wanted.len() > with_inode {
            let present: HashSet<Inode> = sockets.iter().map(|s| s.inode).collect();
            self.cache.retain(|inode, _| present.contains(inode));
            crate::model::events::shrink(&mut self.cache);
        }
        let mut stats = AttributionStats {
            new_inodes: self.wanted.len(),
            pids_read: 0,
        };
        if self.wanted.is_empty() {
            return stats;
        }

        let pids = match self.fds.list_pids() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot list processes under /proc: {e}; owners stay unknown");
                Vec::new()
            }
        };
        let order = attribution_order(&pids, &self.previous_pids, &uids);
        self.previous_pids = pids.iter().map(|p| p.pid).collect();
        let scan = self.fds.scan(&order, &self.wanted);
        stats.pids_read = scan.pids_read;

        let mut owner_pids: Vec<Pid> = scan.found.values().copied().collect();
        owner_pids.sort_unstable();
        owner_pids.dedup();
        // Start times around the details: a pid that changed hands in between (the owner
        // exited and the kernel gave its pid to another program) is not reported as certain.
        let started = |pids: &[Pid]| -> HashMap<Pid, u64> {
            pids.iter()
                .filter_map(|&p| super::procfs::start_time(&self.root, p.0).map(|t| (p, t)))
                .collect()
        };
        let before = started(&owner_pids);
        let mut details = self.details.details(&owner_pids);
        let after = started(&owner_pids);
        // Keep only the pids that still name the process found holding the socket, with
        // the start time /proc gave (once per pid: the Arc is shared by all its sockets).
        details.retain(|pid, p| match (before.get(pid), after.get(pid)) {
            (Some(t0), Some(t1)) if t0 == t1 => {
                if p.start_time != *t0 {
                    Arc::make_mut(p).start_time = *t0;
                }
                true
            }
            _ => false,
        });
        for &inode in &self.wanted {
            let owner = match scan.found.get(&inode) {
                Some(pid) => match details.get(pid) {
                    Some(p) => Owner::Process(Arc::clone(p)),
                    None => Owner::Unknown(UnknownOwner::Vanished),
                },
                None if scan.denied => Owner::Unknown(UnknownOwner::NoPermission),
                None => Owner::Unknown(UnknownOwner::Kernel),
            };
            // A vanished owner is looked up again next time, should the socket remain.
            if owner != Owner::Unknown(UnknownOwner::Vanished) {
                self.cache.insert(inode, owner);
            }
        }
        stats
    }

    /// The owner of every socket: cached, or the reason it is unknown.
    pub fn owner_of(&self, socket: &Socket) -> Owner {
        if socket.inode.0 == 0 {
            return Owner::Unknown(UnknownOwner::Kernel);
        }
        self.cache
            .get(&socket.inode)
            .cloned()
            .unwrap_or(Owner::Unknown(UnknownOwner::Vanished))
    }
}

/// Process details through `sysinfo`, refreshing only the pids asked for, plus the unit
/// from `/proc/PID/cgroup`.
pub struct SysinfoDetails {
    proc_root: PathBuf,
    system: sysinfo::System,
    users: sysinfo::Users,
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
        let users = sysinfo::Users::new().map_err(|e| format!("cannot read the user list: {e}"))?;
        Ok(SysinfoDetails {
            proc_root: proc_root.to_owned(),
            system,
            users,
        })
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        let uid = sysinfo::Uid::try_from(uid as usize).ok()?;
        if self.users.get_user_by_id(&uid).is_none() {
            // New account since the last look (or the first look): re-read the list once.
            self.users.refresh();
        }
        self.users.get_user_by_id(&uid).map(|u| u.name().to_owned())
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
                .with_cmd(UpdateKind::Always)
                .with_user(UpdateKind::Always),
        );
        let mut out = HashMap::with_capacity(pids.len());
        let mut found = Vec::with_capacity(pids.len());
        for &pid in pids {
            let Some(p) = self.system.process(sysinfo::Pid::from_u32(pid.0)) else {
                continue;
            };
            let uid = p.user_id().map(|u| **u);
            let unit =
                std::fs::read_to_string(self.proc_root.join(pid.0.to_string()).join("cgroup"))
                    .ok()
                    .and_then(|c| super::cgroup::unit_from_cgroup(&c));
            let process = Process {
                pid,
                name: p.name().to_string_lossy().into_owned(),
                exe: p.exe().map(|e| e.to_string_lossy().into_owned()),
                cmdline: capped_cmdline(p.cmd()),
                uid,
                user: None,
                unit,
                start_time: p.start_time(),
            };
            found.push(process);
        }
        for mut process in found {
            if let Some(uid) = process.uid {
                process.user = self.user_name(uid);
            }
            out.insert(process.pid, Arc::new(process));
        }
        out
    }
}

/// Longest command line kept, in bytes, and most arguments: a process chooses its own
/// command line, and one of a megabyte must not be copied into every record and event.
pub const CMDLINE_MAX_BYTES: usize = 4096;
pub const CMDLINE_MAX_ARGS: usize = 256;

/// The command line, cut at [`CMDLINE_MAX_BYTES`] / [`CMDLINE_MAX_ARGS`]; a cut ends with
/// a last argument `…`.
pub fn capped_cmdline(args: &[std::ffi::OsString]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len().min(CMDLINE_MAX_ARGS));
    let mut bytes = 0;
    for arg in args {
        let arg = arg.to_string_lossy();
        if out.len() == CMDLINE_MAX_ARGS || bytes + arg.len() > CMDLINE_MAX_BYTES {
            out.push("…".to_owned());
            break;
        }
        bytes += arg.len();
        out.push(arg.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn long_command_lines_are_cut() {
        let many: Vec<std::ffi::OsString> = (0..10_000).map(|i| format!("arg{i}").into()).collect();
        let c = capped_cmdline(&many);
        assert_eq!(c.len(), CMDLINE_MAX_ARGS + 1);
        assert_eq!(c.last().unwrap(), "…");
        let huge = vec![std::ffi::OsString::from("x".repeat(100_000))];
        assert_eq!(capped_cmdline(&huge), ["…"]);
        let short: Vec<std::ffi::OsString> = vec!["/bin/nc".into(), "-l".into()];
        assert_eq!(capped_cmdline(&short), ["/bin/nc", "-l"]);
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
                        start_time: 0,
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
        let stats = a.attribute(&sockets);
        assert_eq!(stats.new_inodes, 2);
        match a.owner_of(&sockets[1]) {
            Owner::Process(p) => assert_eq!((p.pid, p.start_time), (Pid(20), 1020)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.owner_of(&sockets[2]),
            Owner::Unknown(UnknownOwner::Kernel)
        );
        // Nothing new: no /proc work at all.
        assert_eq!(a.attribute(&sockets), AttributionStats::default());
        assert_eq!(a.details.calls.get(), 1);
        // An inode no process holds is a kernel socket.
        a.attribute(&[sock(100), sock(300)]);
        assert_eq!(a.owner_of(&sock(300)), Owner::Unknown(UnknownOwner::Kernel));
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
        a.attribute(&[sock(100)]);
        assert_eq!(
            a.owner_of(&sock(100)),
            Owner::Unknown(UnknownOwner::Vanished)
        );
        // Looked up again next time rather than cached as unknown.
        a.details.reuse = None;
        a.attribute(&[sock(100)]);
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
        a.attribute(&[sock(100), sock(200)]);
        assert_eq!(a.owner_of(&sock(100)), Owner::Unknown(UnknownOwner::Kernel));
        assert!(matches!(a.owner_of(&sock(200)), Owner::Process(_)));
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(Inode(12345)));
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
    }

    fn entry(pid: u32, uid: u32, fds: u64) -> ProcEntry {
        ProcEntry {
            pid: Pid(pid),
            uid: Some(uid),
            fds,
        }
    }

    #[test]
    fn order_puts_new_pids_first_then_matching_uids() {
        let pids = [
            entry(1, 0, 5),
            entry(50, 1000, 5),
            entry(70, 33, 5),
            entry(90, 0, 5),
        ];
        let previous: HashSet<Pid> = [Pid(1), Pid(50), Pid(70)].into();
        let uids: HashSet<u32> = [33].into();
        assert_eq!(
            attribution_order(&pids, &previous, &uids),
            [Pid(90), Pid(70), Pid(1), Pid(50)]
        );
    }

    #[test]
    fn smaller_fd_tables_first_within_a_group() {
        let pids = [
            entry(10, 0, 20_000),
            entry(20, 0, 4),
            entry(30, 0, 4),
            entry(40, 1, 1),
        ];
        let uids: HashSet<u32> = [0].into();
        assert_eq!(
            attribution_order(&pids, &HashSet::new(), &uids),
            [Pid(20), Pid(30), Pid(10), Pid(40)]
        );
    }

    #[test]
    fn first_look_has_no_new_pids() {
        let pids = [entry(1, 0, 1), entry(2, 7, 1)];
        let uids: HashSet<u32> = [7].into();
        assert_eq!(
            attribution_order(&pids, &HashSet::new(), &uids),
            [Pid(2), Pid(1)]
        );
    }
}
