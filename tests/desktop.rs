//! Desktop notifications end to end: daemon (in its own network namespace) → event socket
//! → `notify-agent` → a real notification server (dunst on Xvfb, private session bus).
//! What was shown is read from `busctl monitor` (every Notify call, with its urgency and
//! replaces_id) and from `dunstctl history`.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use util::desktop::{Agent, NotifyCall, Session};
use util::{Daemon, Netns, bin, config_file};

fn daemon(ns: &Netns) -> Daemon {
    let mut d = Daemon::start(ns, &["--log", "text", "--interval", "200ms"]);
    d.wait_for("the event socket", |l| l.contains("event socket"));
    d
}

fn new_ones(calls: &[NotifyCall]) -> Vec<&NotifyCall> {
    calls.iter().filter(|c| c.replaces_id == 0).collect()
}

#[test]
fn an_alert_is_one_critical_notification_updated_when_it_closes() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let d = daemon(&ns);
    let mut agent = Agent::for_session(&d.socket(), &session.address);
    agent
        .lines
        .wait_for("the connection", |l| l.contains("connected to"));

    let bound = Instant::now();
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let calls = session.wait_calls("a notification for 867", |c| {
        c.iter().any(|c| c.summary.contains("867/tcp"))
    });
    eprintln!("notified {:?} after bind", bound.elapsed());
    let first = calls
        .iter()
        .find(|c| c.summary.contains("867/tcp"))
        .unwrap()
        .clone();
    assert_eq!(first.summary, "Unexpected listener on 867/tcp");
    assert_eq!(first.app, "portsentinel");
    assert_eq!(first.urgency, Some(2), "critical");
    for want in [
        "listen (pid ",
        &l.pid.to_string(),
        "IANA: unassigned, well-known range (0-1023)",
        "all IPv4 interfaces (0.0.0.0)",
    ] {
        assert!(
            first.body.contains(want),
            "{want:?} not in {:?}",
            first.body
        );
    }

    l.stop();
    let calls = session.wait_calls("the update", |c| c.len() >= 2);
    assert_eq!(
        new_ones(&calls).len(),
        1,
        "updated, not stacked: {calls:#?}"
    );
    let update = &calls[1];
    assert_ne!(update.replaces_id, 0);
    assert_eq!(update.summary, "No longer alerting: 867/tcp");
    let history = session.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].0, update.replaces_id);
    assert_eq!(history[0].1, "No longer alerting: 867/tcp");
}

#[test]
fn markup_in_a_program_path_is_shown_literally() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let d = daemon(&ns);
    let _agent = Agent::for_session(&d.socket(), &session.address);
    // `</b>` holds a slash, so the text spans a directory and a file name of the exe.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("<b>bold</b> & <i>");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(util::listen_bin(), &exe).unwrap();
    let mut c = ns.command(&exe);
    c.arg("tcp:0.0.0.0:867");
    let _l = util::Listen::start(c);
    let calls = session.wait_calls("the notification", |c| !c.is_empty());
    let body = &calls[0].body;
    assert!(
        body.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;"),
        "{body}"
    );
    assert!(!body.contains("<b>") && !body.contains("<i>"), "{body}");
    // What dunst keeps is what was sent: the escaped text, which it renders literally.
    let history = session.history();
    assert!(
        history[0]
            .2
            .contains("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;"),
        "{history:#?}"
    );
}

#[test]
fn fifty_alerts_in_a_second_are_at_most_three_notifications() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let d = daemon(&ns);
    let _agent = Agent::for_session(&d.socket(), &session.address);
    let specs: Vec<String> = (1..=50).map(|i| format!("tcp:127.0.0.{i}:867")).collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _l = ns.listen(&refs);
    let calls = session.wait_calls("a summary of 50", |c| {
        c.iter().any(|c| c.summary.starts_with("50 "))
    });
    std::thread::sleep(Duration::from_secs(3));
    let calls = session
        .notify_calls()
        .into_iter()
        .chain(calls)
        .collect::<Vec<_>>();
    let shown = session.history();
    assert!(shown.len() <= 3, "{shown:#?}");
    assert!(
        shown.iter().any(|(_, s, _)| s == "50 unexpected listeners"),
        "{shown:#?}"
    );
    let summary = calls
        .iter()
        .rev()
        .find(|c| c.summary.starts_with("50 "))
        .unwrap();
    assert!(summary.body.contains("and 45 more"), "{}", summary.body);
}

#[test]
fn a_daemon_restart_repeats_nothing_and_new_alerts_still_arrive() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let d = daemon(&ns);
    let mut agent = Agent::for_session(&d.socket(), &session.address);
    let _a = ns.listen(&["tcp:0.0.0.0:867"]);
    session.wait_calls("the first alert", |c| c.len() == 1);

    let (status, dir) = d.terminate_keep();
    assert!(status.success());
    agent
        .lines
        .wait_for("the lost connection", |l| l.contains("ended"));
    let mut d2 = Daemon::start_in(&ns, &["--log", "text", "--interval", "200ms"], dir);
    d2.wait_for("the new daemon's inventory", |l| {
        l.contains("listener-present")
    });
    agent
        .lines
        .wait_for("the reconnection", |l| l.contains("connected to"));
    // The replayed alert for 867 is not shown again...
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        session.notify_calls().len(),
        1,
        "{:#?}",
        session.notify_calls()
    );
    // ...and a new one is.
    let _b = ns.listen(&["udp:0.0.0.0:869"]);
    let calls = session.wait_calls("the next alert", |c| c.len() == 2);
    assert_eq!(calls[1].summary, "Unexpected listener on 869/udp");
    assert_eq!(new_ones(&calls).len(), 2);
}

