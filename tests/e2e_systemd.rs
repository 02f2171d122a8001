//! End to end under a real systemd: the unit installed the way the README says, checked
//! from the journal (`journalctl -o json`), not from the daemon's own word.
//!
//! One test, in steps, because booting systemd is the expensive part (a quarter second)
//! and the steps build on each other's state.

mod util;

use std::time::Duration;

use util::systemd::{SHARE, Systemd, readme_install_block};

const ALERT: &str = "MESSAGE_ID=72a41cfb5a384d3fb2b30ae71670a2d4";
const CLEARED: &str = "MESSAGE_ID=6c1f78b8c548483ca17bac2de5cc91f1";
const RESTARTED: &str = "MESSAGE_ID=49f933d131614fe1b4221e4540a094d5";
const PRESENT: &str = "MESSAGE_ID=9284c68d023d4849a148696afefdebe6";
const REJECTED: &str = "MESSAGE_ID=ced820f470394fc5974c79e332d3ec87";

fn field<'a>(r: &'a serde_json::Value, name: &str) -> &'a str {
    r[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {r}"))
}

/// Real systemd with portsentinel installed the way the README says (the binary is already
/// built), and ports below 1024 open to unprivileged test listeners.
fn installed() -> Systemd {
    let sd = Systemd::boot();
    let install: String = readme_install_block()
        .lines()
        .filter(|l| !l.starts_with("cargo "))
        .collect::<Vec<_>>()
        .join("\n");
    sd.sh_ok(&install);
    sd.sh_ok("sysctl -q -w net.ipv4.ip_unprivileged_port_start=0");
    sd
}

fn write_config(sd: &Systemd, text: &str) {
    std::fs::write(sd.share.path().join("next.toml"), text).unwrap();
    sd.sh_ok("install -m644 next.toml /etc/portsentinel/config.toml");
}

fn reload(sd: &Systemd) {
    sd.sh_ok("systemctl reload portsentinel");
    assert_eq!(sd.is_active("portsentinel"), "active");
}

