//! Reading and writing the daemon's own files without being fooled by what sits at a path.
//!
//! A config, a registry CSV or a state file must be a regular file of a sane size: a FIFO
//! would block the reader until someone writes to it, a device or a huge file would eat
//! time or memory. Each is opened without blocking and checked with `fstat` on the
//! descriptor itself (not the path, which could change in between). The state directory
//! and its files are opened without following symlinks, and the temporary file of an
//! atomic write is created exclusively, so a link planted there cannot make a root daemon
//! write somewhere else.
//!
//! The files that make the policy (the config, its drop-ins, a registry CSV) must also be
//! out of other users' reach, as sudo asks of sudoers: owned by root or by the user who
//! reads them, writable by no one else, in a directory no one else may write to. A rule
//! anyone could add would let anyone allow their own listener.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// The largest config, registry or state file read: far above a real one (a config of
/// 100,000 rules is 9 MB), far below what would hurt.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// Why a file could not be read or written.
#[derive(Debug)]
pub enum FileError {
    /// Something other than a regular file is at the path.
    NotRegular(PathBuf, &'static str),
    TooLarge(PathBuf, u64),
    /// A symlink where none is accepted.
    Symlink(PathBuf),
    /// A file of the policy (or its directory) that another user could change: why.
    Unsafe(PathBuf, String),
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path().display(), self.reason())
    }
}

