//! The command line. Doc comments here are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::Protocol;
use crate::sink::LogMode;
use crate::source::SourceMode;

/// Watches which sockets listen on this machine and says when something listens where
/// nothing should: above all on a well-known port (0-1023) that IANA never assigned.
#[derive(Debug, Parser)]
#[command(
    name = "portsentinel",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// How much the diagnostics say (warnings, errors and what the daemon is doing), on every
/// command; records and output are not affected.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct Verbosity {
    /// Say more: -v for info, -vv for debug, -vvv for trace [default: warnings; the daemon
    /// and the agent: info] (PORTSENTINEL_LOG=LEVEL does the same).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Say less: -q for errors only, -qq for nothing.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl Verbosity {
    /// The level asked for, if any: `None` leaves it to `PORTSENTINEL_LOG` and the default.
    /// `base` is the command's default level (0 error, 1 warn, 2 info, 3 debug, 4 trace).
    pub fn level(self, base: u8) -> Option<&'static str> {
        if self.verbose == 0 && self.quiet == 0 {
            return None;
        }
        let n = i16::from(base) + i16::from(self.verbose) - i16::from(self.quiet);
        Some(match n {
            i16::MIN..=-1 => "off",
            0 => "error",
            1 => "warn",
            2 => "info",
            3 => "debug",
            _ => "trace",
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground: watch listeners, record every change, alert.
    ///
    /// Needs no config file: without one it runs on built-in defaults. Records go to
    /// journald when started by systemd, else to stderr as `key=value` lines (see --log).
    /// SIGHUP reloads the config (an invalid one is rejected and the old one kept);
    /// SIGTERM or SIGINT stop it cleanly.
    ///
    /// Exit status: 0 after SIGTERM/SIGINT; 78 when the config is invalid at start.
    Run(RunArgs),
    /// List what listens now, with IANA status, port range, owner and verdict.
    ///
    /// Shows every TCP socket in LISTEN and every unconnected UDP socket in this network
    /// namespace (a connected UDP client is not a listener). Sockets of one program on one
    /// address and port (SO_REUSEPORT workers) are one row unless --all is given. Owners
    /// that cannot be read (run without root) are shown with the reason.
    ///
    /// Exit status: 0; with --check, 1 when any listener is alerted; 69 when no socket
    /// source works; 78 when the config is invalid.
    Scan(ScanArgs),
    /// Explain a port: IANA status and service names, range, and what the policy says.
    ///
    /// Also lists what listens on that port now. Without /tcp or /udp, explains both.
    ///
    /// Exit status: 0; 2 for a bad argument; 78 when the config is invalid.
    Explain(ExplainArgs),
    /// Show desktop notifications for the daemon's alerts (run as the desktop user).
    ///
    /// Connects to the daemon's event socket (root and the `portsentinel` group may read
    /// it), reconnects while the daemon restarts, and shows one notification per alert,
    /// updated when the listener closes; a burst of alerts becomes one summary. Started by
    /// the user unit portsentinel-notify.service or the XDG autostart file.
    ///
    /// Exit status: 0 on SIGTERM/SIGINT.
    NotifyAgent(NotifyAgentArgs),
    /// Print the listeners present now as [[allow]] entries: a baseline to allow.
    ///
    /// One entry per listener (protocol, port, address, program as exe, else unit, else
    /// name, and user), in a stable order; a port in the kernel's ephemeral range is
    /// written "ephemeral". Save it as /etc/portsentinel/config.d/50-baseline.toml and set
    /// [policy] alert_on = ["any"]: then anything new raises an alert.
    ///
    /// Exit status: 0; 2 for a bad argument; 69 when no socket source works.
    Baseline(BaselineArgs),
    /// Review the journal: one line per listener life, from the daemon's own records.
    ///
    /// A life runs from the record that first shows a listener (present at start, opened,
    /// alerted) to the one that closes it; restarts and changes of hands are part of it.
    /// Shows first and last seen, duration, protocol, address, port, program, pids, and
    /// whether it was alerted and why. Reads the local journal through journalctl, or a
    /// copied or central one with -D/--file (with a HOST column when it holds several).
    /// Only records written by the unit (its `_SYSTEMD_UNIT`, which journald sets and no
    /// process can forge) are read unless --all-sources is given.
    ///
    /// Exit status: 0; 2 when journalctl refuses an argument; 69 when the journal cannot
    /// be read.
    History(HistoryArgs),
    /// Validate a config file and exit.
    ///
    /// Exit status: 0 valid; 78 invalid, with `FILE:LINE:COL: what is wrong` on stderr.
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: /etc/portsentinel/config.toml if it exists, else built-in
    /// defaults].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Time between two looks at the socket table, e.g. 200ms, 1s (at least 100ms)
    /// [default: daemon.interval from the config, else 1s].
    #[arg(long, value_name = "DUR", value_parser = crate::config::parse_interval)]
    pub interval: Option<Duration>,
    /// Where records go [default: daemon.log from the config, else auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub log: Option<LogMode>,
    /// Which network namespaces to watch: `all`, or `host` (the daemon's own only)
    /// [default: daemon.namespaces from the config, else all].
    #[arg(long, value_enum, value_name = "SCOPE")]
    pub namespaces: Option<crate::source::netns::Scope>,
    /// Instant detection: `auto` (the kernel's listen and bind events, where the daemon may
    /// load eBPF) or `off` (polls alone) [default: daemon.instant from the config, else auto].
    #[arg(long, value_name = "auto|off", value_parser = parse_instant)]
    pub instant: Option<bool>,
}

fn parse_instant(s: &str) -> Result<bool, String> {
    match s {
        "auto" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{s}`: expected `auto` or `off`")),
    }
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Print one JSON array instead of a table (fields: see the README).
    #[arg(long)]
    pub json: bool,
    /// One row per socket instead of one per program, address and port.
    #[arg(long)]
    pub all: bool,
    /// Exit with status 1 when any listener is alerted (for scripts and monitoring).
    #[arg(long)]
    pub check: bool,
    /// Read every process's open files to the end, as `ss -p` does: list every pid that
    /// holds each socket, and judge each listener as each program that holds it (as the
    /// daemon does once a minute). Without it, the first holder found names a socket.
    #[arg(long)]
    pub all_holders: bool,
    /// Where to read sockets from.
    #[arg(long, value_enum, default_value_t, value_name = "SOURCE")]
    pub source: SourceMode,
    #[command(flatten)]
    pub netns: NetnsArg,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct NetnsArg {
    /// Which network namespaces: `all` (every one on the machine), `host` (this one), or
    /// one by name (an `ip netns` name, a container's network, or `netns:INODE`).
    #[arg(long, default_value = "all", value_name = "NETNS")]
    pub netns: String,
}

/// A port or an IANA service name, with an optional protocol: `867`, `867/tcp`,
/// `53/UDP`, `ssh`, `http/udp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortArg {
    pub port: PortOrName,
    pub protocol: Option<Protocol>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortOrName {
    Port(u16),
    /// A service name, looked up in the IANA registry.
    Name(String),
}

pub fn parse_port_arg(s: &str) -> Result<PortArg, String> {
    let (port, protocol) = match s.split_once('/') {
        Some((p, proto)) => (p, Some(proto.parse::<Protocol>()?)),
        None => (s, None),
    };
    if port.is_empty() {
        return Err("give a port (0-65535) or a service name, e.g. 867 or ssh/tcp".to_owned());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(PortArg {
            port: PortOrName::Name(port.to_owned()),
            protocol,
        });
    }
    let n = port
        .parse::<u32>()
        .map_err(|_| format!("port {port} is out of range: ports are 0-65535"))?;
    let n = u16::try_from(n).map_err(|_| format!("port {n} is out of range: ports are 0-65535"))?;
    Ok(PortArg {
        port: PortOrName::Port(n),
        protocol,
    })
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The port, or an IANA service name, optionally with its protocol: 867, 867/tcp,
    /// 53/udp, ssh, http/udp; also 870/udplite and 867/sctp.
    #[arg(value_name = "PORT[/tcp|/udp]", value_parser = parse_port_arg)]
    pub port: PortArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub netns: NetnsArg,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct NotifyAgentArgs {
    /// The daemon's event socket [default: [events] socket from the config, else
    /// /run/portsentinel/events.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Alerts closer together than this are folded into one summary notification
    /// [default: [notify] burst_window from the config, else 2s].
    #[arg(long, value_name = "DUR", value_parser = crate::config::parse_duration)]
    pub burst_window: Option<Duration>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Write `until = TIME` on every entry (RFC 3339, e.g. 2026-12-31T18:00:00Z):
    /// the rules stop matching then.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[command(flatten)]
    pub netns: NetnsArg,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// From this time on, in journalctl's forms: "2026-12-01 10:00", "yesterday", "-2h".
    #[arg(long, short = 'S', value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Up to this time, in the same forms.
    #[arg(long, short = 'U', value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only listeners on this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Only listeners of this program (its executable's path).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
    /// Only lives that were alerted.
    #[arg(long)]
    pub alerts: bool,
    /// Only this boot: the current one without a value, or an offset (-1) or boot id.
    #[arg(long, short = 'b', value_name = "ID", num_args = 0..=1, default_missing_value = "0", allow_hyphen_values = true)]
    pub boot: Option<String>,
    /// Print one JSON array of lives instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the journal files in this directory (a copy, or a central journal).
    #[arg(long = "directory", short = 'D', value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Read this journal file (may be given more than once).
    #[arg(long, value_name = "FILE")]
    pub file: Vec<PathBuf>,
    /// The unit whose records are read.
    #[arg(long, value_name = "UNIT", default_value = "portsentinel.service")]
    pub unit: String,
    /// Read portsentinel's records whoever wrote them (a daemon run by hand, or any local
    /// process that wrote such fields itself).
    #[arg(long)]
    pub all_sources: bool,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The file to check [default: /etc/portsentinel/config.toml].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The file to check, as every other command takes it.
    #[arg(
        long = "config",
        short = 'c',
        value_name = "FILE",
        conflicts_with = "file"
    )]
    pub config: Option<PathBuf>,
}

impl CheckConfigArgs {
    pub fn path(&self) -> Option<&std::path::Path> {
        self.file.as_deref().or(self.config.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn port_args() {
        assert_eq!(
            parse_port_arg("867").unwrap(),
            PortArg {
                port: PortOrName::Port(867),
                protocol: None
            }
        );
        assert_eq!(
            parse_port_arg("53/UDP").unwrap(),
            PortArg {
                port: PortOrName::Port(53),
                protocol: Some(Protocol::Udp)
            }
        );
        assert!(parse_port_arg("70000").unwrap_err().contains("0-65535"));
        assert_eq!(
            parse_port_arg("http/udp").unwrap(),
            PortArg {
                port: PortOrName::Name("http".into()),
                protocol: Some(Protocol::Udp)
            }
        );
        assert_eq!(
            parse_port_arg("870/udplite").unwrap().protocol,
            Some(Protocol::UdpLite)
        );
        assert!(parse_port_arg("22/dccp").unwrap_err().contains("tcp"));
    }

    #[test]
    fn history_takes_relative_times_as_journalctl_does() {
        let cli = Cli::try_parse_from(["portsentinel", "history", "--since", "-2h", "-U", "-5min"])
            .unwrap();
        let Command::History(args) = cli.command else {
            panic!("not history: {:?}", cli.command);
        };
        assert_eq!(args.since.as_deref(), Some("-2h"));
        assert_eq!(args.until.as_deref(), Some("-5min"));
    }
}
