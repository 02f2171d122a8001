//! A real desktop notification stack for the tests: Xvfb, a private D-Bus session bus
//! (no auto-activation) and dunst with our own configuration; plus `busctl monitor` to
//! see exactly which Notify calls were made, and `dunstctl history` to see what was kept.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Session {
    pub dir: tempfile::TempDir,
    pub address: String,
    display: String,
    xvfb: Child,
    dbus_pid: Option<u32>,
    dunst: Option<Child>,
    monitor: Option<Child>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

impl Session {
    /// Xvfb + bus + dunst, ready (dunst owns org.freedesktop.Notifications).
    pub fn start() -> Session {
        let mut s = Session::without_bus();
        s.start_bus();
        s.start_dunst();
        s
    }

    /// Only Xvfb: the bus address is chosen but nothing listens there yet.
    pub fn without_bus() -> Session {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}", dir.path().join("bus").display());
        // -displayfd 1: Xvfb picks a free display and prints it once it accepts clients.
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (Debian package xvfb)");
        let mut line = String::new();
        BufReader::new(xvfb.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let display = format!(":{}", line.trim());
        assert!(display.len() > 1, "Xvfb printed no display");
        Session {
            dir,
            address,
            display,
            xvfb,
            dbus_pid: None,
            dunst: None,
            monitor: None,
        }
    }

    pub fn start_bus(&mut self) {
        let conf = std::fs::read_to_string(fixture("session.conf"))
            .unwrap()
            .replace("@ADDRESS@", &self.address);
        let conf_path = self.dir.path().join("session.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let out = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--fork", "--nopidfile", "--print-pid"])
            .output()
            .expect("dbus-daemon (Debian package dbus)");
        assert!(
            out.status.success(),
            "dbus-daemon: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.dbus_pid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    }

    pub fn start_dunst(&mut self) {
        let dunst = Command::new("dunst")
            .arg("-config")
            .arg(fixture("dunstrc"))
            .env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst (Debian package dunst)");
        self.dunst = Some(dunst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.notifications_owned() {
            assert!(
                Instant::now() < deadline,
                "dunst did not take org.freedesktop.Notifications"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn notifications_owned(&self) -> bool {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args([
                "--print-reply=literal",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("true")
    }

    /// Starts recording every Notify call on the bus (call it before the calls).
    pub fn start_monitor(&mut self) {
        let out = std::fs::File::create(self.dir.path().join("monitor.jsonl")).unwrap();
        let mut child = Command::new("busctl")
            .args([
                "--user",
                "monitor",
                "--json=short",
                "org.freedesktop.Notifications",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("busctl (Debian package systemd)");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("Monitoring"), "busctl monitor: {line}");
        self.monitor = Some(child);
    }

    /// The Notify calls recorded so far.
    pub fn notify_calls(&self) -> Vec<NotifyCall> {
        let text =
            std::fs::read_to_string(self.dir.path().join("monitor.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["member"] == "Notify" && v["type"] == "method_call")
            .map(|v| {
                let d = &v["payload"]["data"];
                NotifyCall {
                    app: d[0].as_str().unwrap_or("").to_owned(),
                    replaces_id: d[1].as_u64().unwrap_or(0) as u32,
                    summary: d[3].as_str().unwrap_or("").to_owned(),
                    body: d[4].as_str().unwrap_or("").to_owned(),
                    urgency: d[6]["urgency"]["data"].as_u64().map(|u| u as u8),
                }
            })
            .collect()
    }

    /// Waits until `pred` holds for the recorded calls.
    pub fn wait_calls(&self, what: &str, pred: impl Fn(&[NotifyCall]) -> bool) -> Vec<NotifyCall> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let calls = self.notify_calls();
            if pred(&calls) {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 20 s; calls: {calls:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Closes every displayed notification, then returns dunst's history: (id, summary, body).
    pub fn history(&self) -> Vec<(u32, String, String)> {
        let ctl = |arg: &str| {
            Command::new("dunstctl")
                .arg(arg)
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .output()
                .unwrap()
        };
        assert!(ctl("close-all").status.success());
        let out = ctl("history");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("dunstctl history prints JSON");
        let mut h: Vec<(u32, String, String)> = v["data"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["id"]["data"].as_u64().unwrap() as u32,
                    e["summary"]["data"].as_str().unwrap().to_owned(),
                    e["body"]["data"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        h.sort();
        h
    }
}

#[derive(Debug, Clone)]
pub struct NotifyCall {
    pub app: String,
    pub replaces_id: u32,
    pub summary: String,
    pub body: String,
    /// 0 low, 1 normal, 2 critical.
    pub urgency: Option<u8>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for child in [self.monitor.as_mut(), self.dunst.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.dbus_pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}

/// `portsentinel notify-agent` with its stderr lines on a channel.
pub struct Agent {
    pub child: Child,
    pub lines: super::Lines,
}

impl Agent {
    /// Starts a fully built `... notify-agent ...` command.
    pub fn spawn(mut command: Command) -> Agent {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = super::Lines::new(child.stderr.take().unwrap());
        Agent { child, lines }
    }

    /// The agent, as root, for `socket` on the bus at `bus_address`.
    pub fn for_session(socket: &Path, bus_address: &str) -> Agent {
        let mut c = Command::new(super::bin());
        c.arg("notify-agent").arg("--socket").arg(socket);
        c.env("DBUS_SESSION_BUS_ADDRESS", bus_address);
        Agent::spawn(c)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
