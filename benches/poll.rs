//! In-process benchmarks of the poll path, at 100, 1,000, 10,000 and 50,000 listeners:
//!
//! - `dump`: the bare kernel-filtered sock_diag dump (the floor);
//! - `steady_poll`: a daemon poll when nothing changed (target: ≤ 1.2 × `dump`);
//! - `attribute_new`: finding the owners of N sockets the daemon has never seen;
//! - `owner_sweep`: the owners' work of a poll with nothing new that is also the minute's
//!   sweep of every fd table for the other holders of each socket;
//! - `group`: sockets → listeners (identity grouping);
//! - `diff`: the tracker folding in a snapshot with nothing new;
//! - `classify`: the policy's verdict on every listener.
//!
//! The benchmark runs in a network namespace of its own (it re-executes itself under
//! `unshare --net`, so it needs root) and holds the sockets in child processes, at most
//! 15,000 each (one process may hold 20,000 files here). Run with
//! `cargo bench --bench poll`; `PORTSENTINEL_BENCH_SIZES=100,1000` picks sizes.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
use portsentinel::cmd::run::open_edges;
use portsentinel::config::Layers;
use portsentinel::daemon::Daemon;
use portsentinel::model::{
    Classifier, Listener, Now, Policy, Protocol, Socket, Timing, Tracker, group_listeners,
};
use portsentinel::registry::Registry;
use portsentinel::sink::{Record, RecordSink};
use portsentinel::source::{Attributor, SockDiag, SysinfoDetails, SystemHost};

const HOLD: &str = "PORTSENTINEL_BENCH_HOLD";
const IN_NETNS: &str = "PORTSENTINEL_BENCH_NETNS";
const PER_HOLDER: usize = 15_000;

/// Holder mode: open `count` sockets on `addr` (every tenth one UDP), say so, wait for EOF.
fn hold(spec: &str) -> ! {
    let (addr, count) = spec.split_once('*').expect("ADDR*COUNT");
    let count: usize = count.parse().unwrap();
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let any: SocketAddr = format!("{addr}:0").parse().unwrap();
        let s = if i % 10 == 9 {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap()
        } else {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap()
        };
        s.bind(&any.into()).unwrap();
        if i % 10 != 9 {
            s.listen(8).unwrap();
        }
        sockets.push(s);
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(0);
}

/// `count` listeners held by child processes, on 127.0.0.x addresses.
struct Table {
    holders: Vec<Child>,
}

