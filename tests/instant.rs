//! Instant detection: listeners that live a few milliseconds, opened by real processes in
//! a private network namespace, are recorded from the kernel's events (eBPF); without the
//! privileges to load them, the daemon says so once and polls as before.

mod util;

use std::collections::HashMap;

use util::{Daemon, Listen, Netns, config_file, listen_bin, run_ok, stdout};

/// Every daemon's eBPF program hears every namespace's events: the flood test holds
/// this alone, so that its flood fills no other test's ring buffer.
static KERNEL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    KERNEL.read().unwrap_or_else(|p| p.into_inner())
}

/// Runs the `listen` helper with `--for MS`: each spec opened, held, closed in turn; the
/// process has exited when this returns. Its pid.
fn short_lived(ns: &Netns, ms: &str, specs: &[&str]) -> u32 {
    short_lived_from(ns, &listen_bin(), ms, specs)
}

/// [`short_lived`], with a copy of the helper at `program`.
fn short_lived_from(ns: &Netns, program: &std::path::Path, ms: &str, specs: &[&str]) -> u32 {
    let out = run_ok(ns.command(program).arg("--for").arg(ms).args(specs));
    let out = stdout(&out);
    let pid = out
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid in {out:?}"));
    pid.parse().unwrap()
}

fn daemon(ns: &Netns, args: &[&str]) -> Daemon {
    let mut all = vec!["--log", "json"];
    all.extend_from_slice(args);
    let mut d = Daemon::start_in_net(ns, &all);
    let line = d.wait_for("instant detection's word", |l| {
        l.contains("instant detection")
    });
    assert!(
        line.contains("instant detection on: the kernel reports TCP listens and UDP binds"),
        "{line}"
    );
    d
}

fn records_of(lines: &[String], event: &str, pid: u32) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| l.contains(&format!("\"PORTSENTINEL_EVENT\":\"{event}\"")))
        .filter(|l| l.contains(&format!("\"LISTENER_PID\":\"{pid}\"")))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A process that listens on 0.0.0.0:867/tcp for 5 ms, then on 867/udp for 5 ms, and
/// exits; a UDP client that binds and connects. Each listener: one alert naming the
/// process (pid, comm, exe), `EVENT_SOURCE=ebpf`, and its close with the kernel's
/// `LISTEN_LIFETIME_MS`. The client: nothing.
#[test]
fn listeners_of_five_milliseconds_are_alerted_from_the_kernels_events() {
    let _kernel = shared();
    let ns = Netns::new();
    let mut d = daemon(&ns, &["--interval", "1s"]);
    let pid = short_lived(&ns, "5", &["tcp:0.0.0.0:867", "udp:0.0.0.0:867"]);
    let client = short_lived(&ns, "5", &["udp-connected:127.0.0.1:9"]);
    let exe = std::fs::canonicalize(listen_bin()).unwrap();
    d.lines.wait_until("both alerts cleared", |ls| {
        records_of(ls, "alert-cleared", pid).len() == 2
    });
    let (status, lines) = d.terminate_lines();
    assert!(status.success());
    for proto in ["tcp", "udp"] {
        let of = |event| -> Vec<serde_json::Value> {
            records_of(&lines, event, pid)
                .into_iter()
                .filter(|r| r["LISTEN_PROTO"] == proto)
                .collect()
        };
        let alerts = of("alert-raised");
        assert_eq!(alerts.len(), 1, "{proto}: {alerts:?}");
        let a = &alerts[0];
        assert_eq!(a["LISTEN_PORT"], "867", "{a}");
        assert_eq!(a["LISTEN_ADDRESS"], "0.0.0.0", "{a}");
        assert_eq!(a["EVENT_SOURCE"], "ebpf", "{a}");
        assert_eq!(a["LISTENER_COMM"], "listen", "{a}");
        assert_eq!(a["LISTENER_EXE"], exe.to_str().unwrap(), "{a}");
        let cleared = of("alert-cleared");
        assert_eq!(cleared.len(), 1, "{proto}: {cleared:?}");
        let c = &cleared[0];
        assert_eq!(c["EVENT_SOURCE"], "ebpf", "{c}");
        let ms: u64 = c["LISTEN_LIFETIME_MS"].as_str().unwrap().parse().unwrap();
        assert!(ms >= 4, "{c}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&format!("\"LISTENER_PID\":\"{client}\""))),
        "a connected UDP client is no listener"
    );
}

