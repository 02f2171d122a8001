//! Every network namespace, with real ones: a fresh one from `unshare --net`, a named one
//! from `ip netns add` (deleted while the daemon runs), and a container made by hand (a
//! real cgroup named as Docker names its containers, its own network and PID namespaces,
//! and Docker's state file on disk), on the unified hierarchy and on a v1 one.
//!
//! The daemon runs in a test namespace of its own (its "host") and looks at every
//! namespace on the machine, so it also sees the other tests' listeners: each test waits
//! for records of its own listener's pid only.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{Daemon, Listen, Netns, find, listen_bin, scan_json, stdout};

fn netns_inode(pid: u32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let link = link.to_string_lossy();
    link.trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

/// The daemon on every namespace, its records as JSON lines.
fn daemon(ns: &Netns) -> Daemon {
    let mut d = Daemon::start_with_env(
        ns,
        &[
            "--log",
            "json",
            "--interval",
            "200ms",
            "--namespaces",
            "all",
        ],
        &[("PORTSENTINEL_LOG", "debug")],
    );
    d.wait_for("the start", |l| l.contains("starting"));
    d
}

/// The scan entries of every namespace held by `pid`.
fn scanned(ns: &Netns, pid: u32) -> Vec<serde_json::Value> {
    scan_json(ns, &["--netns", "all"])
        .into_iter()
        .filter(|e| e["process"]["pid"] == pid)
        .collect()
}

/// A process the daemon has already seen in its own namespace enters a new one (the
/// same pid: `exec unshare --net`) and listens there. Its namespace link was read
/// before, and a full look comes only every 30 polls (30 s here, longer than the record
/// is waited for); the kernel's event names the unknown namespace, and the next poll
/// looks for it.
#[test]
fn a_known_process_that_unshares_later_is_found_by_the_next_poll() {
    let ns = Netns::new();
    let mut d = Daemon::start_with_env(
        &ns,
        &["--log", "json", "--interval", "1s", "--namespaces", "all"],
        &[("PORTSENTINEL_LOG", "debug")],
    );
    // TCP listens are what this needs (UDP binds may be left to the polls here).
    let word = d.wait_for("instant detection", |l| l.contains("instant detection"));
    assert!(
        word.contains("instant detection on") || word.contains("for TCP only"),
        "{word}"
    );
    // The shell says its pid, then waits for a word before it becomes the listener.
    let mut c = ns.command("sh");
    c.arg("-c").arg(format!(
        "echo ready pid=$$; read go; exec unshare --net {} tcp:0.0.0.0:867 >/dev/null",
        listen_bin().display()
    ));
    let mut l = Listen::start(c);
    // A listener opened after the shell started is recorded by a poll that has read the
    // shell's namespace link (in the daemon's own namespace): only then the word.
    let marker = ns.listen(&["tcp:127.0.0.1:0"]);
    d.record("listener-opened", marker.pid);
    l.say("go");
    let alert = d.record("alert-raised", l.pid);
    assert!(
        alert.get("LISTEN_LIFETIME_MS").is_none(),
        "still listening: {alert}"
    );
    assert_eq!(
        alert["LISTEN_NETNS"],
        netns_inode(l.pid).to_string(),
        "{alert}"
    );
}

/// Acceptance 1: a listener in a namespace no name points at, made by `unshare --net`.
#[test]
fn a_listener_in_a_fresh_namespace_is_alerted_with_its_namespace() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let mut c = ns.command("unshare");
    c.arg("--net").arg(listen_bin()).arg("tcp:0.0.0.0:867");
    let l = Listen::start(c);
    let inode = netns_inode(l.pid);

    let alert = d.record("alert-raised", l.pid);
    assert_eq!(alert["LISTEN_NETNS"], inode.to_string(), "{alert}");
    assert_eq!(alert["LISTEN_PORT"], "867");
    assert_eq!(
        alert["LISTENER_EXE"],
        listen_bin().display().to_string(),
        "{alert}"
    );
    assert!(alert.get("LISTEN_NETNS_NAME").is_none(), "{alert}");
    let message = alert["MESSAGE"].as_str().unwrap();
    assert!(
        message.contains(&format!("in network namespace netns:{inode}")),
        "{message}"
    );
    // Reach words speak of that namespace's interfaces, not the host's.
    assert!(
        message.contains(&format!(
            "(all IPv4 interfaces, in network namespace netns:{inode})"
        )),
        "{message}"
    );

    let entries = scanned(&ns, l.pid);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["netns"]["inode"], inode);
    assert_eq!(entries[0]["netns"]["host"], false);
    assert_eq!(entries[0]["port"], 867);
    let table = stdout(&ns.portsentinel(&["scan", "--netns", "all"]));
    let row = table
        .lines()
        .find(|r| r.contains(&format!("listen[{}]", l.pid)))
        .unwrap_or_else(|| panic!("no row of listen[{}] in\n{table}", l.pid));
    assert!(row.starts_with(&format!("netns:{inode} ")), "{row}");
    let only = scan_json(&ns, &["--netns", &format!("netns:{inode}")]);
    assert_eq!(only.len(), 1, "{only:#?}");
    // The daemon's own namespace has no 867.
    assert!(find(&scan_json(&ns, &[]), "tcp", 867).is_empty());
    drop(l);
    assert!(d.terminate().success());
}

