//! Fleets: Debian's Prometheus, node_exporter and Alertmanager, started in a private
//! network namespace of each test, reading what the daemon gives them. Each answer is
//! checked through the engine's own HTTP API, as an operator's query would see it.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{Daemon, Netns};

/// A program from Debian's packages, running in a test's namespace until dropped.
struct Service {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Service {
    fn start(
        ns: &Netns,
        name: &'static str,
        program: &str,
        args: &[String],
        dir: &Path,
    ) -> Service {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = ns
            .command(program)
            .args(args)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e} (tests/run-all.sh installs it)"));
        Service { child, name, log }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "{}'s last lines:\n{}",
            self.name,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on a thread inside the namespace's network.
fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let netns = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).map_err(|e| e.to_string())?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| e.to_string())?;
        f()
    })
    .join()
    .unwrap()
}

/// One HTTP request from inside the namespace: the status and the body.
fn http(ns: &Netns, url: &str) -> Result<(u16, String), String> {
    http_as(ns, url, None)
}

/// One HTTP request from inside the namespace, with an `Authorization` header if given.
fn http_as(ns: &Netns, url: &str, auth: Option<&str>) -> Result<(u16, String), String> {
    let url = url.to_owned();
    let auth = auth.map(str::to_owned);
    in_netns(ns, move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(&url);
        if let Some(auth) = &auth {
            request = request.header("Authorization", auth);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    })
}

fn get_json(ns: &Netns, url: &str) -> Option<serde_json::Value> {
    match http(ns, url) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Waits (generously: these machines are shared) until `f` gives a value.
fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            eprintln!("{what}: after {} ms", start.elapsed().as_millis());
            return v;
        }
        assert!(start.elapsed() < timeout, "no {what} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready(ns: &Netns, service: &Service, url: &str) {
    let start = Instant::now();
    while !matches!(http(ns, url), Ok((200, _))) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} not ready after 60 s; {}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prometheus scraping `target` every second.
fn prometheus(ns: &Netns, dir: &Path, target: &str) -> Service {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: portsentinel\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        "--web.listen-address=127.0.0.1:9090".to_owned(),
    ];
    let p = Service::start(ns, "prometheus", "prometheus", &args, dir);
    ready(ns, &p, "http://127.0.0.1:9090/-/ready");
    // Prometheus applies new targets every 5 s: from its first scrape on, it scrapes
    // every second.
    wait_until("Prometheus' first scrape", Duration::from_secs(60), || {
        query(ns, "up{job=\"portsentinel\"}").filter(|r| r.first().is_some_and(|s| s.1 == "1"))
    });
    p
}

/// `query`'s instant vector in Prometheus: (labels, value) per series.
fn query(ns: &Netns, query: &str) -> Option<Vec<(serde_json::Value, String)>> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let v = get_json(ns, &format!("http://127.0.0.1:9090/api/v1/query?query={q}"))?;
    let result = v["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .map(|s| {
                (
                    s["metric"].clone(),
                    s["value"][1].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
    )
}

/// The daemon on `config`, in `ns`, after its first snapshot.
fn daemon(ns: &Netns, config: &str) -> (Daemon, tempfile::TempDir) {
    let (dir, path) = util::config_file(config);
    let mut d = Daemon::start(ns, &["--config", path.to_str().unwrap(), "--log", "json"]);
    d.wait_for("the start-up record", |l| l.contains("starting: config"));
    (d, dir)
}

