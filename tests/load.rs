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
    let stopping = seen
        .iter()
        .find(|l| l.contains("portsentinel stopping"))
        .expect("a stopping record");
    let max_late: u64 = stopping
        .split("max late ")
        .nth(1)
        .and_then(|s| s.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max late in {stopping}"));
    eprintln!("max late {max_late} ms");
    assert!(
        max_late < 100,
        "a poll started {max_late} ms late: {stopping}"
    );
}
