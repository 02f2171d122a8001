//! Load: 10,000 unexpected listeners opened within a second, then closed again. Every one
//! is recorded (raised and cleared), the desktop gets one summary, the poll keeps its rhythm
//! and memory goes back down. And a burst with a subscriber that never reads, which must
//! not make a poll late. Timing figures, so they run on a release build, as deployed. Run
//! with `--nocapture` to see the figures:
//!
//! ```text
//! cargo test --release --test load -- --nocapture
//! ```

mod util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use util::desktop::{Agent, Session};
use util::{Daemon, Netns};

const COUNT: usize = 10_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Reads JSON records until `want` addresses have had a record of `event`.
fn collect(d: &mut Daemon, event: &str, want: usize, late: &mut Vec<String>) -> Duration {
    let start = Instant::now();
    let mut seen = HashSet::new();
    while seen.len() < want {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {want} {event} records",
            seen.len()
        );
        for line in d.lines.drain_for(Duration::from_millis(200)) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("late (interval"))
            {
                late.push(line.clone());
            }
            if v["PORTSENTINEL_EVENT"] == event && v["LISTEN_PORT"] == "867" {
                let addr = v["LISTEN_ADDRESS"].as_str().unwrap().to_owned();
                assert!(seen.insert(addr.clone()), "{event} twice for {addr}");
            }
        }
    }
    start.elapsed()
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a load test: tests/run-all.sh runs it on a release build"
)]
fn ten_thousand_unexpected_listeners_at_once() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let mut d = Daemon::start(&ns, &["--log", "json", "--interval", "1s"]);
    d.wait_for("the event socket", |l| l.contains("event socket"));
    let mut agent = Agent::for_session(&d.socket(), &session.address);
    agent
        .lines
        .wait_for("the agent's connection", |l| l.contains("connected to"));
    std::thread::sleep(Duration::from_secs(2));
    let pid = d.child.id();
    let baseline = rss_kib(pid);

    let specs: Vec<String> = (0..COUNT)
        .map(|i| format!("tcp:127.3.{}.{}:867", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let opened_at = Instant::now();
    let listeners = ns.listen(&refs);
    let bound_in = opened_at.elapsed();
    let mut late = Vec::new();
    let raised_in = collect(&mut d, "alert-raised", COUNT, &mut late);
    let peak = rss_kib(pid);

    listeners.stop();
    let cleared_in = collect(&mut d, "alert-cleared", COUNT, &mut late);
    // A few quiet polls, then memory should be back near where it started.
    d.lines.drain_for(Duration::from_secs(3));
    let after = rss_kib(pid);

    let calls = session.wait_calls("the summary", |c| {
        c.iter()
            .any(|c| c.summary == format!("{COUNT} unexpected listeners"))
    });
    let shown = calls.iter().filter(|c| c.replaces_id == 0).count();

    eprintln!(
        "load: {COUNT} listeners bound in {bound_in:?}; all alerted within {raised_in:?}, all cleared within {cleared_in:?} \
         of closing; RSS {baseline} KiB before, {peak} KiB at the peak, {after} KiB after; {shown} notification(s), \
         {} Notify call(s); late polls: {}",
        calls.len(),
        late.len()
    );
    assert!(shown <= 3, "{shown} notifications: {calls:#?}");
    // A notification is redrawn at most every half second: a handful of calls for the
    // whole flood, never one per alert.
    assert!(calls.len() <= 50, "{} Notify calls", calls.len());
    assert!(late.is_empty(), "the poll fell behind: {late:#?}");
    // Back to the baseline, give or take what the allocator keeps for reuse.
    assert!(
        after < baseline + (peak - baseline) / 2,
        "RSS {baseline} → {peak} → {after} KiB"
    );
}

/// A subscriber that connects and never reads, then 1,000 listeners at once: the poll
/// loop never waits for it. No poll starts later than a tenth of the interval (the
/// daemon's own figure, from its stopping record), and the subscriber is dropped.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a timing figure: tests/run-all.sh runs it on a release build"
)]
fn a_subscriber_that_never_reads_delays_no_poll() {
    let ns = Netns::new();
    let (_cfg_dir, cfg) = util::config_file("[daemon]\ninterval = \"1s\"\n");
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the event socket", |l| l.contains("event socket"));
    let _stalled = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let specs: Vec<String> = (1..=1000)
        .map(|i| format!("tcp:127.8.{}.{}:867", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _l = ns.listen(&refs);
    d.lines.wait_until("1,000 alerts", |seen| {
        seen.iter().filter(|l| l.contains("alert-raised")).count() == 1000
    });
    d.wait_for("the stalled subscriber dropped", |l| {
        l.contains("event subscriber") && l.contains("dropped")
    });
    // A few more polls after the burst.
    d.lines.drain_for(Duration::from_secs(3));
    let (status, seen) = d.terminate_lines();
    assert!(status.success());
    let max_late = max_late_ms(&seen);
    eprintln!("max late {max_late} ms");
    assert!(max_late < 100, "a poll started {max_late} ms late");
}

/// `max late N ms` from the daemon's stopping record.
fn max_late_ms(seen: &[String]) -> u64 {
    let stopping = seen
        .iter()
        .find(|l| l.contains("portsentinel stopping"))
        .expect("a stopping record");
    stopping
        .split("max late ")
        .nth(1)
        .and_then(|s| s.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max late in {stopping}"))
}

/// 2,000 active alerts and 400 subscribers that never read: each is replayed the same
/// shared lines, so memory stays small, and it goes back down when they leave.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a memory figure: tests/run-all.sh runs it on a release build"
)]
fn four_hundred_idle_subscribers_of_two_thousand_alerts() {
    let ns = Netns::new();
    let (_cfg_dir, cfg) = util::config_file(
        "[daemon]\ninterval = \"1s\"\n[events]\nmax_subscribers = 1000\nmax_subscribers_per_user = 1000\n",
    );
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the event socket", |l| l.contains("event socket"));
    let specs: Vec<String> = (0..2000)
        .map(|i| format!("tcp:127.9.{}.{}:867", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _alerts = ns.listen(&refs);
    d.lines.wait_until("2,000 alerts", |seen| {
        seen.iter().filter(|l| l.contains("alert-raised")).count() == 2000
    });
    d.lines.drain_for(Duration::from_secs(2));
    let pid = d.child.id();
    let baseline = rss_kib(pid);
    let idle = ns.listen(&[&format!("unix:{}*400", d.socket().display())]);
    let mut peak = 0;
    for _ in 0..40 {
        d.lines.drain_for(Duration::from_millis(100));
        peak = peak.max(rss_kib(pid));
    }
    idle.stop();
    d.lines.drain_for(Duration::from_secs(3));
    let after = rss_kib(pid);
    eprintln!(
        "400 idle subscribers of 2,000 alerts: RSS {baseline} KiB before, {peak} KiB at the peak, {after} KiB after they left"
    );
    assert!(peak < 64 * 1024, "RSS {peak} KiB with 400 subscribers");
    assert!(
        after <= 2 * baseline,
        "RSS {baseline} → {peak} → {after} KiB"
    );
    assert!(d.child.try_wait().unwrap().is_none());
}

/// A config of 10,000 rules, loaded on a reload: the file is read off the poll loop, and
/// no poll starts later than a tenth of the interval.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a timing figure: tests/run-all.sh runs it on a release build"
)]
fn a_reload_of_ten_thousand_rules_delays_no_poll() {
    let ns = Netns::new();
    let (_cfg_dir, cfg) = util::config_file("[daemon]\ninterval = \"1s\"\n");
    let _l = ns.listen(&["tcp:0.0.0.0:867", "tcp:0.0.0.0:22", "udp:0.0.0.0:53"]);
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the alert", |l| l.contains("alert-raised"));
    std::fs::write(&cfg, rules(10_000)).unwrap();
    let started = Instant::now();
    util::kill(d.child.id(), "HUP");
    d.wait_for("the reload", |l| l.contains("config reloaded"));
    eprintln!("10,000 rules reloaded in {:?}", started.elapsed());
    d.lines.drain_for(Duration::from_secs(3));
    let (status, seen) = d.terminate_lines();
    assert!(status.success());
    let late = max_late_ms(&seen);
    eprintln!("max late {late} ms");
    assert!(late < 100, "a poll started {late} ms late");
}

/// `check-config` on 100,000 rules, whole process: linear in the file (it took 447 s).
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a timing figure: tests/run-all.sh runs it on a release build"
)]
fn check_config_on_a_hundred_thousand_rules() {
    let (_dir, cfg) = util::config_file(&rules(100_000));
    let started = Instant::now();
    let out = std::process::Command::new(util::bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!("check-config on 100,000 rules: {took:?}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("100000 allow rule(s)"));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// A config with `n` allow rules, each a different port and program.
fn rules(n: usize) -> String {
    let mut s = String::from("[daemon]\ninterval = \"1s\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "\n[[allow]]\nname = \"rule {i}\"\nport = {}\nprotocol = \"tcp\"\nexe = \"/opt/app{i}/bin/server\"\n",
            1024 + i % 60000
        ));
    }
    s
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

const NAMESPACES: usize = 50;
const PER_NAMESPACE: u16 = 20;

/// 50 named network namespaces with 20 listeners each, watched from a namespace of the
/// daemon's own: each listener recorded once, then the daemon's CPU over 30 quiet polls
/// at the 1 s interval and its RSS. Once reading them with sock_diag from inside (root),
/// once through /proc/PID/net (CAP_SYS_ADMIN dropped, as under the shipped unit).
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a load test: tests/run-all.sh runs it on a release build"
)]
fn fifty_namespaces_of_twenty_listeners() {
    let namespaces: Vec<Netns> = (0..NAMESPACES).map(|_| Netns::new()).collect();
    let specs: Vec<String> = (0..PER_NAMESPACE)
        .map(|i| format!("tcp:127.0.0.1:{}", 30_000 + i))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _listeners: Vec<util::Listen> = namespaces.iter().map(|ns| ns.listen(&refs)).collect();
    let names: HashSet<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
    for (how, wrapper) in [
        ("sock_diag from inside", &[][..]),
        (
            "/proc/PID/net",
            &[
                "setpriv",
                "--inh-caps=-sys_admin",
                "--bounding-set=-sys_admin",
            ][..],
        ),
    ] {
        let host = Netns::new();
        let args = ["--log", "json", "--interval", "1s", "--namespaces", "all"];
        let mut d = Daemon::start_wrapped(&host, wrapper, &args);
        let pid = d.child.id();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let start = Instant::now();
        while seen.len() < NAMESPACES * usize::from(PER_NAMESPACE) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{how}: {} of the listeners recorded",
                seen.len()
            );
            for line in d.lines.drain_for(Duration::from_millis(200)) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let Some(ns) = v["LISTEN_NETNS_NAME"].as_str() else {
                    continue;
                };
                if names.contains(ns) && v["PORTSENTINEL_EVENT"] == "listener-present" {
                    let key = (ns.to_owned(), v["LISTEN_PORT"].as_str().unwrap().to_owned());
                    assert!(seen.insert(key.clone()), "{how}: {key:?} recorded twice");
                }
            }
        }
        let recorded_in = start.elapsed();
        // Quiet polls: the figure of the steady state.
        let ticks: f64 = String::from_utf8(
            std::process::Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        let (t0, c0) = (Instant::now(), cpu_ticks(pid));
        let during = d.lines.drain_for(Duration::from_secs(30));
        let cpu = (cpu_ticks(pid) - c0) as f64 / ticks / t0.elapsed().as_secs_f64();
        let rss = rss_kib(pid);
        eprintln!(
            "namespaces ({how}): {NAMESPACES} namespaces × {PER_NAMESPACE} listeners all recorded \
             within {recorded_in:?}; then {:.2} % of a core over 30 s at the 1 s interval; RSS {rss} KiB",
            cpu * 100.0
        );
        let again = during
            .iter()
            .filter(|l| l.contains("listener-opened") || l.contains("listener-closed"))
            .filter(|l| names.iter().any(|n| l.contains(n)))
            .count();
        assert_eq!(again, 0, "{how}: the quiet polls recorded changes");
        assert!(rss < 24 * 1024, "{how}: RSS {rss} KiB");
        assert!(d.terminate().success());
    }
}
