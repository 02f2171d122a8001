//! Faults, each with real components: netlink refused (strace injects the failure into the
//! real daemon), a full or read-only state directory, a reload racing a burst of events.

mod util;

use std::time::Duration;

use util::{Daemon, Netns, bin, config_file, kill};

/// Kills a whole process group when dropped (also when the test fails).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// The first socket() calls fail (as under a seccomp filter): the daemon reads /proc/net,
/// says so once at warning, records the same events, and goes back to netlink.
#[test]
fn netlink_refused_falls_back_to_proc_net_and_returns() {
    let ns = Netns::new();
    let _l = ns.listen(&["tcp:0.0.0.0:867", "tcp:[::]:867:v6only"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\ninterval = \"200ms\"\nstate_directory = \"{}\"\n[events]\nsocket = \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut c = ns.command("strace");
    // Only the netlink socket is opened with socket(2) in this configuration.
    c.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=socket",
        "-e",
        "inject=socket:error=EACCES:when=1..6",
    ]);
    c.arg(bin())
        .args(["run", "--log", "text", "--namespaces", "host"])
        .args(["--config", cfg.to_str().unwrap()]);
    c.env_remove("JOURNAL_STREAM")
        .env("PORTSENTINEL_LOG", "info");
    // A process group of its own, so the traced daemon goes when strace goes.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace (Debian package strace)");
    let group = child.id();
    let _reap = KillGroup(group);
    let mut lines = util::Lines::new(child.stderr.take().unwrap());
    let warn = lines.wait_for("the fallback warning", |l| l.contains("sock_diag failed"));
    assert!(
        warn.contains(" <4> ") && warn.contains("Permission denied") && warn.contains("/proc/net"),
        "{warn}"
    );
    lines.wait_for("the return to netlink", |l| {
        l.contains("sock_diag works again")
    });
    let _late = util::Listen::start({
        let mut c = ns.command(util::listen_bin());
        c.arg("udp:0.0.0.0:867");
        c
    });
    lines.wait_for("an alert after the return", |l| {
        l.contains("alert-raised") && l.contains("LISTEN_PROTO=udp")
    });
    lines.drain_for(Duration::from_secs(1));
    drop(_reap);
    let _ = child.wait();
    let seen = &lines.seen;
    assert_eq!(count(seen, "sock_diag failed"), 1, "said once: {seen:#?}");
    // Two TCP listeners alerted once each, across the switch of sources and back.
    assert_eq!(
        count(seen, "PORTSENTINEL_EVENT=alert-raised LISTEN_PROTO=tcp"),
        2,
        "{seen:#?}"
    );
    assert_eq!(count(seen, "alert-cleared"), 0, "{seen:#?}");
}

fn state_dir_fault(setup: &str, expect: &str) {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {s}\n{setup}\nexec \"$0\" run --log text --interval 200ms --namespaces host",
        s = state.display(),
        setup = setup.replace("STATE", &state.display().to_string())
    );
    let mut c = ns.command("unshare");
    c.args(["--mount", "sh", "-ec", &script]).arg(bin());
    c.env("STATE_DIRECTORY", &state)
        .env("RUNTIME_DIRECTORY", dir.path())
        .env_remove("JOURNAL_STREAM");
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Gone with the test, whether it passes or not.
    let _reap = KillGroup(child.id());
    let mut lines = util::Lines::new(child.stderr.take().unwrap());
    lines.wait_for("the start", |l| l.contains("starting"));
    let _a = ns.listen(&["tcp:0.0.0.0:867"]);
    let err = lines.wait_for("the state error", |l| l.contains("cannot save state"));
    assert!(err.contains(" <3> ") && err.contains(expect), "{err}");
    assert!(err.contains("monitoring continues"), "{err}");
    // Monitoring goes on: the next listener is alerted too, and the error is not repeated.
    let _b = ns.listen(&["udp:0.0.0.0:868"]);
    lines.wait_for("the next alert", |l| {
        l.contains("alert-raised") && l.contains("LISTEN_PORT=868")
    });
    drop(_reap);
    let _ = child.wait();
    assert_eq!(
        count(&lines.seen, "cannot save state"),
        1,
        "{:#?}",
        lines.seen
    );
}