/// The namespace of `pid`'s thread other than its main one.
fn thread_netns(pid: u32) -> u64 {
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().file_name().to_string_lossy().parse().unwrap())
        .find(|tid: &u32| *tid != pid)
        .expect("a second thread");
    netns_inode(tid)
}

/// `pid`'s listener on 867 is alerted in the namespace `inode`, and `scan` shows it there.
fn alerted_in(d: &mut Daemon, ns: &Netns, pid: u32, inode: u64) {
    let alert = d.record("alert-raised", pid);
    assert_eq!(alert["LISTEN_NETNS"], inode.to_string(), "{alert}");
    assert_eq!(alert["LISTEN_PORT"], "867", "{alert}");
    let entries = scanned(ns, pid);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["netns"]["inode"], inode, "{entries:#?}");
    assert_eq!(entries[0]["port"], 867);
}

/// A python3 whose second thread moves into a new network namespace alone
/// (`unshare(CLONE_NEWNET)`) and listens on 867/tcp there. The thread stays there; with
/// `go_back`, it returns to its process's namespace and ends, and only the socket is left
/// in the new one.
fn thread_listener(ns: &Netns, go_back: bool) -> Listen {
    let (stay, leave) = if go_back {
        (
            "\x20   if libc.setns(home, 0x40000000) != 0:\n\
             \x20       raise OSError(ctypes.get_errno(), 'setns')\n\
             \x20   kept.append(s)\n",
            "t = threading.Thread(target=worker)\n\
             t.start()\n\
             t.join()\n\
             print(f'ready pid={os.getpid()} ports=867', flush=True)\n\
             sys.stdin.readline()\n",
        )
    } else {
        (
            "\x20   print(f'ready pid={os.getpid()} ports=867', flush=True)\n\
             \x20   sys.stdin.readline()\n\
             \x20   os._exit(0)\n",
            "threading.Thread(target=worker).start()\n",
        )
    };
    let script = format!(
        "import ctypes, os, socket, sys, threading\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         home = os.open('/proc/self/ns/net', os.O_RDONLY)\n\
         kept = []\n\
         def worker():\n\
         \x20   if libc.unshare(0x40000000) != 0:\n\
         \x20       raise OSError(ctypes.get_errno(), 'unshare')\n\
         \x20   s = socket.socket()\n\
         \x20   s.bind(('0.0.0.0', 867))\n\
         \x20   s.listen()\n\
         {stay}{leave}"
    );
    let mut c = ns.command("python3");
    c.arg("-c").arg(script);
    Listen::start(c)
}

/// A thread alone moves into a new namespace (`unshare(CLONE_NEWNET)` from a second thread)
/// and listens there, while its process's main thread stays in the daemon's namespace:
/// `/proc/PID/ns/net` never names that namespace, and neither `ss` nor a reader of every
/// pid's link sees the listener. The daemon and `scan` find it through the thread.
#[test]
fn a_listener_in_a_namespace_only_a_thread_entered_is_found() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let l = thread_listener(&ns, false);
    let main = netns_inode(l.pid);
    let inode = thread_netns(l.pid);
    assert_ne!(inode, main, "the thread did not move");
    alerted_in(&mut d, &ns, l.pid, inode);
    // Not in the namespace of the process's main thread (the daemon's own).
    assert!(find(&scan_json(&ns, &[]), "tcp", 867).is_empty());

    let pid = l.pid;
    l.stop();
    let closed = d.record("alert-cleared", pid);
    assert_eq!(closed["EVENT_DETAIL"], "listener closed", "{closed}");
    assert!(d.terminate().success());
}

/// A process alone in a fresh namespace whose main thread has exited (`pthread_exit`),
/// its other thread listening: the process shows as a zombie, with no `/proc/PID/ns/net`
/// to read and no descriptors of its own. Its namespace is found through the thread, and
/// the listener is its.
#[test]
fn a_namespace_whose_only_process_lost_its_main_thread_is_found() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let script = "import ctypes, os, socket, sys, threading\n\
        def worker():\n\
        \x20   s = socket.socket()\n\
        \x20   s.bind(('0.0.0.0', 867))\n\
        \x20   s.listen()\n\
        \x20   print(f'ready pid={os.getpid()} ports=867', flush=True)\n\
        \x20   sys.stdin.readline()\n\
        \x20   os._exit(0)\n\
        threading.Thread(target=worker).start()\n\
        ctypes.CDLL(None).pthread_exit(None)\n";
    let mut c = ns.command("unshare");
    c.args(["--net", "python3", "-c", script]);
    let l = Listen::start(c);
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(format!("/proc/{}/stat", l.pid))
        .unwrap()
        .contains(") Z ")
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::fs::read_link(format!("/proc/{}/ns/net", l.pid)).is_err());
    alerted_in(&mut d, &ns, l.pid, thread_netns(l.pid));
    drop(l);
    assert!(d.terminate().success());
}