/// `systemd-analyze security --offline=true` of the shipped unit with `drop_ins` (files
/// under `systemd/`) applied, as a number.
fn exposure(drop_ins: &[&str]) -> f64 {
    let systemd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut unit = std::fs::read_to_string(systemd.join("portsentinel.service")).unwrap();
    for d in drop_ins {
        unit.push('\n');
        unit.push_str(&std::fs::read_to_string(systemd.join(d)).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portsentinel.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.split("Overall exposure level for portsentinel.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"))
}

#[test]
fn the_unit_under_real_systemd() {
    // The hardened unit passes `verify` and rates what the README says: 1.7 with
    // instant detection's CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (2.0 at most, as asked),
    // 1.4 without them (its drop-in). Each drop-in that adds a privilege stays within 2.0.
    let score = exposure(&[]);
    assert!(score <= 1.7, "exposure {score} > 1.7, the README's figure");
    eprintln!("systemd-analyze security: {score}");
    let without = exposure(&["portsentinel-no-instant.conf"]);
    assert!(
        without <= 1.4,
        "exposure without instant detection {without} > 1.4, the README's figure"
    );
    for d in ["portsentinel-namespaces.conf", "portsentinel-fleet.conf"] {
        let with = exposure(&[d]);
        assert!(with <= 2.0, "exposure with {d} {with} > 2.0");
    }

    let sd = installed();
    let verify = sd.run(&[
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/portsentinel.service",
    ]);
    assert!(
        verify.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(sd.is_active("portsentinel"), "active");

    // An unprivileged user's listener on 867: one alert at warning, with pid and exe.
    let pid = sd.listen_as_nobody(&["tcp:0.0.0.0:867"]);
    let alerts = sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=867", "PRIORITY=4"], 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(field(a, "MESSAGE_ID"), "72a41cfb5a384d3fb2b30ae71670a2d4");
    assert_eq!(field(a, "LISTENER_PID"), pid.to_string());
    assert_eq!(field(a, "LISTENER_EXE"), format!("{SHARE}/listen"));
    assert_eq!(field(a, "LISTENER_UID"), "65534");
    assert_eq!(field(a, "LISTEN_PROTO"), "tcp");
    assert_eq!(field(a, "IANA_STATUS"), "unassigned");
    assert_eq!(field(a, "PORT_RANGE"), "well-known");
    assert_eq!(field(a, "SYSLOG_IDENTIFIER"), "portsentinel");
    assert!(field(a, "ALERT_REASON").contains("unassigned by IANA"));
    // `journalctl -x` explains it from the installed catalog.
    let x = sd.run(&[
        "journalctl",
        "--no-pager",
        "-x",
        "-u",
        "portsentinel",
        ALERT,
    ]);
    assert!(
        String::from_utf8_lossy(&x.stdout).contains("What to do"),
        "catalog not installed"
    );

    // A restart of the daemon while the listener stays: no second alert.
    sd.sh_ok("systemctl restart portsentinel");
    assert_eq!(sd.is_active("portsentinel"), "active");
    // The new instance's inventory has recorded it, so it has judged it.
    sd.wait_journal(&["-u", "portsentinel", PRESENT, "LISTEN_PORT=867"], 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sd.journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=867"])
            .len(),
        1,
        "alerted twice"
    );

    // Closing it clears the alert.
    sd.sh_ok(&format!("kill {pid}"));
    let cleared = sd.wait_journal(&["-u", "portsentinel", CLEARED, "LISTEN_PORT=867"], 1);
    assert_eq!(field(&cleared[0], "PRIORITY"), "5");
    assert_eq!(field(&cleared[0], "LISTENER_PID"), pid.to_string());

    // A broken config on reload: rejected at err with line and column, unit stays active.
    let again = sd.listen_as_nobody(&["tcp:127.0.0.1:867"]);
    sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=867"], 2);
    write_config(
        &sd,
        "[policy]\nalert_on = [\"well-known-unassigned\"]\n\n[[allow]]\nport = 867\nprotocoll = \"tcp\"\n",
    );
    reload(&sd);
    let rejected = sd.wait_journal(&["-u", "portsentinel", REJECTED], 1);
    assert_eq!(field(&rejected[0], "PRIORITY"), "3");
    assert!(
        field(&rejected[0], "MESSAGE")
            .contains("/etc/portsentinel/config.toml:6:1: unknown field `protocoll`"),
        "{}",
        rejected[0]
    );

    // A config that allows 867 clears the alert, naming the rule.
    write_config(
        &sd,
        "[[allow]]\nname = \"lab\"\nport = 867\naddress = \"loopback\"\n",
    );
    reload(&sd);
    let cleared = sd.wait_journal(&["-u", "portsentinel", CLEARED, "LISTEN_PORT=867"], 2);
    let last = cleared.last().unwrap();
    assert_eq!(field(last, "LISTENER_PID"), again.to_string());
    assert!(
        field(last, "EVENT_DETAIL")
            .starts_with("allowed after config reload: allowed by [[allow]] \"lab\"")
    );

    // An allowed service restarted (new pid, same exe): one "restarted" record, no alert.
    sd.sh_ok(&format!(
        "systemd-run --quiet --unit=fixture {SHARE}/listen --wait tcp:0.0.0.0:22"
    ));
    let opened = sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=22"], 1);
    assert_eq!(field(&opened[0], "PORTSENTINEL_EVENT"), "listener-opened");
    assert_eq!(field(&opened[0], "LISTENER_UNIT"), "fixture.service");
    sd.sh_ok("systemctl restart fixture");
    let restarted = sd.wait_journal(&["-u", "portsentinel", RESTARTED, "LISTEN_PORT=22"], 1);
    assert_ne!(
        field(&restarted[0], "LISTENER_PID"),
        field(&restarted[0], "LISTENER_PREVIOUS_PID")
    );
    std::thread::sleep(Duration::from_secs(4)); // past the grace window: no close, no alert
    let port22 = sd.journal(&["-u", "portsentinel", "LISTEN_PORT=22"]);
    let kinds: Vec<&str> = port22
        .iter()
        .map(|r| field(r, "PORTSENTINEL_EVENT"))
        .collect();
    assert_eq!(kinds, ["listener-opened", "listener-restarted"]);

    // 200 unexpected listeners at once, then all closed: 200 alerts and 200 cleared records.
    let specs: Vec<String> = (1..=200)
        .map(|i| format!("tcp:127.0.{}.{}:868", i / 250, i % 250 + 1))
        .collect();
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let many = sd.listen_as_nobody(&spec_refs);
    sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=868"], 200);
    sd.sh_ok(&format!("kill {many}"));
    let cleared = sd.wait_journal(&["-u", "portsentinel", CLEARED, "LISTEN_PORT=868"], 200);
    assert_eq!(cleared.len(), 200);
    assert_eq!(
        sd.journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=868"])
            .len(),
        200
    );
    let status = String::from_utf8_lossy(
        &sd.run(&["systemctl", "show", "-P", "StatusText", "portsentinel"])
            .stdout,
    )
    .into_owned();
    eprintln!("STATUS={status}");
    let max_late: u64 = status
        .split("max late ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max late in {status:?}"));
    // The poll keeps its rhythm: never a whole interval behind.
    assert!(max_late < 1000, "a poll started {max_late} ms late");
    assert_eq!(sd.is_active("portsentinel"), "active");

    // Every line the daemon wrote, its own diagnostics included, is a native journal
    // record: nothing came through its stdout/stderr stream.
    let written = sd.journal(&["_SYSTEMD_UNIT=portsentinel.service"]);
    assert!(written.len() > 400, "{} records", written.len());
    let streamed: Vec<_> = written
        .iter()
        .filter(|r| field(r, "_TRANSPORT") != "journal")
        .collect();
    assert!(streamed.is_empty(), "{streamed:#?}");
}

/// Names built to forge journal fields or paint the terminal: each listener is exactly one
/// record, with the name escaped, at the priority the daemon chose.
#[test]
fn hostile_process_names_cannot_forge_records() {
    let sd = installed();
    // The program's file name carries the payload; the kernel's `comm` is its first 15 bytes.
    let cases = [
        ("evil\nPRIORITY=0\nMESSAGE=forged", 867, "evil\\nPRIORITY=0"),
        (
            "\x1b[31mred\x1b[0m\x1b]0;t\x07",
            868,
            "\\x1b[31mred\\x1b[0m\\x1b]0",
        ),
    ];
    for (name, port, _) in &cases {
        let exe = sd.share.path().join(name);
        std::fs::copy(util::listen_bin(), &exe).unwrap();
        let inside = format!("{SHARE}/{name}");
        let spec = format!("tcp:0.0.0.0:{port}");
        sd.spawn(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &inside,
            "--wait",
            &spec,
        ]);
    }
    for (name, port, comm) in &cases {
        sd.wait_journal(&["-u", "portsentinel", &format!("LISTEN_PORT={port}")], 1);
        std::thread::sleep(Duration::from_secs(1));
        let records = sd.journal(&["-u", "portsentinel", &format!("LISTEN_PORT={port}")]);
        assert_eq!(records.len(), 1, "{records:#?}");
        let r = &records[0];
        assert_eq!(field(r, "PRIORITY"), "4");
        assert_eq!(field(r, "LISTENER_COMM"), *comm);
        let exe = field(r, "LISTENER_EXE");
        assert!(!exe.contains('\n') && !exe.contains('\x1b'), "{exe:?}");
        assert!(
            exe.ends_with(&portsentinel::text::escape_control(name).into_owned()),
            "{exe:?}"
        );
        for (k, v) in r.as_object().unwrap() {
            let v = v.as_str().unwrap_or("");
            assert!(
                !v.contains('\x1b') && !v.contains('\x07'),
                "raw control character in {k}: {v:?}"
            );
        }
    }
    // Nothing anywhere in the journal was forged.
    assert!(sd.journal(&["MESSAGE=forged"]).is_empty());
    assert!(sd.journal(&["PRIORITY=0"]).is_empty());
}

