//! Reading `/proc/*/fd`: which process holds which socket.
//!
//! The expensive part of attribution is reading every process's fd table, so a pass visits
//! each pid at most once and stops as soon as every inode it looks for is found. A link
//! that cannot be read (a non-dumpable process, a process in a user namespace the reader
//! does not own) counts as a refusal, never as "not here": an owner that could not be read
//! must not look like no owner.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags};

use crate::model::{Inode, Pid};

/// What one pass over the fd tables found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FdScan {
    /// Where each inode was found: the process, and the descriptor number it holds it by.
    pub found: HashMap<Inode, (Pid, u32)>,
    /// Some fd table or link could not be read: refused, or out of descriptors or
    /// memory. Whatever was not found may be there.
    pub denied: bool,
    /// Fd tables read in this pass.
    pub pids_read: usize,
}

/// Lists pids and reads their fd tables under a `/proc` root (injectable for tests).
#[derive(Debug)]
pub struct FdScanner {
    root: PathBuf,
    /// The root is the kernel's `/proc` (not a test's tree): its pids are real, and the
    /// kernel may be asked about them.
    real: bool,
    link_buf: Vec<u8>,
}

impl FdScanner {
    pub fn new(proc_root: &Path) -> FdScanner {
        FdScanner {
            root: proc_root.to_owned(),
            real: proc_root == Path::new("/proc"),
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
            self.read_table(Path::new(&path), pid, (wanted, &mut missing), &mut scan);
        }
        scan
    }

    /// Reads on in `sweep`, at most `budget` descriptors (and tables opened), from where
    /// the last step stopped: a sweep of a machine whose processes hold millions of
    /// descriptors (any user may open that many) is spread over as many passes as it
    /// takes, each of bounded time. The table being read stays open between steps, so a
    /// step goes on where the last one stopped, without listing what was read again.
    /// Returns true once every table has been read.
    pub fn sweep_step(&mut self, sweep: &mut Sweep, mut budget: usize) -> bool {
        loop {
            if sweep.table.is_none() {
                let Some(&pid) = sweep.order.get(sweep.next) else {
                    break;
                };
                sweep.next += 1;
                budget = budget.saturating_sub(1);
                // Exited, or not readable: the first-found owner stands.
                let path = self.root.join(pid.0.to_string()).join("fd");
                let Ok(fd_dir) = open_dir(&path) else {
                    continue;
                };
                let Ok(dir) = Dir::read_from(&fd_dir) else {
                    continue;
                };
                sweep.table = Some((pid, fd_dir, dir));
            }
            let Some((pid, fd_dir, dir)) = &mut sweep.table else {
                continue;
            };
            loop {
                if budget == 0 {
                    return false;
                }
                let Some(Ok(entry)) = dir.read() else { break };
                let name = entry.file_name();
                if parse_pid(name).is_none() {
                    continue;
                }
                budget -= 1;
                let inode = match self.socket_inode(fd_dir, name) {
                    Ok(inode) => inode,
                    // Refused once, refused for every descriptor of it.
                    Err(Refused) => break,
                };
                if let Some(inode) = inode
                    && sweep.owners.get(&inode).is_some_and(|owner| owner != pid)
                {
                    let pids = sweep.held.entry(inode).or_default();
                    if !pids.contains(pid) {
                        pids.push(*pid);
                    }
                }
            }
            sweep.table = None;
            sweep.tables += 1;
        }
        for pids in sweep.held.values_mut() {
            pids.sort_unstable();
        }
        true
    }

    /// The fd tables of the other threads of `order`'s processes, for what [`scan`]
    /// did not find: a thread may have a table of its own (`unshare(CLONE_FILES)`), and
    /// a process whose main thread has exited shows an empty `/proc/PID/fd` while its
    /// other threads run on. Found there, a socket is the process's (its pid). Read
    /// only before an owner is called none (kernel or in flight), and only the tables
    /// that are not the process's own (most threads share it: a server of thousands of
    /// threads would otherwise cost thousands of reads of one table).
    ///
    /// [`scan`]: Self::scan
    pub fn scan_threads(&mut self, order: &[Pid], wanted: &HashSet<Inode>) -> FdScan {
        let mut scan = FdScan::default();
        let mut missing = wanted.len();
        for &pid in order {
            if missing == 0 {
                break;
            }
            let leader = pid.0.to_string();
            let Ok(tasks) = std::fs::read_dir(self.root.join(&leader).join("task")) else {
                continue; // exited
            };
            for task in tasks.flatten() {
                if missing == 0 {
                    break;
                }
                let name = task.file_name();
                if name == leader.as_str() {
                    continue;
                }
                let tid = name.to_str().and_then(|n| n.parse().ok());
                if self.real && tid.is_some_and(|tid| Self::shares_fd_table(pid.0, tid)) {
                    continue;
                }
                let fd = task.path().join("fd");
                self.read_table(&fd, pid, (wanted, &mut missing), &mut scan);
            }
        }
        scan
    }

