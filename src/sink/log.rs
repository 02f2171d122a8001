//! The log sink: every record to journald (native protocol) or to stderr as text or JSON.
//!
//! Records go through a bounded queue to a thread of their own, so a slow journald never
//! holds up the poll loop. Nothing is dropped: when the queue is full the caller writes the
//! record to stderr itself, and when journald cannot be reached (stopped, restarting) each
//! record goes to stderr as a text line until journald answers again. The native protocol
//! is written here rather than through a crate so that this fallback is ours to control.

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::record::{Record, priority};
use crate::latch::Latch;

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Records the queue holds. The channel allocates all its slots up front, so this is also
/// memory held for the daemon's lifetime; a burst larger than this (the start-up inventory
/// of a busy server) waits for the writer rather than piling up in memory.
const QUEUE: usize = 512;
/// How long a record may wait for room in the queue. A writer that makes no room in this
/// time is stuck (journald hanging): the record goes to stderr, and so do the next ones
/// for a second, so a stuck writer costs the poll loop a few milliseconds, not a stall.
const ROOM_WAIT: Duration = Duration::from_millis(5);
const STUCK_FOR: Duration = Duration::from_secs(1);

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    /// journald when started by systemd ($JOURNAL_STREAM is set), text otherwise.
    #[default]
    Auto,
    /// Native journald records with structured fields.
    Journald,
    /// One `key=value` line per record on stderr.
    Text,
    /// One JSON object per line on stderr, with journald's field names.
    Json,
}

impl LogMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LogMode::Auto => "auto",
            LogMode::Journald => "journald",
            LogMode::Text => "text",
            LogMode::Json => "json",
        }
    }

    /// `Auto` decided by the environment.
    pub fn resolve(self) -> LogMode {
        match self {
            LogMode::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogMode::Journald,
            LogMode::Auto => LogMode::Text,
            other => other,
        }
    }
}

/// Counters the daemon reports.
#[derive(Debug, Default)]
pub struct LogStats {
    pub written: AtomicU64,
    /// Records written to stderr because journald could not take them.
    pub fallback: AtomicU64,
    /// Records the poll loop wrote itself because the queue was full.
    pub overflow: AtomicU64,
}

/// The log writer thread and a handle to it.
#[derive(Debug)]
pub struct LogSink {
    handle: Option<LogHandle>,
    thread: Option<JoinHandle<()>>,
    mode: LogMode,
    pub stats: Arc<LogStats>,
}

/// Where records go: the daemon's log is a [`LogHandle`]; tests collect records in memory.
pub trait RecordSink: Send + Sync + std::fmt::Debug {
    fn send(&self, record: Record);
}

impl RecordSink for LogHandle {
    fn send(&self, record: Record) {
        LogHandle::send(self, record);
    }
}

/// A cheap, cloneable way to send records to the log (for the event socket's tasks).
#[derive(Debug, Clone)]
pub struct LogHandle {
    /// `None` asks the writer to stop after what is queued before it.
    tx: SyncSender<Option<Record>>,
    mode: LogMode,
    stats: Arc<LogStats>,
    /// Until when the writer counts as stuck (records go straight to stderr).
    stuck_until: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl LogHandle {
    /// Queues a record. When the queue is full, waits a little for the writer to make
    /// room; if it does not, writes the record to stderr itself. Nothing is dropped.
    pub fn send(&self, record: Record) {
        let mut record = match self.tx.try_send(Some(record)) {
            Ok(()) => return,
            Err(TrySendError::Full(Some(r))) => r,
            Err(TrySendError::Disconnected(Some(r))) => return self.divert(&r),
            Err(_) => return,
        };
        let stuck = self
            .stuck_until
            .lock()
            .map(|t| t.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false);
        if !stuck {
            let deadline = Instant::now() + ROOM_WAIT;
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
                match self.tx.try_send(Some(record)) {
                    Ok(()) => return,
                    Err(TrySendError::Full(Some(r))) => record = r,
                    Err(TrySendError::Disconnected(Some(r))) => return self.divert(&r),
                    Err(_) => return,
                }
            }
            if let Ok(mut t) = self.stuck_until.lock() {
                *t = Some(Instant::now() + STUCK_FOR);
            }
        }
        self.divert(&record);
    }

