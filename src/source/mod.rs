//! The OS edge: which sockets listen, and who owns them.
//!
//! [`KernelSource`] asks netlink sock_diag and falls back to `/proc/net` when netlink is
//! refused (a seccomp filter, a kernel without `inet_diag`), says so once, and goes back to
//! netlink as soon as it answers again. Every path under `/proc` is built from a root that
//! tests can point at a fixture tree.

pub mod bounded;
pub mod cgroup;
pub mod cmdline;
pub mod fds;
pub mod host;
pub mod instant;
pub mod netns;
pub mod owners;
pub mod packet_diag;
pub mod procfs;
pub mod procnet;
pub mod sock_diag;

use std::path::{Path, PathBuf};

use crate::latch::Latch;
use crate::model::Socket;

pub use host::SystemHost;
pub use owners::{Attributor, OwnerSource, ProcessDetails, SysinfoDetails};
pub use procnet::ProcNet;
pub use sock_diag::SockDiag;

/// The default `/proc` root.
pub const PROC: &str = "/proc";

/// Which backend produced a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SockDiag,
    ProcNet,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::SockDiag => "sock_diag",
            Backend::ProcNet => "/proc/net",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no socket source works: sock_diag: {diag}; /proc/net: {procnet}")]
    Both {
        diag: String,
        procnet: procnet::ProcNetError,
    },
    #[error("{0}")]
    SockDiagOnly(String),
}

/// A source of listening sockets. The daemon and `scan` use [`KernelSource`]; tests may
/// script one.
pub trait SocketSource {
    /// Replaces `out`'s content with the listening sockets of this network namespace.
    fn listeners(&mut self, out: &mut Vec<Socket>) -> Result<Backend, SourceError>;

    /// The kernel named a network namespace (a listen in it): one not known yet is
    /// looked for at the next read, not at the next full look.
    fn heard_of_namespace(&mut self, _inode: u64) {}
}

/// Which backends a [`KernelSource`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SourceMode {
    /// sock_diag, falling back to /proc/net while sock_diag fails.
    #[default]
    Auto,
    /// sock_diag only: fail when it fails.
    SockDiag,
    /// /proc/net only (slower, and IPV6_V6ONLY is unknown).
    ProcNet,
}

/// sock_diag first, `/proc/net` when sock_diag fails.
#[derive(Debug)]
pub struct KernelSource {
    diag: Option<SockDiag>,
    procnet: ProcNet,
    /// `raw` and `raw6`, read at every poll beside sock_diag's dumps while there are
    /// raw sockets.
    raw: procnet::RawTables,
    /// How many UDP-Lite and raw sockets there are: none, and their dumps are skipped.
    sockstat: procnet::Sockstat,
    /// sock_diag's failure, said once, not every poll; and its return.
    degraded: Latch,
    mode: SourceMode,
    /// A Unix socket to ask interface names through (`SIOCGIFNAME`), opened at the first
    /// packet socket bound to an interface and kept.
    probe: Option<std::os::fd::OwnedFd>,
}

impl KernelSource {
    pub fn new(proc_root: &Path, mode: SourceMode) -> KernelSource {
        KernelSource {
            diag: None,
            procnet: ProcNet::new(proc_root),
            raw: procnet::RawTables::new(proc_root),
            sockstat: procnet::Sockstat::new(proc_root),
            degraded: Latch::new(
                "sock_diag failed",
                "reading /proc/net instead until it works again",
                "sock_diag works again, back to netlink",
            ),
            mode,
            probe: None,
        }
    }

