//! The fallback source: `/proc/net/{tcp,tcp6,udp,udp6}`, and UDP-Lite, SCTP (`sctp/eps`),
//! raw and packet sockets.
//!
//! Slower than sock_diag (the kernel prints every socket in every state and we filter) and
//! blind to `IPV6_V6ONLY`, so IPv6 sockets from here carry `v6only: None`. It is used only
//! when netlink is refused, and it yields the same listener set.

use std::io::{self, BufRead};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::model::{Filter, Inode, PortLess, Protocol, Socket};

const TCP_LISTEN: u8 = 0x0A;
const TCP_CLOSE: u8 = 0x07;

#[derive(Debug, thiserror::Error)]
pub enum ProcNetError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Parses one `/proc/net/{tcp,udp}[6]` table, appending its listeners to `out`. A TCP
/// table is read up to its first socket that is not listening: the kernel lists every
/// listening socket before any other (an old kernel's half-open `SYN_RECV` requests among
/// them), and the rest, every connection, can be long.
///
/// Returns `(line, message)` for the first line that does not parse.
pub fn parse_reader(
    reader: impl BufRead,
    protocol: Protocol,
    out: &mut Vec<Socket>,
) -> Result<(), (usize, String)> {
    const TCP_SYN_RECV: u8 = 0x03;
    // Every raw socket receives its protocol's packets, in whatever state.
    let wanted = match protocol {
        Protocol::Raw => None,
        p if p.is_datagram() => Some(TCP_CLOSE),
        _ => Some(TCP_LISTEN),
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| (i + 1, e.to_string()))?;
        if i == 0 || line.trim().is_empty() {
            continue; // header
        }
        if protocol == Protocol::Tcp
            && line_state(&line).is_some_and(|s| s != TCP_LISTEN && s != TCP_SYN_RECV)
        {
            break;
        }
        if let Some(socket) = parse_line(&line, protocol, wanted).map_err(|m| (i + 1, m))? {
            out.push(socket);
        }
    }
    Ok(())
}

/// The `st` field of a line, if it has one.
fn line_state(line: &str) -> Option<u8> {
    let st = line.split_ascii_whitespace().nth(3)?;
    u8::from_str_radix(st, 16).ok()
}

fn parse_line(
    line: &str,
    protocol: Protocol,
    wanted: Option<u8>,
) -> Result<Option<Socket>, String> {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    let mut fields = line.split_ascii_whitespace();
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("no {what} field"));
    next("sl")?;
    let local = next("local_address")?;
    next("rem_address")?;
    let state = u8::from_str_radix(next("st")?, 16).map_err(|e| format!("bad state: {e}"))?;
    if wanted.is_some_and(|w| w != state) {
        return Ok(None);
    }
    next("tx_queue:rx_queue")?;
    next("tr:tm->when")?;
    next("retrnsmt")?;
    let uid = next("uid")?
        .parse::<u32>()
        .map_err(|e| format!("bad uid: {e}"))?;
    next("timeout")?;
    let inode = next("inode")?
        .parse::<u64>()
        .map_err(|e| format!("bad inode: {e}"))?;
    let (address, port) = parse_endpoint(local)?;
    Ok(Some(Socket {
        protocol,
        address,
        port,
        v6only: None,
        uid,
        inode: Inode(inode),
        cookie: 0,
        netns: 0,
        // /proc/net does not say which interface a link-local address is on.
        zone: None,
        // /proc/net/raw says neither the device a raw socket is bound to nor its filter.
        portless: (protocol == Protocol::Raw).then(|| {
            Box::new(PortLess {
                socket_type: "raw".to_owned(),
                ifindex: 0,
                interface: None,
                filter: Filter::Unknown,
                fanout: None,
            })
        }),
    }))
}

/// A parser of one `/proc/net` table: its sockets appended, or the line that does not
/// parse and why.
type TableParser =
    fn(io::BufReader<std::fs::File>, &mut Vec<Socket>) -> Result<(), (usize, String)>;

