//! Holds sockets open until its standard input closes: the listener the tests (and you)
//! point portsentinel at.
//!
//! ```text
//! cargo run --example listen -- tcp:0.0.0.0:867 udp:[::]:867:v6only udp-connected:127.0.0.1:9
//! cargo run --example listen -- --name 'evil<b>' tcp:127.0.0.1:0*50
//! ```
//!
//! Specs: `PROTO:ADDR:PORT[:v6only|:dual][*COUNT]`, PROTO one of `tcp`, `udp`,
//! `udp-connected` (a client socket bound to an ephemeral port and connected to ADDR:PORT).
//! Prints `ready pid=PID ports=P1,P2,...` once every socket is open, then waits until its
//! standard input closes, or with `--wait` until it is killed.
//! `--name NAME` sets the process name (`comm`, at most 15 bytes) first.

use std::ffi::CString;
use std::io::Read;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

fn open(spec: &str) -> Result<Vec<Socket>, String> {
    let (spec, count) = match spec.rsplit_once('*') {
        Some((s, n)) => (s, n.parse::<usize>().map_err(|e| format!("{spec}: {e}"))?),
        None => (spec, 1),
    };
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec}: expected PROTO:ADDR:PORT"))?;
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
            if kind == "tcp" {
                s.set_reuse_address(true)
                    .map_err(|e| format!("{spec}: {e}"))?;
            }
            s.bind(&addr.into())
                .map_err(|e| format!("{spec}: bind: {e}"))?;
            if kind == "tcp" {
                s.listen(128).map_err(|e| format!("{spec}: listen: {e}"))?;
            }
        }
        out.push(s);
    }
    Ok(out)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let wait = args.iter().any(|a| a == "--wait");
    args.retain(|a| a != "--wait");
    if let Some(i) = args.iter().position(|a| a == "--name") {
        let name = args.get(i + 1).cloned().unwrap_or_default();
        args.drain(i..(i + 2).min(args.len()));
        let c = CString::new(name).expect("a process name cannot hold NUL");
        rustix::thread::set_name(&c).expect("prctl(PR_SET_NAME)");
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
                .map_or_else(|| "?".into(), |a| a.port().to_string())
        })
        .collect();
    println!("ready pid={} ports={}", std::process::id(), ports.join(","));
    use std::io::Write as _;
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
