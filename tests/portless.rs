//! Listeners `ss -ltun` does not show: UDP-Lite and SCTP listeners, packet sockets and raw
//! sockets, each opened by a real process in a private network namespace.

mod util;

use util::{Daemon, Netns, find, scan_json};

fn daemon(ns: &Netns) -> Daemon {
    let mut d = Daemon::start(ns, &["--log", "json", "--interval", "200ms"]);
    d.wait_for("the start", |l| l.contains("starting"));
    d
}

/// A UDP-Lite socket bound to 870 (unassigned, well-known): alerted, named, shown by scan,
/// cleared when it closes.
#[test]
fn a_udplite_listener_is_alerted_like_any_port_listener() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let l = ns.listen(&["udplite:0.0.0.0:870"]);
    let alert = d.record("alert-raised", l.pid);
    assert_eq!(alert["LISTEN_PROTO"], "udplite", "{alert}");
    assert_eq!(alert["LISTEN_PORT"], "870", "{alert}");
    assert_eq!(alert["ALERT_SEVERITY"], "high", "{alert}");
    let scan = scan_json(&ns, &[]);
    let e = find(&scan, "udplite", 870)[0];
    assert_eq!(e["process"]["pid"], l.pid, "{e}");
    let pid = l.pid;
    l.stop();
    d.record("alert-cleared", pid);
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
    d.record("alert-raised", tcp.pid);
    if has_sctp {
        let l = ns.listen(&["sctp:127.0.0.1:867"]);
        let alert = d.record("alert-raised", l.pid);
        assert_eq!(alert["LISTEN_PROTO"], "sctp", "{alert}");
        return;
    }
    // More polls, and a listener that opens after them: still one word about SCTP.
    d.lines.drain_for(std::time::Duration::from_secs(1));
    let udp = ns.listen(&["udp:127.0.0.1:868"]);
    d.record("alert-raised", udp.pid);
    let (status, lines) = d.terminate_lines();
    assert!(status.success());
    let said: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("SCTP listeners are not watched"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("nothing can listen on it"), "{}", said[0]);
}

/// A BPFDoor-like sniffer: named `kworker/0:1`, an `AF_PACKET` raw socket for every
/// frame, a classic BPF filter attached. One high alert naming the real program and the
/// filter's size; `scan` lists it; closing it clears the alert.
#[test]
fn a_packet_sniffer_with_a_filter_is_alerted_high() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let l = ns.listen(&["--name", "kworker/0:1", "packet:all:filter"]);
    let alert = d.record("alert-raised", l.pid);
    assert_eq!(alert["LISTEN_KIND"], "packet", "{alert}");
    assert_eq!(alert["PACKET_PROTOCOL"], "all (0x0003)", "{alert}");
    assert_eq!(alert["FILTER_INSTRUCTIONS"], "4", "{alert}");
    assert_eq!(alert["ALERT_SEVERITY"], "high", "{alert}");
    assert_eq!(alert["LISTENER_COMM"], "kworker/0:1", "{alert}");
    assert_eq!(
        alert["LISTENER_EXE"],
        util::listen_bin().display().to_string(),
        "{alert}"
    );
    assert!(alert.get("LISTEN_PORT").is_none(), "{alert}");
    let message = alert["MESSAGE"].as_str().unwrap();
    assert!(
        message.contains("packet socket (all (0x0003)) on all interfaces, with a filter of 4"),
        "{message}"
    );
    let scan = scan_json(&ns, &[]);
    let e = scan
        .iter()
        .find(|e| e["kind"] == "packet" && e["process"]["pid"] == l.pid)
        .expect("scan lists the packet socket");
    assert_eq!(e["ethertype"], 3, "{e}");
    assert_eq!(e["filter"]["attached"], true, "{e}");
    assert_eq!(e["filter"]["instructions"], 4, "{e}");
    let table = util::stdout(&ns.portsentinel(&["scan"]));
    assert!(table.contains("WITHOUT A PORT"), "{table}");
    assert!(table.contains("kworker/0:1["), "{table}");
    let pid = l.pid;
    l.stop();
    let cleared = d.record("alert-cleared", pid);
    assert_eq!(cleared["LISTEN_KIND"], "packet", "{cleared}");
    // Exactly one alert for it.
    let (_, lines) = d.terminate_lines();
    let alerts = lines
        .iter()
        .filter(|l| {
            l.contains("alert-raised") && l.contains(&format!("\"LISTENER_PID\":\"{pid}\""))
        })
        .count();
    assert_eq!(alerts, 1);
}

/// A raw socket for TCP (it sees every TCP segment to the machine): recorded and judged.
/// Its filter cannot be read from `/proc/net/raw`, so it is judged as a sniffer.
#[test]
fn a_raw_tcp_socket_is_recorded_and_judged() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let l = ns.listen(&["raw:tcp"]);
    let alert = d.record("alert-raised", l.pid);
    assert_eq!(alert["LISTEN_KIND"], "raw", "{alert}");
    assert_eq!(alert["RAW_PROTOCOL"], "tcp (6)", "{alert}");
    assert_eq!(alert["FILTER_INSTRUCTIONS"], "unknown", "{alert}");
    assert_eq!(alert["ALERT_SEVERITY"], "high", "{alert}");
    let scan = scan_json(&ns, &[]);
    let e = scan
        .iter()
        .find(|e| e["kind"] == "raw" && e["process"]["pid"] == l.pid)
        .expect("scan lists the raw socket");
    assert_eq!(e["ip_protocol"], 6, "{e}");
    assert!(e["filter"]["attached"].is_null(), "{e}");
}