/// Parses `/proc/net/sctp/eps`: `ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS...`, one
/// line an endpoint; the listening ones (`SST` 10) are listeners, at their first local
/// address (the one sctp_diag shows too).
pub fn parse_sctp_eps(reader: impl BufRead, out: &mut Vec<Socket>) -> Result<(), (usize, String)> {
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| (i + 1, e.to_string()))?;
        if i == 0 || line.trim().is_empty() {
            continue; // header
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, _, _, state, _, port, uid, inode, ref addresses @ ..] = f[..] else {
            return Err((i + 1, format!("{} fields, expected at least 8", f.len())));
        };
        // A listening endpoint has an address; were one to show none, it still listens.
        let address = addresses.first().copied().unwrap_or("0.0.0.0");
        let number = |what: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|e| (i + 1, format!("{what} `{v}`: {e}")))
        };
        if number("state", state)? != u64::from(TCP_LISTEN) {
            continue;
        }
        let port = u16::try_from(number("port", port)?).map_err(|e| (i + 1, e.to_string()))?;
        if port == 0 {
            continue;
        }
        let address: IpAddr = address
            .parse()
            .map_err(|e| (i + 1, format!("address `{address}`: {e}")))?;
        out.push(Socket {
            protocol: Protocol::Sctp,
            address,
            port,
            v6only: None,
            uid: u32::try_from(number("uid", uid)?).map_err(|e| (i + 1, e.to_string()))?,
            inode: Inode(number("inode", inode)?),
            cookie: 0,
            netns: 0,
            portless: None,
            zone: None,
        });
    }
    Ok(())
}

/// Parses `/proc/net/packet`: `sk RefCnt Type Proto Iface R Rmem User Inode`, the
/// ethertype in hex. It does not say whether a filter is attached.
pub fn parse_packet(reader: impl BufRead, out: &mut Vec<Socket>) -> Result<(), (usize, String)> {
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| (i + 1, e.to_string()))?;
        if i == 0 || line.trim().is_empty() {
            continue; // header
        }
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let bad = |what: &str| (i + 1, format!("bad {what}"));
        if f.len() < 9 {
            return Err((i + 1, format!("{} fields, not 9", f.len())));
        }
        let socket_type = match f[2] {
            "3" => "raw",
            "2" => "dgram",
            _ => "other",
        };
        let ethertype = u16::from_str_radix(f[3], 16).map_err(|_| bad("Proto"))?;
        let ifindex = f[4].parse::<u32>().map_err(|_| bad("Iface"))?;
        let uid = f[7].parse::<u32>().map_err(|_| bad("User"))?;
        let inode = f[8].parse::<u64>().map_err(|_| bad("Inode"))?;
        out.push(Socket {
            protocol: Protocol::Packet,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: ethertype,
            v6only: None,
            uid,
            inode: Inode(inode),
            cookie: 0,
            netns: 0,
            zone: None,
            portless: Some(Box::new(PortLess {
                socket_type: socket_type.to_owned(),
                ifindex,
                interface: None,
                filter: Filter::Unknown,
                fanout: None,
            })),
        });
    }
    Ok(())
}

/// `0100007F:0016` or a 32-digit IPv6 address; each 32-bit word in host byte order.
fn parse_endpoint(s: &str) -> Result<(IpAddr, u16), String> {
    let (addr, port) = s
        .split_once(':')
        .ok_or_else(|| format!("bad address `{s}`"))?;
    let port = u16::from_str_radix(port, 16).map_err(|_| format!("bad port in `{s}`"))?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).map_err(|_| format!("bad address `{s}`"));
    let address = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?.to_ne_bytes())),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let hex = addr
                    .get(i * 8..i * 8 + 8)
                    .ok_or_else(|| format!("bad address `{s}`"))?;
                chunk.copy_from_slice(&word(hex)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return Err(format!("bad address `{s}`")),
    };
    Ok((address, port))
}

/// Reads the four tables under `PROC/net`.
#[derive(Debug, Clone)]
pub struct ProcNet {
    net_dir: PathBuf,
}

impl ProcNet {
    pub fn new(proc_root: &Path) -> ProcNet {
        ProcNet {
            net_dir: proc_root.join("net"),
        }
    }

