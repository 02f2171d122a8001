//! The daemon's memory across restarts: which listeners it has alerted on.
//!
//! Kept as one small JSON file in the state directory, written atomically (temporary file,
//! fsync, rename). A missing, unreadable or corrupt file, or one from another boot, is a
//! warning and a fresh start, never a failure: the worst case is an alert raised twice.
//! The directory and the file are opened without following symlinks and must be what
//! they claim ([`crate::files`]): a FIFO or a link planted there is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::Dir;
use crate::model::events::AlertedListeners;
use crate::model::{Listener, ListenerKey, Owner};

const FILE_NAME: &str = "alerts.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// `/proc/sys/kernel/random/boot_id`: alerts do not carry over a reboot.
    boot_id: String,
    netns: Option<u64>,
    alerts: Vec<StoredAlert>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredAlert {
    key: ListenerKey,
    listener: Listener,
}

/// Where state lives and what identifies this boot and namespace.
#[derive(Debug, Clone)]
pub struct StateStore {
    pub dir: PathBuf,
    boot_id: String,
    netns: Option<u64>,
}

/// The default state directory: systemd's `$STATE_DIRECTORY`, else `/var/lib/portsentinel`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/portsentinel"))
}

impl StateStore {
    pub fn new(dir: PathBuf, boot_id: String, netns: Option<u64>) -> StateStore {
        StateStore {
            dir,
            boot_id,
            netns,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The alerts a previous run of this boot and namespace raised, or why there are none.
    pub fn load(&self) -> Result<AlertedListeners, String> {
        let path = self.path();
        let read = Dir::open(&self.dir).and_then(|d| d.read(FILE_NAME));
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {e}; starting afresh")),
        };
        let text = String::from_utf8_lossy(&bytes);
        self.parse(&text)
            .map_err(|e| format!("{} is not usable ({e}); starting afresh", path.display()))
    }

    fn parse(&self, text: &str) -> Result<AlertedListeners, String> {
        let state: StateFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if state.version != VERSION {
            return Err(format!("version {} (expected {VERSION})", state.version));
        }
        if state.boot_id != self.boot_id || state.netns != self.netns {
            // Another boot or namespace: its alerts say nothing about this one's listeners.
            return Ok(Vec::new());
        }
        Ok(state
            .alerts
            .into_iter()
            .map(|a| (a.key, a.listener))
            .collect())
    }

    /// Writes the current alerts atomically.
    pub fn save<'a>(
        &self,
        alerts: impl Iterator<Item = (&'a ListenerKey, &'a Listener)>,
    ) -> Result<(), String> {
        let state = StateFile {
            version: VERSION,
            boot_id: self.boot_id.clone(),
            netns: self.netns,
            alerts: alerts
                .map(|(k, l)| StoredAlert {
                    key: k.clone(),
                    listener: slim(l),
                })
                .collect(),
        };
        let json = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
        Dir::open(&self.dir)
            .and_then(|d| d.write_atomically(FILE_NAME, &json))
            .map_err(|e| {
                format!(
                    "cannot save state in {}: {}",
                    self.dir.display(),
                    e.reason()
                )
            })
    }
}

/// What a restart needs of a listener: everything but the command line, which can be
/// long and says nothing the key and exe do not.
fn slim(l: &Listener) -> Listener {
    let mut l = l.clone();
    if let Owner::Process(p) = &mut l.owner
        && !p.cmdline.is_empty()
    {
        std::sync::Arc::make_mut(p).cmdline = Vec::new();
    }
    l
}

/// This boot's id, or an empty string where the kernel does not say.
pub fn boot_id(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Inode, Protocol, UnknownOwner};

    fn listener() -> Listener {
        Listener {
            protocol: Protocol::Udp,
            address: "::".parse().unwrap(),
            port: 867,
            v6only: Some(false),
            uid: 0,
            inodes: vec![Inode(9)],
            pids: vec![],
            netns: 0,
            owner: Owner::Unknown(UnknownOwner::Kernel),
            portless: None,
            zone: None,
        }
    }

    #[test]
    fn round_trip_and_boot_scoping() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().into(), "boot-a".into(), Some(1));
        assert!(
            store.load().unwrap().is_empty(),
            "no file: nothing restored"
        );
        let l = listener();
        let key = ListenerKey::of(&l);
        store.save([(&key, &l)].into_iter()).unwrap();
        assert_eq!(store.load().unwrap(), vec![(key, l)]);
        let other_boot = StateStore::new(dir.path().into(), "boot-b".into(), Some(1));
        assert!(other_boot.load().unwrap().is_empty());
    }

    #[test]
    fn corrupt_state_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let store = StateStore::new(dir.path().into(), "b".into(), None);
        let e = store.load().unwrap_err();
        assert!(e.contains("starting afresh"), "{e}");
    }

    #[test]
    fn unwritable_directory_is_an_error_not_a_panic() {
        let store = StateStore::new("/nonexistent/dir".into(), "b".into(), None);
        let l = listener();
        let key = ListenerKey::of(&l);
        let e = store.save([(&key, &l)].into_iter()).unwrap_err();
        assert!(e.contains("cannot save state in /nonexistent/dir"), "{e}");
    }
}