/// A directory mounted as overlayfs, its lower layer on the disk and its upper one on a
/// tmpfs: the root of most containers (and of many build machines). A file on it has, by
/// `stat`, a device of its layer's, not the overlay's superblock that the kernel names.
/// Unmounted on drop.
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    /// An overlay holding a copy of the `listen` helper in its lower layer.
    fn with_listen() -> Overlay {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let at = |name: &str| dir.path().join(name);
        for d in ["lower", "upper", "merged"] {
            std::fs::create_dir(at(d)).unwrap();
        }
        std::fs::copy(listen_bin(), at("lower/listen")).unwrap();
        run_ok(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(at("upper")),
        );
        std::fs::create_dir(at("upper/data")).unwrap();
        std::fs::create_dir(at("upper/work")).unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            at("lower").display(),
            at("upper/data").display(),
            at("upper/work").display()
        );
        run_ok(
            std::process::Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(at("merged")),
        );
        Overlay { dir }
    }

    fn listen(&self) -> std::path::PathBuf {
        self.dir.path().join("merged/listen")
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for d in ["merged", "upper"] {
            let _ = std::process::Command::new("umount")
                .arg("--lazy")
                .arg(self.dir.path().join(d))
                .status();
        }
    }
}

/// A program run from overlayfs listens for no time at all on 867 and 868 (TCP and UDP)
/// and exits, most often before the daemon can read it from `/proc`: each alert still
/// names its exe, which is the overlay's file and no other (the kernel's device for it is
/// not `stat`'s), and an `exe` rule for that path allows its listeners on 868.
#[test]
fn a_short_listener_run_from_overlayfs_names_its_exe_and_its_rule_allows_it() {
    let _kernel = shared();
    let ns = Netns::new();
    let overlay = Overlay::with_listen();
    let exe = overlay.listen();
    let exe = exe.to_str().unwrap();
    let (_dir, config) = config_file(&format!(
        "[[allow]]\nname = \"the overlay's program\"\nexe = \"{exe}\"\nport = 868\n"
    ));
    let config = config.to_str().unwrap().to_owned();
    let mut d = daemon(&ns, &["--config", &config, "--interval", "1s"]);
    let specs = [
        "tcp:0.0.0.0:867",
        "udp:0.0.0.0:867",
        "tcp:0.0.0.0:868",
        "udp:0.0.0.0:868",
    ];
    let pid = short_lived_from(&ns, &overlay.listen(), "0", &specs);
    d.lines
        .wait_until("two alerts cleared and two listeners closed", |ls| {
            records_of(ls, "alert-cleared", pid).len() == 2
                && records_of(ls, "listener-closed", pid).len() == 2
        });
    let (status, lines) = d.terminate_lines();
    assert!(status.success());
    for proto in ["tcp", "udp"] {
        let of = |event, port| -> Vec<serde_json::Value> {
            records_of(&lines, event, pid)
                .into_iter()
                .filter(|r| r["LISTEN_PROTO"] == proto && r["LISTEN_PORT"] == port)
                .collect()
        };
        let alerts = of("alert-raised", "867");
        assert_eq!(alerts.len(), 1, "{proto}: {alerts:?}");
        assert_eq!(alerts[0]["LISTENER_EXE"], exe, "{}", alerts[0]);
        assert_eq!(alerts[0]["EVENT_SOURCE"], "ebpf", "{}", alerts[0]);
        assert!(
            of("alert-raised", "868").is_empty(),
            "{proto}: 868 is allowed"
        );
        let opened = of("listener-opened", "868");
        assert_eq!(opened.len(), 1, "{proto}: {opened:?}");
        assert_eq!(opened[0]["LISTENER_EXE"], exe, "{}", opened[0]);
        assert!(
            opened[0]["VERDICT_REASON"]
                .as_str()
                .is_some_and(|r| r.contains("the overlay's program")),
            "{}",
            opened[0]
        );
    }
}

