//! The event socket: where subscribers connect.
//!
//! A Unix stream socket under `/run/portsentinel/`, mode 0660 and group-owned by the
//! configured group (events name other users' programs and command lines), so the kernel
//! refuses anyone else at `connect`. Accepted connections go to the daemon, which adds
//! the alerts active now and hands both to the fan-out task ([`super::fanout`]).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use crate::latch::Latch;

/// Default place of the socket when systemd gives no `$RUNTIME_DIRECTORY`.
pub const DEFAULT_DIR: &str = "/run/portsentinel";
pub const FILE_NAME: &str = "events.sock";

/// The default socket path: `$RUNTIME_DIRECTORY/events.sock` or `/run/portsentinel/events.sock`.
pub fn default_path() -> PathBuf {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    dir.join(FILE_NAME)
}

/// Creates the socket: removes a stale one, binds, sets mode 0660 and the group.
/// Returns the listener and a warning when the group could not be applied.
pub fn bind(path: &Path, group: Option<&str>) -> Result<(UnixListener, Option<String>), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove the old socket {}: {e}",
                path.display()
            ));
        }
    }
    // Bound with a closed mode first, so no one connects before the group is set.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let mut warning = None;
    let mut mode = 0o600;
    if let Some(name) = group {
        match group_id(name) {
            Some(gid) => {
                use std::os::unix::fs::MetadataExt as _;
                let has = std::fs::metadata(path).map(|m| m.gid()).ok();
                // Under the shipped unit the daemon's own group is this group already.
                let given = has == Some(gid)
                    || rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid))).is_ok();
                if given {
                    mode = 0o660;
                } else {
                    warning = Some(format!(
                        "cannot give the event socket to group `{name}` (the daemon is not in it): \
                         only root can subscribe (under systemd, the unit needs Group={name})"
                    ));
                }
            }
            None => {
                warning = Some(format!(
                    "group `{name}` does not exist: only root can subscribe to events \
                     (create it with `systemd-sysusers` and systemd/portsentinel.sysusers, or \
                     `groupadd --system {name}`)"
                ))
            }
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok((listener, warning))
}

/// The gid of a group, through the system's group database (NSS).
pub fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Who connected: from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: Option<u32>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, self.uid) {
            (_, None) => f.write_str("(unknown peer)"),
            (pid, Some(uid)) => {
                let pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
                write!(f, "(pid {pid}, uid {uid})")
            }
        }
    }
}

/// A subscriber that has connected, on its way to the fan-out task with the alerts
/// active when it joined. Its slot is given back when it goes.
#[derive(Debug)]
pub struct Join {
    pub stream: UnixStream,
    pub peer: Peer,
    pub slot: Slot,
}

/// How many subscribers may be connected at once, in all and per uid, and how many are.
#[derive(Debug)]
pub struct Admission {
    total: usize,
    per_user: usize,
    connected: Mutex<(usize, HashMap<u32, usize>)>,
}

/// One admitted subscriber's place, held while it is connected.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    uid: u32,
}

impl Admission {
    pub fn new(total: usize, per_user: usize) -> Arc<Admission> {
        Arc::new(Admission {
            total,
            per_user,
            connected: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a subscriber of `uid`, unless that would pass a limit.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        let mut c = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.1.get(&uid).copied().unwrap_or(0);
        if c.0 >= self.total || mine >= self.per_user {
            return None;
        }
        c.0 += 1;
        c.1.insert(uid, mine + 1);
        Some(Slot {
            admission: Arc::clone(self),
            uid,
        })
    }

    pub fn connected(&self) -> usize {
        self.connected.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.0 = c.0.saturating_sub(1);
        if let Some(n) = c.1.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.uid);
            }
        }
    }
}

/// Connections refused for the limits, said at most once a minute with their count.
#[derive(Debug, Default)]
struct Refusals {
    since_said: u64,
    said_at: Option<tokio::time::Instant>,
}

impl Refusals {
    fn note(&mut self, peer: Peer, admission: &Admission) {
        self.since_said += 1;
        if self
            .said_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        tracing::warn!(
            "event socket: refused {} connection(s) over the limits ({} subscribers, {} per user), \
             the last from {peer}",
            self.since_said,
            admission.total,
            admission.per_user
        );
        self.since_said = 0;
        self.said_at = Some(tokio::time::Instant::now());
    }
}

/// Accepts subscribers and hands each to `join` (the daemon adds the alerts active now),
/// until `join` says the daemon is gone. While the daemon is busy, `join` waits and new
/// connections wait in the listen backlog. A connection over the limits is closed at once.
pub async fn accept<F>(
    listener: UnixListener,
    admission: Arc<Admission>,
    mut join: impl FnMut(Join) -> F,
) where
    F: std::future::Future<Output = bool>,
{
    let mut refusals = Refusals::default();
    let mut failing = Latch::new(
        "event socket: accept failed",
        "retrying",
        "event socket: accepting again",
    );
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if let Some(problem) = failing.fail(e.to_string()) {
                    tracing::warn!("{problem}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(back) = failing.recover() {
            tracing::info!("{back}");
        }
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                pid: c.pid(),
                uid: Some(c.uid()),
            },
            Err(_) => Peer {
                pid: None,
                uid: None,
            },
        };
        let Some(slot) = admission.admit(peer.uid.unwrap_or(u32::MAX)) else {
            refusals.note(peer, &admission);
            continue;
        };
        if !join(Join { stream, peer, slot }).await {
            return;
        }
    }
}
