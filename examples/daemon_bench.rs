//! Measures a running daemon the way a server owner would: CPU time over a minute at the
//! default interval (with about 250 and with 5,000 listeners, with instant detection on and
//! off), peak memory, detection latency from `bind()` returning to the event record being
//! written (polls alone, and with instant detection), and a flood of 10,000 UDP binds a
//! second: the daemon's CPU, the polls the events asked for, and events lost.
//!
//! Run by `benches/daemon.sh`, which builds it and puts it in a network namespace of its
//! own; by hand: `daemon_bench PORTSENTINEL [--cpu-seconds 60] [--binds 200]`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// `utime + stime` of a process, in clock ticks, and its RSS figures in KiB.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3; utime and stime are fields 14 and 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

struct Daemon {
    child: Child,
    lines: Receiver<(Instant, String)>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(bin: &str, interval: &str, instant: bool) -> Daemon {
        let instant = if instant { "auto" } else { "off" };
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                // Its own namespace only: the machine's, busy with whatever else runs,
                // would be one more namespace to watch (tests/load.rs measures fifty).
                "[daemon]\ninterval = \"{interval}\"\ninstant = \"{instant}\"\nstate_directory = \"{}\"\nnamespaces = \"host\"\n[events]\nsocket = \"\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["run", "--log", "json", "--config"])
            .arg(&cfg)
            .env_remove("JOURNAL_STREAM")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines: rx,
            _dir: dir,
        }
    }

    /// Waits for a record line containing `needle`; returns when it was read.
    fn wait(&self, needle: &str) -> Instant {
        loop {
            let (at, line) = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the daemon went quiet");
            if line.contains(needle) {
                return at;
            }
        }
    }

    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listeners held by this process: `n` TCP sockets on 127.0.0.2, ephemeral ports.
fn hold(n: usize) -> Vec<TcpListener> {
    (0..n)
        .map(|_| TcpListener::bind("127.0.0.2:0").unwrap())
        .collect()
}

fn cpu_run(bin: &str, listeners: usize, seconds: u64, instant: bool) {
    let _held = hold(listeners);
    let d = Daemon::start(bin, "1s", instant);
    d.wait("portsentinel 0.1.0 starting");
    std::thread::sleep(Duration::from_secs(3)); // past the inventory
    let pid = d.child.id();
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let ticks = cpu_ticks(pid) - t0;
    let wall = start.elapsed().as_secs_f64();
    let cpu = ticks as f64 / clk_tck() as f64;
    let pct = cpu / wall * 100.0;
    let instant = if instant { "on" } else { "off" };
    println!(
        "| {listeners} listeners, interval 1s, instant {instant} | {wall:.0} s | {cpu:.2} s | {pct:.3} % | {:.0} s/day | {} KiB | {} KiB | {} KiB | {} KiB |",
        pct / 100.0 * 86_400.0,
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "RssAnon:"),
        status_kib(pid, "RssFile:"),
        status_kib(pid, "VmHWM:")
    );
}

fn latency_run(bin: &str, interval: &str, binds: usize, instant: bool) {
    let d = Daemon::start(bin, interval, instant);
    d.wait("portsentinel 0.1.0 starting");
    std::thread::sleep(Duration::from_secs(1));
    d.drain();
    let period = portsentinel_interval(interval);
    let mut samples = Vec::with_capacity(binds);
    for i in 0..binds {
        // Bind at a pseudo-random phase of the poll cycle.
        let phase = Duration::from_micros(
            (i as u64).wrapping_mul(2_654_435_761) % period.as_micros() as u64,
        );
        std::thread::sleep(phase);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let bound = Instant::now();
        let port = l.local_addr().unwrap().port();
        let seen = d.wait(&format!("\"LISTEN_PORT\":\"{port}\""));
        samples.push(seen.duration_since(bound));
        drop(l);
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let (name, target) = if instant {
        ("on", 20.0)
    } else {
        ("off", period.as_secs_f64() * 1e3 + 50.0)
    };
    println!(
        "| interval {interval}, instant {name} | {binds} | {:.1} ms | {:.1} ms | {:.1} ms | {target:.1} ms |",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

/// A flood: UDP sockets bound to 127.0.0.1 (a port the kernel picks) and closed, `rate`
/// a second for `seconds`, paced in steps of a millisecond. The daemon's CPU over the
/// flood, and what it said of it when stopped: events, the polls they asked for, events
/// lost.
/// A flood of short-lived sockets: UDP binds to ports the kernel picks (a client's
/// pattern), or, with `tcp`, one TCP port listened on and closed again and again (a
/// flapping listener, what anyone can do to flood a journal).
fn flood_run(bin: &str, rate: u64, seconds: u64, tcp: bool) {
    let d = Daemon::start(bin, "1s", true);
    d.wait("portsentinel 0.1.0 starting");
    std::thread::sleep(Duration::from_secs(2));
    d.drain();
    let pid = d.child.id();
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            if tcp {
                drop(std::net::TcpListener::bind("127.0.0.1:4444").unwrap());
            } else {
                drop(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = start.elapsed().as_secs_f64();
    // The daemon's share of the flood: until it has caught up (a second more).
    std::thread::sleep(Duration::from_secs(1));
    let cpu = (cpu_ticks(pid) - t0) as f64 / clk_tck() as f64;
    let total = wall + 1.0;
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let said = loop {
        let (_, line) = d
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon's last record");
        if line.contains("portsentinel stopping") {
            break line;
        }
    };
    let summary = said
        .split("instant detection: ")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("(no summary)")
        .to_owned();
    let what = if tcp {
        "TCP listens and closes of 127.0.0.1:4444"
    } else {
        "UDP binds"
    };
    println!(
        "| {rate} {what}/s for {seconds} s ({sent} sockets) | {:.1} % of one core over {total:.0} s | {summary} |",
        cpu / total * 100.0
    );
}

fn portsentinel_interval(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else {
        Duration::from_secs(s.trim_end_matches('s').parse().unwrap())
    }
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: daemon_bench PORTSENTINEL [--cpu-seconds N] [--binds N] [--floods-only]");
    let seconds = arg("--cpu-seconds", 60);
    let binds = arg("--binds", 200) as usize;
    if std::env::args().any(|a| a == "--floods-only") {
        println!("| flood | daemon CPU | what the daemon counted |");
        println!("|---|---|---|");
        flood_run(&bin, 10_000, 10, false);
        flood_run(&bin, 10_000, 10, true);
        return;
    }
    println!(
        "| daemon | wall | CPU (utime+stime) | of one core | CPU per day | RSS | of it, heap and stacks | of it, mapped files | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    cpu_run(&bin, 250, seconds, false);
    cpu_run(&bin, 250, seconds, true);
    cpu_run(&bin, 5000, seconds, false);
    cpu_run(&bin, 5000, seconds, true);
    println!();
    println!("| detection latency | binds | p50 | p99 | max | target p99 |");
    println!("|---|---|---|---|---|---|");
    latency_run(&bin, "1s", binds, false);
    latency_run(&bin, "100ms", binds, false);
    latency_run(&bin, "1s", binds, true);
    println!();
    println!("| flood | daemon CPU | what the daemon counted |");
    println!("|---|---|---|");
    flood_run(&bin, 10_000, 10, false);
    flood_run(&bin, 10_000, 10, true);
}
