//! Owners that lie or vanish, with real processes: a name that is not UTF-8, a process
//! whose descriptors cannot be read, a decoy that holds the socket for a while, and an
//! allowed program's path bind-mounted over by another binary.

mod util;

use util::{Daemon, Listen, Netns, config_file, find, listen_bin, scan_json, stderr};

/// A process named with bytes that are not UTF-8 is shown with its pid and exe (it used
/// to be "vanished": its /proc/PID/stat was read as text).
#[test]
fn a_name_that_is_not_utf8_hides_nothing() {
    let ns = Netns::new();
    let l = ns.listen(&["--name-hex", "fffefd626164", "tcp:0.0.0.0:867"]);
    let scan = scan_json(&ns, &[]);
    let e = find(&scan, "tcp", 867)[0];
    assert_eq!(e["process"]["pid"], l.pid, "{e}");
    assert_eq!(e["process"]["exe"], listen_bin().display().to_string());
    assert_eq!(e["process"]["name"], "\u{fffd}\u{fffd}\u{fffd}bad");
    assert_eq!(e["process"]["name_lossy"], true);
    let mut d = Daemon::start(&ns, &["--log", "text", "--interval", "100ms"]);
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    assert!(
        alert.contains(&format!(" LISTENER_PID={} ", l.pid)),
        "{alert}"
    );
    assert!(d.terminate().success());
}

