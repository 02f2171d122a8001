//! The host as the policy needs to know it: what an `exe` rule's path is here (device and
//! inode), the host's mount namespace, the kernel's ephemeral port range, the
//! system's user database (NSS, so LDAP and systemd-homed users count), and the time.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::netns::NamespaceTable;
use crate::model::listener::{FileId, NetnsView};
use crate::model::rules::Host;

/// How long a user-database answer is kept: a rule's user is looked up for each new
/// listener, and a directory server must not be asked that often.
const USER_TTL: Duration = Duration::from_secs(60);

/// The real host, seen from `proc_root` and this process's mount namespace, with the
/// network namespaces the source has found.
#[derive(Debug)]
pub struct SystemHost {
    mount_ns: Option<u64>,
    uids: Mutex<HashMap<String, (Option<u32>, Instant)>>,
    namespaces: Arc<NamespaceTable>,
}

impl SystemHost {
    pub fn new(proc_root: &Path, namespaces: Arc<NamespaceTable>) -> SystemHost {
        SystemHost {
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
pub fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
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