    /// Every listener: port listeners, raw and packet sockets.
    pub fn listeners(&self, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        let start = out.len();
        let result = self
            .ports(out)
            .and_then(|()| self.sctp(out))
            .and_then(|()| self.raw(out))
            .and_then(|()| self.packet(out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The listeners of the protocols sock_diag cannot dump on this kernel (their diag
    /// module is missing), from their tables here.
    pub fn fill_in(
        &self,
        protocols: &[Protocol],
        out: &mut Vec<Socket>,
    ) -> Result<(), ProcNetError> {
        for protocol in protocols {
            match protocol {
                Protocol::UdpLite => self.tables(
                    &[
                        ("udplite", Protocol::UdpLite),
                        ("udplite6", Protocol::UdpLite),
                    ],
                    out,
                )?,
                Protocol::Sctp => self.sctp(out)?,
                Protocol::Packet => self.packet(out)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Packet sockets (`packet`); none when the kernel has no `AF_PACKET`.
    fn packet(&self, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        self.optional("packet", parse_packet, out)
    }

    /// Listening SCTP endpoints (`sctp/eps`); none when the kernel has no SCTP.
    fn sctp(&self, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        self.optional("sctp/eps", parse_sctp_eps, out)
    }

    /// A table the kernel has only with its protocol: none, nothing listens on it.
    fn optional(
        &self,
        name: &str,
        parse: TableParser,
        out: &mut Vec<Socket>,
    ) -> Result<(), ProcNetError> {
        let path = self.net_dir.join(name);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(ProcNetError::Read { path, source }),
        };
        parse(io::BufReader::new(f), out).map_err(|(line, message)| ProcNetError::Parse {
            path,
            line,
            message,
        })
    }

    /// Raw sockets (`raw`, `raw6`), which sock_diag gives only with `raw_diag` (and
    /// without their filter either way).
    pub fn raw(&self, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        self.tables(&[("raw", Protocol::Raw), ("raw6", Protocol::Raw)], out)
    }

    fn ports(&self, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        self.tables(
            &[
                ("tcp", Protocol::Tcp),
                ("tcp6", Protocol::Tcp),
                ("udp", Protocol::Udp),
                ("udp6", Protocol::Udp),
                ("udplite", Protocol::UdpLite),
                ("udplite6", Protocol::UdpLite),
            ],
            out,
        )
    }

    fn tables(
        &self,
        files: &[(&str, Protocol)],
        out: &mut Vec<Socket>,
    ) -> Result<(), ProcNetError> {
        let start = out.len();
        for &(file, protocol) in files {
            let path = self.net_dir.join(file);
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                // No IPv6, or no UDP-Lite, in this kernel: nothing listens on it.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && (file.ends_with('6') || file.starts_with("udplite")) =>
                {
                    continue;
                }
                Err(source) => {
                    out.truncate(start);
                    return Err(ProcNetError::Read { path, source });
                }
            };
            if let Err((line, message)) = parse_reader(io::BufReader::new(f), protocol, out) {
                out.truncate(start);
                return Err(ProcNetError::Parse {
                    path,
                    line,
                    message,
                });
            }
        }
        Ok(())
    }
}

/// A `/proc` file kept open and read again from its start: a seq_file read from offset 0
/// is the kernel's table as it is now, and the walk of `/proc` to it, and its open and
/// close, are saved at every read. The file stays bound to the namespace it was opened
/// in, so only the daemon's own namespace's files are kept so (another's would keep that
/// namespace alive).
#[derive(Debug)]
struct KeptFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl KeptFile {
    fn new(path: PathBuf) -> KeptFile {
        KeptFile { path, file: None }
    }

    /// The whole file into `buf`; `Ok(false)` when it does not exist (no IPv6 in this
    /// kernel). After an error the file is opened again at the next read.
    fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        use std::os::unix::fs::FileExt as _;
        buf.clear();
        let f = match &mut self.file {
            Some(f) => f,
            None => match std::fs::File::open(&self.path) {
                Ok(f) => self.file.insert(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            },
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match f.read_at(&mut chunk, buf.len() as u64) {
                Ok(0) => return Ok(true),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.file = None;
                    return Err(e);
                }
            }
        }
    }
}

/// The raw socket tables (`raw`, `raw6`) of the daemon's own namespace, kept open.
pub struct RawTables {
    files: [KeptFile; 2],
    buf: Vec<u8>,
}

impl std::fmt::Debug for RawTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTables")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl RawTables {
    /// `raw` and `raw6` under `PROC/net`.
    pub fn new(proc_root: &Path) -> RawTables {
        let net = proc_root.join("net");
        RawTables {
            files: [
                KeptFile::new(net.join("raw")),
                KeptFile::new(net.join("raw6")),
            ],
            buf: Vec::new(),
        }
    }

    /// Appends the tables' listeners to `out`; on an error, `out` is as it was.
    pub fn read(&mut self, out: &mut Vec<Socket>) -> Result<(), ProcNetError> {
        let start = out.len();
        for (i, file) in self.files.iter_mut().enumerate() {
            let read = match file.read(&mut self.buf) {
                Ok(true) => Ok(()),
                // No IPv6 in this kernel: nothing listens on it.
                Ok(false) if i == 1 => continue,
                Ok(false) => Err(io::Error::from(io::ErrorKind::NotFound)),
                Err(e) => Err(e),
            };
            let path = || file.path.clone();
            if let Err(source) = read {
                out.truncate(start);
                return Err(ProcNetError::Read {
                    path: path(),
                    source,
                });
            }
            if let Err((line, message)) = parse_reader(self.buf.as_slice(), Protocol::Raw, out) {
                out.truncate(start);
                return Err(ProcNetError::Parse {
                    path: path(),
                    line,
                    message,
                });
            }
        }
        Ok(())
    }
}

/// How many sockets of the rarer kinds the daemon's own namespace holds now, from
/// `sockstat` and `sockstat6` (counters the kernel keeps; reading them walks no table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InUse {
    /// UDP-Lite sockets with a port, IPv4 and IPv6.
    pub udplite: u64,
    /// Raw sockets, IPv4 and IPv6.
    pub raw: u64,
}

/// `sockstat` and `sockstat6`, kept open: when they say a namespace has no UDP-Lite or no
/// raw socket, a poll skips the dumps and tables that would find none (the UDP-Lite
/// dumps walk the kernel's whole UDP-Lite table, whatever it holds).
#[derive(Debug)]
pub struct Sockstat {
    files: [KeptFile; 2],
    buf: Vec<u8>,
}

impl Sockstat {
    pub fn new(proc_root: &Path) -> Sockstat {
        let net = proc_root.join("net");
        Sockstat {
            files: [
                KeptFile::new(net.join("sockstat")),
                KeptFile::new(net.join("sockstat6")),
            ],
            buf: Vec::new(),
        }
    }

    /// The counts now; `None` when a file cannot be read or does not say them (then
    /// nothing is skipped).
    pub fn in_use(&mut self) -> Option<InUse> {
        let mut counts = InUse::default();
        for (i, file) in self.files.iter_mut().enumerate() {
            match file.read(&mut self.buf) {
                Ok(true) => {}
                // No IPv6 in this kernel: no IPv6 socket of any kind.
                Ok(false) if i == 1 => continue,
                _ => return None,
            }
            let found = parse_in_use(std::str::from_utf8(&self.buf).ok()?)?;
            counts.udplite += found.udplite;
            counts.raw += found.raw;
        }
        Some(counts)
    }
}

/// `UDPLITE: inuse N` and `RAW: inuse N` (and their `6` forms) of one sockstat file;
/// `None` when either line is missing.
pub fn parse_in_use(text: &str) -> Option<InUse> {
    let count = |names: [&str; 2]| {
        text.lines().find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if !names.contains(&name) {
                return None;
            }
            let mut words = rest.split_whitespace();
            (words.next()? == "inuse").then_some(())?;
            words.next()?.parse::<u64>().ok()
        })
    };
    Some(InUse {
        udplite: count(["UDPLITE", "UDPLITE6"])?,
        raw: count(["RAW", "RAW6"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw table kept open is read again as it is now: a raw socket made after the
    /// first read is in the second.
    #[test]
    fn a_kept_table_is_read_as_it_is_now() {
        let mut kept = RawTables::new(Path::new("/proc"));
        let count = |kept: &mut RawTables| {
            let mut out = Vec::new();
            kept.read(&mut out).unwrap();
            out.len()
        };
        let before = count(&mut kept);
        let Ok(raw) = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::RAW,
            Some(rustix::net::ipproto::ICMP),
        ) else {
            return; // Not allowed to make one here: nothing to see.
        };
        assert_eq!(count(&mut kept), before + 1);
        drop(raw);
        assert_eq!(count(&mut kept), before);
    }

    #[test]
    fn sockstat_counts_are_read_for_both_families() {
        let v4 = "sockets: used 7\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 103\nUDP: inuse 0 mem 0\n\
                  UDPLITE: inuse 2\nRAW: inuse 1\nFRAG: inuse 0 memory 0\n";
        let v6 = "TCP6: inuse 0\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 3\nFRAG6: inuse 0 memory 0\n";
        assert_eq!(parse_in_use(v4), Some(InUse { udplite: 2, raw: 1 }));
        assert_eq!(parse_in_use(v6), Some(InUse { udplite: 0, raw: 3 }));
        assert_eq!(
            parse_in_use("TCP: inuse 1\n"),
            None,
            "a kernel that says neither"
        );
        // The real files: a raw socket made is counted.
        let mut stat = Sockstat::new(Path::new("/proc"));
        let before = stat.in_use().expect("this kernel's sockstat");
        if let Ok(raw) = rustix::net::socket(
            rustix::net::AddressFamily::INET6,
            rustix::net::SocketType::RAW,
            Some(rustix::net::ipproto::ICMPV6),
        ) {
            assert_eq!(stat.in_use().unwrap().raw, before.raw + 1);
            drop(raw);
        }
    }

    /// A kernel whose packet_diag and sctp_diag modules are missing: those listeners come
    /// from their tables; a protocol sock_diag dumps is not read twice.
    #[test]
    fn what_sock_diag_cannot_dump_is_filled_in() {
        let root = tempfile::tempdir().unwrap();
        let net = root.path().join("net");
        std::fs::create_dir_all(net.join("sctp")).unwrap();
        std::fs::write(
            net.join("packet"),
            "sk       RefCnt Type Proto  Iface R Rmem   User   Inode\n\
             0000000000000000 3      3    0003   2     1 0      0      4242\n",
        )
        .unwrap();
        std::fs::write(
            net.join("sctp/eps"),
            " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
             ffff8a1c3b0e4000 ffff8a1c05d9b800 1   10  12    867       0 30321 0.0.0.0 \n",
        )
        .unwrap();
        let mut out = Vec::new();
        let p = ProcNet::new(root.path());
        p.fill_in(&[Protocol::Packet, Protocol::Sctp, Protocol::Tcp], &mut out)
            .unwrap();
        let got: Vec<(Protocol, u64)> = out.iter().map(|s| (s.protocol, s.inode.0)).collect();
        assert_eq!(got, [(Protocol::Packet, 4242), (Protocol::Sctp, 30321)]);
    }

    /// `/proc/net/sctp/eps` as the kernel prints it (`sctp_eps_seq_show`): a listener on
    /// 867 bound to two addresses, a one-to-many socket on [::]:9899, and an endpoint not
    /// listening.
    #[test]
    fn sctp_endpoints() {
        let text = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
            ffff8a1c3b0e4000 ffff8a1c05d9b800 1   10  12    867       0 30321 127.0.0.1 10.0.0.5 \n\
            ffff8a1c3b0e4800 ffff8a1c05d9c000 2   10  30   9899    1000 30322 :: \n\
            ffff8a1c3b0e5000 ffff8a1c05d9c800 1   7   0       0       0 30323 \n";
        let mut out = Vec::new();
        parse_sctp_eps(text.as_bytes(), &mut out).unwrap();
        let got: Vec<(String, u16, u32, u64)> = out
            .iter()
            .map(|s| (s.address.to_string(), s.port, s.uid, s.inode.0))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1".to_owned(), 867, 0, 30321),
                ("::".to_owned(), 9899, 1000, 30322)
            ]
        );
        assert!(out.iter().all(|s| s.protocol == Protocol::Sctp));
        let bad = " ENDPT\nffff 1 2\n";
        assert_eq!(parse_sctp_eps(bad.as_bytes(), &mut out).unwrap_err().0, 2);
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0363 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0016 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000  1000        0 31338 1 0000000000000000 20 4 30 10 -1
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000000000000000000000000000:0363 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   65534        0 777 2 0000000000000000 0
  101: 00000000000000000000000001000000:D431 00000000000000000000000001000000:0009 01 00000000:00000000 00:00000000 00000000     0        0 778 2 0000000000000000 0
";

    /// Real `/proc/net/packet` and `/proc/net/raw` lines: a packet socket for every
    /// ethertype, a raw TCP socket (its "port" is the protocol, in any state); neither file
    /// says whether a filter is attached.
    #[test]
    fn packet_and_raw_sockets() {
        let packet = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode
00000000efd5ab87 3      3    0003   2     1 0      1000   2543643
000000005281bb04 3      2    0800   0     1 0      0      2543644
";
        let mut out = Vec::new();
        parse_packet(packet.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        let p = out[0].portless.as_deref().unwrap();
        assert_eq!(
            (out[0].port, out[0].uid, out[0].inode),
            (3, 1000, Inode(2543643))
        );
        assert_eq!(
            (p.socket_type.as_str(), p.ifindex, p.filter),
            ("raw", 2, Filter::Unknown)
        );
        assert_eq!(out[1].port, 0x0800);
        assert!(parse_packet("h\n0 3 3 zz 0 1 0 0 1\n".as_bytes(), &mut out).is_err());
        let raw = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  33: 00000000:0006 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2543645 2 0000000011ca7a6c 0
";
        let mut out = Vec::new();
        parse_reader(raw.as_bytes(), Protocol::Raw, &mut out).unwrap();
        assert_eq!((out[0].protocol, out[0].port), (Protocol::Raw, 6));
        assert_eq!(out[0].portless.as_deref().unwrap().filter, Filter::Unknown);
    }

    /// Listeners come first; reading stops at the first connection.
    #[test]
    fn tcp_reading_stops_where_no_listener_can_follow() {
        let listen = |n: u32| {
            format!(
                "   {n}: 00000000:{:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {} 1 0 100 0 0 10 0\n",
                800 + n,
                100 + n
            )
        };
        let established = "   9: 0100007F:0016 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000  1000        0 31338 1 0 20 4 30 10 -1\n";
        let mut text = String::from("  sl  local_address rem_address   st\n");
        text += &listen(1);
        // An old kernel's half-open request, listed under its listener.
        text += "   2: 0100007F:0321 0100007F:B000 03 00000000:00000000 00:00000000 00000000     0        0 0 1 0 100 0 0 10 0\n";
        text += &listen(3);
        text += established;
        text += &listen(4); // never there in a real table: shows where reading stopped
        let mut out = Vec::new();
        parse_reader(text.as_bytes(), Protocol::Tcp, &mut out).unwrap();
        assert_eq!(out.iter().map(|s| s.port).collect::<Vec<_>>(), [801, 803]);
    }

    #[test]
    fn keeps_only_listeners() {
        let mut out = Vec::new();
        parse_reader(TCP.as_bytes(), Protocol::Tcp, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].port, 867);
        assert_eq!(out[0].address, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(out[0].inode, Inode(31337));
        assert_eq!(out[0].uid, 0);
    }

    #[test]
    fn udp6_unconnected_only() {
        let mut out = Vec::new();
        parse_reader(UDP6.as_bytes(), Protocol::Udp, &mut out).unwrap();
        assert_eq!(out.len(), 1, "the connected client socket must not appear");
        assert_eq!(out[0].address, "::".parse::<IpAddr>().unwrap());
        assert_eq!((out[0].port, out[0].uid, out[0].v6only), (867, 65534, None));
    }

    #[test]
    fn loopback_v6_word_order() {
        let (a, p) = parse_endpoint("00000000000000000000000001000000:0016").unwrap();
        assert_eq!((a, p), ("::1".parse().unwrap(), 22));
        let (a, _) = parse_endpoint("0100007F:0016").unwrap();
        assert_eq!(a, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let text = "header\n   0: zzzz:0016 00000000:0000 0A\n";
        let mut out = Vec::new();
        let (line, msg) = parse_reader(text.as_bytes(), Protocol::Tcp, &mut out).unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("zzzz") || msg.contains("field"), "{msg}");
    }
}