/// Prometheus sees the alert on 867 while it is active, and nothing once it closed.
fn alert_comes_and_goes_in_prometheus(ns: &Netns, d: &mut Daemon) {
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    d.record("alert-raised", l.pid);
    let series = wait_until("the alert in Prometheus", Duration::from_secs(60), || {
        query(ns, "portsentinel_alert_active{port=\"867\"}").filter(|r| !r.is_empty())
    });
    assert_eq!(series.len(), 1, "{series:?}");
    let (labels, value) = &series[0];
    assert_eq!(value, "1");
    for (k, v) in [
        ("alertname", "UnexpectedListener"),
        ("protocol", "tcp"),
        ("address", "0.0.0.0"),
        ("netns", "host"),
    ] {
        assert_eq!(labels[k], v, "{labels}");
    }
    assert!(
        labels["program"].as_str().unwrap().ends_with("/listen"),
        "{labels}"
    );
    assert!(labels.get("pid").is_none() && labels.get("inode").is_none());
    // Listeners by classification, and the counters.
    let well_known = query(
        ns,
        "portsentinel_listeners{protocol=\"tcp\",range=\"well-known\",iana_status=\"unassigned\",reach=\"all-ipv4\"}",
    )
    .unwrap();
    assert_eq!(well_known.len(), 1, "{well_known:?}");
    assert_eq!(well_known[0].1, "1");
    let raised = query(ns, "portsentinel_events_total{kind=\"alert-raised\"}").unwrap();
    assert_eq!(raised[0].1, "1", "{raised:?}");
    let pid = l.pid;
    l.stop();
    d.record("alert-cleared", pid);
    wait_until(
        "the alert gone from Prometheus",
        Duration::from_secs(60),
        || query(ns, "portsentinel_alert_active{port=\"867\"}").filter(|r| r.is_empty()),
    );
}

#[test]
fn prometheus_reads_the_alerts_through_node_exporters_textfile_collector() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let exporter = Service::start(
        &ns,
        "node_exporter",
        "prometheus-node-exporter",
        &[
            "--web.listen-address=127.0.0.1:9100".to_owned(),
            "--collector.disable-defaults".to_owned(),
            "--collector.textfile".to_owned(),
            format!("--collector.textfile.directory={}", textfiles.display()),
        ],
        dir.path(),
    );
    ready(&ns, &exporter, "http://127.0.0.1:9100/metrics");
    let _prometheus = prometheus(&ns, dir.path(), "127.0.0.1:9100");
    let (mut d, _config) = daemon(
        &ns,
        &format!(
            "[events]\nsocket = \"\"\n[metrics]\ntextfile = \"{}/portsentinel.prom\"\n",
            textfiles.display()
        ),
    );
    alert_comes_and_goes_in_prometheus(&ns, &mut d);
    // node_exporter read every file without error.
    let errors = query(&ns, "node_textfile_scrape_error").unwrap();
    assert_eq!(errors[0].1, "0", "{errors:?}; {}", exporter.log());
    // The daemon holds no listening socket of its own in this setup.
    let scan = util::scan_json(&ns, &[]);
    assert!(
        !scan.iter().any(|l| l["process"]["pid"] == d.child.id()),
        "{scan:#?}"
    );
}

#[test]
fn prometheus_scrapes_the_daemons_own_endpoint() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut d, _config) = daemon(
        &ns,
        "[events]\nsocket = \"\"\n[metrics]\nlisten = \"127.0.0.1:9867\"\n",
    );
    d.wait_for("the metrics endpoint", |l| {
        l.contains("metrics served on http://127.0.0.1:9867/metrics")
    });
    // Only GET and HEAD, only /metrics; a request that never ends is cut off.
    assert_eq!(http(&ns, "http://127.0.0.1:9867/nothing").unwrap().0, 404);
    let (status, body) = http(&ns, "http://127.0.0.1:9867/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("portsentinel_build_info{version="), "{body}");
    let _prometheus = prometheus(&ns, dir.path(), "127.0.0.1:9867");
    alert_comes_and_goes_in_prometheus(&ns, &mut d);
}

fn alertmanager(ns: &Netns, dir: &Path) -> Service {
    alertmanager_with(ns, dir, "5m", &[])
}

/// Alertmanager ending an alert `resolve_timeout` after it last heard of it, with `extra`
/// arguments (a `--web.config.file` asks every client for `BASIC_AUTH`); once it answers.
fn alertmanager_with(ns: &Netns, dir: &Path, resolve_timeout: &str, extra: &[String]) -> Service {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  resolve_timeout: {resolve_timeout}\n\
             route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("am").display()),
        "--web.listen-address=127.0.0.1:9093".to_owned(),
        "--cluster.listen-address=".to_owned(),
    ];
    args.extend_from_slice(extra);
    let am = Service::start(ns, "alertmanager", "prometheus-alertmanager", &args, dir);
    let auth = (!extra.is_empty()).then_some(BASIC_AUTH);
    let start = Instant::now();
    while !matches!(
        http_as(ns, "http://127.0.0.1:9093/-/ready", auth),
        Ok((200, _))
    ) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Alertmanager not ready after 60 s; {}",
            am.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    am
}