    /// Whether thread `tid` shares its fd table with its process's main thread `pid`
    /// (`kcmp(2)` with `KCMP_FILES`: one system call, where reading the table again costs a
    /// directory and a link per descriptor). `false` when the kernel cannot say (a kernel
    /// without `CONFIG_KCMP`, a refusal, a thread gone): the table is then read. A main thread
    /// that has exited has no table, so its threads' differ.
    fn shares_fd_table(pid: u32, tid: u32) -> bool {
        const KCMP_FILES: libc::c_long = 2;
        let (Ok(pid), Ok(tid)) = (libc::pid_t::try_from(pid), libc::pid_t::try_from(tid)) else {
            return false;
        };
        #[expect(unsafe_code, reason = "kcmp(2) has no wrapper in rustix or libc")]
        // SAFETY: kcmp(KCMP_FILES) takes two pids and a type (the two other arguments are
        // unused and zero); it reads no memory of the caller's and writes none.
        let same = unsafe { libc::syscall(libc::SYS_kcmp, pid, tid, KCMP_FILES, 0_u64, 0_u64) };
        same == 0
    }

    /// Reads one fd table, noting each inode of `wanted` it holds as `pid`'s.
    fn read_table(
        &mut self,
        path: &Path,
        pid: Pid,
        (wanted, missing): (&HashSet<Inode>, &mut usize),
        scan: &mut FdScan,
    ) {
        let fd_dir = match open_dir(path) {
            Ok(fd) => fd,
            Err(e) if gone(&e) => return, // exited, or not a process
            // Refused, or out of descriptors or memory: this table was not read, so
            // no owner found elsewhere may be called "none".
            Err(_) => {
                scan.denied = true;
                return;
            }
        };
        scan.pids_read += 1;
        let Ok(mut dir) = Dir::read_from(&fd_dir) else {
            scan.denied = true;
            return;
        };
        while let Some(entry) = dir.read() {
            let Ok(entry) = entry else {
                // A table read halfway is not a table read.
                scan.denied |= !matches!(
                    entry,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::SRCH)
                );
                return;
            };
            let name = entry.file_name();
            let Some(fd) = parse_pid(name) else {
                continue; // `.` and `..`
            };
            let inode = match self.socket_inode(&fd_dir, name) {
                Ok(Some(inode)) => inode,
                Ok(None) => continue,
                // The kernel checks the reader's right to the process, not to each
                // descriptor: the rest would be refused too (hundreds of failed reads a
                // scan for a process such as init in a container).
                Err(Refused) => {
                    scan.denied = true;
                    return;
                }
            };
            if wanted.contains(&inode) && !scan.found.contains_key(&inode) {
                scan.found.insert(inode, (pid, fd));
                *missing -= 1;
                if *missing == 0 {
                    return;
                }
            }
        }
    }

    /// `socket:[N]` → N for one fd link; `Ok(None)` for anything else or a link that
    /// went away, `Err` when reading it was refused.
    fn socket_inode(&mut self, fd_dir: &OwnedFd, name: &CStr) -> Result<Option<Inode>, Refused> {
        // Socket links are short; a longer target (a file path) is cut off and then
        // fails to parse, which is what we want.
        match rustix::fs::readlinkat_raw(fd_dir, name, &mut self.link_buf[..]) {
            Ok(n) => Ok(parse_socket_link(
                &self.link_buf[..n.min(self.link_buf.len())],
            )),
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => Err(Refused),
            Err(_) => Ok(None),
        }
    }

    /// Whether `pid` is still there (`/proc/PID` exists).
    pub fn is_alive(&self, pid: Pid) -> bool {
        let mut path = [0u8; 128];
        let Some(dir) = pid_path(&mut path, &self.root, pid.0) else {
            return true;
        };
        !matches!(
            rustix::fs::statat(CWD, dir, AtFlags::empty()),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::SRCH)
        )
    }

    /// Whether `pid` still holds `inode` by descriptor `fd`: one link read, no scan.
    pub fn still_holds(&mut self, pid: Pid, fd: u32, inode: Inode) -> Holds {
        let mut path = [0u8; 128];
        let Some(link) = fd_link_path(&mut path, &self.root, pid.0, fd) else {
            return Holds::Unknown;
        };
        match rustix::fs::readlinkat_raw(CWD, link, &mut self.link_buf[..]) {
            Ok(n) => match parse_socket_link(&self.link_buf[..n.min(self.link_buf.len())]) {
                Some(i) if i == inode => Holds::Yes,
                _ => Holds::No,
            },
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => Holds::Unknown,
            Err(_) => Holds::No,
        }
    }
}

/// One sweep of every fd table for the other holders of owned sockets, read a bounded
/// number of descriptors at a time ([`FdScanner::sweep_step`]).
#[derive(Debug, Default)]
pub struct Sweep {
    /// The processes to read, in turn.
    order: Vec<Pid>,
    /// The next of them to open.
    next: usize,
    /// The table being read: its process, and the directory, open where the last step
    /// stopped.
    table: Option<(Pid, OwnedFd, Dir)>,
    /// Each owned socket's owner, as the sweep started.
    owners: HashMap<Inode, Pid>,
    /// The holders found of each socket other than its owner, lowest pid first at the end.
    pub held: HashMap<Inode, Vec<Pid>>,
    /// Fd tables read to their end.
    pub tables: usize,
}

