//! `portsentinel run` in the foreground, in a network namespace of its own, read from its
//! stderr (`--log text` and `--log json`).

mod util;

use std::time::Instant;

use util::{Daemon, Netns, bin, config_file, kill};

#[test]
fn text_log_reports_an_alert_with_pid_and_exe_then_clears_it() {
    let ns = Netns::new();
    let mut d = Daemon::start(&ns, &["--log", "text", "--interval", "200ms"]);
    d.wait_for("the start-up line", |l| {
        l.contains("portsentinel 0.1.0 starting")
    });
    let bound = Instant::now();
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    eprintln!("alert after {:?}", bound.elapsed());
    assert!(alert.contains(" <4> "), "{alert}");
    for field in [
        "LISTEN_PROTO=tcp".to_owned(),
        "LISTEN_PORT=867".to_owned(),
        "IANA_STATUS=unassigned".to_owned(),
        format!("LISTENER_PID={}", l.pid),
        format!("LISTENER_EXE={}", util::listen_bin().display()),
    ] {
        assert!(
            alert.contains(&format!(" {field} ")),
            "{field} missing in {alert}"
        );
    }
    l.stop();
    let cleared = d.wait_for("the cleared line", |l| {
        l.contains("PORTSENTINEL_EVENT=alert-cleared")
    });
    assert!(
        cleared.contains("LISTEN_PORT=867") && cleared.contains(" <5> "),
        "{cleared}"
    );
    assert!(d.terminate().success());
}

#[test]
fn json_log_is_one_object_per_line() {
    let ns = Netns::new();
    let _l = ns.listen(&["udp:0.0.0.0:867", "tcp:127.0.0.1:22"]);
    let mut d = Daemon::start(&ns, &["--log", "json", "--interval", "100ms"]);
    let present = d.wait_for("inventory", |l| {
        l.contains("\"listener-present\"") && l.contains("\"22\"")
    });
    let v: serde_json::Value = serde_json::from_str(&present).unwrap();
    assert_eq!(v["PRIORITY"], "6");
    assert_eq!(v["MESSAGE_ID"], "9284c68d023d4849a148696afefdebe6");
    let alert = d.wait_for("the alert", |l| l.contains("\"alert-raised\""));
    let v: serde_json::Value = serde_json::from_str(&alert).unwrap();
    assert_eq!(v["LISTEN_PROTO"], "udp");
    assert_eq!(v["LISTEN_PORT"], "867");
    assert_eq!(v["PRIORITY"], "4");
    let cmdline = v["LISTENER_CMDLINE"].as_str().unwrap();
    assert!(
        cmdline.ends_with("/listen udp:0.0.0.0:867 tcp:127.0.0.1:22"),
        "{cmdline}"
    );
    assert!(d.terminate().success());
}

#[test]
fn a_bad_config_stops_the_start_with_78() {
    let (_dir, cfg) = config_file("[daemon]\ninterval = \"1 fortnight\"\n");
    let out = std::process::Command::new(bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:12: daemon.interval", cfg.display())),
        "{err}"
    );
}

#[test]
fn sighup_applies_a_valid_config_and_rejects_a_broken_one() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file("[daemon]\ninterval = \"100ms\"\n");
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the alert", |l| l.contains("alert-raised"));

    std::fs::write(
        &cfg,
        "[daemon]\ninterval = \"100ms\"\n[[allow]]\nport = 867\nbogus = 1\n",
    )
    .unwrap();
    kill(d.child.id(), "HUP");
    let rejected = d.wait_for("the rejection", |l| l.contains("config reload rejected"));
    assert!(rejected.contains(" <3> "), "{rejected}");
    assert!(
        rejected.contains(&format!("{}:5:1: unknown field `bogus`", cfg.display())),
        "{rejected}"
    );

    std::fs::write(
        &cfg,
        "[daemon]\ninterval = \"100ms\"\n[[allow]]\nname = \"ok now\"\nport = 867\n",
    )
    .unwrap();
    kill(d.child.id(), "HUP");
    let cleared = d.wait_for("the cleared alert", |l| l.contains("alert-cleared"));
    assert!(
        cleared.contains("allowed after config reload: allowed by [[allow]] \\x22ok now\\x22"),
        "{cleared}"
    );
    assert!(d.terminate().success());
}

/// `--log json`: every line on stderr is a JSON record, the daemon's diagnostics included
/// (here the desktop failing for want of a session bus), and a config error at start too.
#[test]
fn json_log_makes_every_line_json_diagnostics_included() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file("[daemon]\ninterval = \"100ms\"\n[notify]\ndesktop = true\n");
    let mut d = Daemon::start_with_env(
        &ns,
        &["--log", "json", "--config", cfg.to_str().unwrap()],
        &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    d.wait_for("the desktop diagnostic", |l| {
        l.contains("cannot show desktop notifications")
    });
    let (status, seen) = d.terminate_lines();
    assert!(status.success());
    assert!(seen.len() >= 4, "{seen:#?}");
    for line in &seen {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["PRIORITY"].is_string() && v["MESSAGE"].is_string(),
            "{line}"
        );
        assert_eq!(v["SYSLOG_IDENTIFIER"], "portsentinel", "{line}");
    }
    let diagnostic = seen
        .iter()
        .find(|l| l.contains("cannot show desktop notifications"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(diagnostic).unwrap();
    assert_eq!(v["PRIORITY"], "3", "{diagnostic}");

    let (_dir, bad) = config_file("[daemon]\ninterval = \"1 fortnight\"\n");
    let out = std::process::Command::new(bin())
        .args(["run", "--log", "json", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["PRIORITY"], "3");
    assert!(
        v["MESSAGE"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:2:12: daemon.interval", bad.display())),
        "{err}"
    );
}

#[test]
fn a_second_daemon_is_refused_and_the_first_keeps_its_socket() {
    use std::io::BufRead as _;
    let ns = Netns::new();
    let mut first = Daemon::start(&ns, &["--log", "json"]);
    first.wait_for("the event socket", |l| {
        l.contains("event socket") && l.contains("open to")
    });
    let first_pid = first.child.id();
    let dir = first.dir.path().to_str().unwrap().to_owned();
    let other = tempfile::tempdir().unwrap();
    let other = other.path().to_str().unwrap();
    // The same state directory (and socket); then another state directory, the same
    // socket, whose own lock beside it refuses.
    let socket_lock = format!("holds {dir}/events.sock.lock");
    for (state, what) in [(dir.as_str(), "holds"), (other, socket_lock.as_str())] {
        let out = ns
            .command(bin())
            .args(["run", "--namespaces", "host", "--log", "text"])
            .env("STATE_DIRECTORY", state)
            .env("RUNTIME_DIRECTORY", &dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(69), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "another portsentinel run (pid {first_pid}) {what}"
            )),
            "{err}"
        );
    }
    // The first still serves its subscribers.
    let stream = std::os::unix::net::UnixStream::connect(first.socket()).unwrap();
    let mut hello = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut hello)
        .unwrap();
    assert!(hello.contains("\"hello\""), "{hello}");
    assert!(first.terminate().success());
}
