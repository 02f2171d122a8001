//! The event socket against hostile or broken clients, and the daemon's own exposure.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use util::{Daemon, Netns, config_file, scan_json};

fn daemon_with_config(ns: &Netns, config: &str) -> (Daemon, tempfile::TempDir) {
    let (dir, cfg) = config_file(config);
    let mut d = Daemon::start(ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the event socket", |l| l.contains("event socket"));
    (d, dir)
}

/// More than a stalled client can hold: its 1,024 queued lines plus its socket buffer.
const N: usize = 1600;

#[test]
fn the_event_socket_survives_garbage_vanishing_and_stalled_clients() {
    let ns = Netns::new();
    // The default interval: a subscriber gets half of it to make room in a burst. Limits
    // on subscribers high enough for 200 that come and go at once (they hold their place
    // until the daemon has seen them go).
    let (mut d, _cfg) = daemon_with_config(
        &ns,
        "[daemon]\ninterval = \"1s\"\n[events]\nmax_subscribers = 512\nmax_subscribers_per_user = 512\n",
    );
    let path = d.socket();

    // Connects and goes away at once, many times.
    for _ in 0..200 {
        drop(UnixStream::connect(&path).unwrap());
    }
    // Sends garbage (and would-be commands) without end.
    let garbage_path = path.clone();
    let garbage = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&garbage_path).unwrap();
        let junk: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
        for _ in 0..64 {
            if s.write_all(&junk).is_err()
                || s.write_all(b"{\"type\":\"stop\"}\nSHUTDOWN\n").is_err()
            {
                break;
            }
        }
    });
    // Never reads.
    let stalled = UnixStream::connect(&path).unwrap();
    // Reads everything, as an agent does.
    let reader = UnixStream::connect(&path).unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(reader);

    // More events than the stalled client's socket and queue can hold.
    let specs: Vec<String> = (1..=N)
        .map(|i| format!("tcp:127.7.{}.{}:867", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _l = ns.listen(&refs);

    let mut hello = String::new();
    reader.read_line(&mut hello).unwrap();
    if hello.is_empty() {
        d.lines.drain_for(Duration::from_millis(500));
        panic!("no hello: {:#?}", d.lines.seen);
    }
    assert!(
        hello.starts_with("{\"type\":\"hello\",\"version\":1"),
        "{hello}"
    );
    let mut alerts = 0;
    while alerts < N {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("a reading subscriber gets every event");
        if line.is_empty() {
            d.lines.drain_for(Duration::from_millis(500));
            panic!(
                "dropped after {alerts} alerts: {:#?}",
                d.lines
                    .seen
                    .iter()
                    .filter(|l| !l.contains("alert-raised"))
                    .collect::<Vec<_>>()
            );
        }
        alerts += usize::from(line.contains("\"kind\":\"alert-raised\""));
    }
    d.wait_for("the stalled subscriber dropped", |l| {
        l.contains("event subscriber") && l.contains("dropped")
    });
    garbage.join().unwrap();
    // The stalled one was cut off: after what it had buffered, its stream ends.
    let mut rest = Vec::new();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = (&stalled).read_to_end(&mut rest);
    // The daemon still works: a new subscriber is greeted with all the active alerts.
    let mut late = BufReader::new(UnixStream::connect(&path).unwrap());
    let mut hello = String::new();
    late.read_line(&mut hello).unwrap();
    assert!(hello.contains(&format!("\"active_alerts\":{N}")), "{hello}");
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon must keep running"
    );
}

#[test]
fn the_daemon_never_listens_on_the_network() {
    let ns = Netns::new();
    let (d, _cfg) = daemon_with_config(&ns, "[daemon]\ninterval = \"100ms\"\n");
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    std::thread::sleep(Duration::from_millis(500));
    let pid = u64::from(d.child.id());
    let scan = scan_json(&ns, &["--all"]);
    assert!(!scan.is_empty());
    for e in &scan {
        assert!(
            !e["pids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_u64() == Some(pid)),
            "the daemon listens: {e}"
        );
    }
    // And none of its own descriptors is one of the namespace's listening sockets.
    let inodes: Vec<u64> = scan
        .iter()
        .flat_map(|e| {
            e["inodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap())
        })
        .collect();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let link = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        if let Some(inode) =
            portsentinel::source::fds::parse_socket_link(link.as_os_str().as_encoded_bytes())
        {
            assert!(
                !inodes.contains(&inode.0),
                "fd {link:?} is a listening socket"
            );
        }
    }
}

/// A member of the event group opens 2,000 connections and never reads. They are over
/// the per-user limit, so they cost the daemon no descriptors: it still reads /proc, and a
/// new listener on 867 is recorded with its pid and exe (it used to be a "kernel" socket).
#[test]
fn idle_connections_cannot_blind_the_daemon() {
    let ns = Netns::new();
    // gid 100, "users", exists on every Debian system.
    let (mut d, _cfg) = daemon_with_config(
        &ns,
        "[daemon]\ninterval = \"200ms\"\n[events]\ngroup = \"users\"\n",
    );
    let spec = format!("unix:{}*2000", d.socket().display());
    let mut c = ns.command("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--groups=100"])
        .arg(util::listen_bin())
        .arg(&spec);
    let _idle = util::Listen::start(c);
    d.wait_for("the refusals", |l| {
        l.contains("refused") && l.contains("over the limits")
    });
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.child.id()))
        .unwrap()
        .count();
    assert!(fds < 64, "the daemon holds {fds} descriptors");
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    assert!(
        alert.contains(&format!(" LISTENER_PID={} ", l.pid)),
        "{alert}"
    );
    assert!(
        alert.contains(&format!(" LISTENER_EXE={} ", util::listen_bin().display())),
        "{alert}"
    );
    assert!(d.child.try_wait().unwrap().is_none());
}
