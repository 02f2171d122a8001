//! Builds a socket table for benchmarks (benches/compare.sh) and holds it until its
//! standard input closes.
//!
//! ```text
//! cargo run --release --example socket_table -- --listeners 5000 --port-base 10000
//! cargo run --release --example socket_table -- --connections 5000 --addr 127.0.0.1
//! ```
//!
//! Options (all optional):
//!
//! - `--listeners N` (0): N listening sockets on `ADDR`, ports `P`..`P+N-1`. Every
//!   `100/U`-th one is an unconnected UDP socket (`--udp-percent U`, default 10), the rest
//!   are TCP listeners, so the default mix is 90% TCP, 10% UDP.
//! - `--connections M` (0): M established TCP connections over `ADDR`, both ends held
//!   here (M client sockets and M accepted server sockets: 2·M descriptors). The clients
//!   connect to this process's first TCP listener; without one (`--listeners 0`), to a
//!   temporary listener on an ephemeral port that is closed once every connection is
//!   accepted, so the process then holds established sockets and no listener at all.
//!   Client ends get `SO_LINGER` 0: closing them sends RST and leaves no TIME_WAIT.
//! - `--port-base P` (10000), `--addr ADDR` (127.0.0.1), `--name NAME` (the process name,
//!   `comm`, at most 15 bytes).
//!
//! Prints `ready pid=PID listeners=N connections=M tcp=T udp=U` once everything is open,
//! then waits until standard input closes (or it is killed).
//!
//! One process may hold at most `RLIMIT_NOFILE` descriptors (often a hard 20,000 here):
//! the helper raises its soft limit to the hard one and refuses up front, naming the
//! numbers, when N + 2·M does not fit. Split large tables across several helpers.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::exit;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Connections set up per round: this many connects, then as many accepts. Well under
/// the listen backlog, so a connect never waits for an accept.
const BATCH: usize = 256;
/// The backlog of the listeners (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

#[derive(Debug)]
struct Args {
    listeners: usize,
    connections: usize,
    port_base: u16,
    addr: IpAddr,
    udp_percent: usize,
    name: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listeners: 0,
        connections: 0,
        port_base: 10000,
        addr: IpAddr::from([127, 0, 0, 1]),
        udp_percent: 10,
        name: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!(
                "usage: socket_table [--listeners N] [--connections M] [--port-base P] \
                 [--addr ADDR] [--udp-percent U] [--name NAME]"
            );
            exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listeners" => args.listeners = value.parse().map_err(|e| bad(&e))?,
            "--connections" => args.connections = value.parse().map_err(|e| bad(&e))?,
            "--port-base" => args.port_base = value.parse().map_err(|e| bad(&e))?,
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--udp-percent" => {
                args.udp_percent = value.parse().map_err(|e| bad(&e))?;
                if args.udp_percent > 100 {
                    return Err(bad(&"at most 100"));
                }
            }
            "--name" => args.name = Some(value),
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    if args.listeners > 0 && usize::from(args.port_base) + args.listeners > 65536 {
        return Err(format!(
            "--port-base {} --listeners {}: ports past 65535",
            args.port_base, args.listeners
        ));
    }
    Ok(args)
}

/// Spreads `percent`% UDP sockets evenly: index i is UDP when ⌊(i+1)·p/100⌋ steps up.
/// Index 0 is TCP unless p = 100, so a helper with one listener has a TCP one.
fn is_udp(i: usize, percent: usize) -> bool {
    (i + 1) * percent / 100 != i * percent / 100
}

fn domain(addr: &SocketAddr) -> Domain {
    if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    }
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(domain(&addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s)
}

