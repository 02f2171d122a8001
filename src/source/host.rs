//! The host as the policy needs to know it: what an `exe` rule's path is here (device and
//! inode), the host's mount namespace, the kernel's ephemeral port range, the
//! system's user database (NSS, so LDAP and systemd-homed users count), and the time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::netns::NamespaceTable;
use crate::model::instant::ExeSeen;
use crate::model::listener::{FileId, NetnsView};
use crate::model::rules::Host;

/// How long a user-database answer is kept: a rule's user is looked up for each new
/// listener, and a directory server must not be asked that often.
const USER_TTL: Duration = Duration::from_secs(60);

/// The real host, seen from `proc_root` and this process's mount namespace, with the
/// network namespaces the source has found.
#[derive(Debug)]
pub struct SystemHost {
    proc_root: PathBuf,
    mounts: Mutex<Mounts>,
    lookups: Mutex<Lookups>,
    answers: Mutex<Answers>,
    mount_ns: Option<u64>,
    uids: Mutex<HashMap<String, (Option<u32>, Instant)>>,
    namespaces: Arc<NamespaceTable>,
}

impl SystemHost {
    pub fn new(proc_root: &Path, namespaces: Arc<NamespaceTable>) -> SystemHost {
        SystemHost {
            proc_root: proc_root.to_owned(),
            mounts: Mutex::new(Mounts::default()),
            lookups: Mutex::new(Lookups::new("lookup", LOOKUP_WAIT)),
            answers: Mutex::new(Answers::default()),
            // Init's: under the shipped unit (`PrivateMounts=`) no service shares the
            // daemon's own.
            mount_ns: super::ns_inode(proc_root, "1", "mnt")
                .or_else(|| super::ns_inode(proc_root, "self", "mnt")),
            uids: Mutex::new(HashMap::new()),
            namespaces,
        }
    }
}

