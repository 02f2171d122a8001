//! Shared test harness: network namespaces, the `listen` helper process, and the binary.
//!
//! Tests run as root (as CI does): each test that opens sockets gets its own network
//! namespace, so tests run in parallel without seeing each other's listeners.

#![allow(dead_code)]

pub mod desktop;
pub mod systemd;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The `portsentinel` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portsentinel"))
}

/// The `listen` example (built by `cargo test` alongside the tests).
pub fn listen_bin() -> PathBuf {
    let p = bin().parent().unwrap().join("examples/listen");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --examples`",
        p.display()
    );
    p
}

/// A config file holding `text`, in a directory of its own that lives as long as the
/// returned `TempDir`.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A network namespace of our own, deleted on drop.
pub struct Netns {
    pub name: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "pstest-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns { name }
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl Into<PathBuf>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program.into());
        c
    }

    /// Runs a command of the binary inside the namespace. `scan`, `explain` and `baseline`
    /// look at this namespace only unless the test gives `--netns`: tests run side by
    /// side, each in a namespace of its own, and must not see each other's listeners.
    pub fn portsentinel(&self, args: &[&str]) -> Output {
        let mut c = self.command(bin());
        c.args(args);
        if matches!(args.first(), Some(&("scan" | "explain" | "baseline")))
            && !args.contains(&"--netns")
        {
            c.args(["--netns", "host"]);
        }
        c.output().expect("run portsentinel")
    }

    /// Starts the `listen` helper inside the namespace.
    pub fn listen(&self, specs: &[&str]) -> Listen {
        let mut c = self.command(listen_bin());
        c.args(specs);
        Listen::start(c)
    }

    pub fn sysctl(&self, key_value: &str) {
        run_ok(
            Command::new("ip").args(["netns", "exec", &self.name, "sysctl", "-q", "-w", key_value]),
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running `listen` helper; killed on drop.
pub struct Listen {
    pub child: Child,
    pub pid: u32,
    pub ports: Vec<u16>,
    /// With `--decoy`: the process the sockets were handed to.
    pub decoy: Option<u32>,
    stdin: Option<ChildStdin>,
}

impl Listen {
    pub fn start(mut command: Command) -> Listen {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the listen helper");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let line = line.trim();
        assert!(line.starts_with("ready "), "listen helper failed: {line:?}");
        let mut pid = 0;
        let mut ports = Vec::new();
        let mut decoy = None;
        for field in line.split_whitespace().skip(1) {
            if let Some(p) = field.strip_prefix("decoy=") {
                decoy = Some(p.parse().unwrap());
            } else if let Some(p) = field.strip_prefix("pid=") {
                pid = p.parse().unwrap();
            } else if let Some(p) = field.strip_prefix("ports=") {
                // `-` for a socket without a port (a Unix connection).
                ports = p.split(',').filter_map(|s| s.parse().ok()).collect();
            }
        }
        let stdin = child.stdin.take();
        Listen {
            child,
            pid,
            ports,
            decoy,
            stdin,
        }
    }

    /// Writes one line to the helper's standard input (`take`, for a decoy).
    pub fn say(&mut self, line: &str) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the helper's sockets by ending it, and waits for it.
    pub fn stop(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A decoy not taken back (the test failed first) would outlive the test, holding
        // its output open; it is still the one if it still sleeps its 3600 seconds.
        if let Some(decoy) = self.decoy {
            let cmdline = std::fs::read(format!("/proc/{decoy}/cmdline")).unwrap_or_default();
            if cmdline.ends_with(b"\x003600\x00") {
                let _ = Command::new("kill")
                    .args(["-KILL", &decoy.to_string()])
                    .status();
            }
        }
    }
}

pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `scan --json` output inside a namespace, parsed.
pub fn scan_json(ns: &Netns, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["scan", "--json"];
    args.extend_from_slice(extra);
    let out = ns.portsentinel(&args);
    assert!(out.status.success(), "scan failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("scan --json prints a JSON array")
}

/// The elements of a scan with this protocol and port.
pub fn find<'a>(
    scan: &'a [serde_json::Value],
    protocol: &str,
    port: u16,
) -> Vec<&'a serde_json::Value> {
    scan.iter()
        .filter(|e| e["protocol"] == protocol && e["port"] == port)
        .collect()
}

/// Lines a child writes to a pipe, collected by a thread, waited for with a deadline.
pub struct Lines {
    rx: Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            // Bytes, not `lines()`: one line that is not UTF-8 must not end the reading.
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches('\n')
                            .to_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(format!("<<reading stopped: {e}>>"));
                        break;
                    }
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (generously: these machines are shared) for a line that satisfies `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_within(what, Duration::from_secs(20), pred)
    }

    /// As [`Lines::wait_for`], for a line the daemon writes only after `limit` less a
    /// margin (a timeout of its own).
    pub fn wait_for_within(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (generously) until everything seen so far satisfies `pred`, which is asked
    /// again whenever more lines arrived.
    pub fn wait_until(&mut self, what: &str, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pred(&self.seen) {
            assert!(
                Instant::now() < deadline,
                "no {what} within 30 s; output so far:\n{}",
                self.seen.join("\n")
            );
            if let Ok(line) = self.rx.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line);
                while let Ok(more) = self.rx.try_recv() {
                    self.seen.push(more);
                }
            }
        }
    }

    /// What arrived since the last call, without keeping it (for long runs).
    pub fn take_new(&mut self) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(l) = self.rx.try_recv() {
            got.push(l);
        }
        got
    }

    /// Collects what arrives within `d`.
    pub fn drain_for(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(l) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l.clone());
            got.push(l);
        }
        got
    }
}