/// A FUSE filesystem (bindfs, as any user may mount one) holding a copy of the `listen`
/// helper, that caches nothing: every lookup and `stat` asks its server. Stopped and
/// unmounted on drop.
struct Fuse {
    dir: tempfile::TempDir,
    server: std::process::Child,
}

impl Fuse {
    fn with_listen() -> Option<Fuse> {
        Fuse::mount("")
    }

    /// [`Fuse::with_listen`], with more of bindfs' `-o` options (`,direct_io`). `None`,
    /// said, where no FUSE filesystem can be mounted.
    fn mount(options: &str) -> Option<Fuse> {
        if !std::path::Path::new("/dev/fuse").exists() {
            eprintln!("no /dev/fuse: nobody here can mount a FUSE filesystem, nothing to test");
            return None;
        }
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        std::fs::copy(listen_bin(), src.join("listen")).unwrap();
        let server = std::process::Command::new("bindfs")
            .args([
                "-f",
                "-o",
                &format!("attr_timeout=0,entry_timeout=0,negative_timeout=0{options}"),
            ])
            .arg(&src)
            .arg(&mnt)
            .spawn()
            .expect("bindfs (Debian's bindfs) runs");
        let fuse = Fuse { dir, server };
        let listen = fuse.listen();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !listen.exists() {
            assert!(std::time::Instant::now() < deadline, "bindfs never mounted");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Some(fuse)
    }

    fn listen(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt/listen")
    }

    /// A file of `len` bytes in the filesystem, written beside it (not through it): none
    /// of it is in the mount's page cache, so its first read asks the server.
    fn uncached_file(&self, name: &str, len: usize) -> std::path::PathBuf {
        std::fs::write(self.dir.path().join("src").join(name), vec![b'x'; len]).unwrap();
        self.dir.path().join("mnt").join(name)
    }

    /// Stops (`STOP`) or resumes (`CONT`) its server.
    fn signal(&self, sig: &str) {
        util::kill(self.server.id(), sig);
    }
}

/// Resumes a FUSE server when dropped.
struct Resumes<'a>(&'a Fuse);

impl Drop for Resumes<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path().join("mnt"))
            .status();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Any user can mount a FUSE filesystem, run programs from it, and stop its server: then
/// a `stat` of such a program's file, or a lookup of its path, waits for the server
/// forever. A program from there listens on 867 before the daemon starts and the server
/// stops; another listens on 868 for no time at all once it has stopped (its path is
/// looked up from the kernel's event). Both are alerted, and a listener after them too:
/// the daemon was not stopped.
#[test]
fn a_fuse_server_that_stops_answering_blinds_nothing() {
    let _kernel = shared();
    let ns = Netns::new();
    let Some(fuse) = Fuse::with_listen() else {
        return;
    };
    let lasting = Listen::start({
        let mut c = ns.command(fuse.listen());
        c.arg("tcp:0.0.0.0:867");
        c
    });
    let mut short = Listen::start({
        let mut c = ns.command(fuse.listen());
        c.args(["--go", "--for", "0", "tcp:0.0.0.0:868"]);
        c
    });
    // Its code into the page cache, or the programs would wait for the server too.
    std::fs::read(fuse.listen()).unwrap();
    fuse.signal("STOP");
    let mut d = daemon(&ns, &["--interval", "1s"]);
    let a = d.record("alert-raised", lasting.pid);
    assert_eq!(a["LISTEN_PORT"], "867", "{a}");
    short.say("go");
    let a = d.record("alert-raised", short.pid);
    assert_eq!(a["LISTEN_PORT"], "868", "{a}");
    let after = Listen::start({
        let mut c = ns.command(listen_bin());
        c.arg("tcp:0.0.0.0:869");
        c
    });
    let a = d.record("alert-raised", after.pid);
    assert_eq!(a["LISTEN_PORT"], "869", "{a}");
    fuse.signal("CONT");
    assert!(d.terminate().success());
}