/// A non-dumpable process of another user, scanned by root without CAP_SYS_PTRACE: its fd
/// directory can be listed but not its links. The owner is unknown for lack of
/// permission; it must never look like a kernel socket.
#[test]
fn an_owner_that_cannot_be_read_is_no_permission_never_kernel() {
    let ns = Netns::new();
    ns.sysctl("net.ipv4.ip_unprivileged_port_start=0");
    let mut c = ns.command("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(listen_bin())
        .args(["--nondumpable", "tcp:0.0.0.0:867"]);
    let _l = Listen::start(c);
    let mut c = ns.command("setpriv");
    c.args(["--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"])
        .arg(util::bin())
        .args(["scan", "--json", "--netns", "host"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let scan: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let e = find(&scan, "tcp", 867)[0];
    assert_eq!(e["owner_unknown"], "no-permission", "{e}");
    assert_eq!(e["uid"], 65534);
    assert_eq!(e["verdict"]["alert"], true);
}

const ALLOW_SLEEP: &str = "[daemon]\ninterval = \"1s\"\n[[allow]]\nname = \"sleep\"\nport = 868\nexe = \"/usr/bin/sleep\"\n";

/// The daemon on `config` (polls alone: instant detection would look the moment the helper
/// listens, before it hands the socket to the decoy, and rightly name the helper), then a
/// helper that binds 868 and hands the socket to /usr/bin/sleep, recorded as sleep's.
/// Returns the daemon, the helper, sleep's pid, and the config's directory.
fn decoy_on_868(ns: &Netns, config: &str) -> (Daemon, Listen, u32, tempfile::TempDir) {
    let (dir, cfg) = config_file(config);
    let mut d = polls_alone(ns, &cfg);
    d.wait_for("the start", |l| l.contains("starting"));
    let l = ns.listen(&["--decoy", "/usr/bin/sleep", "tcp:0.0.0.0:868"]);
    let decoy = l.decoy.expect("a decoy");
    let opened = d.wait_for("the decoy's listener", |l| l.contains("LISTEN_PORT=868"));
    assert!(
        opened.contains("PORTSENTINEL_EVENT=listener-opened"),
        "{opened}"
    );
    assert!(
        opened.contains(&format!(" LISTENER_PID={decoy} ")),
        "{opened}"
    );
    (d, l, decoy, dir)
}

/// The socket recorded as changing hands from the decoy to the helper, then the helper
/// alerted.
fn changed_hands_and_alerted(d: &mut Daemon, l: &Listen, decoy: u32) {
    let changed = d.wait_for("the change of hands", |l| {
        l.contains("listener-owner-changed")
    });
    for field in [
        format!(" LISTENER_PID={} ", l.pid),
        format!(" LISTENER_PREVIOUS_PID={decoy} "),
        " LISTENER_PREVIOUS_EXE=/usr/bin/sleep ".to_owned(),
    ] {
        assert!(changed.contains(&field), "{field}: {changed}");
    }
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    for field in [
        format!(" LISTENER_PID={} ", l.pid),
        format!(" LISTENER_EXE={} ", listen_bin().display()),
    ] {
        assert!(alert.contains(&field), "{field}: {alert}");
    }
}

/// The daemon on the config file `cfg`, by polls alone.
fn polls_alone(ns: &Netns, cfg: &std::path::Path) -> Daemon {
    let cfg = cfg.to_str().unwrap();
    Daemon::start(ns, &["--log", "text", "--instant", "off", "--config", cfg])
}

/// Whether `pid` holds a socket.
fn holds_a_socket(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
}

/// The decoy: a process binds 868, hands the socket to an allowed /usr/bin/sleep, takes
/// it back with pidfd_getfd and lets sleep die. The socket changes hands, and the new
/// holder is named and alerted on.
#[test]
fn a_decoy_holder_does_not_vouch_for_the_real_one() {
    let ns = Netns::new();
    let (mut d, mut l, decoy, _dir) = decoy_on_868(&ns, ALLOW_SLEEP);
    let taken = std::time::Instant::now();
    l.say("take");
    changed_hands_and_alerted(&mut d, &l, decoy);
    eprintln!("changed hands after {:?}", taken.elapsed());
    assert!(d.terminate().success());
}

/// The decoy kept alive: the allowed /usr/bin/sleep holds the socket on while the process
/// that took it back serves on it. The owners' sweep of every fd table finds the second
/// holder (every `owner_sweep`: a second here, a minute by default), and the listener is
/// judged as it, named and alerted.
#[test]
fn a_decoy_kept_alive_does_not_vouch_for_the_program_beside_it() {
    let ns = Netns::new();
    let config = ALLOW_SLEEP.replace("interval = \"1s\"", "owner_sweep = \"1s\"");
    let (mut d, mut l, decoy, _dir) = decoy_on_868(&ns, &config);
    l.say("share");
    changed_hands_and_alerted(&mut d, &l, decoy);
    // sleep still holds the socket: it was not let go of, and is not said to be.
    assert!(
        holds_a_socket(decoy),
        "the decoy let go of the socket; the test proves nothing"
    );
    assert!(d.terminate().success());
}

/// A decoy set up the way an attacker would, before anyone looks: bind 868, fork, and the
/// parent becomes the allowed /usr/bin/sleep while the child serves (with `worker`, beside
/// a worker of its own, another python3). Returns the child and sleep's pid.
fn decoy_forked(ns: &Netns, worker: bool) -> (Listen, u32) {
    let script = format!(
        "import os, socket, sys\n\
        s = socket.socket()\n\
        s.bind(('0.0.0.0', 868))\n\
        s.listen()\n\
        s.set_inheritable(True)\n\
        if os.fork() == 0:\n\
        \x20   pad = [open('/dev/null') for _ in range(8)]\n\
        \x20   if {worker} and os.fork() == 0:\n\
        \x20       sys.stdin.readline()\n\
        \x20       os._exit(0)\n\
        \x20   print(f'ready pid={{os.getpid()}} ports=868', flush=True)\n\
        \x20   sys.stdin.readline()\n\
        \x20   os._exit(0)\n\
        os.execv('/usr/bin/sleep', ['sleep', '3600'])\n",
        worker = if worker { "True" } else { "False" }
    );
    let mut c = ns.command("python3");
    c.arg("-c").arg(script);
    let l = Listen::start(c);
    let decoy = l.child.id();
    let start = std::time::Instant::now();
    while std::fs::read_link(format!("/proc/{decoy}/exe"))
        .map_or(true, |e| e != std::path::Path::new("/usr/bin/sleep"))
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no sleep"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (l, decoy)
}

/// The same decoy, in front of `scan`: the first holder found (sleep) names the socket and
/// vouches for it; `scan --all-holders` reads every fd table to its end, lists every pid
/// that holds it (sleep, the child and its worker) and judges it as the child, alerted.
#[test]
fn scan_with_all_holders_lists_every_holder_and_a_decoy_vouches_for_nothing() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file(ALLOW_SLEEP);
    let cfg = cfg.to_str().unwrap();
    let (l, decoy) = decoy_forked(&ns, true);
    let worker = |l: &Listen| {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", l.pid));
        children.unwrap().trim().parse::<u32>().ok()
    };
    let start = std::time::Instant::now();
    let worker = loop {
        if let Some(w) = worker(&l).filter(|&w| holds_a_socket(w)) {
            break w;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no worker"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let first = scan_json(&ns, &["--config", cfg]);
    let first = find(&first, "tcp", 868)[0];
    assert_eq!(first["process"]["pid"], decoy, "{first}");
    assert_eq!(first["verdict"]["alert"], false, "{first}");

    let all = scan_json(&ns, &["--config", cfg, "--all-holders"]);
    let all = find(&all, "tcp", 868)[0];
    assert_eq!(all["verdict"]["alert"], true, "{all}");
    assert_eq!(all["process"]["pid"], l.pid, "{all}");
    assert_eq!(all["process"]["name"], "python3", "{all}");
    let mut pids = vec![decoy, l.pid, worker];
    pids.sort_unstable();
    assert_eq!(all["pids"], serde_json::json!(pids), "{all}");
    // The table says so too: the program, and how many more hold it.
    let table = ns.portsentinel(&["scan", "--config", cfg, "--all-holders"]);
    let table = util::stdout(&table);
    let row = table.lines().find(|r| r.contains(" 868 ")).unwrap();
    assert!(
        row.contains(&format!("python3[{}] +2", l.pid)) && row.contains("ALERT"),
        "{table}"
    );
}

/// A decoy in place before the daemon starts, the way an attacker would set it up: bind 868,
/// fork, and the parent becomes the allowed /usr/bin/sleep while the child serves. Sleep
/// is read first (a lower pid, a smaller fd table, no parent holding the socket) and would
/// vouch for the child; the daemon's first look also reads every fd table to the end, so
/// the inventory already names the child, alerted.
#[test]
fn a_decoy_in_place_before_the_start_vouches_for_nothing_at_the_first_look() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file(ALLOW_SLEEP);
    let (l, decoy) = decoy_forked(&ns, false);
    assert!(holds_a_socket(decoy) && holds_a_socket(l.pid) && decoy < l.pid);
    let mut d = polls_alone(&ns, &cfg);
    let alert = d.wait_for("the alert", |l| {
        l.contains("alert-raised") && l.contains("LISTEN_PORT=868")
    });
    assert!(
        alert.contains(&format!(" LISTENER_PID={} ", l.pid)),
        "{alert}"
    );
    assert!(alert.contains(" LISTENER_COMM=python3 "), "{alert}");
    assert!(d.terminate().success());
}

/// A thread with an fd table of its own (`unshare(CLONE_FILES)`) listens on 867: the
/// socket is in no `/proc/PID/fd`, only in that thread's table. Its process is named,
/// never "kernel".
#[test]
fn a_socket_in_a_threads_own_fd_table_is_its_process() {
    let ns = Netns::new();
    let script = "import ctypes, os, socket, sys, threading\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        def hide():\n\
        \x20   assert libc.unshare(0x400) == 0  # CLONE_FILES\n\
        \x20   s = socket.socket()\n\
        \x20   s.bind(('0.0.0.0', 867))\n\
        \x20   s.listen()\n\
        \x20   print(f'ready pid={os.getpid()} ports=867', flush=True)\n\
        \x20   threading.Event().wait()\n\
        threading.Thread(target=hide, daemon=True).start()\n\
        sys.stdin.readline()\n";
    let mut c = ns.command("python3");
    c.arg("-c").arg(script);
    let l = Listen::start(c);
    let main_table = std::fs::read_dir(format!("/proc/{}/fd", l.pid)).unwrap();
    let in_main = main_table.flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
    });
    assert!(!in_main, "the socket is in the thread's table only");
    let scan = scan_json(&ns, &[]);
    let e = find(&scan, "tcp", 867)[0];
    assert_eq!(e["process"]["pid"], l.pid, "{e}");
    assert!(e["owner_unknown"].is_null(), "{e}");
}

/// An allowed program that keeps its listening socket and `execve`s another: same pid,
/// same start time, same descriptor. The owner's program is checked again on later
/// polls, so the change is recorded and the new program judged (and alerted).
#[test]
fn an_allowed_program_that_execs_another_is_judged_again() {
    let ns = Netns::new();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let (_dir, cfg) = config_file(&format!(
        "[daemon]\ninterval = \"1s\"\n[policy]\nalert_on = \"any\"\n\
         [[allow]]\nname = \"py\"\nport = 868\nexe = \"{}\"\n",
        python.display()
    ));
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the start", |l| l.contains("starting"));
    let script = "import os, socket, sys\n\
        s = socket.socket()\n\
        s.bind(('0.0.0.0', 868))\n\
        s.listen()\n\
        os.set_inheritable(s.fileno(), True)\n\
        print(f'ready pid={os.getpid()} ports=868', flush=True)\n\
        sys.stdin.readline()\n\
        os.execv('/usr/bin/sleep', ['sleep', '3600'])\n";
    let mut c = ns.command(&python);
    c.arg("-c").arg(script);
    let mut l = Listen::start(c);
    let opened = d.wait_for("the allowed listener", |l| l.contains("LISTEN_PORT=868"));
    assert!(
        opened.contains("PORTSENTINEL_EVENT=listener-opened"),
        "{opened}"
    );
    l.say("exec");
    let changed = d.wait_for("the new program", |l| l.contains("listener-owner-changed"));
    assert!(
        changed.contains(" LISTENER_EXE=/usr/bin/sleep "),
        "{changed}"
    );
    assert!(
        changed.contains(&format!(" LISTENER_PREVIOUS_EXE={} ", python.display())),
        "{changed}"
    );
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    assert!(
        alert.contains(&format!(" LISTENER_PID={} ", l.pid)),
        "{alert}"
    );
}

/// In a user and mount namespace of its own, anyone can bind-mount another binary over
/// /usr/bin/sleep: /proc/PID/exe then reads /usr/bin/sleep. The rule's path is checked as
/// the host's file, so the spoof is alerted, and the verdict says why.
#[test]
fn a_bind_mounted_exe_is_not_the_allowed_program() {
    let ns = Netns::new();
    ns.sysctl("net.ipv4.ip_unprivileged_port_start=0");
    let (_dir, cfg) = config_file(ALLOW_SLEEP);
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the start", |l| l.contains("starting"));
    let script = format!(
        "mount --bind {} /usr/bin/sleep && exec /usr/bin/sleep tcp:0.0.0.0:868",
        listen_bin().display()
    );
    let mut c = ns.command("unshare");
    c.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
    let l = Listen::start(c);
    let exe = std::fs::read_link(format!("/proc/{}/exe", l.pid)).unwrap();
    assert_eq!(exe.to_str(), Some("/usr/bin/sleep"), "the spoof works");
    let alert = d.wait_for("the alert", |l| l.contains("alert-raised"));
    assert!(alert.contains(" LISTENER_EXE=/usr/bin/sleep "), "{alert}");
    assert!(
        alert.contains("[[allow]] \\x22sleep\\x22")
            && alert.contains("exe /usr/bin/sleep is not the host's /usr/bin/sleep"),
        "{alert}"
    );
    // (The real /usr/bin/sleep holding a socket is allowed: see the decoy test.)
    assert!(d.terminate().success());
}
