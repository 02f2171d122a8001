//! The Debian package, as a sysadmin meets it: built by `cargo deb` (tests/run-all.sh
//! builds it after the release build, then runs these), checked by lintian, installed with
//! dpkg under a real systemd, used, removed and purged.

mod util;

use std::path::PathBuf;
use std::process::Command;

use util::systemd::Systemd;

/// The newest package `cargo deb` built.
fn deb() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo deb` first", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    debs.pop()
        .expect("a .deb in target/debian: run `cargo deb` first")
}

#[test]
#[ignore = "needs the package: tests/run-all.sh builds it with `cargo deb --no-build` and runs this"]
fn lintian_reports_no_error() {
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--info"])
        .arg(deb())
        .output()
        .expect("lintian (tests/run-all.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // Exit 0: it read the package and found no error (1 is errors, 2 a failure to run
    // at all, which must not pass for "no error").
    assert!(out.status.success(), "lintian exited with {}", out.status);
}

#[test]
#[ignore = "needs the package: tests/run-all.sh builds it with `cargo deb --no-build` and runs this"]
fn the_package_installs_runs_and_purges_without_a_trace() {
    let sd = Systemd::boot();
    std::fs::copy(deb(), sd.share.path().join("portsentinel.deb")).unwrap();
    sd.sh_ok("dpkg -i portsentinel.deb");
    // Enabled and started by its maintainer script, under the packaged unit.
    assert_eq!(sd.is_active("portsentinel"), "active");
    // (On a merged /usr, systemd names it by /lib.)
    let unit = sd.sh_ok("readlink -f \"$(systemctl show -P FragmentPath portsentinel)\"");
    assert_eq!(unit.trim(), "/usr/lib/systemd/system/portsentinel.service");
    sd.sh_ok("getent group portsentinel");
    // The man pages render.
    let page = sd.sh_ok("MANWIDTH=80 man -P cat portsentinel 2>&1");
    assert!(
        page.contains("SUBCOMMANDS") && page.contains("portsentinel-history(8)"),
        "{page}"
    );
    let config = sd.sh_ok("MANWIDTH=80 man -P cat portsentinel.toml 2>&1");
    assert!(config.contains("alert_on"), "{config}");
    sd.sh_ok("MANWIDTH=80 man -P cat portsentinel-history >/dev/null");
    // Bash completes `portsentinel sc<TAB>` to `scan`.
    let words = sd.sh_ok(
        "bash -c '. /usr/share/bash-completion/completions/portsentinel
                  COMP_WORDS=(portsentinel sc); COMP_CWORD=1
                  COMP_LINE=\"portsentinel sc\"; COMP_POINT=${#COMP_LINE}
                  _portsentinel portsentinel sc portsentinel
                  echo \"${COMPREPLY[*]}\"'",
    );
    assert_eq!(words.trim(), "scan");
    // It does its job: a listener on 867 is alerted.
    sd.sh_ok("sysctl -q -w net.ipv4.ip_unprivileged_port_start=0");
    sd.listen_as_nobody(&["tcp:0.0.0.0:867"]);
    let alerts = sd.wait_journal(&["-u", "portsentinel", "LISTEN_PORT=867", "PRIORITY=4"], 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    sd.sh_ok("test -s /var/lib/portsentinel/alerts.json");
    // The catalog is in journald's database: `journalctl -x` explains the alert.
    let explained = sd.sh_ok("journalctl -x --no-pager -u portsentinel LISTEN_PORT=867 PRIORITY=4");
    assert!(
        explained.contains("What to do"),
        "no catalog text:\n{explained}"
    );

    // What the package put on the machine.
    let files: Vec<String> = sd
        .sh_ok("dpkg -L portsentinel")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        files.iter().any(|f| f == "/usr/bin/portsentinel"),
        "{files:?}"
    );
    // Removed: stopped.
    sd.sh_ok("dpkg -r portsentinel");
    assert_ne!(sd.is_active("portsentinel"), "active");
    // Purged: none of its files, no state, no config.
    sd.sh_ok("dpkg --purge portsentinel");
    let left = sd.sh_ok(&format!(
        "for f in {}; do [ -d \"$f\" ] || {{ [ -e \"$f\" ] || [ -L \"$f\" ]; }} && [ ! -d \"$f\" ] && echo \"$f\"; done
         for d in /var/lib/portsentinel /var/lib/private/portsentinel /etc/portsentinel \
                  /run/portsentinel \
                  /etc/systemd/system/multi-user.target.wants/portsentinel.service \
                  /var/lib/systemd/deb-systemd-helper-enabled/portsentinel.service \
                  /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/portsentinel.service; do
             {{ [ -e \"$d\" ] || [ -L \"$d\" ]; }} && echo \"$d\"
         done
         true",
        files.join(" ")
    ));
    assert_eq!(left.trim(), "", "left behind after purge:\n{left}");
}
