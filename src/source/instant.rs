//! The kernel edge of instant detection: loads `bpf/instant.bpf.o` (built from the C
//! source beside it, see `tools/build-bpf`) with aya, a loader in pure Rust, so building
//! the daemon needs no clang, libbpf or kernel headers; attaches it; and reads its ring
//! buffer.
//!
//! - TCP: the BTF tracepoint `inet_sock_set_state` (`CAP_BPF` + `CAP_PERFMON`, and a
//!   kernel with BTF).
//! - UDP and UDP-Lite: cgroup socket hooks on the root of the cgroup v2 tree (binds,
//!   connects and closes of every process in it; these also need `CAP_NET_ADMIN`).
//!
//! Either part may be refused; the daemon says which, once, and polls as before.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData, RingBuf};
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::model::instant::{self, KernelEvent};

/// The program, as `tools/build-bpf` built it (8-byte aligned, as ELF parsing needs).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/instant.bpf.o");

/// Records read from the ring buffer in one turn of the loop; more wait for the next.
pub const DRAIN_MAX: usize = 4096;

/// The loaded program, its ring buffer and its count of lost events.
pub struct KernelProbe {
    ring: RingBuf<MapData>,
    lost: Array<MapData, u64>,
    /// Keeps the programs attached: dropping it detaches them.
    _ebpf: Ebpf,
    /// Why UDP binds are not watched, when only the TCP part could attach.
    pub udp_refused: Option<String>,
}

impl std::fmt::Debug for KernelProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelProbe")
            .field("udp_refused", &self.udp_refused)
            .finish_non_exhaustive()
    }
}

/// Words for an error of the loader: a refusal for want of privilege says which.
fn refusal(what: &str, e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if text.contains("Operation not permitted") || text.contains("os error 1)") {
        format!("{what}: not permitted (needs CAP_BPF and CAP_PERFMON, and CAP_NET_ADMIN for UDP)")
    } else {
        // The verifier's log can run to pages: its last lines say why.
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
        format!("{what}: {tail}")
    }
}

impl KernelProbe {
    /// Loads and attaches the program. `cgroup2` is the root of the cgroup v2 tree (from
    /// [`cgroup2_root`]). The error says why nothing could be attached.
    ///
    /// `pidns` is the inode of the daemon's PID namespace: the program reports pids as
    /// the daemon sees them (0 for a process outside it).
    pub fn open(cgroup2: Option<&Path>, pidns: u32) -> Result<KernelProbe, String> {
        let btf = Btf::from_sys_fs()
            .map_err(|e| format!("the kernel has no BTF (/sys/kernel/btf/vmlinux): {e}"))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("PIDNS_INUM", &pidns, true)
            .load(OBJECT)
            .map_err(|e| refusal("loading the eBPF object", &e))?;
        let tp: &mut BtfTracePoint = program(&mut ebpf, "inet_sock_set_state")?;
        tp.load("inet_sock_set_state", &btf)
            .map_err(|e| refusal("the TCP listen tracepoint", &e))?;
        tp.attach()
            .map_err(|e| refusal("attaching the TCP listen tracepoint", &e))?;
        let udp_refused = match cgroup2 {
            None => Some("no cgroup v2 hierarchy is mounted".to_owned()),
            Some(root) => attach_udp(&mut ebpf, root).err(),
        };
        let ring = ebpf
            .take_map("EVENTS")
            .ok_or("the eBPF object has no EVENTS map")?;
        let ring = RingBuf::try_from(ring).map_err(|e| refusal("the ring buffer", &e))?;
        let lost = ebpf
            .take_map("LOST")
            .ok_or("the eBPF object has no LOST map")?;
        let lost = Array::try_from(lost).map_err(|e| refusal("the lost-event count", &e))?;
        Ok(KernelProbe {
            ring,
            lost,
            _ebpf: ebpf,
            udp_refused,
        })
    }

    /// Appends what the ring buffer holds (at most [`DRAIN_MAX`]) to `out`; true when
    /// more may be waiting. A record this daemon cannot read is skipped.
    pub fn drain(&mut self, out: &mut Vec<KernelEvent>) -> bool {
        for _ in 0..DRAIN_MAX {
            let Some(item) = self.ring.next() else {
                return false;
            };
            out.extend(instant::parse(&item));
        }
        true
    }

    /// Events the kernel could not put in the ring buffer since the program was loaded.
    pub fn lost(&self) -> u64 {
        self.lost.get(&0, 0).unwrap_or(0)
    }
}

impl AsRawFd for KernelProbe {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl AsFd for KernelProbe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("the eBPF object has no program {name}"))?;
    p.try_into().map_err(|e| refusal(name, &e))
}

/// The UDP hooks on the cgroup v2 root: they see every process below it, which is every
/// process where cgroup v2 is the only hierarchy (and under systemd's hybrid layout too).
fn attach_udp(ebpf: &mut Ebpf, root: &Path) -> Result<(), String> {
    let cgroup = std::fs::File::open(root)
        .map_err(|e| format!("cannot open the cgroup v2 root {}: {e}", root.display()))?;
    for name in ["udp_bound4", "udp_bound6", "udp_released"] {
        let p: &mut CgroupSock = program(ebpf, name)?;
        p.load().map_err(|e| refusal(name, &e))?;
        // A link: other programs on the same hook keep running beside this one.
        p.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| refusal(name, &e))?;
    }
    for name in ["udp_connect4", "udp_connect6"] {
        let p: &mut CgroupSockAddr = program(ebpf, name)?;
        p.load().map_err(|e| refusal(name, &e))?;
        p.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| refusal(name, &e))?;
    }
    Ok(())
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// under systemd's hybrid layout), from `/proc/self/mountinfo`; where the daemon's own
/// mounts lack it (`ip netns exec` mounts a /sys of its own), through pid 1's root.
pub fn cgroup2_root(proc_root: &Path) -> Option<PathBuf> {
    let mounted = |pid: &str| {
        let info = std::fs::read_to_string(proc_root.join(pid).join("mountinfo")).ok()?;
        // The last mount that is still there: a later one may hide an earlier (a fresh
        // /sys mounted over the host's, with the cgroup2 of a cgroup namespace on it).
        cgroup2_in_mountinfo(&info)
            .into_iter()
            .rev()
            .find(|p| pid != "self" || p.is_dir())
    };
    if let Some(own) = mounted("self") {
        return Some(own);
    }
    let init = mounted("1")?;
    let path = proc_root.join("1/root").join(init.strip_prefix("/").ok()?);
    path.is_dir().then_some(path)
}

/// Every cgroup2 mount point, in mount order.
fn cgroup2_in_mountinfo(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            if fs.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            // Field 4 (from 0) is the mount point, with spaces as \040.
            let point = mount.split_whitespace().nth(4)?;
            Some(PathBuf::from(point.replace("\\040", " ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_either_layout() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                      31 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_in_mountinfo(hybrid),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_in_mountinfo(unified),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
        assert!(cgroup2_in_mountinfo("1 2 0:1 / / rw - ext4 /dev/sda rw\n").is_empty());
    }

    #[test]
    fn the_embedded_object_has_the_programs_the_loader_attaches() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the committed object parses");
        for name in [
            "inet_sock_set_state",
            "udp_bound4",
            "udp_bound6",
            "udp_released",
            "udp_connect4",
            "udp_connect6",
        ] {
            assert!(obj.programs.contains_key(name), "{name}");
        }
        for map in ["EVENTS", "LOST", "BOUND", "SCRATCH"] {
            assert!(obj.maps.contains_key(map), "{map}");
        }
    }
}
