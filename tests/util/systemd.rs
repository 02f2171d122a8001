//! A real systemd booted as PID 1 of private namespaces (`tests/harness/systemd-ns.sh`),
//! with the repository's files shared at `/run/psns/share` inside.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{bin, listen_bin};

pub const SHARE: &str = "/run/psns/share";

pub struct Systemd {
    pub pid: u32,
    pub share: tempfile::TempDir,
    script: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

impl Systemd {
    /// Boots a systemd whose share holds the repository's `systemd/`, `config/`, `dist/man/`, the
    /// README, the built binary (as `target/release/portsentinel`) and the listen helper.
    pub fn boot() -> Systemd {
        let share = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(share.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&root.join("systemd"), &share.path().join("systemd"));
        copy_dir(&root.join("config"), &share.path().join("config"));
        copy_dir(&root.join("dist/man"), &share.path().join("dist/man"));
        std::fs::copy(root.join("README.md"), share.path().join("README.md")).unwrap();
        std::fs::create_dir_all(share.path().join("target/release")).unwrap();
        std::fs::copy(bin(), share.path().join("target/release/portsentinel")).unwrap();
        std::fs::copy(listen_bin(), share.path().join("listen")).unwrap();
        let script = root.join("tests/harness/systemd-ns.sh");
        let out = Command::new(&script)
            .arg("start")
            .arg(share.path())
            // Host state from other runs must not leak in (see the script's header).
            .env(
                "PSNS_HIDE",
                "/var/lib/portsentinel /var/lib/private/portsentinel /etc/portsentinel",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd did not boot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Systemd { pid, share, script }
    }

    /// Runs a command inside (cwd `/`).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.script)
            .arg("run")
            .arg(self.pid.to_string())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a shell script inside, in the share directory.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["/bin/sh", "-ec", &format!("cd {SHARE}\n{script}")])
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "inside: {script}\nfailed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a command detached inside; returns its pid as seen inside.
    pub fn spawn(&self, args: &[&str]) -> u32 {
        let log = self.share.path().join("spawned.log");
        let out = Command::new(&self.script)
            .arg("spawn")
            .arg(self.pid.to_string())
            .arg(&log)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spawn failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Starts the `listen` helper inside as user nobody (`--wait`: it keeps its sockets
    /// until killed); returns its pid as seen inside.
    pub fn listen_as_nobody(&self, specs: &[&str]) -> u32 {
        let listen = format!("{SHARE}/listen");
        let mut args = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &listen,
            "--wait",
        ];
        args.extend_from_slice(specs);
        self.spawn(&args)
    }

    /// `journalctl -o json` inside, with match arguments (`FIELD=value`, `-u UNIT`, ...).
    pub fn journal(&self, matches: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["journalctl", "--no-pager", "-o", "json"];
        args.extend_from_slice(matches);
        let out = self.run(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (generously) until the journal has at least `n` records for `matches`.
    pub fn wait_journal(&self, matches: &[&str], n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let records = self.journal(matches);
            if records.len() >= n {
                return records;
            }
            if Instant::now() > deadline {
                let all = self.run(&[
                    "journalctl",
                    "--no-pager",
                    "-u",
                    "portsentinel",
                    "-o",
                    "cat",
                ]);
                panic!(
                    "{} record(s) for {matches:?} after 30 s, wanted {n}; the unit's journal:\n{}",
                    records.len(),
                    String::from_utf8_lossy(&all.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn is_active(&self, unit: &str) -> String {
        String::from_utf8_lossy(&self.run(&["systemctl", "is-active", unit]).stdout)
            .trim()
            .to_owned()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(self.pid.to_string())
            .status();
    }
}

/// The shell block of the README that follows a line `<!-- install -->`.
pub fn readme_install_block() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- install -->")
        .expect("README marks its install block");
    let rest = &readme[start..];
    let code = rest.find("```sh\n").expect("a sh block follows the marker") + 6;
    let end = rest[code..].find("```").unwrap();
    rest[code..code + end].to_owned()
}