/// journald stopped while the daemon runs: the records of that time reach the journal
/// once it is back, marked with when they happened.
#[test]
fn records_made_while_journald_is_down_arrive_when_it_returns() {
    let sd = installed();
    // Started, and has written to the journal.
    sd.wait_journal(&["-u", "portsentinel", "SYSLOG_IDENTIFIER=portsentinel"], 1);
    sd.sh_ok("systemctl stop systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service");
    let down_at = std::time::SystemTime::now();
    sd.listen_as_nobody(&["tcp:0.0.0.0:867"]);
    // A few polls with journald away.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sd.is_active("portsentinel"),
        "active",
        "the daemon goes on without journald"
    );
    sd.sh_ok("systemctl start systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service");
    let alerts = sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=867"], 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let made = humantime::parse_rfc3339(field(&alerts[0], "PORTSENTINEL_TIME")).unwrap();
    assert!(made >= down_at, "made while journald was down");
    let received: u64 = field(&alerts[0], "__REALTIME_TIMESTAMP").parse().unwrap();
    let made_us = made
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        received >= made_us + 2_000_000,
        "held back and sent later: made {made_us}, received {received}"
    );
    let notes = sd.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "portsentinel",
        "--grep",
        "reachable again",
    ]);
    assert!(String::from_utf8_lossy(&notes.stdout).contains("journald is reachable again"));
}