/// The identity of the file at `path` (following symlinks), if it exists.
///
/// From the attributes the kernel has (`AT_STATX_DONT_SYNC`), never by asking a FUSE or
/// network filesystem: a program run from a FUSE mount whose server does not answer
/// (any user can mount one, and stop its server) would otherwise stop the daemon at the
/// first `stat` of its `/proc/PID/exe`. Device and inode do not change, so a cached
/// answer is the answer.
pub fn file_id(path: &Path) -> Option<FileId> {
    let x = cached_statx(path, rustix::fs::StatxFlags::INO).ok()?;
    Some(FileId {
        dev: libc::makedev(x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
    })
}

/// `statx` of `path`, following symlinks, from the attributes the kernel has.
fn cached_statx(
    path: &Path,
    want: rustix::fs::StatxFlags,
) -> rustix::io::Result<rustix::fs::Statx> {
    use rustix::fs::{AtFlags, CWD, statx};
    statx(CWD, path, AtFlags::STATX_DONT_SYNC, want)
}

/// Whether `path` here is the file the kernel saw a process run, and if so its identity
/// as [`file_id`] gives it: the same inode number and change time, on the kernel's device
/// as `stat` shows the file or as the mount it is on says (`mount_device`, by the mount's
/// id: overlayfs and btrfs show a file on a device of their own, not their superblock's).
/// The change time is what no process can set: inode numbers repeat across an overlay's
/// layers and across btrfs subvolumes (which any user may create), so a look-alike inode
/// number is not enough.
///
/// `x` is the path's attributes, as a [`Lookups`] read found them.
pub fn seen_here(
    x: &rustix::fs::Statx,
    seen: &ExeSeen,
    mount_device: impl FnOnce(u64) -> Option<u64>,
) -> Option<FileId> {
    use rustix::fs::StatxFlags;
    let file = FileId {
        dev: libc::makedev(x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
    };
    let same_inode =
        x.stx_ino == seen.file.ino && (x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec) == seen.changed;
    if !same_inode {
        return None;
    }
    let on_device = file.dev == seen.file.dev
        || StatxFlags::from_bits_retain(x.stx_mask).contains(StatxFlags::MNT_ID)
            && mount_device(x.stx_mnt_id) == Some(seen.file.dev);
    on_device.then_some(file)
}

/// What [`seen_here`] asks of a path.
fn exe_statx(path: &Path) -> rustix::io::Result<rustix::fs::Statx> {
    use rustix::fs::StatxFlags;
    cached_statx(
        path,
        StatxFlags::INO | StatxFlags::CTIME | StatxFlags::MNT_ID,
    )
}

/// How long the daemon waits for a path to be looked up.
const LOOKUP_WAIT: Duration = Duration::from_millis(100);

/// Looks up the paths that events name. The path of a program a process ran is a path in
/// that process's view of the mounts; looked up here it may pass through a FUSE mount
/// whose server never answers (any user can mount one, stop its server, and run a
/// program from under it, or bind it over a path in a mount namespace of their own). So
/// lookups are [`Bounded`](super::bounded::Bounded) reads: such a path is not shown, and
/// the loop goes on.
type Lookups = super::bounded::Bounded<PathBuf, rustix::fs::Statx>;

/// What [`Host::exe_seen`] answered in the last second, by what the kernel saw: a program
/// that binds thousands of times (as any user's can) is looked up once, not once a
/// socket. At most [`ANSWERS_KEPT`] programs.
#[derive(Debug, Default)]
struct Answers {
    since: Option<Instant>,
    by_seen: HashMap<ExeSeen, Option<(String, FileId)>>,
}

const ANSWERS_KEPT: usize = 256;

impl Answers {
    /// The answer for `seen` as of `now`: the one kept, else what `look` finds.
    fn get_or(
        &mut self,
        now: Instant,
        seen: &ExeSeen,
        look: impl FnOnce() -> Option<(String, FileId)>,
    ) -> Option<(String, FileId)> {
        let old = self
            .since
            .is_none_or(|at| now.saturating_duration_since(at) >= MOUNTS_TTL);
        if old || self.by_seen.len() >= ANSWERS_KEPT {
            self.by_seen.clear();
            self.since = Some(now);
        }
        if let Some(answer) = self.by_seen.get(seen) {
            return answer.clone();
        }
        let answer = look();
        self.by_seen.insert(seen.clone(), answer.clone());
        answer
    }
}

/// How long a reading of `mountinfo` answers for the mounts it lists, and how soon it is
/// read again for a mount it does not list: any user's short listeners from an overlay
/// (as many as a poll records) must not make the daemon read a container host's
/// thousands of mounts once each.
const MOUNTS_TTL: Duration = Duration::from_secs(1);
const MOUNTS_RETRY: Duration = Duration::from_millis(100);

/// The devices of the daemon's mounts, by mount id, as `mountinfo` said when last read.
#[derive(Debug, Default)]
struct Mounts {
    read: Option<Instant>,
    devices: HashMap<u64, u64>,
}

impl Mounts {
    /// The device (its superblock's, in `stat`'s encoding) of the mount with this id,
    /// reading `mountinfo` under `proc_root` again when the last reading is old, or is
    /// not new and lacks the mount.
    fn device(&mut self, proc_root: &Path, mount_id: u64) -> Option<u64> {
        let age = self.read.map(|at| at.elapsed());
        let known = self.devices.get(&mount_id).copied();
        let stale = age.is_none_or(|a| a >= MOUNTS_TTL || known.is_none() && a >= MOUNTS_RETRY);
        if !stale {
            return known;
        }
        let text = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
        self.devices = mountinfo_devices(&text);
        self.read = Some(Instant::now());
        self.devices.get(&mount_id).copied()
    }
}

/// Each mount's id (the first field of a `mountinfo` line) and device (`MAJOR:MINOR`, the
/// third), in `stat`'s encoding.
fn mountinfo_devices(text: &str) -> HashMap<u64, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let (major, minor) = fields.nth(1)?.split_once(':')?;
            Some((id, libc::makedev(major.parse().ok()?, minor.parse().ok()?)))
        })
        .collect()
}

/// `net.ipv4.ip_local_port_range` as the file under `proc_dir` (`/proc`, or `/proc/PID` of
/// a process in another network namespace) says, or Linux's default.
pub fn ephemeral_ports(proc_dir: &Path) -> (u16, u16) {
    let text = std::fs::read_to_string(proc_dir.join("sys/net/ipv4/ip_local_port_range"));
    let parsed = text.ok().and_then(|t| {
        let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
        Some((it.next()??, it.next()??))
    });
    parsed.unwrap_or((32768, 60999))
}

/// A user's uid through the system's user database (`getpwnam_r`).
pub fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// A uid's name through the system's user database (`getpwuid_r`).
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

impl Host for SystemHost {
    fn file_id(&self, path: &str) -> Option<FileId> {
        file_id(Path::new(path))
    }

    fn exe_seen(&self, seen: &ExeSeen) -> Option<(String, FileId)> {
        let path = seen.path.as_deref()?;
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.get_or(Instant::now(), seen, || {
            let x = {
                let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
                let found = lookups.read(&[PathBuf::from(path)], |p| exe_statx(p).ok());
                found.into_iter().next()?.1
            };
            let file = seen_here(&x, seen, |id| {
                let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
                mounts.device(&self.proc_root, id)
            })?;
            Some((path.to_owned(), file))
        })
    }

