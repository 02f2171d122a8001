//! The one-shot commands against real sockets in their own network namespaces.

mod util;

use std::process::Command;

use util::{Netns, bin, find, scan_json, stderr, stdout};

/// Outside the tests' namespaces; `explain` and `scan` look at this one only, as the
/// tests that run beside this one have listeners of their own elsewhere.
fn portsentinel(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(args);
    if matches!(args.first(), Some(&("scan" | "explain"))) {
        c.args(["--netns", "host"]);
    }
    c.output().unwrap()
}

#[test]
fn explain_867_is_unassigned_well_known_for_both_protocols() {
    let out = portsentinel(&["explain", "867"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for proto in ["tcp", "udp"] {
        assert!(
            text.contains(&format!("867/{proto}\n  IANA:      unassigned")),
            "{text}"
        );
    }
    assert_eq!(
        text.matches("range:     well-known (0-1023)").count(),
        2,
        "{text}"
    );

    let out = portsentinel(&["explain", "867", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    for e in v.as_array().unwrap() {
        assert_eq!(e["iana"]["status"], "unassigned");
        assert_eq!(e["range"], "well-known");
        assert_eq!(e["policy"]["all_interfaces"]["alert"], true);
    }
}

#[test]
fn explain_22_tcp_names_ssh() {
    let out = portsentinel(&["explain", "22/tcp"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("assigned to ssh"), "{text}");
    assert!(!text.contains("22/udp"), "only tcp was asked for: {text}");
}

#[test]
fn explain_rejects_bad_ports_with_status_2() {
    for bad in ["70000", "22/dccp"] {
        let out = portsentinel(&["explain", bad]);
        assert_eq!(out.status.code(), Some(2), "explain {bad}");
        let err = stderr(&out);
        assert!(err.contains("invalid value"), "{bad}: {err}");
    }
    assert_eq!(portsentinel(&["explain", "-1"]).status.code(), Some(2));
    assert!(stderr(&portsentinel(&["explain", "70000"])).contains("ports are 0-65535"));
    // A name IANA does not know: status 2, with the closest names.
    let out = portsentinel(&["explain", "nosuchservice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("closest names"), "{}", stderr(&out));
}

/// `explain ssh` explains every port IANA assigns to ssh: 22/tcp and 22/udp.
#[test]
fn explain_takes_a_service_name() {
    let out = portsentinel(&["explain", "ssh", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, u64)> = v
        .iter()
        .map(|e| {
            (
                e["protocol"].as_str().unwrap().to_owned(),
                e["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("tcp".to_owned(), 22), ("udp".to_owned(), 22)]);
    let text = stdout(&portsentinel(&["explain", "http/udp"]));
    assert!(text.starts_with("80/udp\n"), "{text}");
}

#[test]
fn explain_of_a_service_shows_each_listener_under_its_own_port() {
    // IANA assigns 83 and 85/tcp to mit-ml-dev: a listener on 83 is not on 85.
    let ns = Netns::new();
    let _l = ns.listen(&["tcp:127.0.0.1:83"]);
    let out = ns.portsentinel(&["explain", "mit-ml-dev/tcp", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let listeners: Vec<(u64, usize)> = v
        .iter()
        .map(|e| {
            (
                e["port"].as_u64().unwrap(),
                e["listeners"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(listeners, [(83, 1), (85, 0)], "{v:#?}");
}

#[test]
fn scan_reports_and_alerts_a_tcp_listener_on_867() {
    let ns = Netns::new();
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let scan = scan_json(&ns, &[]);
    let hits = find(&scan, "tcp", 867);
    assert_eq!(hits.len(), 1, "{scan:#?}");
    let e = hits[0];
    assert_eq!(e["address"], "0.0.0.0");
    assert_eq!(e["iana"]["status"], "unassigned");
    assert_eq!(e["range"], "well-known");
    assert_eq!(e["process"]["pid"], l.pid);
    assert_eq!(e["process"]["name"], "listen");
    assert!(e["process"]["exe"].as_str().unwrap().ends_with("/listen"));
    assert_eq!(e["process"]["user"], "root");
    assert_eq!(e["verdict"]["alert"], true);
    assert_eq!(e["verdict"]["severity"], "high");
    assert!(
        e["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("unassigned by IANA")
    );
    let cmdline = e["process"]["cmdline"].as_array().unwrap();
    assert_eq!(cmdline.len(), 2, "{e}");
    assert!(cmdline[0].as_str().unwrap().ends_with("/listen"), "{e}");
    assert_eq!(cmdline[1], "tcp:0.0.0.0:867", "{e}");

    assert_eq!(ns.portsentinel(&["scan", "--check"]).status.code(), Some(1));
    let table = stdout(&ns.portsentinel(&["scan"]));
    assert!(table.contains(&format!("listen[{}]", l.pid)), "{table}");
    assert!(
        table.contains("ALERT (high) 867/tcp on 0.0.0.0:867"),
        "{table}"
    );
}

#[test]
fn scan_check_passes_with_only_allowed_listeners() {
    let ns = Netns::new();
    let _ssh = ns.listen(&["tcp:0.0.0.0:22", "udp:127.0.0.1:53"]);
    let out = ns.portsentinel(&["scan", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // An allow rule makes an otherwise alerted listener fine.
    let _lab = ns.listen(&["tcp:127.0.0.1:867"]);
    assert_eq!(ns.portsentinel(&["scan", "--check"]).status.code(), Some(1));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[[allow]]\nname = \"lab\"\nport = 867\nprotocol = \"tcp\"\naddress = \"loopback\"\nprocess = \"listen\"\n").unwrap();
    let out = ns.portsentinel(&["scan", "--check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let scan = scan_json(&ns, &["--config", cfg.to_str().unwrap()]);
    let reason = find(&scan, "tcp", 867)[0]["verdict"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reason, "allowed by [[allow]] \"lab\" (config.toml:1)");
}

#[test]
fn connected_udp_client_is_not_a_listener() {
    let ns = Netns::new();
    let client = ns.listen(&["udp-connected:127.0.0.1:9"]);
    let server = ns.listen(&["udp:0.0.0.0:867"]);
    let scan = scan_json(&ns, &[]);
    let client_port = client.ports[0];
    assert!(
        find(&scan, "udp", client_port).is_empty(),
        "client socket listed: {scan:#?}"
    );
    let hits = find(&scan, "udp", 867);
    assert_eq!(hits.len(), 1, "{scan:#?}");
    assert_eq!(hits[0]["process"]["pid"], server.pid);
    assert_eq!(hits[0]["verdict"]["alert"], true);
    assert_eq!(scan.len(), 1, "only the UDP server listens: {scan:#?}");
}

#[test]
fn dual_stack_and_ipv6_only_are_told_apart() {
    let ns = Netns::new();
    let _a = ns.listen(&["tcp:[::]:867:dual", "udp:[::]:867:v6only"]);
    let scan = scan_json(&ns, &[]);
    let tcp = find(&scan, "tcp", 867)[0];
    let udp = find(&scan, "udp", 867)[0];
    assert_eq!(
        (tcp["v6only"].as_bool(), tcp["reach"].as_str()),
        (Some(false), Some("dual-stack"))
    );
    assert_eq!(
        (udp["v6only"].as_bool(), udp["reach"].as_str()),
        (Some(true), Some("ipv6-only"))
    );
    let table = stdout(&ns.portsentinel(&["scan"]));
    assert!(
        table.contains("dual-stack") && table.contains("ipv6-only"),
        "{table}"
    );
    assert!(table.contains("IPv4 and IPv6: dual-stack"), "{table}");
}

#[test]
fn check_config_accepts_the_example_and_rejects_a_misspelt_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/portsentinel.toml");
    let out = portsentinel(&["check-config", example]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let text = std::fs::read_to_string(example).unwrap();
    let (line_no, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with("alert_on"))
        .expect("the example sets alert_on");
    let broken = text.replacen(line, &line.replacen("alert_on", "alert_onn", 1), 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let out = portsentinel(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    let want = format!(
        "{}:{}:1: unknown field `alert_onn`",
        path.display(),
        line_no + 1
    );
    assert!(err.contains(&want), "want {want:?} in {err}");
}

#[test]
fn unprivileged_scan_lists_everything_and_says_why_owners_are_unknown() {
    let ns = Netns::new();
    let _l = ns.listen(&["tcp:0.0.0.0:867", "udp:[::]:5353:dual"]);
    // Copy the binary where an unprivileged user can run it.
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("portsentinel");
    std::fs::copy(bin(), &copy).unwrap();
    let out = ns
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["scan", "--json", "--netns", "host"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let scan: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scan.len(), 2, "{scan:#?}");
    for e in &scan {
        assert!(e["process"].is_null());
        assert_eq!(e["owner_unknown"], "no-permission");
        assert_eq!(e["uid"], 0);
    }
    assert_eq!(find(&scan, "tcp", 867)[0]["verdict"]["alert"], true);
}

#[test]
fn sock_diag_and_proc_net_see_the_same_listeners() {
    let ns = Netns::new();
    let _l = ns.listen(&[
        "tcp:0.0.0.0:867",
        "tcp:127.0.0.1:0*3",
        "tcp:[::]:868:dual",
        "tcp:[::1]:0:v6only",
        "udp:0.0.0.0:867",
        "udp:[::]:869:v6only",
        "udp:127.0.0.1:0*2",
        "udp-connected:127.0.0.1:9",
    ]);
    let key = |e: &serde_json::Value| {
        (
            e["protocol"].as_str().unwrap().to_owned(),
            e["address"].as_str().unwrap().to_owned(),
            e["port"].as_u64().unwrap(),
            e["inodes"].to_string(),
            e["process"]["pid"].as_u64(),
        )
    };
    let mut diag: Vec<_> = scan_json(&ns, &["--all", "--source", "sock-diag"])
        .iter()
        .map(key)
        .collect();
    let mut procnet: Vec<_> = scan_json(&ns, &["--all", "--source", "proc-net"])
        .iter()
        .map(key)
        .collect();
    diag.sort();
    procnet.sort();
    assert_eq!(diag.len(), 10, "{diag:#?}");
    assert_eq!(diag, procnet);
}

/// Regression: output into a pipe that closes early (`scan | head`) panicked.
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let ns = Netns::new();
    let _l = ns.listen(&["tcp:127.0.0.1:0*300"]);
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ip netns exec {} {} scan --json | head -c 10 >/dev/null; exit \"${{PIPESTATUS[0]}}\"",
            ns.name,
            bin().display()
        ))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// A config another user could write to, or a `config.d/` another user may add files to,
/// is not policy: anyone could allow their own listener with it. Refused with the file,
/// the reason and the fix, exit 78, by `check-config` and by the daemon at start.
#[test]
fn a_policy_file_other_users_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[policy]\nalert_on = \"any\"\n").unwrap();
    chmod(&cfg, 0o644);
    let check = || portsentinel(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(check().status.code(), Some(0), "{}", stderr(&check()));

    chmod(&cfg, 0o666);
    let out = check();
    assert_eq!(out.status.code(), Some(78));
    let want = format!(
        "{}: refused: every user may write to it (mode 0666)",
        cfg.display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let run = portsentinel(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(78), "{}", stderr(&run));
    assert!(stderr(&run).contains("refused"), "{}", stderr(&run));
    chmod(&cfg, 0o644);

    let drop_ins = dir.path().join("config.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("50-x.toml"), "").unwrap();
    chmod(&drop_ins, 0o1777);
    let out = check();
    assert_eq!(out.status.code(), Some(78));
    let want = format!(
        "{}: refused: every user may write to the directory",
        drop_ins.display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    chmod(&drop_ins, 0o755);
    assert_eq!(check().status.code(), Some(0), "{}", stderr(&check()));
}

#[test]
fn check_config_takes_c_like_every_other_command() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/portsentinel.toml");
    let out = portsentinel(&["check-config", "-c", example]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("valid"), "{}", stdout(&out));
    let out = portsentinel(&["check-config", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

#[test]
fn v_and_q_set_how_much_the_diagnostics_say_on_every_command() {
    let ns = Netns::new();
    let say = |args: &[&str], env: Option<&str>| {
        let mut c = ns.command(util::bin());
        c.args(args).args(["scan", "--netns", "all"]);
        match env {
            Some(level) => c.env("PORTSENTINEL_LOG", level),
            None => c.env_remove("PORTSENTINEL_LOG"),
        };
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    // Quiet by default; -vv says what it does (debug), in plain text through a pipe.
    assert!(!say(&[], None).contains("watching network namespace"));
    let debug = say(&["-vv"], None);
    assert!(debug.contains("watching network namespace"), "{debug}");
    assert!(
        !debug.contains('\x1b'),
        "colour codes into a pipe: {debug:?}"
    );
    // The flags win over the variable.
    assert!(say(&[], Some("debug")).contains("watching network namespace"));
    assert!(!say(&["-q"], Some("debug")).contains("watching network namespace"));
    // Given after the subcommand too.
    let mut c = ns.command(util::bin());
    let out = c.args(["scan", "-vv", "--netns", "all"]).output().unwrap();
    assert!(stderr(&out).contains("watching network namespace"));
}

#[test]
fn a_link_local_listener_is_shown_with_its_interface() {
    let ns = Netns::new();
    for args in [
        "link add d0 type veth peer name d1",
        "link set d0 up",
        "link set d1 up",
        "addr add fe80::1/64 dev d0 nodad",
    ] {
        let mut c = Command::new("ip");
        c.args(["-n", &ns.name]).args(args.split(' '));
        util::run_ok(&mut c);
    }
    let link = util::run_ok(Command::new("ip").args(["-n", &ns.name, "-o", "link", "show", "d0"]));
    let index: u32 = stdout(&link)
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _l = ns.listen(&[&format!("tcp:[fe80::1%{index}]:867")]);
    let table = stdout(&ns.portsentinel(&["scan"]));
    assert!(table.contains("[fe80::1%d0]"), "{table}");
    let json = scan_json(&ns, &[]);
    let row = find(&json, "tcp", 867)[0];
    assert_eq!(
        (row["address"].as_str(), row["zone"].as_str()),
        (Some("fe80::1"), Some("d0")),
        "{row}"
    );
    // The daemon's record and its message.
    let mut d = util::Daemon::start(&ns, &["--log", "json"]);
    let alert = d.wait_for("the alert", |l| {
        l.contains("\"alert-raised\"") && l.contains("867")
    });
    let v: serde_json::Value = serde_json::from_str(&alert).unwrap();
    assert_eq!(v["LISTEN_ADDRESS"], "fe80::1%d0", "{v}");
    assert!(
        v["MESSAGE"].as_str().unwrap().contains("on [fe80::1%d0]"),
        "{v}"
    );
}