/// A thread enters a new namespace, listens there and goes back: no process or thread is
/// in that namespace any more, only the socket, which no table the daemon can read shows
/// (a limit the README states). The kernel announced the listen all the same, and the
/// warning that counts such sockets, 30 s on, says what the kernel said of it.
#[test]
fn a_listener_left_behind_in_a_namespace_is_named_by_the_warning() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let word = d.wait_for("instant detection", |l| l.contains("instant detection"));
    assert!(
        word.contains("instant detection on") || word.contains("for TCP only"),
        "{word}"
    );
    let l = thread_listener(&ns, true);
    let warning = d.wait_for_within(
        "the warning about the announced socket",
        std::time::Duration::from_secs(60),
        |line| {
            line.contains("neither seen by a poll nor closed")
                && line.contains("867/tcp on 0.0.0.0 in netns:")
                && line.contains(&format!("by pid {} (python3, uid 0)", l.pid))
        },
    );
    assert!(warning.contains("\"PRIORITY\":\"4\""), "{warning}");
    drop(l);
    assert!(d.terminate().success());
}

/// Acceptance 2: a namespace `ip netns` named; deleted, it leaves nothing behind.
#[test]
fn a_named_namespace_is_named_and_forgotten_when_deleted() {
    let ns = Netns::new();
    let mut d = daemon(&ns);
    let vpn = Netns::new();
    let l = vpn.listen(&["tcp:0.0.0.0:867"]);
    let inode = netns_inode(l.pid);

    let alert = d.record("alert-raised", l.pid);
    assert_eq!(alert["LISTEN_NETNS"], inode.to_string());
    assert_eq!(alert["LISTEN_NETNS_NAME"], vpn.name, "{alert}");
    let message = alert["MESSAGE"].as_str().unwrap();
    assert!(
        message.contains(&format!("in network namespace {}", vpn.name)),
        "{message}"
    );
    let entries = scanned(&ns, l.pid);
    assert_eq!(
        entries[0]["netns"]["name"],
        vpn.name.as_str(),
        "{entries:#?}"
    );
    let by_name = scan_json(&ns, &["--netns", &vpn.name]);
    assert_eq!(by_name.len(), 1, "{by_name:#?}");

    let pid = l.pid;
    drop(l);
    // An alerted listener's close is its alert's end.
    let closed = d.record("alert-cleared", pid);
    assert_eq!(closed["EVENT_DETAIL"], "listener closed", "{closed}");
    assert_eq!(closed["LISTEN_NETNS_NAME"], vpn.name, "{closed}");
    let name = vpn.name.clone();
    drop(vpn); // ip netns delete
    d.wait_for("the namespace's end", |l| {
        l.contains(&format!("network namespace {name} (netns:{inode}) is gone"))
    });
    let out = ns.portsentinel(&["scan", "--netns", &name]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let (status, lines) = d.terminate_lines();
    assert!(status.success());
    // Nothing about it after it went: no failed read, no second close.
    let gone_at = lines
        .iter()
        .position(|l| l.contains(&format!("{name} (netns:{inode}) is gone")))
        .unwrap();
    for line in &lines[gone_at + 1..] {
        assert!(!line.contains(&name), "after the deletion: {line}");
    }
}

/// A Docker container's id: 64 hex digits, different in every run.
fn container_id() -> String {
    let seed = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut id = String::new();
    for round in 0..4u8 {
        for b in seed.bytes().chain([round]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        id.push_str(&format!("{h:016x}"));
    }
    id
}

/// What a test made on the machine, removed when it ends: the cgroups (deepest first,
/// once empty), Docker's state directory for the id (and the directories above it that
/// were not there), and a hierarchy it mounted.
#[derive(Default)]
struct Made {
    cgroups: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    mount: Option<tempfile::TempDir>,
}

impl Made {
    /// Creates `dir` and remembers each directory that was not there.
    fn create_dir(&mut self, dir: &Path, cgroup: bool) {
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(PathBuf::from)
            .collect();
        std::fs::create_dir_all(dir).unwrap();
        if cgroup {
            self.cgroups.append(&mut missing);
        } else {
            self.dirs.append(&mut missing);
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for dir in &self.cgroups {
            // A cgroup can be removed once its last process has been reaped.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(m) = &self.mount {
            let _ = Command::new("umount").arg(m.path()).status();
        }
    }
}

/// Where the unified hierarchy is mounted; mounted here for the test when it is not.
fn cgroup2(made: &mut Made) -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if let Some(at) = mounts.lines().find_map(|m| {
        let f: Vec<&str> = m.split(' ').collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    }) {
        return at;
    }
    mount(made, &["-t", "cgroup2", "none"])
}

fn mount(made: &mut Made, args: &[&str]) -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    util::run_ok(Command::new("mount").args(args).arg(dir.path()));
    let at = dir.path().to_owned();
    made.mount = Some(dir);
    at
}

/// A process in a container made by hand: `cgroup` (under a mounted hierarchy) is
/// created, the shell moves itself into it, and `unshare` gives the listener its own
/// network and PID namespaces. Returns the helper and the listener's pid on the host.
/// (Not through `ip netns exec`, which mounts a `/sys` of its own without the cgroups.)
fn containerised(cgroup: &Path, spec: &str) -> (Listen, u32) {
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec unshare --net --pid --fork --kill-child \"$0\" {spec}",
        cgroup.display()
    );
    let mut c = Command::new("sh");
    c.args(["-c", &script]).arg(listen_bin());
    let l = Listen::start(c);
    // The helper, pid 1 of its namespace, says so; its pid here is unshare's child.
    assert_eq!(l.pid, 1, "the listener has a PID namespace of its own");
    let unshare = l.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
    let pid = children.split_whitespace().next().unwrap().parse().unwrap();
    (l, pid)
}