impl Table {
    fn build(count: usize) -> Table {
        let mut holders = Vec::new();
        let mut left = count;
        let mut host = 1;
        while left > 0 {
            let n = left.min(PER_HOLDER);
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env(HOLD, format!("127.0.0.{host}*{n}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "ready");
            holders.push(child);
            left -= n;
            host += 1;
        }
        Table { holders }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for h in &mut self.holders {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

fn enter_netns() {
    if std::env::var_os(IN_NETNS).is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        return;
    }
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env(IN_NETNS, "1")
        .status()
        .expect("unshare (util-linux); the benchmark needs root");
    std::process::exit(status.code().unwrap_or(1));
}

fn dump() -> Vec<Socket> {
    let mut out = Vec::new();
    SockDiag::open().unwrap().listeners(&mut out).unwrap();
    out
}

fn bench_size(c: &mut Criterion, n: usize) {
    let _table = Table::build(n);
    let sockets = dump();
    assert!(sockets.len() >= n, "{} sockets for {n}", sockets.len());
    let proc_root = Path::new("/proc");

    let mut g = c.benchmark_group("poll");
    g.throughput(Throughput::Elements(n as u64));
    if n >= 10_000 {
        g.sample_size(20).measurement_time(Duration::from_secs(10));
    }

    let mut diag = SockDiag::open().unwrap();
    let mut out = Vec::with_capacity(n + 16);
    g.bench_with_input(BenchmarkId::new("dump", n), &n, |b, _| {
        b.iter(|| {
            out.clear();
            diag.listeners(&mut out).unwrap();
            out.len()
        })
    });

    // What the dump is made of: the TCP and UDP dumps it always had, and what the
    // listeners without a port add (UDP-Lite's dumps, the packet dump, the raw tables).
    g.bench_with_input(BenchmarkId::new("dump_tcp_udp", n), &n, |b, _| {
        b.iter(|| {
            out.clear();
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                for family in [AF_INET, AF_INET6] {
                    diag.dump(family, protocol, &mut out).unwrap();
                }
            }
            out.len()
        })
    });
    g.bench_with_input(BenchmarkId::new("dump_udplite", n), &n, |b, _| {
        b.iter(|| {
            out.clear();
            for family in [AF_INET, AF_INET6] {
                diag.dump(family, Protocol::UdpLite, &mut out).unwrap();
            }
            out.len()
        })
    });
    g.bench_with_input(BenchmarkId::new("dump_packet", n), &n, |b, _| {
        b.iter(|| {
            out.clear();
            portsentinel::source::packet_diag::dump(&mut diag, &mut out).unwrap();
            out.len()
        })
    });
    let procnet = portsentinel::source::ProcNet::new(proc_root);
    g.bench_with_input(BenchmarkId::new("read_raw", n), &n, |b, _| {
        b.iter(|| {
            out.clear();
            procnet.raw(&mut out).unwrap();
            out.len()
        })
    });

    // A real daemon, after its inventory: every further poll finds nothing new. It
    // watches every namespace of the machine, as by default, unless
    // PORTSENTINEL_BENCH_NAMESPACES=host keeps it to the benchmark's own.
    let namespaces =
        std::env::var("PORTSENTINEL_BENCH_NAMESPACES").unwrap_or_else(|_| "all".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nstate_directory = \"{}\"\nlog = \"json\"\nnamespaces = \"{namespaces}\"\n[events]\nsocket = \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // Its records (one per listener at start) would bury criterion's report: they are
    // counted and dropped.
    let layers = Layers {
        file: Some(cfg),
        ..Layers::default()
    };
    let loaded = layers.load().unwrap();
    let edges = open_edges(&loaded.0, Arc::new(Discard), None).unwrap();
    let mut daemon = Daemon::new(layers, loaded, edges);
    daemon.poll(tokio::time::Instant::now(), None);
    g.bench_with_input(BenchmarkId::new("steady_poll", n), &n, |b, _| {
        b.iter(|| daemon.poll(tokio::time::Instant::now(), None))
    });

    g.bench_with_input(BenchmarkId::new("attribute_new", n), &n, |b, _| {
        b.iter_batched(
            || Attributor::new(proc_root, SysinfoDetails::new(proc_root).unwrap()),
            |mut a| a.attribute(&sockets, true),
            BatchSize::PerIteration,
        )
    });

    let mut attributor = Attributor::new(proc_root, SysinfoDetails::new(proc_root).unwrap());
    attributor.attribute(&sockets, true);
    attributor.set_sweep(Duration::ZERO);
    g.bench_with_input(BenchmarkId::new("owner_sweep", n), &n, |b, _| {
        b.iter(|| attributor.attribute(&sockets, false))
    });
    g.bench_with_input(BenchmarkId::new("group", n), &n, |b, _| {
        b.iter(|| group_listeners(&sockets, |s| attributor.owner_of(s), false).len())
    });

    let listeners: Vec<Listener> = group_listeners(&sockets, |s| attributor.owner_of(s), false);
    let registry = Registry::builtin();
    let policy = Policy::default();
    let host = SystemHost::new(
        proc_root,
        portsentinel::source::netns::NamespaceTable::new(proc_root),
    );
    let classifier = Classifier {
        registry: &registry,
        policy: &policy,
        host: &host,
    };
    let classify = |l: &Listener| classifier.classify(l);
    let now = || Now {
        at: Instant::now(),
        wall: SystemTime::now(),
    };
    let mut tracker = Tracker::new(
        Timing {
            restart_grace: Duration::from_secs(3),
            realert_after: Duration::from_secs(600),
        },
        Vec::new(),
    );
    let mut events = Vec::new();
    tracker.update(now(), listeners.clone(), &classify, &mut events);
    g.bench_with_input(BenchmarkId::new("diff", n), &n, |b, _| {
        b.iter_batched(
            || listeners.clone(),
            |ls| {
                events.clear();
                tracker.update(now(), ls, &classify, &mut events);
                events.len()
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_with_input(BenchmarkId::new("classify", n), &n, |b, _| {
        b.iter(|| {
            listeners
                .iter()
                .filter(|l| classify(l).verdict.alert)
                .count()
        })
    });
    g.finish();
}

fn main() {
    if let Ok(spec) = std::env::var(HOLD) {
        hold(&spec);
    }
    enter_netns();
    let sizes: Vec<usize> = std::env::var("PORTSENTINEL_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000,50000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for n in sizes {
        bench_size(&mut c, n);
    }
    c.final_summary();
}

/// Drops the daemon's records: the bench measures the poll, not the writer.
#[derive(Debug)]
struct Discard;

impl RecordSink for Discard {
    fn send(&self, record: Record) {
        std::hint::black_box(record);
    }
}
