//! The event socket: every event as one JSON line to every subscriber.
//!
//! A Unix stream socket under `/run/portsentinel/`, mode 0660 and group-owned by the
//! configured group (events name other users' programs and command lines), so the kernel
//! refuses anyone else at `connect`. Each subscriber has a bounded queue; one that stops
//! reading is dropped when its queue fills, with a log line, and never slows the poll loop.
//! A new subscriber first gets a `hello` line and every alert currently active, taken under
//! the same lock that publishing holds, so no event falls between the replay and the live
//! stream. Subscribers cannot send commands: whatever they write is read and discarded.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::LogHandle;
use super::record::{Record, priority};
use crate::model::EventKind;
use crate::model::wire::{Hello, Message, VERSION, WireEvent};

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

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<str>>,
    peer: String,
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Subscriber>,
    /// alert_id → the line that raised it.
    active: BTreeMap<String, WireEvent>,
    next_id: u64,
}

/// Fan-out of event lines to subscribers.
pub struct Hub {
    inner: Mutex<Inner>,
    capacity: usize,
    log: Option<LogHandle>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(capacity: usize, log: Option<LogHandle>) -> Hub {
        Hub {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            log,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one event to every subscriber, and keeps track of the active alerts.
    ///
    /// A subscriber whose queue is full gets a moment (`patience`) to make room: one that
    /// reads catches up, one that stopped reading is dropped. Returns how long it waited,
    /// so the caller can bound a whole burst; the journal, written before, never waits.
    pub async fn publish(&self, event: WireEvent, patience: Duration) -> Duration {
        let line: Arc<str> = Message::Event(Box::new(event.clone())).to_line().into();
        let congested: Vec<(u64, mpsc::Sender<Arc<str>>, String)> = {
            let mut inner = self.lock();
            match event.kind {
                EventKind::AlertRaised => {
                    inner.active.insert(
                        event.alert_id.clone(),
                        WireEvent {
                            replay: true,
                            ..event
                        },
                    );
                }
                EventKind::AlertCleared => {
                    inner.active.remove(&event.alert_id);
                }
                _ => {}
            }
            let mut congested = Vec::new();
            inner
                .subscribers
                .retain(|s| match s.tx.try_send(line.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        congested.push((s.id, s.tx.clone(), s.peer.clone()));
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            congested
        };
        let started = tokio::time::Instant::now();
        for (id, tx, peer) in congested {
            let until = started + patience;
            if let Ok(Ok(())) = tokio::time::timeout_at(until, tx.send(line.clone())).await {
                continue;
            }
            self.unsubscribe(id);
            if let Some(log) = &self.log {
                log.send(Record::plain(
                    priority::WARNING,
                    None,
                    format!(
                        "event subscriber {peer} dropped: it stopped reading and its buffer of {} lines filled",
                        self.capacity
                    ),
                ));
            }
        }
        started.elapsed()
    }

    /// Registers a subscriber: its queue starts with `hello` and the active alerts.
    fn subscribe(&self, peer: String) -> (u64, mpsc::Receiver<Arc<str>>) {
        let mut inner = self.lock();
        let replay = inner.active.len();
        let (tx, rx) = mpsc::channel(self.capacity + replay + 1);
        let hello = Message::Hello(Hello {
            version: VERSION,
            daemon: format!("portsentinel {}", env!("CARGO_PKG_VERSION")),
            active_alerts: replay,
        });
        let _ = tx.try_send(hello.to_line().into());
        for e in inner.active.values() {
            let _ = tx.try_send(Message::Event(Box::new(e.clone())).to_line().into());
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.subscribers.push(Subscriber { id, tx, peer });
        (id, rx)
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|s| s.id != id);
    }

    /// Lines queued per subscriber before one that does not read is dropped.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    pub fn active_alerts(&self) -> usize {
        self.lock().active.len()
    }
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

/// The gid of a group, from `/etc/group` (via the system's user database).
pub fn group_id(name: &str) -> Option<u32> {
    let groups = sysinfo::Groups::new_with_refreshed_list().ok()?;
    groups.iter().find(|g| g.name() == name).map(|g| **g.id())
}

/// Accepts subscribers until the task is dropped.
pub async fn serve(listener: UnixListener, hub: Arc<Hub>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if let Some(log) = &hub.log {
                    log.send(Record::plain(
                        priority::WARNING,
                        None,
                        format!("event socket accept failed: {e}"),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => format!(
                "(pid {}, uid {})",
                c.pid().map_or_else(|| "?".into(), |p| p.to_string()),
                c.uid()
            ),
            Err(_) => "(unknown peer)".into(),
        };
        let (id, rx) = hub.subscribe(peer);
        let hub = hub.clone();
        tokio::spawn(async move {
            feed(stream, rx).await;
            hub.unsubscribe(id);
        });
    }
}

/// Writes queued lines to one subscriber; discards what it sends; ends when it goes away
/// or when the hub drops it.
async fn feed(stream: UnixStream, mut rx: mpsc::Receiver<Arc<str>>) {
    let (mut reader, mut writer) = stream.into_split();
    let mut sink = [0u8; 512];
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    if writer.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => return, // dropped by the hub
            },
            read = reader.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // no commands: discard
            },
        }
    }
}
