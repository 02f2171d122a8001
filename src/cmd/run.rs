//! `portsentinel run`: the daemon in the foreground, on a single-threaded tokio runtime
//! (the poll work is short and the log writer has a thread of its own).
//!
//! This is where the daemon's edges are opened: the signals first of all (from then on a
//! `SIGHUP` is a reload request, never a death), then the config, the log, the event
//! socket, the desktop and the fan-out; the loop itself ([`daemon::run`]) takes them as
//! arguments.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{Failure, exit};
use crate::cli::RunArgs;
use crate::config::{Config, Layers, Overrides};
use crate::daemon::{self, Daemon, DaemonError, Edges, Fleet, InstantDetection, Request, SdNotify};
use crate::sink::alertmanager::Alertmanager;
use crate::sink::fanout::{Delivery, Fanout};
use crate::sink::metrics::Metrics;
use crate::sink::record::{Record, priority};
use crate::sink::{LogMode, LogSink, RecordSink, desktop, socket};
use crate::source::netns::{MultiSource, NamespaceTable};
use crate::source::{self, Attributor, SourceMode, SysinfoDetails, SystemHost};
use crate::state::{self, StateStore};

/// Descriptors kept for the daemon's own work (netlink, `/proc`, the state file, the log)
/// beyond what event-socket subscribers may hold.
const FD_RESERVE: u64 = 256;

/// Raises the soft limit on open files to the hard one (the unit sets `LimitNOFILE=`) and
/// returns it.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some() && limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Requests waiting for the loop: a burst of signals or connections beyond this waits in
/// the kernel (signals coalesce, connections queue in the listen backlog).
const REQUESTS: usize = 64;

pub fn run(args: &RunArgs) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime.block_on(async {
        let (requests, incoming) = mpsc::channel(REQUESTS);
        forward_signals(requests.clone()).map_err(anyhow::Error::from)?;
        let layers = Layers {
            file: args.config.config.clone(),
            overrides: Overrides {
                interval: args.interval,
                log: args.log,
                namespaces: args.namespaces,
                instant: args.instant,
            },
        };
        let loaded = layers.load();
        let mode = match &loaded {
            Ok((config, _)) => config.daemon.log,
            Err(_) => args.log.unwrap_or_default(),
        }
        .resolve();
        let mut log = LogSink::start(mode);
        let records: Arc<dyn RecordSink> = Arc::new(log.handle().expect("a new log is open"));
        super::init_diagnostics(Some(records.clone()));
        let result = match loaded {
            Ok(loaded) => serve(layers, loaded, mode, &records, requests, incoming).await,
            Err(e) => Err(DaemonError::Config(e)),
        };
        let code = match &result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                records.send(Record::plain(
                    priority::ERR,
                    None,
                    format!("portsentinel: {e}"),
                ));
                ExitCode::from(match e {
                    DaemonError::Config(_) => exit::CONFIG,
                    DaemonError::Unavailable(_) => exit::UNAVAILABLE,
                })
            }
        };
        // Records that went to standard error only (the queue to journald was full):
        // said last. (Those journald could not take are kept and sent when it returns.)
        let diverted = log
            .stats
            .overflow
            .load(std::sync::atomic::Ordering::Relaxed);
        if diverted > 0 {
            records.send(Record::plain(
                priority::WARNING,
                None,
                format!(
                    "{diverted} records of this run went to standard error only, not to \
                     journald as records: they came faster than journald took them"
                ),
            ));
        }
        log.close();
        Ok(code)
    })
}

/// `SIGHUP` → reload; `SIGTERM`, `SIGINT` → stop. Installed before anything else runs.
fn forward_signals(requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = hup.recv() => Request::Reload,
                _ = term.recv() => Request::Stop,
                _ = int.recv() => Request::Stop,
            };
            // Waits for room rather than drop a stop: meanwhile the kernel coalesces
            // further signals of a kind, so a burst of reloads is one reload.
            if requests.send(request).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Opens the edges on a loaded config and runs the loop until a stop request.