impl Sweep {
    pub fn new(order: Vec<Pid>, owners: HashMap<Inode, Pid>) -> Sweep {
        Sweep {
            order,
            owners,
            ..Sweep::default()
        }
    }
}

/// A link or table that could not be read for lack of permission.
#[derive(Debug, Clone, Copy)]
struct Refused;

/// What one check of a remembered descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    Yes,
    /// The process exited, or that descriptor is now something else.
    No,
    /// Not readable: nothing can be said.
    Unknown,
}

/// `ROOT/PID` as a C string in `buf`, without allocating.
fn pid_path<'b>(buf: &'b mut [u8; 128], root: &Path, pid: u32) -> Option<&'b CStr> {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    cursor.write_all(root.as_os_str().as_bytes()).ok()?;
    write!(cursor, "/{pid}\0").ok()?;
    let n = cursor.position() as usize;
    CStr::from_bytes_with_nul(&buf[..n]).ok()
}

/// `ROOT/PID/fd/FD` as a C string in `buf`, without allocating; `None` when the root is
/// too long for the buffer (then a check cannot be made).
fn fd_link_path<'b>(buf: &'b mut [u8; 128], root: &Path, pid: u32, fd: u32) -> Option<&'b CStr> {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    cursor.write_all(root.as_os_str().as_bytes()).ok()?;
    write!(cursor, "/{pid}/fd/{fd}\0").ok()?;
    let n = cursor.position() as usize;
    CStr::from_bytes_with_nul(&buf[..n]).ok()
}

/// The process or the directory is gone: nothing was hidden from the pass.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::NOENT | rustix::io::Errno::SRCH | rustix::io::Errno::NOTDIR)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread of this process shares its table; another process (a child) does not, and
    /// neither does a pid that cannot exist.
    #[test]
    fn a_thread_shares_its_processs_fd_table_and_a_child_does_not() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let _ = done_rx.recv();
        });
        let live = u32::try_from(rx.recv().unwrap()).unwrap();
        assert!(FdScanner::shares_fd_table(me, live));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        // Beyond the largest pid_max the kernel allows: no such task.
        assert!(!FdScanner::shares_fd_table(me, 4_194_305), "no such thread");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!FdScanner::shares_fd_table(me, child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(Inode(12345)));
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
    }

    #[test]
    fn a_table_that_fails_to_open_is_a_refusal_and_a_gone_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let wanted: HashSet<Inode> = [Inode(7)].into();
        let mut scanner = FdScanner::new(root.path());
        // Gone: no `/proc/10` at all.
        let scan = scanner.scan(&[Pid(10)], &wanted);
        assert!(!scan.denied && scan.found.is_empty());
        // `/proc/11/fd` that cannot be opened for another reason (here a link loop; out
        // of descriptors in the field): the pass is incomplete.
        std::fs::create_dir(root.path().join("11")).unwrap();
        std::os::unix::fs::symlink("fd", root.path().join("11/fd")).unwrap();
        let scan = scanner.scan(&[Pid(11)], &wanted);
        assert!(scan.denied && scan.found.is_empty());
    }

    #[test]
    fn a_sweep_read_a_few_descriptors_at_a_time_finds_what_one_pass_finds() {
        // 10 owns 100 and 200; 20 holds 100 among many other files; 30 holds 200; 40 is gone.
        let root = tempfile::tempdir().unwrap();
        let table = |pid: u32, links: &[&str]| {
            let fd = root.path().join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd).unwrap();
            for (i, l) in links.iter().enumerate() {
                std::os::unix::fs::symlink(l, fd.join(i.to_string())).unwrap();
            }
        };
        table(10, &["socket:[100]", "socket:[200]"]);
        let mut many = vec!["/dev/null"; 7];
        many.push("socket:[100]");
        table(20, &many);
        table(30, &["/dev/null", "socket:[200]", "socket:[300]"]);
        let owners: HashMap<Inode, Pid> = [(Inode(100), Pid(10)), (Inode(200), Pid(10))].into();
        let order = vec![Pid(10), Pid(20), Pid(40), Pid(30)];
        let mut scanner = FdScanner::new(root.path());
        let mut whole = Sweep::new(order.clone(), owners.clone());
        assert!(scanner.sweep_step(&mut whole, usize::MAX));
        let expected: HashMap<Inode, Vec<Pid>> =
            [(Inode(100), vec![Pid(20)]), (Inode(200), vec![Pid(30)])].into();
        assert_eq!(whole.held, expected);
        assert_eq!(whole.tables, 3);
        // Two descriptors or tables a step: 13 descriptors and 4 tables, so nine steps.
        let mut bit = Sweep::new(order, owners);
        let mut steps = 1;
        while !scanner.sweep_step(&mut bit, 2) {
            steps += 1;
            assert!(steps < 20, "never done");
        }
        assert_eq!(steps, 9);
        assert_eq!(bit.held, expected);
        assert_eq!(bit.tables, 3);
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