const MISSING: &str = "MESSAGE_ID=2975a25f7edb45c8b58378cf7bfa50ca";
const RESTORED: &str = "MESSAGE_ID=bc9d4f2596d945ea906fb3e8dc6d7612";

/// A required listener under real systemd: a service stopped for longer than the grace is
/// one listener-missing record in the journal at warning; started again, one
/// listener-restored.
#[test]
fn a_required_listener_that_goes_missing_is_in_the_journal() {
    let sd = installed();
    write_config(
        &sd,
        &format!(
            "[daemon]\nrestart_grace = \"1s\"\n\n[[expect]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nexe = \"{SHARE}/listen\"\nrequired = true\n"
        ),
    );
    sd.sh_ok(&format!(
        "systemd-run --quiet --unit=sshd-fixture {SHARE}/listen --wait tcp:0.0.0.0:22"
    ));
    sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=22"], 1);
    reload(&sd);
    sd.sh_ok("systemctl stop sshd-fixture");
    let missing = sd.wait_journal(&["-u", "portsentinel", MISSING], 1);
    assert_eq!(field(&missing[0], "PRIORITY"), "4");
    assert_eq!(field(&missing[0], "EXPECT_NAME"), "ssh");
    sd.sh_ok(&format!(
        "systemd-run --quiet --unit=sshd-fixture2 {SHARE}/listen --wait tcp:0.0.0.0:22"
    ));
    let restored = sd.wait_journal(&["-u", "portsentinel", RESTORED], 1);
    assert_eq!(field(&restored[0], "PRIORITY"), "5");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sd.journal(&["-u", "portsentinel", MISSING]).len(), 1);
    assert_eq!(sd.journal(&["-u", "portsentinel", RESTORED]).len(), 1);
}