/// One container under `hierarchy` at `path` (which holds `id`), named `web-1` in
/// Docker's state on disk: the daemon's alert, `scan --json` and the table name it.
fn a_container_is_named(made: &mut Made, hierarchy: &Path, path: &str, id: &str) {
    let ns = Netns::new();
    let cgroup = hierarchy.join(path);
    made.create_dir(&cgroup, true);
    let state = PathBuf::from("/var/lib/docker/containers").join(id);
    made.create_dir(&state, false);
    std::fs::write(
        state.join("config.v2.json"),
        r#"{"ID":"x","Name":"/web-1","Config":{}}"#,
    )
    .unwrap();
    let mut d = daemon(&ns);
    let (l, pid) = containerised(&cgroup, "tcp:0.0.0.0:867");
    let inode = netns_inode(pid);

    let alert = d.record("alert-raised", pid);
    assert_eq!(alert["CONTAINER_RUNTIME"], "docker", "{alert}");
    assert_eq!(alert["CONTAINER_ID"], &id[..12], "{alert}");
    assert_eq!(alert["CONTAINER_NAME"], "web-1", "{alert}");
    assert_eq!(alert["LISTENER_NS_PID"], "1", "{alert}");
    assert_eq!(alert["LISTEN_NETNS"], inode.to_string(), "{alert}");
    let message = alert["MESSAGE"].as_str().unwrap();
    assert!(message.contains("in docker container web-1"), "{message}");

    let entries = scanned(&ns, pid);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let c = &entries[0]["container"];
    assert_eq!(
        (c["runtime"].as_str(), c["id"].as_str(), c["name"].as_str()),
        (Some("docker"), Some(id), Some("web-1")),
        "{c}"
    );
    assert_eq!(entries[0]["process"]["ns_pid"], 1);
    let table = stdout(&ns.portsentinel(&["scan", "--netns", "all"]));
    assert!(
        table.lines().next().unwrap().contains("CONTAINER"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|r| r.contains(&format!("listen[{pid}]")))
        .unwrap_or_else(|| panic!("no row of listen[{pid}] in\n{table}"));
    assert!(row.contains(" web-1 "), "{row}");
    drop(l);
    assert!(d.terminate().success());
}

/// Acceptance 3: on the unified hierarchy (cgroup v2) with systemd's form of the path,
/// then on a v1 hierarchy of its own with the cgroupfs driver's form (`/docker/<id>`).
/// One test, one after the other: both write Docker's state directory.
#[test]
fn containers_on_cgroup_v2_and_v1_are_named() {
    let mut made = Made::default();
    let v2 = cgroup2(&mut made);
    let id = container_id();
    let path = format!("pstest-{}.slice/docker-{id}.scope", std::process::id());
    a_container_is_named(&mut made, &v2, &path, &id);
    drop(made);

    let mut made = Made::default();
    let v1 = mount(
        &mut made,
        &["-t", "cgroup", "-o", "none,name=pstest", "pstest"],
    );
    let id = container_id();
    let path = format!("pstest-{}/docker/{id}", std::process::id());
    a_container_is_named(&mut made, &v1, &path, &id);
}