/// `portsentinel:fleet-secret`, as a client sends it.
const BASIC_AUTH: &str = "Basic cG9ydHNlbnRpbmVsOmZsZWV0LXNlY3JldA==";

/// The active alerts Alertmanager holds for port 867.
fn active_867(ns: &Netns) -> Option<Vec<serde_json::Value>> {
    active_867_as(ns, None)
}

fn active_867_as(ns: &Netns, auth: Option<&str>) -> Option<Vec<serde_json::Value>> {
    let url = "http://127.0.0.1:9093/api/v2/alerts?active=true";
    let v: serde_json::Value = match http_as(ns, url, auth) {
        Ok((200, body)) => serde_json::from_str(&body).ok()?,
        _ => return None,
    };
    Some(
        v.as_array()?
            .iter()
            .filter(|a| a["labels"]["port"] == "867" && a["status"]["state"] == "active")
            .cloned()
            .collect(),
    )
}

#[test]
fn alertmanager_holds_the_alert_while_it_is_active_even_when_it_started_late() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut d, _config) = daemon(
        &ns,
        "[events]\nsocket = \"\"\n[alertmanager]\nurl = \"http://127.0.0.1:9093\"\nresend = \"5s\"\ninstance = \"web-1\"\n",
    );
    // Alertmanager is not running yet: the alert is raised, delivery fails and says so.
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let alert = d.record("alert-raised", l.pid);
    d.wait_for("the delivery failure", |line| {
        line.contains("cannot deliver alerts to Alertmanager")
            && line.contains("\"PRIORITY\":\"4\"")
    });
    let _am = alertmanager(&ns, dir.path());
    let alerts = wait_until("the alert in Alertmanager", Duration::from_secs(90), || {
        active_867(&ns).filter(|a| !a.is_empty())
    });
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let labels = &alerts[0]["labels"];
    for (k, v) in [
        ("alertname", "UnexpectedListener"),
        ("instance", "web-1"),
        ("severity", alert["ALERT_SEVERITY"].as_str().unwrap()),
        ("protocol", "tcp"),
        ("port", "867"),
        ("address", "0.0.0.0"),
        ("program", alert["LISTENER_EXE"].as_str().unwrap()),
        ("netns", "host"),
    ] {
        assert_eq!(labels[k], v, "{labels}");
    }
    let annotations = &alerts[0]["annotations"];
    assert_eq!(annotations["summary"], alert["MESSAGE"], "{annotations}");
    assert_eq!(
        annotations["description"], alert["ALERT_REASON"],
        "{annotations}"
    );
    d.wait_for("the recovery", |line| {
        line.contains("alerts delivered to Alertmanager again")
    });
    // Closed: Alertmanager is told it ended, and lists it no more.
    l.stop();
    wait_until(
        "no active alert in Alertmanager",
        Duration::from_secs(60),
        || active_867(&ns).filter(|a| a.is_empty()),
    );
}

