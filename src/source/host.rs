//! The host's files as the daemon sees them: what an `exe` rule's path is here, by device
//! and inode, and the daemon's own mount namespace.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::model::listener::FileId;
use crate::model::policy::HostFiles;

/// `stat` on the daemon's own view of the file system.
#[derive(Debug, Clone)]
pub struct SystemFiles {
    mount_ns: Option<u64>,
}

impl SystemFiles {
    pub fn new(proc_root: &Path) -> SystemFiles {
        SystemFiles {
            mount_ns: super::ns_inode(proc_root, "self", "mnt"),
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

impl HostFiles for SystemFiles {
    fn file_id(&self, path: &str) -> Option<FileId> {
        file_id(Path::new(path))
    }

    fn mount_ns(&self) -> Option<u64> {
        self.mount_ns
    }
}