/// Listens on 867, then holds its own memory map's lock for good: a thread reads a page
/// of the file `argv[1]` (on a FUSE mount with `direct_io`) after stopping that mount's
/// server (pid `argv[2]`), so the page stays locked; another maps the file again, which
/// waits for that page while it holds the lock. Says `ready` once the first waits; the
/// second may still be on its way.
const HOLDS_ITS_MAP_LOCK: &str = r#"
import ctypes, os, signal, socket, sys, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('', 867))
s.listen()
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
fd = os.open(sys.argv[1], os.O_RDONLY)
page = libc.mmap(None, 4096, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
buf = ctypes.create_string_buffer(8)
ready = f'ready pid={os.getpid()} ports=867\n'.encode()
os.kill(int(sys.argv[2]), signal.SIGSTOP)
reader = threading.Thread(target=lambda: libc.memcpy(buf, page, 8), daemon=True)
reader.start()
def state(tid):
    try:
        stat = open(f'/proc/self/task/{tid}/stat', 'rb').read()
    except OSError:  # it did not wait at all
        return b'X'
    return stat[stat.rindex(b')') + 2:][:1]
deadline = time.monotonic() + 30  # else the test says the kernel did not wait
while state(reader.native_id) != b'D' and time.monotonic() < deadline:
    time.sleep(0.01)
threading.Thread(target=lambda: libc.mmap(None, 4096, 1, 2, fd, 0), daemon=True).start()
os.write(1, ready)
sys.stdin.readline()
"#;

/// A command line is read out of the process's memory, under the lock of its memory map,
/// and any user can make a process of their own hold that lock for good (a FUSE mount
/// whose server stops, see [`HOLDS_ITS_MAP_LOCK`]): a read of its command line then waits
/// with it, as `ps` does. Such a process listening on 867 is alerted, by the daemon and by
/// `scan`, without its command line, and a listener after it too, with its own.
#[test]
fn a_process_holding_its_memory_map_lock_blinds_nothing() {
    let _kernel = shared();
    let ns = Netns::new();
    let Some(fuse) = Fuse::mount(",direct_io") else {
        return;
    };
    let file = fuse.uncached_file("data", 1 << 20);
    let mapped = Listen::start({
        let mut c = ns.command("python3");
        c.arg("-c").arg(HOLDS_ITS_MAP_LOCK).arg(&file);
        c.arg(fuse.server.id().to_string());
        c
    });
    // Both of its threads wait: the reader for the page, the other with the lock.
    let blocked = || {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", mapped.pid)).unwrap();
        tasks
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("stat")).ok())
            .filter(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, r)| r.starts_with('D'))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blocked() < 2 {
        if std::time::Instant::now() > deadline {
            // A kernel whose FUSE maps a `direct_io` file without waiting for its pages.
            eprintln!("the second mapping did not wait: nothing holds the lock, nothing to test");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut d = daemon(&ns, &["--interval", "1s"]);
    // Dropped before the daemon: a failed test resumes the server first, or the daemon
    // could not be stopped.
    let _resume = Resumes(&fuse);
    let a = d.record("alert-raised", mapped.pid);
    assert_eq!(a["LISTEN_PORT"], "867", "{a}");
    assert!(a["LISTENER_EXE"].is_string(), "{a}");
    assert!(
        a["LISTENER_CMDLINE"].is_null(),
        "read through the lock? {a}"
    );
    let after = Listen::start({
        let mut c = ns.command(listen_bin());
        c.arg("tcp:0.0.0.0:869");
        c
    });
    let a = d.record("alert-raised", after.pid);
    assert_eq!(a["LISTEN_PORT"], "869", "{a}");
    // The read that waits holds back no other process's command line.
    let cmdline = a["LISTENER_CMDLINE"].as_str().unwrap_or_default();
    assert!(cmdline.ends_with("/listen tcp:0.0.0.0:869"), "{a}");
    let mut scan = ns
        .command(util::bin())
        .args(["scan", "--json", "--netns", "host"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while scan.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = scan.kill();
            panic!("scan waits for the process's lock");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = scan.wait_with_output().unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["port"] == 867 && e["process"]["pid"] == mapped.pid),
        "{entries:#?}"
    );
    fuse.signal("CONT");
    assert!(d.terminate().success());
}

/// 100 listeners of 5 ms on distinct ports within about a second, TCP and UDP: 100
/// alerts, each port once (never once from the kernel's event and again from a poll).
#[test]
fn a_hundred_short_listeners_are_a_hundred_alerts_without_duplicates() {
    let _kernel = shared();
    let ns = Netns::new();
    let (_dir, config) = config_file("[policy]\nalert_on = [\"any\"]\n");
    let config = config.to_str().unwrap().to_owned();
    let mut d = daemon(&ns, &["--config", &config, "--interval", "1s"]);
    let specs: Vec<String> = (0..100)
        .map(|i| {
            let proto = if i % 2 == 0 { "tcp" } else { "udp" };
            format!("{proto}:127.0.0.1:{}", 20000 + i)
        })
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    short_lived(&ns, "5", &specs);
    // By port, not pid: a listener the poll saw may have lost its owner before the poll
    // could read it (then it is alerted as an unknown owner's, still once).
    let ours = |ls: &[String], event: &str| -> Vec<serde_json::Value> {
        ls.iter()
            .filter(|l| l.contains(&format!("\"PORTSENTINEL_EVENT\":\"{event}\"")))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| {
                let port: u16 = r["LISTEN_PORT"].as_str().unwrap_or("0").parse().unwrap();
                (20000..20100).contains(&port)
            })
            .collect()
    };
    d.lines.wait_until("100 alerts cleared", |ls| {
        ours(ls, "alert-cleared").len() >= 100
    });
    let (_, lines) = d.terminate_lines();
    let mut per_port: HashMap<(String, String), usize> = HashMap::new();
    for a in ours(&lines, "alert-raised") {
        let key = (
            a["LISTEN_PROTO"].as_str().unwrap().to_owned(),
            a["LISTEN_PORT"].as_str().unwrap().to_owned(),
        );
        *per_port.entry(key).or_default() += 1;
        assert_eq!(a["EVENT_SOURCE"], "ebpf", "{a}");
    }
    assert_eq!(per_port.len(), 100, "{per_port:?}");
    let twice: Vec<_> = per_port.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "alerted more than once: {twice:?}");
    assert_eq!(ours(&lines, "alert-cleared").len(), 100);
}

