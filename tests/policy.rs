//! Policies people can live with, with real listeners: a baseline as the "alert on
//! anything new" mode, expected owners and required listeners, rules that expire, user
//! names through NSS, and the built-in allowances against Debian's real daemons.

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use util::{Daemon, Netns, bin, find, listen_bin, scan_json, stderr, stdout};

/// `scan --check --config FILE` in the namespace: its exit status and output.
fn check(ns: &Netns, cfg: &Path) -> (Option<i32>, String) {
    let out = ns.portsentinel(&["scan", "--check", "--config", cfg.to_str().unwrap()]);
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// The baseline's lines without its comments.
fn rules_of(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn a_baseline_is_the_alert_on_anything_new_mode() {
    let ns = Netns::new();
    let _fixed = ns.listen(&[
        "tcp:0.0.0.0:22",
        "udp:127.0.0.53:53",
        "udp:0.0.0.0:5353",
        "tcp:0.0.0.0:867",
    ]);
    let ephemeral = ns.listen(&["udp:0.0.0.0:0"]);
    assert!(
        (32768..=60999).contains(&ephemeral.ports[0]),
        "{:?}",
        ephemeral.ports
    );
    let first = ns.portsentinel(&["baseline"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let baseline = stdout(&first);
    assert!(baseline.contains("port = \"ephemeral\""), "{baseline}");
    // 867 is in it (it is there now), but marked, and said: a baseline allows a backdoor
    // as readily as anything else.
    assert_eq!(baseline.matches("# ALERTED NOW").count(), 1, "{baseline}");
    let marked = baseline
        .lines()
        .position(|l| l.starts_with("# ALERTED NOW"))
        .unwrap();
    let rule: Vec<&str> = baseline.lines().skip(marked).take(6).collect();
    assert!(rule.contains(&"port = 867"), "{rule:?}");
    assert!(
        stderr(&first).contains("alerts on 1 listener(s) that this baseline allows: 867/tcp"),
        "{}",
        stderr(&first)
    );
    let again = stdout(&ns.portsentinel(&["baseline"]));
    assert_eq!(
        rules_of(&baseline),
        rules_of(&again),
        "two runs, the same rules"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config.d")).unwrap();
    std::fs::write(dir.path().join("config.d/50-baseline.toml"), &baseline).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[policy]\nalert_on = \"any\"\n").unwrap();
    let (code, out) = check(&ns, &cfg);
    assert_eq!(code, Some(0), "{out}");

    // The ephemeral-port program restarts on a new port: still nothing to say.
    ephemeral.stop();
    let moved = ns.listen(&["udp:0.0.0.0:0"]);
    assert!((32768..=60999).contains(&moved.ports[0]));
    let (code, out) = check(&ns, &cfg);
    assert_eq!(code, Some(0), "{out}");

    // Something new: alerted, and named.
    let backdoor = ns.listen(&["--name", "backdoor", "tcp:0.0.0.0:4444"]);
    let (code, out) = check(&ns, &cfg);
    assert_eq!(code, Some(1), "{out}");
    let scan = scan_json(&ns, &["--config", cfg.to_str().unwrap()]);
    let e = find(&scan, "tcp", 4444)[0];
    assert_eq!(e["verdict"]["alert"], true);
    assert_eq!(e["process"]["pid"], backdoor.pid);
    assert_eq!(e["verdict"]["condition"], "any");
}

/// A copy of the listen helper under another path: another program.
fn impostor(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("sshd");
    std::fs::copy(listen_bin(), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `[[expect]]` on 22, held as expected when the daemon starts; then a program named sshd
/// that is not the expected file takes the port: alerted once (unexpected-owner, naming
/// both), and nothing that satisfies the entry for longer than the grace is one
/// listener-missing record; the expected program back is one listener-restored.
#[test]
fn an_expected_owner_and_a_required_listener() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let fake = impostor(dir.path());
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\ninterval = \"200ms\"\nrestart_grace = \"1s\"\n\n[[expect]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nexe = \"{}\"\nrequired = true\n",
            listen_bin().display()
        ),
    )
    .unwrap();
    let first = ns.listen(&["tcp:0.0.0.0:22"]);
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the expected listener", |l| l.contains("LISTEN_PORT=22"));
    first.stop();
    let mut c = ns.command(&fake);
    c.args(["--name", "sshd", "tcp:0.0.0.0:22"]);
    let wrong = util::Listen::start(c);
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    assert!(alert.contains(" ALERT_SEVERITY=high"), "{alert}");
    let reason = alert.split("ALERT_REASON=").nth(1).unwrap();
    assert!(
        reason.contains(&format!(
            "22/tcp is expected to be held by {}",
            listen_bin().display()
        )) && reason.contains(&format!("held by {} (pid {})", fake.display(), wrong.pid)),
        "{alert}"
    );
    let scan = scan_json(&ns, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(
        find(&scan, "tcp", 22)[0]["verdict"]["condition"],
        "unexpected-owner"
    );

    let missing = d.wait_for("the missing record", |l| l.contains("listener-missing"));
    wrong.stop();
    assert!(
        missing.contains(" <4> ") && missing.contains(" EXPECT_NAME=ssh "),
        "{missing}"
    );
    let (code, out) = check(&ns, &cfg);
    assert_eq!(code, Some(1), "scan --check sees it missing: {out}");
    assert!(out.contains("MISSING"), "{out}");
    let _right = ns.listen(&["tcp:0.0.0.0:22"]);
    let restored = d.wait_for("the restored record", |l| l.contains("listener-restored"));
    assert!(restored.contains(" <5> "), "{restored}");
    let (_, seen) = d.terminate_lines();
    let count = |needle: &str| seen.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("PORTSENTINEL_EVENT=alert-raised"), 1, "{seen:#?}");
    assert_eq!(count("PORTSENTINEL_EVENT=listener-missing"), 1, "{seen:#?}");
    assert_eq!(
        count("PORTSENTINEL_EVENT=listener-restored"),
        1,
        "{seen:#?}"
    );
}

/// An `[[allow]]` with `until` two seconds ahead: the listener it allows is alerted within
/// one interval after that moment, with nothing else changing.
#[test]
fn a_rule_that_expires_lets_its_listener_be_alerted() {
    let ns = Netns::new();
    let until = SystemTime::now() + Duration::from_secs(2);
    let stamp = humantime::format_rfc3339_millis(until).to_string();
    let (_dir, cfg) = util::config_file(&format!(
        "[daemon]\ninterval = \"1s\"\n\n[[allow]]\nname = \"for now\"\nport = 867\nuntil = \"{}\"\n",
        humantime::format_rfc3339_seconds(until + Duration::from_millis(999))
    ));
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    let present = d.wait_for("the inventory", |l| l.contains("listener-present"));
    assert!(present.contains("allowed by [[allow]]"), "{present}");
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    let at = humantime::parse_rfc3339(alert.split_whitespace().next().unwrap()).unwrap();
    let expired = humantime::parse_rfc3339(
        &humantime::format_rfc3339_seconds(until + Duration::from_millis(999)).to_string(),
    )
    .unwrap();
    let after = at.duration_since(expired).unwrap_or_default();
    eprintln!("alerted {after:?} after the rule expired ({stamp})");
    assert!(at >= expired, "alerted before the rule expired: {alert}");
    assert!(
        after <= Duration::from_secs(1),
        "alerted {after:?} after: {alert}"
    );
    let out = ns.portsentinel(&["check-config", cfg.to_str().unwrap()]);
    assert!(stderr(&out).contains("expired at"), "{}", stderr(&out));
}

/// A config with five different errors: five `FILE:LINE:COL` lines, status 78.
#[test]
fn every_error_of_a_config_is_reported() {
    let (_dir, cfg) = util::config_file(
        "[daemon]\ninterval = \"10ms\"\nlog = 5\n\n[policy]\nalert_on = \"sometimes\"\n\n[[allow]]\nport = \"900-800\"\n\n[[allow]]\nprotocoll = \"tcp\"\n",
    );
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let file = cfg.display().to_string();
    let want = [
        ":2:12: daemon.interval",
        ":3:7: daemon.log",
        ":6:12: policy.alert_on",
        ":9:8: allow.port",
        ":12:1: unknown field `protocoll`",
    ];
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, want) in lines.iter().zip(want) {
        assert!(
            line.contains(&format!("{file}{want}")),
            "{line} (want {want})"
        );
    }
    assert!(err.contains("written backwards"), "{err}");
}

/// Users through NSS, in a private mount namespace whose /etc/passwd has an account
/// with /bin/false, one with a uid above 65535, and one only that file knows; and
/// `user = "root"` matching a root socket when scan cannot read its owner.
#[test]
fn user_rules_match_through_the_system_user_database() {
    let ns = Netns::new();
    ns.sysctl("net.ipv4.ip_unprivileged_port_start=0");
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let mut accounts = std::fs::read_to_string("/etc/passwd").unwrap();
    accounts.push_str("nologin:x:4000:4000::/nonexistent:/bin/false\nbigid:x:100000:100000::/nonexistent:/bin/false\nnssonly:x:4001:4001::/nonexistent:/usr/sbin/nologin\n");
    std::fs::write(&passwd, accounts).unwrap();
    let cfg = dir.path().join("config.toml");
    let mut rules = String::new();
    for (port, user) in [
        (861, "nologin"),
        (862, "bigid"),
        (863, "nssonly"),
        (864, "root"),
    ] {
        rules.push_str(&format!(
            "[[allow]]\nname = \"{user}\"\nport = {port}\nuser = \"{user}\"\n\n"
        ));
    }
    std::fs::write(&cfg, rules).unwrap();
    std::fs::copy(bin(), dir.path().join("portsentinel")).unwrap();
    std::fs::copy(listen_bin(), dir.path().join("listen")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Everything below runs in one private mount namespace with that /etc/passwd.
    let d = dir.path().display();
    let script = format!(
        "mount --bind {d}/passwd /etc/passwd\n\
         pids=\n\
         for spec in 4000:861 100000:862 4001:863; do\n\
           setpriv --reuid=${{spec%%:*}} --regid=${{spec%%:*}} --clear-groups {d}/listen --wait tcp:0.0.0.0:${{spec#*:}} >/dev/null 2>&1 &\n\
           pids=\"$pids $!\"\n\
         done\n\
         {d}/listen --wait tcp:0.0.0.0:864 >/dev/null 2>&1 &\n\
         pids=\"$pids $!\"\n\
         trap 'kill $pids' EXIT\n\
         sleep 1\n\
         {d}/portsentinel scan --json --config {d}/config.toml\n\
         echo '=== unprivileged'\n\
         setpriv --reuid=65534 --regid=65534 --clear-groups {d}/portsentinel scan --json --config {d}/config.toml\n"
    );
    let out = ns
        .command("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = stdout(&out);
    let (root_scan, unprivileged) = text
        .split_once("=== unprivileged")
        .unwrap_or_else(|| panic!("{}", stderr(&out)));
    let root: Vec<serde_json::Value> = serde_json::from_str(root_scan).unwrap();
    for (port, user) in [
        (861, "nologin"),
        (862, "bigid"),
        (863, "nssonly"),
        (864, "root"),
    ] {
        let e = find(&root, "tcp", port)[0];
        assert_eq!(e["verdict"]["alert"], false, "{user}: {e}");
        assert_eq!(
            e["process"]["user"], user,
            "names shown come from the same lookup: {e}"
        );
    }
    let plain: Vec<serde_json::Value> = serde_json::from_str(unprivileged).unwrap();
    let e = find(&plain, "tcp", 864)[0];
    assert_eq!(e["owner_unknown"], "no-permission", "{e}");
    assert_eq!(
        e["verdict"]["alert"], false,
        "root's socket, matched on its uid: {e}"
    );
}

/// A daemon started by a test: killed and reaped when dropped, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program` in the namespace until the scan shows its well-known listeners, the
/// same two scans in a row (it has opened all it opens); returns those listeners, after
/// `scan --check` has said nothing in the namespace is alerted (the program is stopped
/// again). `config` is the config `scan` reads: the default policy, whatever the machine
/// has at /etc/portsentinel.
fn start_and_scan(
    ns: &Netns,
    program: &mut Command,
    exe: &str,
    config: &str,
) -> Vec<serde_json::Value> {
    let spawned = program.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let _running = Running(spawned.unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut before: Option<Vec<serde_json::Value>> = None;
    loop {
        let scan = scan_json(ns, &["--config", config]);
        let own: Vec<serde_json::Value> = scan
            .into_iter()
            .filter(|e| e["process"]["exe"] == exe && e["range"] == "well-known")
            .collect();
        let ports = |v: &[serde_json::Value]| -> Vec<String> {
            v.iter()
                .map(|e| format!("{}/{}", e["port"], e["protocol"]))
                .collect()
        };
        if !own.is_empty() && before.as_deref().is_some_and(|b| ports(b) == ports(&own)) {
            let check = ns.portsentinel(&["scan", "--check", "--config", config]);
            assert!(check.status.success(), "{exe}: {}", util::stdout(&check));
            return own;
        }
        before = Some(own);
        assert!(Instant::now() < deadline, "{exe} never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A chrony.conf in `dir` that keeps chronyd's files there and takes its command port
/// on `bind`.
fn chrony_conf(dir: &Path, bind: &str) -> std::path::PathBuf {
    let conf = dir.join("chrony.conf");
    let text = format!(
        "pidfile {0}/chronyd.pid\ncmdport 323\nbindcmdaddress {bind}\ndriftfile {0}/drift\n",
        dir.display()
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

/// Debian's real chronyd, rpc.statd and ypbind, six starts each, under the default
/// policy: never alerted, allowed by a built-in rule; a process that merely calls itself
/// rpc.statd, and one on 323/udp on all interfaces, are alerted.
#[test]
fn real_daemons_are_allowed_by_the_built_in_rules() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let conf = chrony_conf(tmp.path(), "127.0.0.1");
    let yp = tmp.path().join("yp.conf");
    std::fs::write(&yp, "ypserver 127.0.0.1\n").unwrap();
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    let mut rpcbind = ns.command("/usr/sbin/rpcbind");
    let spawned = rpcbind.args(["-f", "-w"]).spawn();
    let rpcbind = Running(spawned.expect("rpcbind (Debian package rpcbind)"));
    let mut seen = Vec::new();
    let mut starts: std::collections::HashMap<&str, usize> = Default::default();
    for _ in 0..6 {
        let mut chronyd = ns.command("/usr/sbin/chronyd");
        chronyd.args(["-d", "-x", "-f"]).arg(&conf);
        let mut statd = ns.command("/usr/sbin/rpc.statd");
        statd.args(["-F", "-L"]);
        let mut ypbind = ns.command("unshare");
        ypbind.args(["--uts", "sh", "-c"]).arg(format!(
            "domainname test; exec /usr/sbin/ypbind -n -f {}",
            yp.display()
        ));
        for (mut cmd, exe) in [
            (chronyd, "/usr/sbin/chronyd"),
            (statd, "/usr/sbin/rpc.statd"),
            (ypbind, "/usr/sbin/ypbind"),
        ] {
            seen.extend(start_and_scan(&ns, &mut cmd, exe, empty));
            *starts.entry(exe).or_default() += 1;
        }
    }
    drop(rpcbind);
    assert!(starts.values().all(|&n| n == 6), "{starts:?}");
    for e in &seen {
        assert_eq!(e["verdict"]["alert"], false, "{e}");
        assert!(
            e["verdict"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("allowed by built-in rule"),
            "{e}"
        );
    }
    // Impostors: a name is not a program, and chrony's port is allowed on loopback only.
    let _named = ns.listen(&["--name", "rpc.statd", "udp:0.0.0.0:867"]);
    let _wide = ns.listen(&["udp:0.0.0.0:323"]);
    let scan = scan_json(&ns, &["--config", empty]);
    assert_eq!(find(&scan, "udp", 867)[0]["verdict"]["alert"], true);
    assert_eq!(find(&scan, "udp", 323)[0]["verdict"]["alert"], true);
}

/// Any user may run the real chronyd in a user and network namespace of their own, where
/// they are root and may load code of their own into it (`LD_PRELOAD`): the same file,
/// but a socket made by that user, not by root. The built-in rule is for root's sockets,
/// so that one is alerted, and says why in the host's terms.
#[test]
fn a_users_own_chronyd_does_not_borrow_the_built_in_rule() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let conf = chrony_conf(tmp.path(), "127.0.0.1");
    // Root in its namespace, chronyd stays the user it is (it cannot become _chrony).
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("user root\n");
    std::fs::write(&conf, text).unwrap();
    // The config scan reads stays out of reach: a directory everyone may write to is not
    // one it reads policy from.
    let own = tempfile::tempdir().unwrap();
    let empty = own.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let mut chronyd = Command::new("setpriv");
    chronyd
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "--user", "--map-root-user", "--net", "sh", "-c"])
        .arg(format!(
            "ip link set lo up && exec /usr/sbin/chronyd -d -x -f {}",
            conf.display()
        ));
    let running = Running(
        chronyd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = running.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let theirs = loop {
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("chronyd runs");
        let out = Command::new(bin())
            .args(["scan", "--json", "--config", empty.to_str().unwrap()])
            .args(["--netns", &format!("netns:{netns}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let scan: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(e) = scan
            .into_iter()
            .find(|e| e["process"]["exe"] == "/usr/sbin/chronyd" && e["port"] == 323)
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "chronyd never listened on 127.0.0.1:323 in its namespace"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(theirs["uid"], 65534, "{theirs}");
    assert_eq!(theirs["verdict"]["alert"], true, "{theirs}");
    let reason = theirs["verdict"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("323/udp") && !reason.contains("built-in"),
        "{reason}"
    );
}

/// The real chronyd told to take its command port on every interface: its rule is for
/// loopback only, so it is alerted.
#[test]
fn chronyd_on_every_interface_is_alerted() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let conf = chrony_conf(tmp.path(), "0.0.0.0");
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let mut chronyd = ns.command("/usr/sbin/chronyd");
    chronyd.args(["-d", "-x", "-f"]).arg(&conf);
    let _running = Running(
        chronyd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let wide = loop {
        let scan = scan_json(&ns, &["--config", empty.to_str().unwrap()]);
        if let Some(e) = scan.into_iter().find(|e| {
            e["process"]["exe"] == "/usr/sbin/chronyd"
                && e["port"] == 323
                && e["address"] == "0.0.0.0"
        }) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "chronyd never listened on 0.0.0.0:323"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(wide["verdict"]["alert"], true, "{wide}");
}
