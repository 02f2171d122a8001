//! Holds sockets open until its standard input closes: the listener the tests (and you)
//! point portsentinel at.
//!
//! ```text
//! cargo run --example listen -- tcp:0.0.0.0:867 udp:[::]:867:v6only udp-connected:127.0.0.1:9
//! cargo run --example listen -- --name 'evil<b>' tcp:127.0.0.1:0*50
//! ```
//!
//! Specs: `PROTO:ADDR:PORT[:v6only|:dual][:reuse][*COUNT]` (`:reuse`: `SO_REUSEADDR`, to
//! share a UDP port with another socket that has it), PROTO one of `tcp`, `udp`, `udplite`,
//! `sctp`, `udp-connected` (a client socket bound to an ephemeral port and connected to
//! ADDR:PORT); `packet:all[:filter]` and `raw:tcp[:filter]`, sockets with no port (with a
//! classic BPF filter attached);
//! or `unix:PATH[*COUNT]`, connections to a Unix stream socket that are held and never read
//! (idle subscribers of the daemon's event socket).
//! Prints `ready pid=PID ports=P1,P2,...` once every socket is open, then waits until its
//! standard input closes, or with `--wait` until it is killed.
//! `--name NAME` sets the process name (`comm`, at most 15 bytes) first; `--name-hex HEX`
//! sets it to any bytes (`fffe` is not UTF-8). `--nondumpable` makes the process
//! non-dumpable (its fd links unreadable without `CAP_SYS_PTRACE`).
//!
//! `--for MS` opens each spec in turn, holds it MS milliseconds, closes it, and exits once
//! all have been: short-lived listeners, from a process gone before anyone looks. With
//! `--go` it first prints `ready pid=PID` (no port open yet) and waits for a line on
//! standard input.
//!
//! `--decoy PROGRAM` plays the decoy an attacker sets up: the sockets are handed to PROGRAM
//! (started with them inherited, and `3600` as its argument) and closed here, so PROGRAM
//! is their only holder; `ready` then also says `decoy=PID`. A line `take` on standard
//! input takes them back with `pidfd_getfd` and kills PROGRAM; a line `share` takes them
//! back and leaves PROGRAM holding them too (a decoy kept alive), until standard input
//! closes.

use std::ffi::CString;
use std::io::Read;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

fn open(spec: &str) -> Result<Vec<Socket>, String> {
    let (spec, count) = match spec.rsplit_once('*') {
        Some((s, n)) => (s, n.parse::<usize>().map_err(|e| format!("{spec}: {e}"))?),
        None => (spec, 1),
    };
    if let Some(path) = spec.strip_prefix("unix:") {
        let addr = socket2::SockAddr::unix(path).map_err(|e| format!("{spec}: {e}"))?;
        return (0..count)
            .map(|_| {
                let s = Socket::new(Domain::UNIX, Type::STREAM, None)
                    .map_err(|e| format!("{spec}: socket: {e}"))?;
                s.connect(&addr)
                    .map_err(|e| format!("{spec}: connect: {e}"))?;
                Ok(s)
            })
            .collect();
    }
    if let Some(rest) = spec
        .strip_prefix("packet:")
        .or_else(|| spec.strip_prefix("raw:"))
    {
        return (0..count).map(|_| portless(spec, rest)).collect();
    }
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec}: expected PROTO:ADDR:PORT"))?;
    // `:reuse`: SO_REUSEADDR on a UDP socket, to share its address and port with
    // another socket that has it too.
    let (rest, reuse) = match rest.strip_suffix(":reuse") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (addr, flag) = match rest.rsplit_once(':') {
        Some((a, f)) if f == "v6only" || f == "dual" => (a, Some(f == "v6only")),
        _ => (rest, None),
    };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{spec}: {e}"))?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (ty, proto) = match kind {
            "tcp" => (Type::STREAM, Protocol::TCP),
            "udp" | "udp-connected" => (Type::DGRAM, Protocol::UDP),
            "udplite" => (Type::DGRAM, Protocol::from(libc::IPPROTO_UDPLITE)),
            "sctp" => (Type::STREAM, Protocol::from(libc::IPPROTO_SCTP)),
            other => return Err(format!("{spec}: unknown protocol {other}")),
        };
        let domain = if addr.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s = Socket::new(domain, ty, Some(proto)).map_err(|e| format!("{spec}: socket: {e}"))?;
        if let Some(v6only) = flag {
            s.set_only_v6(v6only)
                .map_err(|e| format!("{spec}: IPV6_V6ONLY: {e}"))?;
        }
        if kind == "udp-connected" {
            s.connect(&addr.into())
                .map_err(|e| format!("{spec}: connect: {e}"))?;
        } else {
            if kind == "tcp" || reuse {
                s.set_reuse_address(true)
                    .map_err(|e| format!("{spec}: {e}"))?;
            }
            s.bind(&addr.into())
                .map_err(|e| format!("{spec}: bind: {e}"))?;
            if kind == "tcp" || kind == "sctp" {
                s.listen(128).map_err(|e| format!("{spec}: listen: {e}"))?;
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// A socket with no port: `packet:all[:filter]` (AF_PACKET, SOCK_RAW, every ethertype) or
/// `raw:tcp[:filter]` (a raw IPv4 socket for TCP); `:filter` attaches a classic BPF
/// program of 4 instructions that passes IPv4 frames (a backdoor's would look for its magic
/// packet).
fn portless(spec: &str, rest: &str) -> Result<Socket, String> {
    let (what, filter) = match rest.split_once(':') {
        Some((w, "filter")) => (w, true),
        Some(_) => {
            return Err(format!(
                "{spec}: expected packet:all[:filter] or raw:tcp[:filter]"
            ));
        }
        None => (rest, false),
    };
    let s = match (spec.starts_with("packet:"), what) {
        (true, "all") => {
            let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
            Socket::new(
                Domain::PACKET,
                Type::RAW,
                Some(Protocol::from(i32::from(eth_p_all))),
            )
        }
        (false, "tcp") => Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)),
        _ => {
            return Err(format!(
                "{spec}: expected packet:all[:filter] or raw:tcp[:filter]"
            ));
        }
    }
    .map_err(|e| format!("{spec}: socket: {e}"))?;
    if filter {
        use socket2::SockFilter;
        let program = [
            SockFilter::new(0x28, 0, 0, 12),          // ldh [12]: the ethertype
            SockFilter::new(0x15, 0, 1, 0x0800),      // jeq #IPv4
            SockFilter::new(0x06, 0, 0, 0x0004_0000), // ret: pass the frame
            SockFilter::new(0x06, 0, 0, 0),           // ret: drop it
        ];
        s.attach_filter(&program)
            .map_err(|e| format!("{spec}: SO_ATTACH_FILTER: {e}"))?;
    }
    Ok(s)
}

