//! Prometheus metrics: what the daemon knows after each poll, as counters, gauges and a
//! histogram ([`Metrics`]), exposed two ways, both off by default:
//!
//! - a textfile for node_exporter's textfile collector, replaced whole (written beside it,
//!   then renamed) by a thread of its own after each poll that changed a value, and at
//!   least once a minute (so `node_textfile_mtime_seconds` shows the daemon alive);
//! - `GET /metrics` on the configured address ([`serve`]), each connection bounded in
//!   bytes, time and number.
//!
//! The exposition is encoded at most once per change of the values, whatever the number
//! of scrapes: a local process that asks a thousand times a second costs the loop's
//! thread one copy of a cached text each time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::RecordSink;
use super::fleet::FleetAlert;
use super::record::{Record, priority};
use crate::exposition::{
    AlertLabelSet, BackendLabel, Exposition, Families, Format, KindLabel, ListenerLabels,
    ReasonLabel, SeverityLabel, SourceLabel,
};
use crate::latch::Latch;
use crate::model::expect::ExpectEvent;
use crate::model::{Event, EventKind, Owner, Tracker};
use crate::source::Backend;

/// The metrics the loop keeps up to date.
pub struct Metrics {
    exposition: Arc<Exposition>,
    /// The metrics themselves (the exposition encodes the same ones).
    m: Families,
    /// The label sets shown now, to remove those that are gone.
    shown_listeners: HashSet<ListenerLabels>,
    shown_alerts: HashSet<AlertLabelSet>,
    shown_severities: HashSet<SeverityLabel>,
    textfile: Option<Textfile>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("alerts", &self.shown_alerts.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics, and the textfile writer when `textfile` is set.
    pub fn new(textfile: Option<&Path>, records: Arc<dyn RecordSink>) -> Metrics {
        let (exposition, m) = Exposition::new();
        let textfile = textfile.map(|p| Textfile::start(p, Arc::clone(&exposition), records));
        Metrics {
            exposition,
            m,
            shown_listeners: HashSet::new(),
            shown_alerts: HashSet::new(),
            shown_severities: HashSet::new(),
            textfile,
        }
    }

    pub fn exposition(&self) -> Arc<Exposition> {
        Arc::clone(&self.exposition)
    }

    /// One poll: how long it took and which source read the table (`None`: none worked).
    pub fn poll(&mut self, took: Duration, backend: Option<Backend>) {
        self.m.poll_duration.observe(took.as_secs_f64());
        let backend = match backend {
            Some(Backend::SockDiag) => "sock_diag",
            Some(Backend::ProcNet) => "proc_net",
            None => "failed",
        };
        self.m.polls.get_or_create(&BackendLabel { backend }).inc();
        self.set_fallback("sock_diag", backend != "sock_diag");
        // The endpoint serves the new counts at the next scrape (a quiet host's poll
        // counter must move, or it looks stuck); the textfile waits for its refresh.
        self.exposition.bump();
    }

    /// Whether instant detection fell back to polling alone.
    pub fn set_fallback(&mut self, source: &'static str, on: bool) {
        let was = self
            .m
            .fallback
            .get_or_create(&SourceLabel { source })
            .set(i64::from(on));
        if was != i64::from(on) {
            self.changed();
        }
    }

    /// A poll's events: counted by kind, and the owners that could not be named.
    pub fn events(&mut self, events: &[Arc<Event>], expectations: &[ExpectEvent]) {
        if events.is_empty() && expectations.is_empty() {
            return;
        }
        for e in events {
            self.m
                .events
                .get_or_create(&KindLabel {
                    kind: e.kind.as_str(),
                })
                .inc();
            let first_sight = matches!(
                e.kind,
                EventKind::ListenerPresent
                    | EventKind::ListenerOpened
                    | EventKind::AlertRaised
                    | EventKind::ListenerOwnerChanged
            );
            if let (true, Owner::Unknown(why)) = (first_sight, &e.listener.owner) {
                self.m
                    .misses
                    .get_or_create(&ReasonLabel {
                        reason: why.as_str(),
                    })
                    .inc();
            }
        }
        for e in expectations {
            self.m
                .events
                .get_or_create(&KindLabel {
                    kind: e.kind.as_str(),
                })
                .inc();
        }
        self.changed();
    }

    /// The listeners now, counted by their classification.
    pub fn listeners(&mut self, tracker: &Tracker) {
        let mut counts: HashMap<ListenerLabels, i64> = HashMap::new();
        for (l, class) in tracker.present() {
            let (range, iana_status) = if l.portless.is_some() {
                ("none".to_owned(), "none".to_owned())
            } else {
                (class.range.to_string(), class.iana.status.to_string())
            };
            let labels = ListenerLabels {
                protocol: l.protocol.to_string(),
                range,
                iana_status,
                reach: class.reach.as_str().to_owned(),
            };
            *counts.entry(labels).or_default() += 1;
        }
        let mut changed = false;
        for (labels, n) in &counts {
            changed |= self.m.listeners.get_or_create(labels).set(*n) != *n;
        }
        for gone in self
            .shown_listeners
            .iter()
            .filter(|l| !counts.contains_key(*l))
        {
            changed |= self.m.listeners.remove(gone);
        }
        self.shown_listeners = counts.into_keys().collect();
        if changed {
            self.changed();
        }
    }

    /// The active alerts: one series each, and their number by severity.
    pub fn alerts(&mut self, active: &[Arc<FleetAlert>]) {
        let mut now: HashMap<AlertLabelSet, i64> = HashMap::new();
        let mut by_severity: HashMap<SeverityLabel, i64> = HashMap::new();
        for a in active {
            let labels = AlertLabelSet {
                alertname: a.alertname.to_owned(),
                severity: a.severity.clone(),
                labels: a.labels.clone(),
            };
            *now.entry(labels).or_default() += 1;
            *by_severity
                .entry(SeverityLabel {
                    severity: a.severity.clone(),
                })
                .or_default() += 1;
        }
        for (labels, n) in &now {
            self.m.alert_active.get_or_create(labels).set(*n);
        }
        for gone in self.shown_alerts.iter().filter(|l| !now.contains_key(*l)) {
            self.m.alert_active.remove(gone);
        }
        self.shown_alerts = now.into_keys().collect();
        for (labels, n) in &by_severity {
            self.m.alerts.get_or_create(labels).set(*n);
        }
        for gone in self
            .shown_severities
            .iter()
            .filter(|l| !by_severity.contains_key(*l))
        {
            self.m.alerts.get_or_create(gone).set(0);
        }
        self.shown_severities.extend(by_severity.into_keys());
        self.changed();
    }

    fn changed(&mut self) {
        self.exposition.bump();
        if let Some(t) = &mut self.textfile {
            t.dirty = true;
        }
    }

    /// After a poll: the textfile is written when a value changed, or a minute passed.
    pub fn flush(&mut self) {
        let Some(t) = &mut self.textfile else { return };
        let now = Instant::now();
        if t.dirty || now.saturating_duration_since(t.written) >= REFRESH {
            // The poll counters and durations are in it too: a new generation.
            self.exposition.bump();
            t.dirty = false;
            t.written = now;
            // Full: a write is waiting already, and it will encode the values of now.
            let _ = t.tx.try_send(());
        }
    }
}

/// The textfile is written at least this often, changed or not.
const REFRESH: Duration = Duration::from_secs(60);

/// The textfile writer's handle.
struct Textfile {
    tx: std::sync::mpsc::SyncSender<()>,
    dirty: bool,
    written: Instant,
}

impl Textfile {
    fn start(path: &Path, exposition: Arc<Exposition>, records: Arc<dyn RecordSink>) -> Textfile {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let path = path.to_owned();
        let spawned = std::thread::Builder::new()
            .name("metrics-textfile".into())
            .spawn(move || write_loop(&path, &exposition, &rx, &*records));
        if let Err(e) = spawned {
            tracing::warn!("no metrics textfile: cannot start its writer: {e}");
        }
        Textfile {
            tx,
            dirty: true,
            written: Instant::now(),
        }
    }
}

fn write_loop(
    path: &Path,
    exposition: &Exposition,
    rx: &std::sync::mpsc::Receiver<()>,
    records: &dyn RecordSink,
) {
    let mut latch = Latch::new(
        "cannot write the metrics textfile",
        "monitoring continues; retrying after each poll that changes a value",
        "metrics textfile written again",
    );
    while rx.recv().is_ok() {
        let text = exposition.encoded(Format::Text);
        match write_atomically(path, text.as_bytes()) {
            Ok(()) => {
                if let Some(back) = latch.recover() {
                    records.send(Record::plain(priority::NOTICE, None, back));
                }
            }
            Err(e) => {
                if let Some(problem) = latch.fail(format!("{}: {e}", path.display())) {
                    records.send(Record::plain(priority::WARNING, None, problem));
                }
            }
        }
    }
}

/// Writes `bytes` beside `path` and renames it over `path`: a reader sees the old file or
/// the new one, never a part. The name of the file being written does not end in `.prom`,
/// so node_exporter never reads it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the textfile path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    // A new file every time (never one someone else made there, nor a link they left).
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        // Readable by node_exporter's own user, whatever the daemon's umask.
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long one connection may take, from accept to the last byte.
const CONNECTION_TIME: Duration = Duration::from_secs(10);
/// How long a connection may take to send its request head: a scraper sends it at once,
/// and a connection that sends nothing gives its slot up soon.
const HEAD_TIME: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, exposition: Arc<Exposition>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // At the limit, wait for a slot before accepting: the rest wait in the backlog.
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, or a connection reset before accept: try again soon.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exposition = Arc::clone(&exposition);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIME, answer(stream, &exposition)).await;
            drop(permit);
        });
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    Metrics { format: Format, head_only: bool },
    Index,
    NotFound,
    BadMethod,
    Bad,
}