/// Only root and members of the configured group may subscribe.
#[test]
fn the_event_socket_admits_the_group_only() {
    let ns = Netns::new();
    // gid 100, "users", exists on every Debian system.
    let (_dir, cfg) = config_file("[events]\ngroup = \"users\"\n");
    let mut d = Daemon::start(&ns, &["--log", "text", "--config", cfg.to_str().unwrap()]);
    d.wait_for("the event socket", |l| {
        l.contains("event socket") && l.contains("root and group users")
    });
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 100));

    let exec_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(exec_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = exec_dir.path().join("portsentinel");
    std::fs::copy(bin(), &copy).unwrap();
    let agent_as = |groups: &str| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", groups])
            .arg(&copy);
        c.arg("notify-agent").arg("--socket").arg(d.socket());
        c.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent");
        Agent::spawn(c)
    };
    let mut outsider = agent_as("--clear-groups");
    let denied = outsider
        .lines
        .wait_for("the refusal", |l| l.contains("cannot read events"));
    assert!(denied.contains("Permission denied"), "{denied}");
    assert!(
        denied.contains("usermod -aG portsentinel"),
        "the hint: {denied}"
    );
    let mut member = agent_as("--groups=100");
    member
        .lines
        .wait_for("the connection", |l| l.contains("connected to"));
}

#[test]
fn without_a_session_bus_the_agent_says_so_once_and_catches_up() {
    let ns = Netns::new();
    let mut session = Session::without_bus();
    let d = daemon(&ns);
    let mut agent = Agent::for_session(&d.socket(), &session.address);
    agent
        .lines
        .wait_for("the connection", |l| l.contains("connected to"));
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    agent.lines.wait_for("the error", |l| {
        l.contains("cannot show desktop notifications")
    });
    // Retries go on quietly: one error line, however long it lasts.
    agent.lines.drain_for(Duration::from_secs(7));
    let errors = agent
        .lines
        .seen
        .iter()
        .filter(|l| l.contains("cannot show desktop notifications"))
        .count();
    assert_eq!(errors, 1, "{:#?}", agent.lines.seen);
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent must keep running"
    );

    session.start_bus();
    session.start_dunst();
    agent
        .lines
        .wait_for("recovery", |l| l.contains("work again"));
    let history = session.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].1, "Unexpected listener on 867/tcp");
}

/// A daemon run as the desktop user shows notifications itself with `[notify] desktop`.
#[test]
fn direct_mode_needs_no_agent() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let (_dir, cfg) = config_file(
        "[daemon]\ninterval = \"200ms\"\n[notify]\ndesktop = true\n[events]\nsocket = \"\"\n",
    );
    let _d = Daemon::start_with_env(
        &ns,
        &["--log", "text", "--config", cfg.to_str().unwrap()],
        &[("DBUS_SESSION_BUS_ADDRESS", &session.address)],
    );
    let _l = ns.listen(&["udp:0.0.0.0:867"]);
    let calls = session.wait_calls("the notification", |c| !c.is_empty());
    assert_eq!(calls[0].summary, "Unexpected listener on 867/udp");
    assert_eq!(calls[0].urgency, Some(2));
}

/// The agent reads the same config file as the daemon: `[events] socket` from
/// `--config`, no `--socket`. Its log goes to a pipe here: no colour codes in it.
#[test]
fn the_agent_takes_its_socket_from_the_config_and_writes_no_colour_to_a_pipe() {
    let ns = Netns::new();
    let mut session = Session::start();
    session.start_monitor();
    let d = daemon(&ns);
    let (_dir, cfg) = config_file(&format!(
        "[events]\nsocket = \"{}\"\n",
        d.socket().display()
    ));
    let mut c = std::process::Command::new(bin());
    c.args(["notify-agent", "--config", cfg.to_str().unwrap()])
        .env("DBUS_SESSION_BUS_ADDRESS", &session.address)
        .env_remove("NO_COLOR");
    let mut agent = Agent::spawn(c);
    let connected = agent
        .lines
        .wait_for("the connection", |l| l.contains("connected to"));
    assert!(
        connected.contains(&d.socket().display().to_string()),
        "{connected}"
    );
    assert!(
        !connected.contains('\u{1b}'),
        "colour codes in a pipe: {connected:?}"
    );
    let _l = ns.listen(&["tcp:0.0.0.0:867"]);
    session.wait_calls("a notification for 867", |c| {
        c.iter().any(|c| c.summary.contains("867/tcp"))
    });
}
