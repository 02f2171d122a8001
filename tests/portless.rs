//! Listeners `ss -ltun` does not show: UDP-Lite and SCTP listeners, packet sockets and raw
//! sockets, each opened by a real process in a private network namespace.

mod util;

use util::{Daemon, Netns, find, scan_json};

fn daemon(ns: &Netns) -> Daemon {
    let mut d = Daemon::start(ns, &["--log", "json", "--interval", "200ms"]);
    d.wait_for("the start", |l| l.contains("starting"));
    d
}

/// Waits for the record of `event` about the listener of `pid`, parsed.
fn record(d: &mut Daemon, event: &str, pid: u32) -> serde_json::Value {
    let line = d.wait_for(&format!("{event} of pid {pid}"), |l| {
        l.contains(&format!("\"PORTSENTINEL_EVENT\":\"{event}\""))
            && l.contains(&format!("\"LISTENER_PID\":\"{pid}\""))
    });
    serde_json::from_str(&line).unwrap()
}

/// A UDP-Lite socket bound to 870 (unassigned, well-known): alerted, named, shown by scan,
/// cleared when it closes.
#[test]
fn a_udplite_listener_is_alerted_like_any_port_listener() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let l = ns.listen(&["udplite:0.0.0.0:870"]);
    let alert = record(&mut d, "alert-raised", l.pid);
    assert_eq!(alert["LISTEN_PROTO"], "udplite", "{alert}");
    assert_eq!(alert["LISTEN_PORT"], "870", "{alert}");
    assert_eq!(alert["ALERT_SEVERITY"], "high", "{alert}");
    let scan = scan_json(&ns, &[]);
    let e = find(&scan, "udplite", 870)[0];
    assert_eq!(e["process"]["pid"], l.pid, "{e}");
    let pid = l.pid;
    l.stop();
    record(&mut d, "alert-cleared", pid);
}

/// SCTP: a listener on 867 is alerted where the kernel has SCTP; where it has not, the
/// daemon says so once, and everything else is watched as before.
#[test]
fn an_sctp_listener_is_alerted_or_its_absence_said_once() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let has_sctp = std::path::Path::new("/proc/net/sctp").exists()
        || socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::from(libc::IPPROTO_SCTP)),
        )
        .is_ok();
    let tcp = ns.listen(&["tcp:127.0.0.1:867"]);
    record(&mut d, "alert-raised", tcp.pid);
    if has_sctp {
        let l = ns.listen(&["sctp:127.0.0.1:867"]);
        let alert = record(&mut d, "alert-raised", l.pid);
        assert_eq!(alert["LISTEN_PROTO"], "sctp", "{alert}");
        return;
    }
    // More polls, and a listener that opens after them: still one word about SCTP.
    d.lines.drain_for(std::time::Duration::from_secs(1));
    let udp = ns.listen(&["udp:127.0.0.1:868"]);
    record(&mut d, "alert-raised", udp.pid);
    let (status, lines) = d.terminate_lines();
    assert!(status.success());
    let said: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("SCTP listeners are not watched"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("nothing can listen on it"), "{}", said[0]);
}
