//! One daemon per state directory and per event socket: a second `portsentinel run`
//! refuses to start, naming the pid of the one that runs, rather than take over its event
//! socket and record every listener twice.
//!
//! The state directory holds `portsentinel.lock`, locked (`flock`) for the daemon's life
//! and holding its pid; the kernel drops the lock when the process ends, however it ends.
//! An event socket that answers a connection belongs to a running daemon too (its pid is
//! the peer's credentials), whatever its state directory.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

/// The lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// The name of the lock file in the state directory.
pub const LOCK_FILE: &str = "portsentinel.lock";

/// Why the daemon may not start.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another daemon holds the lock or serves the socket (its pid when known).
    Running { pid: Option<u32>, what: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refusal::Running { pid, what } = self;
        let who = pid.map_or_else(
            || "another portsentinel run".to_owned(),
            |p| format!("another portsentinel run (pid {p})"),
        );
        write!(
            f,
            "{who} {what}; stop it first (`systemctl stop portsentinel` if it is the service)"
        )
    }
}

/// Takes the state directory's lock. `Ok(Err(why))`: it could not be made (a read-only
/// directory): the daemon runs without it, the caller says so.
pub fn take(state_dir: &Path) -> Result<Result<Lock, String>, Refusal> {
    take_named(state_dir, LOCK_FILE)
}

/// Takes the lock beside the event socket `socket` (`events.sock.lock`): two daemons
/// with different state directories that start at once must not both pass
/// [`check_socket`] and then take the socket from each other.
pub fn take_for_socket(socket: &Path) -> Result<Result<Lock, String>, Refusal> {
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Ok(Err(format!("{} names no file", socket.display())));
    };
    take_named(dir, &format!("{}.lock", name.to_string_lossy()))
}

fn take_named(dir: &Path, name: &str) -> Result<Result<Lock, String>, Refusal> {
    use rustix::fs::{FlockOperation, flock};
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Ok(Err(format!("cannot create {}: {e}", dir.display())));
    }
    let path = dir.join(name);
    // Through the directory as the state files are opened: a directory that is someone
    // else's symlink is not followed.
    let opened = crate::files::Dir::open(dir).and_then(|dir| dir.open_rw(name));
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err(format!(
                "cannot open {}: {}",
                path.display(),
                e.reason()
            )));
        }
    };
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(Refusal::Running {
            pid: text.trim().parse().ok(),
            what: format!("holds {}", path.display()),
        });
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    if let Err(e) = written {
        return Ok(Err(format!("cannot write {}: {e}", path.display())));
    }
    Ok(Ok(Lock { _file: file }))
}

/// Refuses when a daemon answers on the event socket `path`.
pub fn check_socket(path: &Path) -> Result<(), Refusal> {
    let Ok(stream) = std::os::unix::net::UnixStream::connect(path) else {
        return Ok(());
    };
    let pid = rustix::net::sockopt::socket_peercred(&stream)
        .ok()
        .map(|c| c.pid.as_raw_nonzero().get() as u32);
    Err(Refusal::Running {
        pid,
        what: format!("serves the event socket {}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = take(dir.path()).unwrap().unwrap();
        let refused = take(dir.path()).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Running {
                pid: Some(std::process::id()),
                what: format!("holds {}", dir.path().join(LOCK_FILE).display()),
            }
        );
        assert!(refused.to_string().starts_with(&format!(
            "another portsentinel run (pid {}) holds",
            std::process::id()
        )));
        drop(first);
        assert!(take(dir.path()).unwrap().is_ok());
    }

    #[test]
    fn a_state_directory_someone_else_linked_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let state = dir.path().join("state");
        std::os::unix::fs::symlink(&victim, &state).unwrap();
        // A link of another user's (the tests run as root; unprivileged, a link of
        // one's own is followed, as for systemd's StateDirectory= links).
        let nobody = rustix::fs::Uid::from_raw(65534);
        rustix::fs::chownat(
            rustix::fs::CWD,
            &state,
            Some(nobody),
            None,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("the tests run as root");
        let why = take(&state).unwrap().unwrap_err();
        assert!(why.contains("symlink") || why.contains("link"), "{why}");
        assert!(!victim.join(LOCK_FILE).exists());
    }

    #[test]
    fn the_socket_has_a_lock_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/events.sock");
        let first = take_for_socket(&socket).unwrap().unwrap();
        let refused = take_for_socket(&socket).unwrap_err();
        assert!(
            refused.to_string().contains("events.sock.lock"),
            "{refused}"
        );
        drop(first);
        assert!(take_for_socket(&socket).unwrap().is_ok());
    }

    #[test]
    fn a_socket_someone_answers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        assert_eq!(check_socket(&path), Ok(()));
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let refused = check_socket(&path).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{refused}"
        );
    }
}