/// Removes `--flag` from `args`; true when it was there.
fn flag(args: &mut Vec<String>, name: &str) -> bool {
    let had = args.iter().any(|a| a == name);
    args.retain(|a| a != name);
    had
}

/// Removes `--option VALUE` from `args` and returns the value.
fn option(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    let value = args.get(i + 1).cloned().unwrap_or_default();
    args.drain(i..(i + 2).min(args.len()));
    Some(value)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("--name-hex takes hex digits"))
        .collect()
}

/// Hands the sockets to `program` (inherited, not close-on-exec) and closes them here.
fn hand_to(program: &str, sockets: Vec<Socket>) -> (std::process::Child, Vec<i32>) {
    use std::os::fd::AsRawFd as _;
    let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    for s in &sockets {
        s.set_cloexec(false).expect("clear FD_CLOEXEC");
    }
    let child = std::process::Command::new(program)
        .arg("3600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the decoy");
    drop(sockets);
    (child, fds)
}

/// Takes the sockets back from the decoy, which holds them on.
fn take_back(child: &std::process::Child, fds: &[i32]) -> Vec<std::os::fd::OwnedFd> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pid = Pid::from_raw(child.id() as i32).expect("a child pid");
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).expect("pidfd_open");
    fds.iter()
        .map(|&fd| pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).expect("pidfd_getfd"))
        .collect()
}

/// Thousands of sockets need more than the usual 1,024 descriptors: the soft limit goes
/// up to the hard one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

/// `--for MS`: each spec in turn is opened, held for MS milliseconds and closed; then the
/// process prints `done pid=PID ports=...` and exits at once (a listener that lives
/// between two polls, and a process gone before anyone looks at it).
fn short_lived(specs: &[String], ms: &str) {
    let hold = std::time::Duration::from_millis(ms.parse().expect("--for MS"));
    let mut ports = Vec::new();
    for spec in specs {
        // The port of the socket closed just before may not be free yet: a process that
        // read its `/proc/PID/fd` link at that moment (the daemon naming its owner, or
        // `ss -p`) held the file, and the socket is released when that reader lets go, an
        // instant later. Only that wait is retried, for a second at most.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let sockets = loop {
            match open(spec) {
                Ok(s) => break s,
                Err(e)
                    if e.contains("Address already in use")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => {
                    eprintln!("listen: {e}");
                    std::process::exit(1);
                }
            }
        };
        for s in &sockets {
            let port = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.port());
            ports.push(port.map_or_else(|| "-".into(), |p| p.to_string()));
        }
        std::thread::sleep(hold);
        drop(sockets);
    }
    // The caller may have stopped reading.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stdout(),
        format_args!(
            "done pid={} ports={}\n",
            std::process::id(),
            ports.join(",")
        ),
    );
}

fn main() {
    raise_fd_limit();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let wait = flag(&mut args, "--wait");
    let go = flag(&mut args, "--go");
    if flag(&mut args, "--nondumpable") {
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .expect("prctl(PR_SET_DUMPABLE)");
    }
    let name = option(&mut args, "--name")
        .map(String::into_bytes)
        .or_else(|| option(&mut args, "--name-hex").map(|h| hex(&h)));
    if let Some(name) = name {
        let c = CString::new(name).expect("a process name cannot hold NUL");
        rustix::thread::set_name(&c).expect("prctl(PR_SET_NAME)");
    }
    let decoy = option(&mut args, "--decoy");
    if let Some(ms) = option(&mut args, "--for") {
        if go {
            println!("ready pid={}", std::process::id());
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        return short_lived(&args, &ms);
    }
    let mut sockets = Vec::new();
    for spec in &args {
        match open(spec) {
            Ok(s) => sockets.extend(s),
            Err(e) => {
                eprintln!("listen: {e}");
                std::process::exit(1);
            }
        }
    }
    let ports: Vec<String> = sockets
        .iter()
        .map(|s| {
            s.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or_else(|| "-".into(), |a| a.port().to_string())
        })
        .collect();
    use std::io::Write as _;
    if let Some(program) = decoy {
        let (mut child, fds) = hand_to(&program, sockets);
        println!(
            "ready pid={} ports={} decoy={}",
            std::process::id(),
            ports.join(","),
            child.id()
        );
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _held = take_back(&child, &fds);
        if line.trim() != "share" {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    println!("ready pid={} ports={}", std::process::id(), ports.join(","));
    let _ = std::io::stdout().flush();
    if wait {
        loop {
            std::thread::park();
        }
    }
    // Hold everything until the parent closes our stdin (or kills us).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(sockets);
}