/// Alertmanager behind basic authentication (its own `--web.config.file`, a bcrypt hash):
/// a wrong password is refused and said at warning; the right one, read from its file,
/// delivers the alert, and `resend` keeps it active past Alertmanager's
/// `resolve_timeout` (10 s here: a resend may come seconds late on a busy machine),
/// which would end an alert it stopped hearing of.
#[test]
fn alertmanager_behind_basic_auth_gets_the_alert_and_keeps_it_while_resent() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    // bcrypt of "fleet-secret", cost 10.
    std::fs::write(
        &web,
        "basic_auth_users:\n  portsentinel: $2b$10$c2XQ9LdKDJZZu8lH581Yv.Lqh6mXCduYnGGx/ZytVrjVC238gY7he\n",
    )
    .unwrap();
    let web = format!("--web.config.file={}", web.display());
    let _am = alertmanager_with(&ns, dir.path(), "10s", &[web]);
    assert_eq!(
        http(&ns, "http://127.0.0.1:9093/api/v2/alerts").unwrap().0,
        401,
        "Alertmanager lets anyone in: the test proves nothing"
    );
    let config = |password: &str| {
        let file = dir.path().join(format!("{password}.pw"));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        format!(
            "[events]\nsocket = \"\"\n[alertmanager]\nurl = \"http://127.0.0.1:9093\"\n\
             resend = \"1s\"\nbasic_auth_username = \"portsentinel\"\nbasic_auth_password_file = \"{}\"\n",
            file.display()
        )
    };
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    let (mut wrong, _c) = daemon(&ns, &config("guessed"));
    wrong.record("alert-raised", l.pid);
    let refused = wrong.wait_for("the refusal", |line| {
        line.contains("cannot deliver alerts to Alertmanager")
    });
    assert!(refused.contains("HTTP status 401"), "{refused}");
    assert!(refused.contains("\"PRIORITY\":\"4\""), "{refused}");
    assert!(wrong.terminate().success());
    assert_eq!(active_867_as(&ns, Some(BASIC_AUTH)), Some(Vec::new()));
    let (mut right, _c) = daemon(&ns, &config("fleet-secret"));
    right.record("alert-raised", l.pid);
    let alerts = wait_until("the alert in Alertmanager", Duration::from_secs(60), || {
        active_867_as(&ns, Some(BASIC_AUTH)).filter(|a| !a.is_empty())
    });
    assert_eq!(alerts[0]["labels"]["alertname"], "UnexpectedListener");
    // Heard of once, Alertmanager would end it at this `endsAt`; resent, it is still
    // active once that moment has passed.
    let ends = |a: &serde_json::Value| seconds(a["endsAt"].as_str().unwrap_or_default());
    let first_end = ends(&alerts[0]);
    wait_until("the first endsAt to pass", Duration::from_secs(30), || {
        (now_seconds() > first_end + 1.0).then_some(())
    });
    let later = active_867_as(&ns, Some(BASIC_AUTH)).unwrap();
    assert_eq!(later.len(), 1, "ended though resent: {alerts:#?}");
    assert!(ends(&later[0]) > first_end, "{later:#?}");
    assert!(right.terminate().success());
}

/// Seconds since the epoch of an RFC 3339 time in UTC, as Alertmanager writes it.
fn seconds(t: &str) -> f64 {
    humantime::parse_rfc3339(t)
        .unwrap_or_else(|e| panic!("{t}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn idle_connections_to_the_endpoint_cost_bounded_descriptors_and_delay_no_alert() {
    let ns = Netns::new();
    let (mut d, _config) = daemon(
        &ns,
        "[events]\nsocket = \"\"\n[metrics]\nlisten = \"127.0.0.1:9867\"\n",
    );
    d.wait_for("the metrics endpoint", |l| {
        l.contains("metrics served on http://127.0.0.1:9867/metrics")
    });
    let pid = d.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    // 64 connections that never send a byte, held open.
    let idle = in_netns(&ns, || {
        (0..64)
            .map(|_| std::net::TcpStream::connect("127.0.0.1:9867").map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap();
    // The daemon still records an alert on time, and takes at most its 16 connections.
    let l = ns.listen(&["tcp:0.0.0.0:867"]);
    d.record("alert-raised", l.pid);
    let during = fds();
    // (A few descriptors more for the poll's own /proc reads.)
    assert!(
        during <= before + 16 + 4,
        "{during} descriptors with 64 idle connections, {before} before"
    );
    // A connection that sends no request within 2 s is cut: the endpoint answers again,
    // the idle ones still open on this side.
    let (status, body) = wait_until(
        "an answer past the idle connections",
        Duration::from_secs(120),
        || http(&ns, "http://127.0.0.1:9867/metrics").ok(),
    );
    assert_eq!(status, 200);
    assert!(body.contains("portsentinel_alert_active{"), "{body}");
    drop(idle);
}