/// `portsentinel run` in a namespace, its stderr lines on a channel.
pub struct Daemon {
    pub child: Child,
    pub lines: Lines,
    /// State and runtime directory (the event socket is `events.sock` in it).
    pub dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(ns: &Netns, args: &[&str]) -> Daemon {
        Daemon::start_in(ns, args, tempfile::tempdir().unwrap())
    }

    /// Starts with extra environment variables.
    pub fn start_with_env(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::launch(ns, args, tempfile::tempdir().unwrap(), env)
    }

    /// Starts with a given state and runtime directory (to restart on the same state).
    pub fn start_in(ns: &Netns, args: &[&str], dir: tempfile::TempDir) -> Daemon {
        Daemon::launch(ns, args, dir, &[])
    }

    /// Starts through a wrapper command (`setpriv ...`), which is given the binary.
    pub fn start_wrapped(ns: &Netns, wrapper: &[&str], args: &[&str]) -> Daemon {
        Daemon::launch_with(ns, wrapper, args, tempfile::tempdir().unwrap(), &[])
    }

    fn launch(ns: &Netns, args: &[&str], dir: tempfile::TempDir, env: &[(&str, &str)]) -> Daemon {
        Daemon::launch_with(ns, &[], args, dir, env)
    }

    /// Starts in the namespace's network only (`nsenter --net`), keeping this process's
    /// mounts: `ip netns exec` mounts a /sys of its own, without the cgroup hierarchy that
    /// instant detection's UDP hooks attach to.
    pub fn start_in_net(ns: &Netns, args: &[&str]) -> Daemon {
        let netns = format!("--net=/run/netns/{}", ns.name);
        Daemon::launch_with(
            ns,
            &["nsenter", &netns, "--"],
            args,
            tempfile::tempdir().unwrap(),
            &[],
        )
    }

    fn launch_with(
        ns: &Netns,
        wrapper: &[&str],
        args: &[&str],
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = match wrapper {
            [] => ns.command(bin()),
            ["nsenter", rest @ ..] => {
                let mut c = Command::new("nsenter");
                c.args(rest).arg(bin());
                c
            }
            [program, rest @ ..] => {
                let mut c = ns.command(program);
                c.args(rest).arg(bin());
                c
            }
        };
        c.arg("run").args(args);
        // This namespace only, as for `portsentinel()`, unless the test asks.
        if !args.contains(&"--namespaces") {
            c.args(["--namespaces", "host"]);
        }
        c.env("STATE_DIRECTORY", dir.path());
        c.env("RUNTIME_DIRECTORY", dir.path());
        c.env_remove("JOURNAL_STREAM");
        c.envs(env.iter().copied());
        let mut child = c
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Lines::new(child.stderr.take().unwrap());
        Daemon { child, lines, dir }
    }

    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.lines.wait_for(what, pred)
    }

    pub fn wait_for_within(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.lines.wait_for_within(what, limit, pred)
    }

    /// Waits for the `--log json` record of `event` about the listener of `pid`, parsed.
    pub fn record(&mut self, event: &str, pid: u32) -> serde_json::Value {
        let line = self.wait_for(&format!("{event} of pid {pid}"), |l| {
            l.contains(&format!("\"PORTSENTINEL_EVENT\":\"{event}\""))
                && l.contains(&format!("\"LISTENER_PID\":\"{pid}\""))
        });
        serde_json::from_str(&line).unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("events.sock")
    }

    /// SIGTERM, wait; returns the exit status and the state directory for a restart.
    pub fn terminate_keep(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        kill(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    /// SIGTERM, wait; returns the exit status and every line the daemon wrote.
    pub fn terminate_lines(mut self) -> (std::process::ExitStatus, Vec<String>) {
        kill(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        self.lines.drain_for(Duration::from_millis(500));
        (status, std::mem::take(&mut self.lines.seen))
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        kill(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        self.lines.drain_for(Duration::from_millis(500));
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kill(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}