#[test]
fn a_full_state_directory_is_an_error_not_a_stop() {
    state_dir_fault(
        "dd if=/dev/zero of=STATE/fill bs=4k 2>/dev/null || true",
        "No space left on device",
    );
}

#[test]
fn a_read_only_state_directory_is_an_error_not_a_stop() {
    state_dir_fault("mount -o remount,ro STATE", "Read-only file system");
}

/// SIGHUPs arriving while listeners open in bursts: every listener is alerted exactly once.
#[test]
fn reloads_racing_a_burst_lose_and_double_nothing() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file("[daemon]\ninterval = \"100ms\"\n");
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the start", |l| l.contains("starting"));
    let pid = d.child.id();
    // SIGHUPs every 25 ms until the last burst is out, however slowly a loaded machine
    // starts the bursts' processes: the reloads then overlap the bursts' alerts.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let hupper = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            kill(pid, "HUP");
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    let mut held = Vec::new();
    for burst in 0..6 {
        let specs: Vec<String> = (1..=50)
            .map(|i| format!("tcp:127.1.{burst}.{i}:868"))
            .collect();
        let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
        held.push(ns.listen(&refs));
        std::thread::sleep(Duration::from_millis(120));
        // At least one reload lands before the next burst, whatever the machine's load:
        // the reloads then fall between this burst's alerts and the next one's.
        let reloads = count(&d.lines.seen, "config reloaded");
        d.lines.wait_until("a reload after the burst", |seen| {
            count(seen, "config reloaded") > reloads
        });
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    hupper.join().unwrap();
    let alerted = |seen: &[String]| -> std::collections::HashSet<String> {
        seen.iter()
            .filter(|l| l.contains("PORTSENTINEL_EVENT=alert-raised"))
            .filter_map(|l| {
                l.split("LISTEN_ADDRESS=")
                    .nth(1)?
                    .split(' ')
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    };
    d.lines.wait_until("an alert for each of the 300", |seen| {
        alerted(seen).len() >= 300
    });
    std::thread::sleep(Duration::from_millis(500));
    d.lines.drain_for(Duration::from_millis(300));
    let seen = d.lines.seen.clone();
    for burst in 0..6 {
        for i in 1..=50 {
            let addr = format!("LISTEN_ADDRESS=127.1.{burst}.{i} ");
            let alerts = seen
                .iter()
                .filter(|l| l.contains("alert-raised") && l.contains(&addr))
                .count();
            assert_eq!(alerts, 1, "{addr}: {alerts} alerts");
        }
    }
    // The reloads raced the bursts: some took effect between the first alert and the
    // last. (How many of the signals each reload absorbs depends on the machine's load:
    // a reload in progress takes the signals that arrive meanwhile.)
    let first = seen
        .iter()
        .position(|l| l.contains("alert-raised"))
        .unwrap();
    let last = seen
        .iter()
        .rposition(|l| l.contains("alert-raised"))
        .unwrap();
    let raced = count(&seen[first..=last], "config reloaded");
    assert!(
        raced >= 1 && count(&seen, "config reloaded") >= 2,
        "the reloads happened, and between the alerts: {raced}"
    );
    assert_eq!(count(&seen, "alert-cleared"), 0);
    drop(held);
}

/// A config replaced by a FIFO: the reload is refused at once with a clear error (it used
/// to hang the daemon until someone wrote to the FIFO), and polling goes on.
#[test]
fn a_fifo_config_is_refused_at_reload() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file("[daemon]\ninterval = \"100ms\"\n");
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the start", |l| l.contains("starting"));
    std::fs::remove_file(&cfg).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(made.success());
    kill(d.child.id(), "HUP");
    let rejected = d.wait_for("the rejection", |l| l.contains("config reload rejected"));
    assert!(
        rejected.contains("it is a FIFO, not a regular file"),
        "{rejected}"
    );
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    d.wait_for("an alert after it", |l| l.contains("alert-raised"));
}

/// alerts.json replaced by a FIFO before the start: a warning, a fresh start, and the
/// daemon polls (it used to hang before its first poll).
#[test]
fn a_fifo_state_file_is_refused_at_start() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("alerts.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    let mut d = Daemon::start_in(&ns, &["--log", "text", "--interval", "100ms"], dir);
    let warning = d.wait_for("the warning", |l| l.contains("alerts.json"));
    assert!(
        warning.contains(" <4> ") && warning.contains("it is a FIFO"),
        "{warning}"
    );
    assert!(warning.contains("starting afresh"), "{warning}");
    d.wait_for("the alert", |l| l.contains("alert-raised"));
}

/// A symlink planted where the state's temporary file goes does not make the daemon
/// write through it, and a state directory that is a symlink is refused.
#[test]
fn state_files_are_not_written_through_links() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(victim.path(), "precious").unwrap();
    std::os::unix::fs::symlink(victim.path(), dir.path().join(".alerts.json.tmp")).unwrap();
    let mut d = Daemon::start_in(&ns, &["--log", "text", "--interval", "100ms"], dir);
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    d.wait_for("the alert", |l| l.contains("alert-raised"));
    let (status, state) = d.terminate_keep();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(victim.path()).unwrap(), "precious");
    let saved = std::fs::read_to_string(state.path().join("alerts.json")).unwrap();
    assert!(saved.contains("\"port\":867"), "{saved}");

    // A state directory that another user made a symlink (root's own links are followed:
    // systemd makes one for StateDirectory= with DynamicUser=).
    let real = tempfile::tempdir().unwrap();
    let link = real.path().join("link");
    std::os::unix::fs::symlink(real.path(), &link).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-h", "65534"])
        .arg(&link)
        .status()
        .unwrap();
    assert!(chown.success());
    let (_c, cfg) = config_file(&format!(
        "[daemon]\ninterval = \"100ms\"\nstate_directory = \"{}\"\n",
        link.display()
    ));
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    let err = d.wait_for("the refusal", |l| l.contains("cannot save state"));
    assert!(err.contains("symbolic link"), "{err}");
}