    fn mount_ns(&self) -> Option<u64> {
        self.mount_ns
    }

    fn ephemeral_ports(&self, netns: u64) -> (u16, u16) {
        self.namespaces
            .proc_dir(netns)
            .map_or((32768, 60999), |dir| ephemeral_ports(&dir))
    }

    fn netns(&self, inode: u64) -> NetnsView {
        self.namespaces.view(inode)
    }

    fn uid_of(&self, name: &str) -> Option<u32> {
        let mut cache = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(uid, at)) = cache.get(name)
            && at.elapsed() < USER_TTL
        {
            return uid;
        }
        let uid = uid_of(name);
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(name.to_owned(), (uid, Instant::now()));
        uid
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    /// What the kernel's event says of a file: its device (the superblock's, here the
    /// same as `stat`'s), inode and change time.
    fn seen(path: &Path) -> ExeSeen {
        let m = std::fs::metadata(path).unwrap();
        ExeSeen {
            file: FileId {
                dev: m.dev(),
                ino: m.ino(),
            },
            path: Some(path.to_str().unwrap().to_owned()),
            changed: (m.ctime(), u32::try_from(m.ctime_nsec()).unwrap()),
        }
    }

    #[test]
    fn the_file_the_kernel_saw_is_found_by_inode_change_time_and_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog");
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        let mut mounts = Mounts::default();
        let mut device = |id| mounts.device(Path::new("/proc"), id);
        let s = seen(&path);
        let x = exe_statx(&path).unwrap();
        assert_eq!(seen_here(&x, &s, &mut device), file_id(&path));

        // A look-alike: same device and inode number, another change time (a file on
        // another overlay layer or btrfs subvolume that took the same number).
        let mut other = s.clone();
        other.changed.1 = (other.changed.1 + 1) % 1_000_000_000;
        assert_eq!(seen_here(&x, &other, &mut device), None);

        // On another device, by `stat` and by the mount alike.
        let mut elsewhere = s.clone();
        elsewhere.file.dev = libc::makedev(4095, 4095);
        assert_eq!(seen_here(&x, &elsewhere, &mut device), None);
    }

    #[test]
    fn a_program_is_looked_up_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog");
        std::fs::write(&path, b"").unwrap();
        let s = seen(&path);
        let mut other = s.clone();
        other.file.ino += 1;
        let mut answers = Answers::default();
        let looked = std::cell::Cell::new(0);
        let look = || {
            looked.set(looked.get() + 1);
            Some(("/p".to_owned(), s.file))
        };
        let t0 = Instant::now();
        let first = answers.get_or(t0, &s, look);
        assert_eq!(
            answers.get_or(t0 + Duration::from_millis(900), &s, look),
            first
        );
        assert_eq!(looked.get(), 1);
        answers.get_or(t0 + Duration::from_millis(900), &other, look);
        assert_eq!(looked.get(), 2, "another program is looked up");
        answers.get_or(t0 + MOUNTS_TTL, &s, look);
        assert_eq!(looked.get(), 3, "a second later, again");
    }

    #[test]
    fn a_mounts_device_is_read_from_mountinfo() {
        let text = "\
29 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
412 29 0:41 / /var/lib/docker/overlay2/x/merged rw,relatime - overlay overlay rw,lowerdir=/a
";
        let devices = mountinfo_devices(text);
        assert_eq!(devices.get(&412), Some(&libc::makedev(0, 41)));
        assert_eq!(devices.get(&29), Some(&libc::makedev(254, 1)));
        assert_eq!(devices.get(&30), None);
    }

    #[test]
    fn a_mount_made_since_the_last_reading_is_read_again() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("self")).unwrap();
        let info = root.path().join("self/mountinfo");
        std::fs::write(&info, "29 1 254:1 / / rw - ext4 /dev/vda rw\n").unwrap();
        let mut mounts = Mounts::default();
        assert_eq!(mounts.device(root.path(), 29), Some(libc::makedev(254, 1)));
        std::fs::write(
            &info,
            "29 1 254:1 / / rw - ext4 /dev/vda rw\n500 29 0:77 / /c rw - overlay overlay rw\n",
        )
        .unwrap();
        // Not before a tenth of a second: a flood of lookups reads it ten times a second
        // at most.
        std::thread::sleep(MOUNTS_RETRY);
        assert_eq!(mounts.device(root.path(), 500), Some(libc::makedev(0, 77)));
    }
}