/// A listener in a network namespace of its own, under the shipped unit (no CAP_SYS_ADMIN:
/// read through /proc/PID/net, so a socket on [::] is ipv6-v4-unknown), then with the
/// drop-in that lets the daemon enter namespaces (read with sock_diag: dual-stack).
#[test]
fn a_listener_in_another_namespace_is_recorded_by_the_shipped_unit() {
    let sd = installed();
    sd.wait_journal(&["-u", "portsentinel", "SYSLOG_IDENTIFIER=portsentinel"], 1);
    let listen = format!("{SHARE}/listen");
    let pid = sd.spawn(&[
        "unshare",
        "--net",
        &listen,
        "--wait",
        "tcp:0.0.0.0:867",
        "tcp:[::]:868:dual",
    ]);
    let inode = sd.sh_ok(&format!("stat -L -c %i /proc/{pid}/ns/net"));
    let inode = inode.trim();
    let alerts = sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=867"], 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(field(a, "LISTEN_NETNS"), inode);
    assert_eq!(field(a, "LISTENER_PID"), pid.to_string());
    assert_eq!(field(a, "LISTENER_EXE"), listen);
    assert!(
        field(a, "MESSAGE").contains(&format!("in network namespace netns:{inode}")),
        "{a}"
    );
    let dual = sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=868"], 1);
    assert_eq!(
        field(&dual[0], "LISTEN_REACH"),
        "ipv6-v4-unknown",
        "{dual:#?}"
    );
    assert_eq!(field(&dual[0], "LISTEN_NETNS"), inode);

    // With the drop-in the README gives: entered, read with sock_diag.
    sd.sh_ok(&format!(
        "install -Dm644 {SHARE}/systemd/portsentinel-namespaces.conf \
         /etc/systemd/system/portsentinel.service.d/namespaces.conf \
         && systemctl daemon-reload && systemctl restart portsentinel"
    ));
    assert_eq!(sd.is_active("portsentinel"), "active");
    let present = sd.wait_journal(
        &[
            "-u",
            "portsentinel",
            PRESENT,
            "LISTEN_PORT=868",
            "LISTEN_REACH=dual-stack",
        ],
        1,
    );
    assert_eq!(field(&present[0], "LISTEN_NETNS"), inode, "{present:#?}");
    // The restart's inventory: the 867 alert stands, not raised again.
    let alerts = sd.journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=867"]);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
}

/// A sniffer under the shipped unit, which has `CAP_NET_ADMIN` (for instant detection):
/// the kernel says how long its filter is; a raw TCP socket is recorded as well. (Without
/// that capability the filter is unknown, judged as high: tests/portless.rs.)
#[test]
fn a_packet_sniffer_is_alerted_by_the_shipped_unit() {
    let sd = installed();
    sd.wait_journal(&["-u", "portsentinel", "SYSLOG_IDENTIFIER=portsentinel"], 1);
    let listen = format!("{SHARE}/listen");
    let pid = sd.spawn(&[
        &listen,
        "--wait",
        "--name",
        "kworker/0:1",
        "packet:all:filter",
        "raw:tcp",
    ]);
    let alerts = sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_KIND=packet"], 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(field(a, "LISTENER_PID"), pid.to_string());
    assert_eq!(field(a, "LISTENER_EXE"), listen);
    assert_eq!(field(a, "LISTENER_COMM"), "kworker/0:1");
    assert_eq!(field(a, "FILTER_INSTRUCTIONS"), "4");
    assert_eq!(field(a, "ALERT_SEVERITY"), "high");
    let raw = sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_KIND=raw"], 1);
    assert_eq!(field(&raw[0], "RAW_PROTOCOL"), "tcp (6)", "{raw:#?}");
}