/// A SIGHUP at the daemon's first sign of life (its first line), or up to a millisecond
/// after, is a reload, never a death: the handlers are in place before it says anything.
/// (It used to install them after its "starting" record, and a SIGHUP in between killed
/// it silently.) 200 daemons, 25 at a time.
#[test]
fn a_sighup_at_start_is_a_reload_never_a_death() {
    let ns = Netns::new();
    let (_dir, cfg) = config_file("[daemon]\ninterval = \"100ms\"\n[events]\nsocket = \"\"\n");
    let mut survived = 0;
    for batch in 0..8u64 {
        let mut daemons: Vec<Daemon> = (0..25)
            .map(|_| Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]))
            .collect();
        for (i, d) in daemons.iter_mut().enumerate() {
            d.wait_for("its first line", |_| true);
            // 0 to 1 ms after it, spread over the batch.
            std::thread::sleep(Duration::from_micros((batch * 25 + i as u64) * 37 % 1000));
            kill(d.child.id(), "HUP");
        }
        for d in &mut daemons {
            d.wait_for("the reload", |l| l.contains("config reloaded"));
            assert!(d.child.try_wait().unwrap().is_none(), "{:#?}", d.lines.seen);
        }
        for d in daemons {
            assert!(d.terminate().success());
            survived += 1;
        }
    }
    assert_eq!(survived, 200);
}