/// A UDP socket of 5 ms that shares its address and port with a lasting one
/// (`SO_REUSEADDR` on both, as beside avahi on 5353): told apart by the kernel's socket
/// cookie, so the short one is recorded, not taken for the one that stays.
#[test]
fn a_short_udp_socket_beside_a_lasting_one_on_the_same_port_is_recorded() {
    let _kernel = shared();
    let ns = Netns::new();
    let (_dir, config) = config_file("[policy]\nalert_on = [\"any\"]\n");
    let config = config.to_str().unwrap().to_owned();
    let mut d = daemon(&ns, &["--config", &config, "--interval", "1s"]);
    let script = "import os, socket, sys\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('127.0.0.1', 5999))\n\
        print(f'ready pid={os.getpid()} ports=5999', flush=True)\n\
        sys.stdin.readline()\n";
    let mut c = ns.command("python3");
    c.arg("-c").arg(script);
    let lasting = util::Listen::start(c);
    d.lines.wait_until("the lasting socket", |ls| {
        !records_of(ls, "alert-raised", lasting.pid).is_empty()
    });
    let pid = short_lived(&ns, "5", &["udp:127.0.0.1:5999:reuse"]);
    d.lines.wait_until("the short one cleared", |ls| {
        !records_of(ls, "alert-cleared", pid).is_empty()
    });
    let (_, lines) = d.terminate_lines();
    let raised = records_of(&lines, "alert-raised", pid);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["EVENT_SOURCE"], "ebpf", "{}", raised[0]);
    assert_eq!(raised[0]["LISTEN_PORT"], "5999", "{}", raised[0]);
}