/// Instant detection under the shipped unit: a process that listens on 0.0.0.0:867 for
/// 5 ms over TCP, then over UDP, and exits, as user nobody (a service of its own). Each: one alert in the journal
/// with its pid, comm and exe, `EVENT_SOURCE=ebpf`, and its close with the kernel's
/// `LISTEN_LIFETIME_MS`.
#[test]
fn a_listener_of_five_milliseconds_is_in_the_journal_under_the_shipped_unit() {
    let sd = installed();
    sd.wait_journal(&["-u", "portsentinel", "SYSLOG_IDENTIFIER=portsentinel"], 1);
    let on = sd.wait_journal(
        &[
            "-u",
            "portsentinel",
            "MESSAGE=instant detection on: the kernel reports TCP listens and UDP binds (eBPF)",
        ],
        1,
    );
    assert_eq!(on.len(), 1, "{on:#?}");
    let listen = format!("{SHARE}/listen");
    // In a cgroup of the namespace's tree, which the UDP hooks are attached to (a process
    // the harness starts from outside is not in it; on a host, every process is).
    let out = sd.run(&[
        "sh",
        "-c",
        "mkdir -p /sys/fs/cgroup/pstest && echo $$ > /sys/fs/cgroup/pstest/cgroup.procs && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$0\" --for 5 tcp:0.0.0.0:867 udp:0.0.0.0:867",
        &listen,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = said
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid in {said:?}"))
        .to_owned();
    for proto in ["tcp", "udp"] {
        let proto_is = format!("LISTEN_PROTO={proto}");
        let alerts = sd.wait_journal(
            &["-u", "portsentinel", ALERT, "LISTEN_PORT=867", &proto_is],
            1,
        );
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(field(a, "LISTENER_PID"), pid);
        assert_eq!(field(a, "LISTENER_COMM"), "listen");
        assert_eq!(field(a, "LISTENER_EXE"), listen);
        assert_eq!(field(a, "EVENT_SOURCE"), "ebpf");
        let cleared = sd.wait_journal(
            &["-u", "portsentinel", CLEARED, "LISTEN_PORT=867", &proto_is],
            1,
        );
        let c = &cleared[0];
        assert_eq!(field(c, "EVENT_SOURCE"), "ebpf");
        let ms: u64 = field(c, "LISTEN_LIFETIME_MS").parse().unwrap();
        assert!(ms >= 4, "{c}");
    }
}

#[test]
fn alert_records_reach_a_central_journal_through_journal_upload() {
    // journald's own forwarding, as the README's "Fleets" section sets it up: the central
    // machine's systemd-journal-remote (here on loopback) receives from this machine's
    // systemd-journal-upload, both real, under the same systemd as the daemon.
    let sd = installed();
    // The README's commands: the central machine's, then the host's.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let central_setup = readme
        .split("```sh\nmkdir -p /etc/systemd/system/systemd-journal-remote.service.d\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's central journal setup");
    // What a boot's systemd-tmpfiles does, which the harness skips: the journal's
    // directories readable by the group systemd-journal (the uploader's), and the central
    // journal's own directory.
    sd.sh_ok("systemd-tmpfiles --create --prefix=/run/log/journal --prefix=/var/log/journal");
    sd.sh_ok(&format!(
        "mkdir -p /etc/systemd/system/systemd-journal-remote.service.d\n{central_setup}"
    ));
    sd.sh_ok(
        "printf '[Upload]\\nURL=http://127.0.0.1:19532\\n' > /etc/systemd/journal-upload.conf
         systemctl enable --now systemd-journal-upload",
    );
    let pid = sd.listen_as_nobody(&["tcp:0.0.0.0:867"]);
    let local = sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=867", "PRIORITY=4"], 1);
    // The central query of the README.
    let central = |sd: &Systemd| -> Vec<serde_json::Value> {
        let out = sd.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "json",
            "-D",
            "/var/log/journal/remote",
            "LISTEN_PORT=867",
            "PRIORITY=4",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let start = std::time::Instant::now();
    let remote = loop {
        let got = central(&sd);
        if !got.is_empty() {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing in the central journal after 60 s; uploader: {}; receiver: {}",
            String::from_utf8_lossy(
                &sd.run(&["journalctl", "--no-pager", "-u", "systemd-journal-upload"])
                    .stdout
            ),
            String::from_utf8_lossy(
                &sd.run(&["journalctl", "--no-pager", "-u", "systemd-journal-remote"])
                    .stdout
            ),
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(remote.len(), 1, "{remote:#?}");
    let (here, there) = (&local[0], &remote[0]);
    assert_eq!(field(there, "LISTENER_PID"), pid.to_string());
    let carried: Vec<&String> = here
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("LISTEN_") || k.starts_with("LISTENER_"))
        .collect();
    assert!(carried.len() >= 8, "{here:#}");
    for k in carried {
        assert_eq!(here[k], there[k], "{k} differs in the central journal");
    }
    for k in [
        "MESSAGE",
        "MESSAGE_ID",
        "ALERT_REASON",
        "ALERT_SEVERITY",
        "_HOSTNAME",
    ] {
        assert_eq!(here[k], there[k], "{k} differs in the central journal");
    }
}

/// Runs `script` inside until it succeeds (60 s at most); its output.
fn sh_until(sd: &Systemd, what: &str, script: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let out = sd.sh(script);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {what} after 60 s: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn metrics_under_the_shipped_unit_with_and_without_the_fleet_drop_in() {
    let sd = installed();
    write_config(
        &sd,
        "[metrics]\nlisten = \"127.0.0.1:9867\"\ntextfile = \"/run/portsentinel/portsentinel.prom\"\n",
    );
    sd.sh_ok("systemctl restart portsentinel");
    assert_eq!(sd.is_active("portsentinel"), "active");
    // The shipped unit allows no IP socket: the endpoint cannot open, the daemon says so
    // once and goes on; the textfile needs nothing more.
    let warnings = sd.wait_journal(&["-u", "portsentinel", "PRIORITY=4"], 1);
    assert!(
        warnings.iter().any(|w| field(w, "MESSAGE")
            .starts_with("no metrics endpoint: cannot listen on 127.0.0.1:9867")),
        "{warnings:#?}"
    );
    let _pid = sd.listen_as_nobody(&["tcp:0.0.0.0:867"]);
    let text = sh_until(
        &sd,
        "the alert in the textfile",
        "grep 'portsentinel_alert_active{.*port=\"867\"' /run/portsentinel/portsentinel.prom",
    );
    assert!(text.trim_end().ends_with(" 1"), "{text}");
    // Readable by node_exporter's user.
    sd.sh_ok("setpriv --reuid=65534 --regid=65534 --clear-groups cat /run/portsentinel/portsentinel.prom >/dev/null");

    // With the drop-in the README gives: served on loopback.
    sd.sh_ok(&format!(
        "install -Dm644 {SHARE}/systemd/portsentinel-fleet.conf \
         /etc/systemd/system/portsentinel.service.d/fleet.conf \
         && systemctl daemon-reload && systemctl restart portsentinel"
    ));
    assert_eq!(sd.is_active("portsentinel"), "active");
    let body = sh_until(
        &sd,
        "the metrics endpoint",
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/9867; printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'",
    );
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let line = body
        .lines()
        .find(|l| l.starts_with("portsentinel_alert_active{") && l.contains("port=\"867\""))
        .unwrap_or_else(|| panic!("no alert series in {body}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// `portsentinel history` inside, parsed.
fn history(sd: &Systemd, args: &[&str]) -> Vec<serde_json::Value> {
    let mut argv = vec!["portsentinel", "history", "--json"];
    argv.extend_from_slice(args);
    let out = sd.run(&argv);
    assert!(
        out.status.success(),
        "history {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "history --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn time_of(r: &serde_json::Value) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(field(r, "PORTSENTINEL_TIME")).unwrap()
}

#[test]
fn history_tells_each_listener_life_from_the_journal() {
    let sd = installed();
    // An alerted listener on 867 that opens and closes.
    let bad = sd.listen_as_nobody(&["tcp:0.0.0.0:867"]);
    let raised = sd.wait_journal(&["-u", "portsentinel", ALERT, "LISTEN_PORT=867"], 1);
    sd.sh_ok(&format!("kill {bad}"));
    let cleared = sd.wait_journal(&["-u", "portsentinel", CLEARED, "LISTEN_PORT=867"], 1);
    // An allowed service that restarts: the same program back on its port within the
    // grace window.
    let first = sd.listen_as_nobody(&["tcp:127.0.0.1:2222"]);
    sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=2222"], 1);
    sd.sh_ok(&format!("kill {first}"));
    let second = sd.listen_as_nobody(&["tcp:127.0.0.1:2222"]);
    sd.wait_journal(&["-u", "portsentinel", RESTARTED, "LISTEN_PORT=2222"], 1);
    // And one that stays.
    let _stays = sd.listen_as_nobody(&["udp:127.0.0.1:5555"]);
    sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=5555"], 1);

    let lives = history(&sd, &[]);
    let of = |port: &str| -> Vec<&serde_json::Value> {
        lives.iter().filter(|l| l["port"] == port).collect()
    };
    let (bad_life, service, stays) = (of("867"), of("2222"), of("5555"));
    assert_eq!(
        (bad_life.len(), service.len(), stays.len()),
        (1, 1, 1),
        "{lives:#?}"
    );
    let b = bad_life[0];
    assert_eq!(b["end"], "closed");
    assert_eq!(b["alerted"], true);
    assert_eq!(b["severity"], field(&raised[0], "ALERT_SEVERITY"));
    assert_eq!(b["reason"], field(&raised[0], "ALERT_REASON"));
    // How long it listened: the kernel's own figure when instant detection announced it,
    // else from the record that raised the alert to the one that cleared it.
    let lived = match cleared[0].get("LISTEN_LIFETIME_MS") {
        Some(ms) => ms.as_str().unwrap().parse::<u64>().unwrap(),
        None => time_of(&cleared[0])
            .duration_since(time_of(&raised[0]))
            .unwrap()
            .as_millis() as u64,
    };
    assert_eq!(b["duration_ms"], lived, "{b:#}");
    assert_eq!(b["pids"], serde_json::json!([bad]));
    let s = service[0];
    assert_eq!(s["end"], "still-listening");
    assert_eq!(s["alerted"], false);
    assert_eq!(s["restarts"], 1);
    assert_eq!(s["pids"], serde_json::json!([first, second]));
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .ends_with("no alert_on condition applies"),
        "{s:#}"
    );
    assert_eq!(stays[0]["end"], "still-listening");
    assert_eq!(stays[0]["protocol"], "udp");

    // --alerts: only the one alerted; --port narrows.
    // A local process writes a record with portsentinel's field names (any user can):
    // history does not take it, unless told to take records whoever wrote them.
    sd.sh_ok(
        "printf 'MESSAGE=forged\\nPORTSENTINEL_EVENT=listener-present\\nLISTENER_ID=f0f0\\n\
         LISTEN_PROTO=tcp\\nLISTEN_PORT=999\\nLISTENER_EXE=/usr/sbin/sshd\\n' \
         | setpriv --reuid=65534 --regid=65534 --clear-groups logger --journald
         journalctl --sync",
    );
    let forged = |lives: &[serde_json::Value]| lives.iter().any(|l| l["port"] == "999");
    assert!(
        forged(&history(&sd, &["--all-sources"])),
        "the forged record was written"
    );
    assert!(
        !forged(&history(&sd, &[])),
        "a forged record taken as the daemon's"
    );
    let alerted = history(&sd, &["--alerts"]);
    assert_eq!(alerted.len(), 1, "{alerted:#?}");
    assert_eq!(alerted[0]["port"], "867");
    assert_eq!(history(&sd, &["--port", "2222"]).len(), 1);
    // The table says the same in words.
    eprintln!("{}", sd.sh_ok("portsentinel history"));
    let table = sd.sh_ok("portsentinel history --port 867");
    assert!(
        table.contains("FIRST SEEN") && table.contains("867"),
        "{table}"
    );

    // A copy of the journal, read with -D, gives the same lives.
    sd.sh_ok(
        "journalctl --sync
         mkdir -p /tmp/copy
         find /run/log/journal /var/log/journal -name '*.journal' | while read -r f; do
             cp \"$f\" \"/tmp/copy/$(echo \"$f\" | tr / _)\"
         done",
    );
    let copied = history(&sd, &["-D", "/tmp/copy"]);
    // (A life still listening has lasted until the moment each command ran.)
    let ours = |v: &Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        v.iter()
            .filter(|l| ["867", "2222", "5555"].contains(&l["port"].as_str().unwrap()))
            .cloned()
            .map(|mut l| {
                if l["end"] == "still-listening" {
                    l["duration_ms"] = serde_json::Value::Null;
                }
                l
            })
            .collect()
    };
    assert_eq!(ours(&copied), ours(&lives));
}