/// Debian's real dhclient on a veth: its packet socket is allowed by the built-in rule
/// (matched on its file), and alerted when the built-in rules are off. A program that
/// only calls itself dhclient, with the same kind of socket, is alerted (high).
#[test]
fn dhclient_is_allowed_by_its_file_and_a_namesake_is_not() {
    let dhclient = std::path::Path::new("/usr/sbin/dhclient");
    if !dhclient.exists() {
        panic!("/usr/sbin/dhclient is missing: tests/run-all.sh installs isc-dhcp-client");
    }
    for builtin in [true, false] {
        let ns = Netns::new();
        util::run_ok(
            ns.command("ip")
                .args(["link", "add", "v0", "type", "veth", "peer", "name", "v1"]),
        );
        for dev in ["v0", "v1"] {
            util::run_ok(ns.command("ip").args(["link", "set", dev, "up"]));
        }
        let (_dir, config) = util::config_file(&format!("[policy]\nbuiltin_allow = {builtin}\n"));
        let config = config.display().to_string();
        let mut d = Daemon::start(
            &ns,
            &["--log", "json", "--interval", "200ms", "--config", &config],
        );
        d.wait_for("the start", |l| l.contains("starting"));
        let state = tempfile::tempdir().unwrap();
        let file = |name: &str| state.path().join(name).display().to_string();
        let start = || {
            ns.command(dhclient)
                .args(["-d", "-sf", "/bin/true", "-pf", &file("pid")])
                .args(["-lf", &file("leases"), "v0"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut child = start();
        let line = d.wait_for("dhclient's packet socket", |l| {
            l.contains("\"LISTEN_KIND\":\"packet\"") && l.contains("/usr/sbin/dhclient")
        });
        let _ = child.kill();
        let _ = child.wait();
        if builtin {
            // Started again within the grace window: one restart, as for a port.
            child = start();
            d.wait_for("dhclient's packet socket restarted", |l| {
                l.contains("\"LISTEN_KIND\":\"packet\"")
                    && l.contains("\"PORTSENTINEL_EVENT\":\"listener-restarted\"")
            });
            let _ = child.kill();
            let _ = child.wait();
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["PACKET_INTERFACE"], "v0", "{v}");
        if builtin {
            assert_eq!(v["PORTSENTINEL_EVENT"], "listener-opened", "{v}");
            let reason = v["VERDICT_REASON"].as_str().unwrap();
            assert!(
                reason.contains("built-in rule \"dhclient (DHCP client)\""),
                "{reason}"
            );
            // The namesake.
            let fake = ns.listen(&["--name", "dhclient", "packet:all:filter"]);
            let alert = d.record("alert-raised", fake.pid);
            assert_eq!(alert["LISTENER_COMM"], "dhclient", "{alert}");
            assert_eq!(alert["ALERT_SEVERITY"], "high", "{alert}");
        } else {
            assert_eq!(v["PORTSENTINEL_EVENT"], "alert-raised", "{v}");
            assert_eq!(v["ALERT_SEVERITY"], "high", "{v}");
        }
    }
}

/// Debian's real tcpdump: started by root, it opens its socket as root and then runs as
/// user `tcpdump`. The built-in rule allows it by the socket's maker and records it as
/// worth a look (`VERDICT_SEVERITY=low`); the same tcpdump run by another user (given
/// CAP_NET_RAW) is alerted.
#[test]
fn tcpdump_run_by_root_is_allowed_and_a_users_is_not() {
    let tcpdump = std::path::Path::new("/usr/bin/tcpdump");
    if !tcpdump.exists() {
        panic!("/usr/bin/tcpdump is missing: tests/run-all.sh installs tcpdump");
    }
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let capture = |by_user: bool| {
        let mut c = if by_user {
            let mut c = ns.command("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(["--inh-caps=+net_raw", "--ambient-caps=+net_raw"])
                .arg(tcpdump);
            c
        } else {
            ns.command(tcpdump)
        };
        c.args(["-i", "lo", "-n", "-w", "/dev/null"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut root = capture(false);
    let line = d.wait_for("root's capture", |l| {
        l.contains("\"LISTEN_KIND\":\"packet\"") && l.contains("/usr/bin/tcpdump")
    });
    let _ = root.kill();
    let _ = root.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["PORTSENTINEL_EVENT"], "listener-opened", "{v}");
    assert!(
        v["VERDICT_REASON"]
            .as_str()
            .unwrap()
            .contains("built-in rule \"tcpdump run by root (capture)\""),
        "{v}"
    );
    assert_eq!(v["VERDICT_SEVERITY"], "low", "{v}");
    let mut user = capture(true);
    let alert = d.wait_for("a user's capture", |l| {
        l.contains("\"PORTSENTINEL_EVENT\":\"alert-raised\"") && l.contains("/usr/bin/tcpdump")
    });
    let _ = user.kill();
    let _ = user.wait();
    let v: serde_json::Value = serde_json::from_str(&alert).unwrap();
    assert_eq!(v["ALERT_SEVERITY"], "high", "{v}");
}