/// One port opened and closed in a loop, 2,000 times (what any user can do to flood the
/// journal): at most one opened/closed pair per `restart_grace` of flapping (the rest
/// are counted, or are the poll's one listener), and a real listener opened right after
/// is alerted as ever.
#[test]
fn a_port_flapping_in_a_loop_is_one_record_per_grace_and_hides_nothing() {
    let _kernel = KERNEL.write().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new();
    let mut d = daemon(&ns, &["--interval", "1s"]);
    let began = std::time::Instant::now();
    short_lived(&ns, "0", &["tcp:127.0.0.1:4444"; 2000]);
    let flapped = began.elapsed();
    let _real = ns.listen(&["tcp:0.0.0.0:867"]);
    d.lines.wait_until("867 alerted", |ls| {
        ls.iter().any(|l| {
            l.contains("\"PORTSENTINEL_EVENT\":\"alert-raised\"")
                && l.contains("\"LISTEN_PORT\":\"867\"")
        })
    });
    let (_, lines) = d.terminate_lines();
    let opened = lines
        .iter()
        .filter(|l| {
            l.contains("\"PORTSENTINEL_EVENT\":\"listener-opened\"")
                && l.contains("\"LISTEN_PORT\":\"4444\"")
        })
        .count();
    // The default grace is 3 s: one record at the start of each 3 s of flapping, and one
    // more for a poll that caught it listening.
    let bound = flapped.as_secs() / 3 + 2;
    assert!(
        (1..=bound as usize).contains(&opened),
        "{opened} records of 4444 in {flapped:?} of flapping"
    );
}

/// Without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN: one warning that says why, and the
/// polls still alert.
#[test]
fn without_the_bpf_privileges_one_warning_and_the_polls_go_on() {
    let _kernel = shared();
    let ns = Netns::new();
    let wrapper = [
        "setpriv",
        "--inh-caps=-all",
        "--bounding-set=-bpf,-perfmon,-sys_admin",
    ];
    let mut d = Daemon::start_wrapped(&ns, &wrapper, &["--log", "json", "--interval", "200ms"]);
    d.wait_for("the start", |l| l.contains("starting"));
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let alert = d.record("alert-raised", l.pid);
    assert!(alert.get("EVENT_SOURCE").is_none(), "{alert}");
    l.stop();
    let (status, lines) = d.terminate_lines();
    assert!(status.success());
    let said: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("instant detection"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("instant detection unavailable"),
        "{}",
        said[0]
    );
    assert!(said[0].contains("not permitted"), "{}", said[0]);
    assert!(said[0].contains("\"PRIORITY\":\"4\""), "{}", said[0]);
}

/// `--instant off`: one info record, no eBPF, the polls as before.
#[test]
fn instant_off_is_said_once_at_info() {
    let _kernel = shared();
    let ns = Netns::new();
    let mut d = Daemon::start(&ns, &["--log", "json", "--instant", "off"]);
    let line = d.wait_for("instant detection's word", |l| {
        l.contains("instant detection")
    });
    assert!(line.contains("instant detection off"), "{line}");
    assert!(line.contains("\"PRIORITY\":\"6\""), "{line}");
}