async fn serve(
    layers: Layers,
    (config, registry): (Config, crate::registry::Registry),
    mode: LogMode,
    records: &Arc<dyn RecordSink>,
    requests: mpsc::Sender<Request>,
    incoming: mpsc::Receiver<Request>,
) -> Result<(), DaemonError> {
    // One daemon per state directory and event socket: a second one refuses, naming the
    // first; the lock is held until this returns.
    let state_dir = config
        .daemon
        .state_directory
        .clone()
        .unwrap_or_else(state::default_dir);
    let refused = |r: super::lock::Refusal| DaemonError::Unavailable(r.to_string());
    let _lock = match super::lock::take(&state_dir).map_err(refused)? {
        Ok(lock) => Some(lock),
        Err(why) => {
            records.send(Record::plain(
                priority::WARNING,
                None,
                format!("no single-instance lock: {why}; a second daemon would not be refused"),
            ));
            None
        }
    };
    let _socket_lock = match &config.events.socket {
        Some(path) => {
            let lock = super::lock::take_for_socket(path).map_err(refused)?;
            super::lock::check_socket(path).map_err(refused)?;
            // Where no lock can be made, no socket can be bound either: that says why.
            lock.ok()
        }
        None => None,
    };
    let (delivery, mut tasks) = open_fanout(&config, requests);
    let mut edges = open_edges(&config, records.clone(), delivery)?;
    edges.fleet = open_fleet(&config, records, &mut tasks).await;
    let daemon = Daemon::new(layers, (config, registry), edges);
    daemon.starting(mode);
    for (priority, message) in tasks.notes {
        records.send(Record::plain(priority, None, message));
    }
    daemon::run(daemon, incoming).await;
    for task in tasks.handles {
        task.abort();
    }
    Ok(())
}

/// The daemon's edges on this machine: sock_diag (with `/proc/net` behind it), `/proc`
/// for owners, the state directory, and `sd_notify`.
pub fn open_edges(
    config: &Config,
    records: Arc<dyn RecordSink>,
    delivery: Option<mpsc::UnboundedSender<Delivery>>,
) -> Result<Edges, DaemonError> {
    let proc_root = source::proc_root(None);
    let details = SysinfoDetails::new(&proc_root).map_err(DaemonError::Unavailable)?;
    let netns = source::netns_inode(&proc_root);
    let namespaces = NamespaceTable::new(&proc_root);
    let scope = config.daemon.namespaces;
    let state_dir = config
        .daemon
        .state_directory
        .clone()
        .unwrap_or_else(state::default_dir);
    Ok(Edges {
        source: Box::new(MultiSource::new(
            &proc_root,
            SourceMode::Auto,
            scope,
            namespaces.clone(),
        )),
        owners: Box::new(Attributor::new(&proc_root, details)),
        host: Box::new(SystemHost::new(&proc_root, namespaces)),
        records,
        delivery,
        state: StateStore::new(state_dir, state::boot_id(&proc_root), netns),
        supervisor: Box::new(SdNotify),
        instant: open_instant(config, &proc_root),
        fleet: Fleet::default(),
    })
}

/// The metrics (textfile, endpoint) and Alertmanager, as configured. One that cannot open
/// is a warning: the daemon works without it.
async fn open_fleet(config: &Config, records: &Arc<dyn RecordSink>, tasks: &mut Tasks) -> Fleet {
    let m = &config.metrics;
    let metrics = m
        .enabled()
        .then(|| Metrics::new(m.textfile.as_deref(), records.clone()));
    if let Some(path) = &m.textfile {
        tasks.notes.push((
            priority::INFO,
            format!("metrics written to {} for node_exporter", path.display()),
        ));
    }
    if let (Some(addr), Some(metrics)) = (m.listen, &metrics) {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let serve = crate::sink::metrics::serve(listener, metrics.exposition());
                tasks.handles.push(tokio::spawn(serve));
                tasks.notes.push((
                    priority::INFO,
                    format!("metrics served on http://{addr}/metrics"),
                ));
            }
            Err(e) => tasks.notes.push((
                priority::WARNING,
                format!("no metrics endpoint: cannot listen on {addr}: {e}; monitoring continues"),
            )),
        }
    }
    let am = &config.alertmanager;
    let alertmanager =
        am.url
            .as_ref()
            .and_then(|url| match Alertmanager::start(am, records.clone()) {
                Ok(a) => {
                    tasks.notes.push((
                        priority::INFO,
                        format!("alerts sent to Alertmanager at {url}"),
                    ));
                    Some(a)
                }
                Err(e) => {
                    tasks.notes.push((
                        priority::WARNING,
                        format!("no Alertmanager delivery: {e}; monitoring continues"),
                    ));
                    None
                }
            });
    Fleet::new(metrics, alertmanager)
}