impl std::error::Error for FileError {}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::NotRegular(p, _)
            | FileError::TooLarge(p, _)
            | FileError::Symlink(p)
            | FileError::Unsafe(p, _)
            | FileError::Io(p, _) => p,
        }
    }

    /// What is wrong, without the path.
    pub fn reason(&self) -> String {
        match self {
            FileError::NotRegular(_, what) => format!("it is {what}, not a regular file"),
            FileError::TooLarge(_, size) => {
                format!(
                    "it is {size} bytes, more than the {} MiB allowed",
                    MAX_FILE >> 20
                )
            }
            FileError::Symlink(_) => {
                "it is a symbolic link someone else made, which is refused here".to_owned()
            }
            FileError::Unsafe(_, why) => format!("refused: {why}"),
            FileError::Io(_, e) => e.to_string(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(_, e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "a FIFO",
        FileType::Directory => "a directory",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Socket => "a socket",
        FileType::Symlink => "a symbolic link",
        _ => "not a file",
    }
}

/// Checks an open descriptor and reads it whole.
fn read_checked(fd: OwnedFd, path: &Path) -> Result<Vec<u8>, FileError> {
    let st = rustix::fs::fstat(&fd).map_err(|e| FileError::Io(path.into(), e.into()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(FileError::NotRegular(path.into(), kind_name(kind)));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > MAX_FILE {
        return Err(FileError::TooLarge(path.into(), size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::fs::File::from(fd)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Io(path.into(), e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(FileError::TooLarge(path.into(), bytes.len() as u64));
    }
    Ok(bytes)
}

fn open_flags(follow: bool) -> OFlags {
    let base = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if follow {
        base
    } else {
        base | OFlags::NOFOLLOW
    }
}

fn open_error(path: &Path, e: Errno) -> FileError {
    match e {
        Errno::LOOP => FileError::Symlink(path.into()),
        e => FileError::Io(path.into(), e.into()),
    }
}

/// Reads a regular file (a config, a registry CSV), following symlinks.
pub fn read_regular(path: &Path) -> Result<Vec<u8>, FileError> {
    let fd = rustix::fs::openat(CWD, path, open_flags(true), Mode::empty())
        .map_err(|e| open_error(path, e))?;
    read_checked(fd, path)
}

/// Reads a file of the policy (a config, a drop-in, a registry CSV): a regular file, as
/// [`read_regular`], that no user but root and the reader could have written, in a
/// directory no one else may change.
pub fn read_trusted(path: &Path) -> Result<Vec<u8>, FileError> {
    let fd = rustix::fs::openat(CWD, path, open_flags(true), Mode::empty())
        .map_err(|e| open_error(path, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FileError::Io(path.into(), e.into()))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
        check_owner(path, &st, "it", false)?;
        // The directory of the path as given, and of the file it leads to (a symlink).
        let mut dirs = vec![parent(path)];
        if let Ok(real) = std::fs::canonicalize(path) {
            dirs.push(parent(&real));
        }
        dirs.dedup();
        for dir in dirs {
            trusted_dir(&dir, true)?;
        }
    }
    read_checked(fd, path)
}

/// Checks that no user but root and the reader may change the directory `dir` (a
/// `config.d/`): what is in it becomes policy. With `sticky_ok`, a directory of root's or
/// the reader's that everyone may write to with the sticky bit (`/tmp`) is accepted:
/// others may add files there, but not replace the one read. (The sticky bit does not
/// bind the directory's owner, so a sticky directory of another user's is refused.)
pub fn trusted_dir(dir: &Path, sticky_ok: bool) -> Result<(), FileError> {
    let st = rustix::fs::stat(dir).map_err(|e| FileError::Io(dir.into(), e.into()))?;
    let sticky = sticky_ok && st.st_mode & 0o1000 != 0;
    check_owner(dir, &st, "the directory", sticky)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Owned by root or the reader, and (unless `others_may_write`) writable by no other user
/// (a group may write only when it is root's or the reader's own).
fn check_owner(
    path: &Path,
    st: &rustix::fs::Stat,
    what: &str,
    others_may_write: bool,
) -> Result<(), FileError> {
    let me = rustix::process::geteuid().as_raw();
    let my_group = rustix::process::getegid().as_raw();
    let mode = st.st_mode & 0o7777;
    let fix = format!("chmod go-w {}", path.display());
    let why = if st.st_uid != 0 && st.st_uid != me {
        format!(
            "{what} belongs to uid {}, neither root nor the user reading it, who could change \
             the policy with it; chown root {}",
            st.st_uid,
            path.display()
        )
    } else if others_may_write {
        return Ok(());
    } else if mode & 0o002 != 0 {
        format!("every user may write to {what} (mode {mode:04o}), and so change the policy; {fix}")
    } else if mode & 0o020 != 0 && st.st_gid != 0 && st.st_gid != my_group {
        format!(
            "group {} may write to {what} (mode {mode:04o}), and so change the policy; {fix}",
            st.st_gid
        )
    } else {
        return Ok(());
    };
    Err(FileError::Unsafe(path.into(), why))
}

/// A directory opened without following a symlink at its last component: the daemon's
/// state directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory. A symlink is followed only when root or the daemon itself
    /// made it (systemd's `StateDirectory=` with `DynamicUser=` is such a link); one that
    /// anyone else planted is refused.
    pub fn open(path: &Path) -> Result<Dir, FileError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let io = |e: Errno| FileError::Io(path.into(), e.into());
        let fd = match rustix::fs::openat(CWD, path, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) if is_symlink(path) => {
                let link = rustix::fs::lstat(path).map_err(io)?;
                let me = rustix::process::geteuid().as_raw();
                if link.st_uid != 0 && link.st_uid != me {
                    return Err(FileError::Symlink(path.into()));
                }
                rustix::fs::openat(CWD, path, flags, Mode::empty()).map_err(io)?
            }
            Err(e) => return Err(io(e)),
        };
        Ok(Dir {
            fd,
            path: path.into(),
        })
    }

    /// Reads `name` in the directory: a regular file, not a symlink.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, FileError> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, open_flags(false), Mode::empty())
            .map_err(|e| open_error(&path, e))?;
        read_checked(fd, &path)
    }

    /// Opens `name` in the directory for reading and writing, creating it if need be:
    /// never through a link.
    pub fn open_rw(&self, name: &str) -> Result<std::fs::File, FileError> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| FileError::Io(self.path.join(name), e.into()))?;
        Ok(std::fs::File::from(fd))
    }

    /// Replaces `name` atomically: a new temporary file (created exclusively, never
    /// through a link), written and synced, renamed over `name`, then the directory
    /// synced so the rename is on disk too.
    pub fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), FileError> {
        let tmp = format!(".{name}.tmp");
        let io = |e: Errno| FileError::Io(self.path.join(&tmp), e.into());
        // A stale temporary (or anything planted there) is removed, not followed.
        match rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io(e)),
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(0o600))
            .map_err(io)?;
        let mut file = std::fs::File::from(fd);
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(FileError::Io(self.path.join(&tmp), e));
        }
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)
            .map_err(|e| FileError::Io(self.path.join(name), e.into()))?;
        rustix::fs::fsync(&self.fd).map_err(|e| FileError::Io(self.path.clone(), e.into()))
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.toml");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let e = read_regular(&fifo).unwrap_err().to_string();
        assert!(
            e.ends_with("config.toml: it is a FIFO, not a regular file"),
            "{e}"
        );
        let e = read_regular(dir.path()).unwrap_err().to_string();
        assert!(
            e.ends_with(": it is a directory, not a regular file"),
            "{e}"
        );
    }

    /// A file of the policy that another user could have written is refused, and so is
    /// one in a directory another user may change; a sticky `/tmp`-like directory is
    /// accepted for a file, never for a `config.d/`.
    #[test]
    fn policy_files_out_of_other_users_reach_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let chmod = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        assert!(read_trusted(&file).is_ok());
        chmod(&file, 0o666);
        let e = read_trusted(&file).unwrap_err().to_string();
        assert!(
            e.contains("refused: every user may write to it (mode 0666)") && e.contains("go-w"),
            "{e}"
        );
        chmod(&file, 0o644);
        chmod(dir.path(), 0o777);
        let e = read_trusted(&file).unwrap_err();
        assert!(
            matches!(&e, FileError::Unsafe(at, _) if at == dir.path()),
            "{e}"
        );
        chmod(dir.path(), 0o1777);
        assert!(read_trusted(&file).is_ok(), "a sticky directory");
        assert!(
            trusted_dir(dir.path(), false).is_err(),
            "not for a config.d"
        );
        chmod(dir.path(), 0o755);
        if rustix::process::geteuid().is_root() {
            let nobody = rustix::fs::Uid::from_raw(65534);
            rustix::fs::chownat(CWD, &file, Some(nobody), None, AtFlags::empty()).unwrap();
            let e = read_trusted(&file).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            // A group other than root's or the reader's may not write to it either.
            let users = rustix::fs::Gid::from_raw(100);
            let root = rustix::fs::Uid::from_raw(0);
            rustix::fs::chownat(CWD, &file, Some(root), Some(users), AtFlags::empty()).unwrap();
            chmod(&file, 0o664);
            let e = read_trusted(&file).unwrap_err().to_string();
            assert!(e.contains("group 100 may write to it"), "{e}");
            // A sticky directory binds every user but its owner: another user's is
            // refused.
            chmod(&file, 0o644);
            chmod(dir.path(), 0o1777);
            assert!(read_trusted(&file).is_ok());
            rustix::fs::chownat(CWD, dir.path(), Some(nobody), None, AtFlags::empty()).unwrap();
            let e = read_trusted(&file).unwrap_err().to_string();
            assert!(e.contains("the directory belongs to uid 65534"), "{e}");
        }
    }

    #[test]
    fn state_files_are_not_followed_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&victim, state.join(".alerts.json.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("alerts.json")).unwrap();
        let d = Dir::open(&state).unwrap();
        assert!(matches!(d.read("alerts.json"), Err(FileError::Symlink(_))));
        d.write_atomically("alerts.json", b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(d.read("alerts.json").unwrap(), b"{}");
        // A link the daemon's own user (or root) made is followed, as systemd makes one
        // for StateDirectory= with DynamicUser=; one another user planted is not.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        assert!(Dir::open(&link).is_ok());
        if rustix::process::geteuid().is_root() {
            let nobody = rustix::fs::Uid::from_raw(65534);
            rustix::fs::chownat(CWD, &link, Some(nobody), None, AtFlags::SYMLINK_NOFOLLOW).unwrap();
            assert!(matches!(Dir::open(&link), Err(FileError::Symlink(_))));
        }
    }
}