/// Reads a request head: `None` until it is complete.
pub fn parse_request(head: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Asked::Bad),
    }
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Some(Asked::BadMethod),
    };
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    Some(match path {
        "/metrics" => {
            let openmetrics = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
            });
            let format = if openmetrics {
                Format::OpenMetrics
            } else {
                Format::Text
            };
            Asked::Metrics { format, head_only }
        }
        "/" => Asked::Index,
        _ => Asked::NotFound,
    })
}

async fn answer(mut stream: tokio::net::TcpStream, exposition: &Exposition) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(asked) = parse_request(&head) {
                return Ok(Some(asked));
            }
            if head.len() >= MAX_HEAD {
                return Ok(Some(Asked::Bad));
            }
        }
    };
    let asked: std::io::Result<Option<Asked>> =
        match tokio::time::timeout(HEAD_TIME, read_head).await {
            Ok(read) => read,
            Err(_) => return Ok(()),
        };
    let Some(asked) = asked? else {
        return Ok(());
    };
    let (status, content_type, body, head_only): (&str, &str, Arc<str>, bool) = match asked {
        Asked::Metrics { format, head_only } => (
            "200 OK",
            format.content_type(),
            exposition.encoded(format),
            head_only,
        ),
        Asked::Index => (
            "200 OK",
            "text/plain; charset=utf-8",
            "portsentinel: metrics at /metrics\n".into(),
            false,
        ),
        Asked::NotFound => ("404 Not Found", "text/plain", "not found\n".into(), false),
        Asked::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "GET or HEAD only\n".into(),
            false,
        ),
        Asked::Bad => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            false,
        ),
    };
    let response_head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response_head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Discard;
    impl RecordSink for Discard {
        fn send(&self, _: Record) {}
    }

    #[test]
    fn requests_are_read_strictly() {
        let get = |h: &str| parse_request(h.as_bytes());
        assert_eq!(get("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics {
                format: Format::Text,
                head_only: false
            })
        );
        assert_eq!(
            get(
                "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
            ),
            Some(Asked::Metrics {
                format: Format::OpenMetrics,
                head_only: false
            })
        );
        assert_eq!(
            get("POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::BadMethod)
        );
        assert_eq!(get("GET /other HTTP/1.1\r\n\r\n"), Some(Asked::NotFound));
        assert_eq!(get("\x01\x02 garbage\r\n\r\n"), Some(Asked::Bad));
    }

    #[test]
    fn the_text_format_is_what_node_exporter_reads() {
        let records: Arc<dyn RecordSink> = Arc::new(Discard);
        let mut m = Metrics::new(None, records);
        m.poll(Duration::from_millis(3), Some(Backend::SockDiag));
        let e = crate::sink::record::tests::event("listen");
        m.events(&[Arc::new(e.clone())], &[]);
        m.alerts(&[Arc::new(FleetAlert::raised(&e))]);
        let text = m.exposition().encoded(Format::Text);
        assert!(!text.contains("# EOF"), "{text}");
        for line in [
            "# TYPE portsentinel_events_total counter",
            "portsentinel_events_total{kind=\"alert-raised\"} 1",
            "portsentinel_polls_total{backend=\"sock_diag\"} 1",
            "portsentinel_alerts{severity=\"high\"} 1",
            "portsentinel_poll_duration_seconds_count 1",
            "portsentinel_build_info{version=",
            "portsentinel_source_fallback{source=\"ebpf\"} 0",
            "portsentinel_attribution_misses_total{reason=\"no-permission\"} 0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // A quiet poll: nothing else changed, yet the poll counter moves.
        m.poll(Duration::from_millis(2), Some(Backend::SockDiag));
        let again = m.exposition().encoded(Format::Text);
        assert!(again.contains("portsentinel_polls_total{backend=\"sock_diag\"} 2"));
        let active = text
            .lines()
            .find(|l| l.starts_with("portsentinel_alert_active{"))
            .expect("an alert series");
        assert!(active.contains("port=\"867\""), "{active}");
        assert!(active.contains("program=\"/tmp/listen\""), "{active}");
        // Every label, in this order: the name and severity, then Alertmanager's labels.
        let names: Vec<&str> = active
            .split(['{', ','])
            .skip(1)
            .filter_map(|l| l.split_once('=').map(|(name, _)| name))
            .collect();
        assert_eq!(
            names,
            [
                "alertname",
                "severity",
                "protocol",
                "port",
                "address",
                "program",
                "netns",
                "container"
            ],
            "{active}"
        );
        assert!(active.ends_with(" 1"), "{active}");
        // The alert cleared: its series goes, the severity count is 0.
        m.alerts(&[]);
        let text = m.exposition().encoded(Format::Text);
        assert!(!text.contains("portsentinel_alert_active{"), "{text}");
        assert!(
            text.contains("portsentinel_alerts{severity=\"high\"} 0"),
            "{text}"
        );
        let om = m.exposition().encoded(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn a_hostile_program_name_stays_inside_its_label() {
        let mut e = crate::sink::record::tests::event("x\"} 1\nportsentinel_fake{a=\"");
        if let Owner::Process(p) = &mut e.listener.owner {
            std::sync::Arc::make_mut(p).exe = None;
        }
        let mut m = Metrics::new(None, Arc::new(Discard));
        m.alerts(&[Arc::new(FleetAlert::raised(&e))]);
        for format in [Format::Text, Format::OpenMetrics] {
            let text = m.exposition().encoded(format);
            assert!(
                !text.lines().any(|l| l.starts_with("portsentinel_fake")),
                "{text}"
            );
            let line = text
                .lines()
                .find(|l| l.starts_with("portsentinel_alert_active{"))
                .unwrap();
            // The newline shown as `\n` (as in every output), that backslash escaped by
            // the format.
            assert!(
                line.contains(r#"program="x\"} 1\\nportsentinel_fake{a=\"""#),
                "{line}"
            );
        }
    }

    #[test]
    fn the_textfile_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portsentinel.prom");
        // Left behind by someone else: replaced, not written through.
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(".portsentinel.prom.tmp")).unwrap();
        write_atomically(&path, b"a 1\n").unwrap();
        assert!(!elsewhere.exists());
        write_atomically(&path, b"a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["portsentinel.prom"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