/// Instant detection as the config asks: the eBPF program loaded and attached, or why not.
fn open_instant(config: &Config, proc_root: &std::path::Path) -> InstantDetection {
    if !config.daemon.instant {
        return InstantDetection::Off;
    }
    let cgroup2 = source::instant::cgroup2_root(proc_root);
    // The initial PID namespace's inode (PROC_PID_INIT_INO) when /proc does not say.
    let pidns = source::ns_inode(proc_root, "self", "pid")
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(0xEFFF_FFFC);
    let opened = source::instant::KernelProbe::open(cgroup2.as_deref(), pidns);
    // Reading the kernel's BTF took megabytes that are free again: give them back.
    crate::memory::release_free_memory();
    match opened {
        Ok(probe) => InstantDetection::On(Box::new(probe)),
        Err(why) => InstantDetection::Refused(why),
    }
}

/// The tasks beside the loop, and what opening them had to say.
#[derive(Default)]
struct Tasks {
    handles: Vec<tokio::task::JoinHandle<()>>,
    notes: Vec<(u8, String)>,
}

/// The event socket, the desktop and the fan-out that feeds both, as configured. Failure
/// to open the socket is a warning: the daemon works without it.
fn open_fanout(
    config: &Config,
    requests: mpsc::Sender<Request>,
) -> (Option<mpsc::UnboundedSender<Delivery>>, Tasks) {
    let mut tasks = Tasks::default();
    let desktop = config.notify.desktop.then(|| {
        // Room for a flood of alerts: the planner folds them into one summary anyway.
        let (tx, rx) = mpsc::channel(16 * 1024);
        let burst_window = config.notify.burst_window;
        tasks
            .handles
            .push(tokio::spawn(desktop::serve(rx, burst_window)));
        tx
    });
    let listener =
        config.events.socket.as_ref().and_then(|path| {
            open_event_socket(path, config.events.group.as_deref(), &mut tasks.notes)
        });
    if listener.is_none() && desktop.is_none() {
        return (None, tasks);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let fanout = Fanout::new(config.events.buffer, desktop);
    tasks.handles.push(tokio::spawn(fanout.run(rx)));
    if let Some(listener) = listener {
        let events = &config.events;
        // Whatever the config says, subscribers never take the descriptors the daemon's own
        // work needs.
        let room =
            usize::try_from(raise_fd_limit().saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        let total = events.max_subscribers.min(room.max(1));
        if total < events.max_subscribers {
            tasks.notes.push((
                priority::WARNING,
                format!(
                    "events.max_subscribers = {} does not fit the open-file limit: at most {total} subscribers",
                    events.max_subscribers
                ),
            ));
        }
        let admission = socket::Admission::new(total, events.max_subscribers_per_user);
        let accept = socket::accept(listener, admission, move |join| {
            let requests = requests.clone();
            async move { requests.send(Request::Subscribe(join)).await.is_ok() }
        });
        tasks.handles.push(tokio::spawn(accept));
    }
    (Some(tx), tasks)
}

fn open_event_socket(
    path: &std::path::Path,
    group: Option<&str>,
    notes: &mut Vec<(u8, String)>,
) -> Option<tokio::net::UnixListener> {
    match socket::bind(path, group) {
        Ok((listener, warning)) => {
            let who = match (&warning, group) {
                (None, Some(g)) => format!("root and group {g}"),
                _ => "root only".to_owned(),
            };
            if let Some(w) = warning {
                notes.push((priority::WARNING, w));
            }
            notes.push((
                priority::INFO,
                format!("event socket {} open to {who}", path.display()),
            ));
            Some(listener)
        }
        Err(e) => {
            notes.push((
                priority::WARNING,
                format!(
                    "no event socket: {e}; desktop agents cannot subscribe, monitoring continues"
                ),
            ));
            None
        }
    }
}