    fn divert(&self, record: &Record) {
        self.stats.overflow.fetch_add(1, Ordering::Relaxed);
        write_stderr(record, self.mode);
    }
}

impl LogSink {
    pub fn start(mode: LogMode) -> LogSink {
        Self::start_at(mode, PathBuf::from(JOURNAL_SOCKET))
    }

    pub fn start_at(mode: LogMode, journal_socket: PathBuf) -> LogSink {
        let mode = mode.resolve();
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(LogStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || writer(mode, journal_socket, rx, &thread_stats))
            .expect("spawn the log thread");
        LogSink {
            handle: Some(LogHandle {
                tx,
                mode,
                stats: stats.clone(),
                stuck_until: Arc::default(),
            }),
            thread: Some(thread),
            mode,
            stats,
        }
    }

    /// A handle for other threads and tasks; the sink stays open while one exists.
    pub fn handle(&self) -> Option<LogHandle> {
        self.handle.clone()
    }

    pub fn mode(&self) -> LogMode {
        self.mode
    }

    /// Queues a record; writes it to stderr at once if the queue is full.
    pub fn send(&self, record: Record) {
        match &self.handle {
            Some(h) => h.send(record),
            None => write_stderr(&record, self.mode),
        }
    }

    /// Writes everything queued, then stops the thread. Records sent through other
    /// handles afterwards go straight to stderr.
    pub fn close(&mut self) {
        if let Some(h) = self.handle.take() {
            // Blocks only while the queue is full, that is while the writer works.
            let _ = h.tx.send(None);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_stderr(r: &Record, mode: LogMode) {
    let line = match mode {
        LogMode::Json => r.to_json_line(),
        _ => r.to_text_line(),
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Bytes of journal records kept while journald is away, to send when it is back.
const BACKLOG_BYTES: usize = 8 * 1024 * 1024;
/// How often to knock while journald is away.
const RETRY: Duration = Duration::from_secs(1);

struct Journal {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    /// Since when journald has been unreachable, and when to try it again.
    down: Option<(Instant, Instant)>,
    latch: Latch,
    /// Encoded records that journald has not had yet, oldest first.
    backlog: VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    /// Records dropped from a full backlog (they did reach stderr).
    backlog_dropped: u64,
}

impl Journal {
    fn send_bytes(&mut self, datagram: &[u8]) -> Result<(), std::io::Error> {
        if self.socket.is_none() {
            let s = UnixDatagram::unbound()?;
            s.connect(&self.path)?;
            self.socket = Some(s);
        }
        let s = self.socket.as_ref().expect("connected above");
        match s.send(datagram) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.socket = None;
                Err(e)
            }
        }
    }

    fn keep(&mut self, datagram: Vec<u8>) {
        self.backlog_bytes += datagram.len();
        self.backlog.push_back(datagram);
        while self.backlog_bytes > BACKLOG_BYTES {
            let Some(old) = self.backlog.pop_front() else {
                break;
            };
            self.backlog_bytes -= old.len();
            self.backlog_dropped += 1;
        }
    }

    /// Sends the backlog in order; true when it is empty afterwards.
    fn drain_backlog(&mut self) -> bool {
        while let Some(d) = self.backlog.pop_front() {
            if self.send_bytes(&d).is_err() {
                self.backlog.push_front(d);
                return false;
            }
            self.backlog_bytes -= d.len();
        }
        true
    }

    /// Tries journald again (when due): sends the backlog and says it is back.
    fn retry(&mut self, now: Instant) {
        let Some((since, at)) = self.down else { return };
        if now < at {
            return;
        }
        if !self.drain_backlog() {
            self.down = Some((since, now + RETRY));
            return;
        }
        self.down = None;
        let back = self.latch.recover().unwrap_or_default();
        let mut note = format!(
            "{back}, after {:.1} s; the records of that time were written to stderr \
             and are sent now, with PORTSENTINEL_TIME telling when they happened",
            since.elapsed().as_secs_f64()
        );
        if self.backlog_dropped > 0 {
            note.push_str(&format!(
                "; {} record(s) did not fit the {} MiB backlog and are on stderr only",
                self.backlog_dropped,
                BACKLOG_BYTES >> 20
            ));
            self.backlog_dropped = 0;
        }
        let mut d = Vec::new();
        Record::plain(priority::NOTICE, None, note).to_journal_datagram(&mut d);
        let _ = self.send_bytes(&d);
    }
}

fn writer(mode: LogMode, path: PathBuf, rx: Receiver<Option<Record>>, stats: &LogStats) {
    let mut journal = (mode == LogMode::Journald).then(|| Journal {
        path,
        socket: None,
        down: None,
        backlog: VecDeque::new(),
        backlog_bytes: 0,
        backlog_dropped: 0,
        latch: Latch::new(
            "cannot write to journald",
            "writing records to stderr, and keeping them for journald until it answers again",
            "journald is reachable again",
        ),
    });
    loop {
        let record = match rx.recv_timeout(RETRY) {
            Ok(Some(r)) => r,
            Ok(None) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // Nothing new: still knock while journald is away, so the backlog goes
                // out soon after it returns.
                if let Some(j) = journal.as_mut() {
                    j.retry(Instant::now());
                }
                continue;
            }
        };
        stats.written.fetch_add(1, Ordering::Relaxed);
        let Some(j) = journal.as_mut() else {
            write_stderr(&record, mode);
            continue;
        };
        let now = Instant::now();
        j.retry(now);
        let mut datagram = Vec::with_capacity(1024);
        record.to_journal_datagram(&mut datagram);
        if j.down.is_none() {
            match j.send_bytes(&datagram) {
                Ok(()) => continue,
                Err(e) => {
                    if let Some(warning) = j.latch.fail(format!("{}: {e}", j.path.display())) {
                        write_stderr(
                            &Record::plain(priority::WARNING, None, warning),
                            LogMode::Text,
                        );
                    }
                    j.down = Some((now, now + RETRY));
                }
            }
        }
        stats.fallback.fetch_add(1, Ordering::Relaxed);
        write_stderr(&record, LogMode::Text);
        j.keep(datagram);
    }
    // Stopping: a last try for what journald has not had yet.
    if let Some(j) = journal.as_mut()
        && j.down.is_some()
    {
        let _ = j.drain_backlog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_mode_reaches_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut sink = LogSink::start_at(LogMode::Journald, path);
        sink.send(Record::plain(
            priority::INFO,
            Some("0123456789abcdef0123456789abcdef"),
            "hello".into(),
        ));
        sink.close();
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("MESSAGE=hello\n"), "{text}");
        assert!(
            text.contains("MESSAGE_ID=0123456789abcdef0123456789abcdef\n"),
            "{text}"
        );
        assert!(
            text.starts_with("PRIORITY=6\nSYSLOG_IDENTIFIER=portsentinel\n"),
            "{text}"
        );
    }

    /// Records written while journald is away reach it, in order, once it is back.
    #[test]
    fn records_reach_journald_after_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let mut sink = LogSink::start_at(LogMode::Journald, path.clone());
        sink.send(Record::plain(priority::INFO, None, "while away 1".into()));
        sink.send(Record::plain(priority::INFO, None, "while away 2".into()));
        std::thread::sleep(Duration::from_millis(300));
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 3 {
            let n = server
                .recv(&mut buf)
                .expect("journald gets the backlog within the retry period");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(got[0].contains("MESSAGE=while away 1\n"), "{got:?}");
        assert!(got[1].contains("MESSAGE=while away 2\n"), "{got:?}");
        assert!(got[2].contains("reachable again"), "{got:?}");
        sink.send(Record::plain(priority::INFO, None, "after".into()));
        let n = server.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("MESSAGE=after\n"));
        sink.close();
    }

    #[test]
    fn unreachable_journald_falls_back_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = LogSink::start_at(LogMode::Journald, dir.path().join("nobody-listens"));
        sink.send(Record::plain(priority::INFO, None, "one".into()));
        sink.send(Record::plain(priority::INFO, None, "two".into()));
        let stats = sink.stats.clone();
        sink.close();
        assert_eq!(stats.written.load(Ordering::Relaxed), 2);
        assert_eq!(stats.fallback.load(Ordering::Relaxed), 2);
    }
}
