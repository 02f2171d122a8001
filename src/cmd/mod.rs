//! One file per subcommand. Each returns an exit status or a [`Failure`] that says which
//! status it maps to.

pub mod baseline;
pub mod check_config;
pub mod explain;
pub mod history;
pub mod lock;
pub mod notify_agent;
pub mod run;
pub mod scan;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::model::{Listener, Process, Protocol, Socket, group_listeners};
use crate::registry::Registry;
use crate::sink::RecordSink;
use crate::sink::diagnostics::RecordLayer;
use crate::source::netns::{MultiSource, NamespaceTable, Scope};
use crate::source::{
    self, Attributor, Backend, OwnerSource, SocketSource, SourceMode, SysinfoDetails, SystemHost,
};

/// Exit statuses (sysexits.h where one fits).
pub mod exit {
    pub const ALERT: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const CONFIG: u8 = 78;
}

/// Why a command failed, and with which status.
#[derive(Debug)]
pub enum Failure {
    Config(ConfigErrors),
    Unavailable(String),
    /// A command-line argument that cannot be used (exit 2).
    Usage(String),
    Other(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Config(_) => exit::CONFIG,
            Failure::Unavailable(_) => exit::UNAVAILABLE,
            Failure::Usage(_) => exit::USAGE,
            Failure::Other(_) => exit::SOFTWARE,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Unavailable(e) | Failure::Usage(e) => write!(f, "{e}"),
            Failure::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<ConfigErrors> for Failure {
    fn from(e: ConfigErrors) -> Failure {
        Failure::Config(e)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Config(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

/// `-v`/`-q` of the command line, for [`init_diagnostics`].
static VERBOSITY: std::sync::OnceLock<crate::cli::Verbosity> = std::sync::OnceLock::new();

pub fn set_verbosity(v: crate::cli::Verbosity) {
    let _ = VERBOSITY.set(v);
}

/// Sets up diagnostics (`tracing`). A daemon passes its record sink: every diagnostic is
/// then a record on the daemon's one log path. The one-shot commands write plain
/// warnings to stderr, coloured only on a terminal and never with `NO_COLOR` set. The
/// level: `-v`/`-q`, else `PORTSENTINEL_LOG` (`info`, `debug`, ...), else warnings (info
/// for the daemon and the agent).
pub fn init_diagnostics(records: Option<Arc<dyn RecordSink>>) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let base = if records.is_some() { 2 } else { 1 };
    let asked = VERBOSITY.get().copied().unwrap_or_default().level(base);
    let default = if records.is_some() { "info" } else { "warn" };
    let filter = match asked {
        Some(level) => EnvFilter::new(level),
        None => {
            EnvFilter::try_from_env("PORTSENTINEL_LOG").unwrap_or_else(|_| EnvFilter::new(default))
        }
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match records {
        Some(records) => registry.with(RecordLayer::new(records)).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour)
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .without_time(),
            )
            .try_init(),
    };
}

/// The config (given, default path, or built-in) and the registry it asks for.
pub fn load_config(path: Option<&Path>) -> Result<(Config, Registry), Failure> {
    let config = crate::config::load_or_default(path)?;
    let registry = config.registry()?;
    Ok((config, registry))
}

/// What listens now, with owners, for the one-shot commands.
#[derive(Debug)]
pub struct Snapshot {
    pub listeners: Vec<Listener>,
    pub backend: Backend,
    /// The network namespaces found, for names and the policy's view of the host.
    pub namespaces: Arc<NamespaceTable>,
    /// By index in `listeners`: the processes that hold one of its sockets too while
    /// running another program than its owner (found with `all_holders` only).
    pub also: HashMap<usize, Vec<Arc<Process>>>,
}

impl Snapshot {
    /// The host as the policy sees it, with the namespaces this snapshot found.
    pub fn host(&self) -> SystemHost {
        SystemHost::new(&source::proc_root(None), self.namespaces.clone())
    }
}

/// Dumps the sockets of the network namespaces `netns` names (`all`, `host`, a name or
/// `netns:INODE`), keeps those `keep` selects, attributes them and groups them.
pub fn snapshot(
    mode: SourceMode,
    per_socket: bool,
    netns: &str,
    keep: impl Fn(&Socket) -> bool,
) -> Result<Snapshot, Failure> {
    snapshot_with(mode, per_socket, netns, false, keep)
}

/// [`snapshot`], and with `all_holders` every fd table read to its end: every pid that
/// holds each socket in the listeners' `pids`, and the holders running other programs
/// than the owner in [`Snapshot::also`], for the policy to judge.
pub fn snapshot_with(
    mode: SourceMode,
    per_socket: bool,
    netns: &str,
    all_holders: bool,
    keep: impl Fn(&Socket) -> bool,
) -> Result<Snapshot, Failure> {
    let proc_root = source::proc_root(None);
    let namespaces = NamespaceTable::new(&proc_root);
    let scope = if netns == "host" {
        Scope::Host
    } else {
        Scope::All
    };
    let mut src = MultiSource::new(&proc_root, mode, scope, namespaces.clone());
    let mut sockets = Vec::new();
    let backend = src
        .listeners(&mut sockets)
        .map_err(|e| Failure::Unavailable(e.to_string()))?;
    if !matches!(netns, "all" | "host") {
        let Some(wanted) = namespaces.find(netns) else {
            return Err(Failure::Usage(format!(
                "no network namespace `{netns}` (give host, all, a name from `ip netns`, or netns:INODE)"
            )));
        };
        sockets.retain(|s| s.netns == wanted);
    }
    sockets.retain(|s| keep(s));
    let details = SysinfoDetails::new(&proc_root).map_err(Failure::Unavailable)?;
    let mut attributor = Attributor::new(&proc_root, details);
    attributor.attribute(&sockets, true);
    let mut listeners = group_listeners(&sockets, |s| attributor.owner_of(s), per_socket);
    let mut also = HashMap::new();
    if all_holders {
        let held = attributor.sweep_now();
        for (i, l) in listeners.iter_mut().enumerate() {
            for inode in &l.inodes {
                l.pids.extend(held.get(inode).into_iter().flatten());
            }
            l.pids.sort_unstable();
            l.pids.dedup();
            let others = attributor.also_held_by_any(&l.inodes);
            if !others.is_empty() {
                also.insert(i, others);
            }
        }
    }
    Ok(Snapshot {
        listeners,
        backend,
        namespaces,
        also,
    })
}

/// Writes a command's output to stdout through one buffer. A reader that goes away early
/// (`portsentinel scan | head`) is not an error.
pub fn write_stdout(
    f: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Failure> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    match f(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Other(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
        _ => Ok(()),
    }
}

/// `tcp` and `udp`, or just the one asked for (`udplite` and `sctp` only when asked).
pub fn protocols(only: Option<Protocol>) -> Vec<Protocol> {
    only.map_or_else(|| Protocol::IANA.to_vec(), |p| vec![p])
}