fn udp_bound(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(domain(&addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Makes sure `needed` descriptors fit: raises the soft limit up to the hard one.
fn check_fd_limit(needed: u64) -> Result<(), String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum;
    if lim.current.is_some_and(|soft| soft < needed) {
        lim.current = hard;
        setrlimit(Resource::Nofile, lim).map_err(|e| format!("setrlimit(NOFILE): {e}"))?;
    }
    match hard {
        Some(hard) if hard < needed => Err(format!(
            "needs about {needed} descriptors but RLIMIT_NOFILE allows {hard}: \
             split the table across several helper processes"
        )),
        _ => Ok(()),
    }
}

fn run(args: &Args) -> Result<(Vec<Socket>, usize, usize), String> {
    let mut held = Vec::with_capacity(args.listeners + 2 * args.connections);
    let (mut tcp, mut udp) = (0, 0);
    // Index in `held` and address of our first TCP listener.
    let mut first_tcp: Option<(usize, SocketAddr)> = None;
    for i in 0..args.listeners {
        let port = args.port_base + u16::try_from(i).expect("checked against 65535");
        let addr = SocketAddr::new(args.addr, port);
        let s = if is_udp(i, args.udp_percent) {
            udp += 1;
            udp_bound(addr).map_err(|e| format!("udp bind {addr}: {e}"))?
        } else {
            tcp += 1;
            first_tcp.get_or_insert((i, addr));
            tcp_listener(addr).map_err(|e| format!("tcp listen {addr}: {e}"))?
        };
        held.push(s);
    }
    if args.connections == 0 {
        return Ok((held, tcp, udp));
    }

    // The listener the clients connect to: our first TCP one, or a temporary one.
    let temporary = match first_tcp {
        Some(_) => None,
        None => Some(
            tcp_listener(SocketAddr::new(args.addr, 0))
                .map_err(|e| format!("temporary listener on {}: {e}", args.addr))?,
        ),
    };
    let (server, target) = match (&temporary, first_tcp) {
        (None, Some((i, addr))) => (&held[i], addr),
        (Some(t), _) => {
            let addr = t
                .local_addr()
                .map_err(|e| format!("temporary listener: {e}"))?
                .as_socket()
                .ok_or("temporary listener: not an inet socket")?;
            (t, addr)
        }
        (None, None) => unreachable!("a temporary listener exists when no TCP one does"),
    };
    let mut accepted = Vec::with_capacity(args.connections);
    let mut clients = Vec::with_capacity(args.connections);
    let mut left = args.connections;
    while left > 0 {
        let n = left.min(BATCH);
        for _ in 0..n {
            let c = Socket::new(domain(&target), Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| format!("socket: {e}"))?;
            c.set_linger(Some(Duration::ZERO))
                .map_err(|e| format!("SO_LINGER: {e}"))?;
            c.connect(&target.into()).map_err(|e| {
                format!(
                    "connect to {target} after {} connection(s): {e}",
                    clients.len()
                )
            })?;
            clients.push(c);
        }
        for _ in 0..n {
            let (s, _) = server
                .accept()
                .map_err(|e| format!("accept on {target}: {e}"))?;
            accepted.push(s);
        }
        left -= n;
    }
    // Closing the temporary listener leaves the accepted connections established.
    drop(temporary);
    held.extend(clients);
    held.extend(accepted);
    Ok((held, tcp, udp))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("socket_table: {e}");
            exit(2);
        }
    };
    if let Some(name) = &args.name {
        let c = CString::new(name.as_str()).expect("a process name cannot hold NUL");
        rustix::thread::set_name(&c).expect("prctl(PR_SET_NAME)");
    }
    // stdio, the temporary listener, and a little slack.
    let needed = (args.listeners + 2 * args.connections) as u64 + 16;
    let result = check_fd_limit(needed).and_then(|()| run(&args));
    let (held, tcp, udp) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("socket_table: {e}");
            exit(1);
        }
    };
    println!(
        "ready pid={} listeners={} connections={} tcp={tcp} udp={udp}",
        std::process::id(),
        args.listeners,
        args.connections
    );
    let _ = std::io::stdout().flush();
    // Hold everything until the parent closes our stdin (or kills us).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}