    fn try_diag(&mut self, out: &mut Vec<Socket>) -> Result<(), String> {
        if self.mode == SourceMode::ProcNet {
            return Err("disabled".into());
        }
        let diag = match &mut self.diag {
            Some(d) => d,
            None => self
                .diag
                .insert(SockDiag::open().map_err(|e| e.to_string())?),
        };
        // No UDP-Lite socket with a port, or no raw socket, in the namespace now (the
        // kernel's counters say so without a walk): none to dump or read.
        let in_use = self.sockstat.in_use();
        let skip: &[crate::model::Protocol] = match in_use {
            Some(c) if c.udplite == 0 => &[crate::model::Protocol::UdpLite],
            _ => &[],
        };
        let dumped = diag.listeners_but(out, skip);
        let missing = diag.unsupported().to_vec();
        dumped.map_err(|e| {
            // A socket that saw an error may hold stale replies: start afresh next time.
            self.diag = None;
            e.to_string()
        })?;
        // Raw sockets: sock_diag has them only with the `raw_diag` module; and the
        // protocols whose diag module this kernel lacks, from their /proc tables.
        if in_use.is_none_or(|c| c.raw > 0) {
            self.raw.read(out).map_err(|e| e.to_string())?;
        }
        self.procnet
            .fill_in(&missing, out)
            .map_err(|e| e.to_string())
    }
}

/// Names the interface each packet socket of this namespace is bound to, and the one each
/// link-local address belongs to (`fe80::1%eth0`).
fn name_interfaces(probe: &mut Option<std::os::fd::OwnedFd>, sockets: &mut [Socket]) {
    let mut name = |index: u32| {
        if probe.is_none() {
            // Any socket will do for SIOCGIFNAME; a Unix one is allowed under the unit.
            *probe = rustix::net::socket(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::DGRAM,
                None,
            )
            .ok();
        }
        probe
            .as_ref()
            .and_then(|fd| rustix::net::netdevice::index_to_name(fd, index).ok())
    };
    for s in sockets.iter_mut() {
        if let Some(p) = s.portless.as_deref_mut()
            && p.ifindex != 0
            && p.interface.is_none()
        {
            p.interface = name(p.ifindex);
        }
        if let Some(z) = s.zone.as_mut()
            && z.name.is_none()
        {
            z.name = name(z.index);
        }
    }
}

impl SocketSource for KernelSource {
    fn listeners(&mut self, out: &mut Vec<Socket>) -> Result<Backend, SourceError> {
        let backend = self.read(out)?;
        name_interfaces(&mut self.probe, out);
        Ok(backend)
    }
}

impl KernelSource {
    fn read(&mut self, out: &mut Vec<Socket>) -> Result<Backend, SourceError> {
        out.clear();
        let diag = match self.try_diag(out) {
            Ok(()) => {
                if let Some(back) = self.degraded.recover() {
                    tracing::warn!("{back}");
                }
                return Ok(Backend::SockDiag);
            }
            Err(e) if self.mode == SourceMode::SockDiag => {
                out.clear();
                return Err(SourceError::SockDiagOnly(e));
            }
            Err(e) => e,
        };
        out.clear();
        if let Some(warning) = self.degraded.fail(diag.clone())
            && self.mode == SourceMode::Auto
        {
            tracing::warn!("{warning}");
        }
        self.procnet
            .listeners(out)
            .map_err(|procnet| SourceError::Both { diag, procnet })?;
        Ok(Backend::ProcNet)
    }
}

/// The inode of this process's network namespace (`/proc/self/ns/net`), which tells one
/// namespace's listeners from another's in events and state.
pub fn netns_inode(proc_root: &Path) -> Option<u64> {
    ns_inode(proc_root, "self", "net")
}

/// The inode of a process's namespace of one kind: `/proc/PID/ns/KIND` reads `KIND:[N]`.
pub fn ns_inode(proc_root: &Path, pid: &str, kind: &str) -> Option<u64> {
    let link = std::fs::read_link(proc_root.join(pid).join("ns").join(kind)).ok()?;
    let s = link.to_str()?;
    s.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The `/proc` root to use: `/proc` unless the caller says otherwise.
pub fn proc_root(custom: Option<&Path>) -> PathBuf {
    custom.map_or_else(|| PathBuf::from(PROC), Path::to_owned)
}
