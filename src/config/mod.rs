//! Configuration: parse the file as written ([`file`]), then validate it into a [`Config`]
//! the rest of the program uses. Defaults live in [`Config::default`] and nowhere else.
//!
//! Every error names the place (`FILE:LINE:COL`), the key, the bad value and what is
//! allowed. Validation is pure: it takes text and returns values; only [`load`] and
//! [`Config::registry`] touch the file system.

pub mod file;

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Spanned, Value};

use crate::model::{AddressMatch, AllowRule, Condition, Policy, UserMatch};
use crate::registry::Registry;
use crate::sink::LogMode;

use file::{AllowFile, ConfigFile};

/// Where the daemon looks for its configuration when none is given.
pub const DEFAULT_PATH: &str = "/etc/portsentinel/config.toml";

/// A place in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A config that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{}:{}:{}: {}", self.file, l.line, l.column, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The daemon's own settings (`[daemon]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Time between two snapshots.
    pub interval: Duration,
    /// How long a vanished listener may take to come back as a restart of itself.
    pub restart_grace: Duration,
    /// How long before a listener that was alerted is alerted again (flapping).
    pub realert_after: Duration,
    /// Where the alert state is kept; `None`: `$STATE_DIRECTORY` or `/var/lib/portsentinel`.
    pub state_directory: Option<PathBuf>,
    pub log: LogMode,
}

/// The event socket (`[events]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSettings {
    /// `None`: no event socket. Default: `$RUNTIME_DIRECTORY/events.sock`, else
    /// `/run/portsentinel/events.sock`.
    pub socket: Option<PathBuf>,
    /// The group whose members may subscribe (besides root).
    pub group: Option<String>,
    /// Lines queued per subscriber before a subscriber that does not read is dropped.
    pub buffer: usize,
    /// Subscribers at once, in all and per uid: a connection beyond either is closed at
    /// once, so no one can spend the daemon's descriptors.
    pub max_subscribers: usize,
    pub max_subscribers_per_user: usize,
}

pub const DEFAULT_EVENT_GROUP: &str = "portsentinel";

/// The most subscribers the config may allow: the unit's `LimitNOFILE=` (8192) keeps room
/// for them and for the daemon's own work.
pub const MAX_SUBSCRIBERS: usize = 4096;

/// Desktop notifications shown by the daemon itself (`[notify]`), for a daemon that runs
/// as the desktop user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifySettings {
    pub desktop: bool,
    /// Alerts closer together than this become one summary notification.
    pub burst_window: Duration,
}

impl Default for NotifySettings {
    fn default() -> NotifySettings {
        NotifySettings {
            desktop: false,
            burst_window: Duration::from_secs(2),
        }
    }
}

impl Default for EventSettings {
    fn default() -> EventSettings {
        EventSettings {
            socket: Some(crate::sink::socket::default_path()),
            group: Some(DEFAULT_EVENT_GROUP.to_owned()),
            buffer: 1024,
            max_subscribers: 64,
            max_subscribers_per_user: 8,
        }
    }
}

/// The shortest poll interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Parses a duration that may be no shorter than `min`.
pub fn parse_duration_at_least(s: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min {
        return Err(format!(
            "`{s}` is too short; the least allowed is {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// Parses a poll interval: a duration of at least [`MIN_INTERVAL`]. The command line and
/// the file both check it here.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_duration_at_least(s, MIN_INTERVAL)
}

/// What the command line sets over the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub log: Option<LogMode>,
}

/// Where the daemon's config comes from, in layers: built-in defaults, then the file,
/// then the command line. Merged here once; the start and every reload load it the same
/// way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layers {
    /// The file named on the command line; `None`: the default path if it exists.
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

impl Layers {
    /// The merged config and the registry it asks for.
    pub fn load(&self) -> Result<(Config, Registry), ConfigError> {
        let mut config = load_or_default(self.file.as_deref())?;
        if let Some(i) = self.overrides.interval {
            config.daemon.interval = i;
        }
        if let Some(log) = self.overrides.log {
            config.daemon.log = log;
        }
        let registry = config.registry()?;
        Ok((config, registry))
    }
}

impl Default for DaemonSettings {
    fn default() -> DaemonSettings {
        DaemonSettings {
            interval: Duration::from_secs(1),
            restart_grace: Duration::from_secs(3),
            realert_after: Duration::from_secs(600),
            state_directory: None,
            log: LogMode::Auto,
        }
    }
}

/// Parses `"500ms"`, `"2s"`, `"1m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"1m\""))
}

/// The validated configuration. `Config::default()` is the built-in defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it came from; `None` for the built-in defaults.
    pub file: Option<PathBuf>,
    pub daemon: DaemonSettings,
    pub events: EventSettings,
    pub notify: NotifySettings,
    /// An IANA CSV to load instead of the built-in table, and where the key was written.
    pub registry_csv: Option<(PathBuf, Location)>,
    pub policy: Policy,
}

impl Config {
    /// The settings that differ in `new` and that only a restart applies.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut later = Vec::new();
        if new.daemon.log != self.daemon.log {
            later.push("daemon.log");
        }
        if new.daemon.state_directory != self.daemon.state_directory {
            later.push("daemon.state_directory");
        }
        if new.events != self.events {
            later.push("[events]");
        }
        if new.notify != self.notify {
            later.push("[notify]");
        }
        later
    }

    /// `config FILE: alert_on [...], N allow rule(s), REGISTRY, interval I`, for the
    /// daemon's start and reload records.
    pub fn describe(&self, registry: &Registry) -> String {
        let file = self.file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let registry = match registry.origin() {
            crate::registry::Origin::BuiltIn => "built-in IANA registry".to_owned(),
            crate::registry::Origin::File(p) => format!("IANA registry {}", p.display()),
        };
        let alert_on: Vec<&str> = self.policy.alert_on.iter().map(|c| c.as_str()).collect();
        format!(
            "config {file}: alert_on [{}], {} allow rule(s), {registry}, interval {}",
            alert_on.join(", "),
            self.policy.allow.len(),
            humantime::format_duration(self.daemon.interval)
        )
    }

    /// The registry this config asks for: the built-in table, or the CSV it names.
    pub fn registry(&self) -> Result<Registry, ConfigError> {
        let Some((path, location)) = &self.registry_csv else {
            return Ok(Registry::builtin());
        };
        Registry::from_csv_file(path).map_err(|e| ConfigError {
            file: self.file_label(),
            location: Some(location.clone()),
            message: format!("registry.csv: {e}"),
        })
    }

    fn file_label(&self) -> String {
        self.file.as_ref().map_or_else(
            || "(built-in defaults)".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let error = |message: String| ConfigError {
        file: path.display().to_string(),
        location: None,
        message,
    };
    // A regular file of a sane size: a FIFO put in its place must not hang a reload.
    let bytes = crate::files::read_regular(path)
        .map_err(|e| error(format!("cannot read the config file: {}", e.reason())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        error(format!(
            "the config file is not UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, path)
}

/// The config at `path` if given; otherwise the default path if that file exists;
/// otherwise the built-in defaults. An explicitly named file must exist.
pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => load(p),
        None if Path::new(DEFAULT_PATH).exists() => load(Path::new(DEFAULT_PATH)),
        None => Ok(Config::default()),
    }
}

/// Validates config text; `path` names it in errors and resolves relative paths in it.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let v = Validator::new(text, path);
    let raw: ConfigFile =
        toml::from_str(text).map_err(|e| v.error(e.span(), e.message().trim_end().to_owned()))?;
    let mut config = Config {
        file: Some(path.to_owned()),
        ..Config::default()
    };
    if let Some(d) = &raw.daemon {
        v.daemon(d, &mut config.daemon)?;
    }
    if let Some(ev) = &raw.events {
        v.events(ev, &mut config.events)?;
    }
    if let Some(n) = &raw.notify {
        if let Some(d) = n.desktop {
            config.notify.desktop = d;
        }
        if let Some(w) = &n.burst_window {
            config.notify.burst_window = parse_duration(w.get_ref())
                .map_err(|e| v.at(w, format!("notify.burst_window: {e}")))?;
        }
    }
    if let Some(csv) = raw.registry.and_then(|r| r.csv) {
        let mut p = PathBuf::from(csv.get_ref());
        if p.is_relative() {
            p = path.parent().unwrap_or(Path::new(".")).join(p);
        }
        config.registry_csv = Some((p, v.location(csv.span().start)));
    }
    if let Some(alert_on) = raw.policy.and_then(|p| p.alert_on) {
        config.policy.alert_on.clear();
        for item in alert_on.get_ref() {
            config.policy.alert_on.insert(v.condition(item)?);
        }
    }
    for (i, allow) in raw.allow.into_iter().flatten().enumerate() {
        config.policy.allow.push(v.allow_rule(i, &allow)?);
    }
    Ok(config)
}

/// Turns spans into places and values into checked settings.
struct Validator<'t> {
    text: &'t str,
    file: String,
    /// Byte offset of the start of each line, so a place is found by a binary search
    /// instead of a scan from the top: validation stays linear in the file's size.
    line_starts: Vec<usize>,
}

impl Validator<'_> {
    fn new<'t>(text: &'t str, path: &Path) -> Validator<'t> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Validator {
            text,
            file: path.display().to_string(),
            line_starts,
        }
    }

    fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        Location {
            line,
            column: self
                .text
                .get(start..offset)
                .map_or(1, |s| s.chars().count() + 1),
        }
    }

    fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            location: span.map(|s| self.location(s.start)),
            message,
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, message: String) -> ConfigError {
        self.error(Some(spanned.span()), message)
    }

    fn daemon(&self, d: &file::DaemonFile, out: &mut DaemonSettings) -> Result<(), ConfigError> {
        let duration = |value: &Spanned<String>, key: &str, min: Duration| {
            parse_duration_at_least(value.get_ref(), min)
                .map_err(|e| self.at(value, format!("daemon.{key}: {e}")))
        };
        if let Some(i) = &d.interval {
            out.interval = duration(i, "interval", MIN_INTERVAL)?;
        }
        if let Some(g) = &d.restart_grace {
            out.restart_grace = duration(g, "restart_grace", Duration::ZERO)?;
        }
        if let Some(q) = &d.realert_after {
            out.realert_after = duration(q, "realert_after", Duration::ZERO)?;
        }
        if let Some(dir) = &d.state_directory {
            let p = PathBuf::from(dir.get_ref());
            if !p.is_absolute() {
                let shown = dir.get_ref();
                return Err(self.at(
                    dir,
                    format!("daemon.state_directory: `{shown}` is not an absolute path"),
                ));
            }
            out.state_directory = Some(p);
        }
        if let Some(log) = &d.log {
            out.log = match log.get_ref().as_str() {
                "auto" => LogMode::Auto,
                "journald" => LogMode::Journald,
                "text" => LogMode::Text,
                "json" => LogMode::Json,
                other => {
                    return Err(self.at(
                        log,
                        format!("daemon.log: unknown log mode `{other}`; allowed: \"auto\", \"journald\", \"text\", \"json\""),
                    ));
                }
            };
        }
        Ok(())
    }

    fn events(&self, ev: &file::EventsFile, out: &mut EventSettings) -> Result<(), ConfigError> {
        if let Some(sock) = &ev.socket {
            out.socket = match sock.get_ref().as_str() {
                "" => None,
                p if p.starts_with('/') => Some(PathBuf::from(p)),
                p => {
                    return Err(self.at(
                        sock,
                        format!("events.socket: `{p}` is not an absolute path; give one, or \"\" for no event socket"),
                    ));
                }
            };
        }
        if let Some(g) = &ev.group {
            out.group = match g.get_ref().as_str() {
                "" => None,
                name if name.len() <= 32 && !name.contains([':', '/', ' ']) => {
                    Some(name.to_owned())
                }
                name => {
                    return Err(self.at(g, format!("events.group: `{name}` is not a group name; give one, or \"\" for root only")));
                }
            };
        }
        if let Some(b) = &ev.buffer {
            out.buffer = self.count(b, "events.buffer", 1_000_000, "lines")?;
        }
        if let Some(n) = &ev.max_subscribers {
            out.max_subscribers =
                self.count(n, "events.max_subscribers", MAX_SUBSCRIBERS, "subscribers")?;
        }
        if let Some(n) = &ev.max_subscribers_per_user {
            let key = "events.max_subscribers_per_user";
            out.max_subscribers_per_user = self.count(n, key, MAX_SUBSCRIBERS, "subscribers")?;
        }
        Ok(())
    }

    /// A whole number from 1 to `max`.
    fn count(
        &self,
        n: &Spanned<i64>,
        key: &str,
        max: usize,
        unit: &str,
    ) -> Result<usize, ConfigError> {
        usize::try_from(*n.get_ref())
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| {
                let shown = n.get_ref();
                self.at(
                    n,
                    format!("{key}: `{shown}` is out of range; allowed: 1-{max} {unit}"),
                )
            })
    }

    fn condition(&self, item: &Spanned<String>) -> Result<Condition, ConfigError> {
        Condition::parse(item.get_ref()).ok_or_else(|| {
            self.at(
                item,
                format!(
                    "policy.alert_on: unknown condition `{}`; allowed: {}",
                    item.get_ref(),
                    Condition::ALL.map(Condition::as_str).join(", ")
                ),
            )
        })
    }

    fn allow_rule(
        &self,
        index: usize,
        entry: &Spanned<AllowFile>,
    ) -> Result<AllowRule, ConfigError> {
        let a = entry.get_ref();
        let start = self.location(entry.span().start);
        let protocol = match &a.protocol {
            None => None,
            Some(p) => Some(p.get_ref().parse().map_err(|_| {
                let shown = p.get_ref();
                self.at(
                    p,
                    format!(
                        "allow.protocol: `{shown}` is not a protocol; allowed: \"tcp\", \"udp\""
                    ),
                )
            })?),
        };
        let rule = AllowRule {
            name: a.name.as_ref().map(|n| n.get_ref().clone()),
            origin: format!("{}:{}", short_name(&self.file), start.line),
            ports: self.list(&a.port, "port", "a port 0-65535, a range \"N-M\", or a list of these", parse_port)?,
            protocol,
            addresses: self.list(
                &a.address,
                "address",
                "\"loopback\", \"any\" (the wildcard address), an IP address or a CIDR network, or a list of these",
                parse_address,
            )?,
            processes: self.list(
                &a.process,
                "process",
                "a process name as `ps` shows it (at most 15 bytes), or a list",
                parse_process,
            )?,
            exes: self.list(&a.exe, "exe", "an absolute path to a program, or a list", parse_exe)?,
            users: self.list(&a.user, "user", "a user name or a numeric uid, or a list", parse_user)?,
            units: self.list(
                &a.unit,
                "unit",
                "a systemd unit name such as \"ssh.service\", or a list",
                parse_unit,
            )?,
        };
        let empty = rule.ports.is_empty()
            && rule.protocol.is_none()
            && rule.addresses.is_empty()
            && rule.processes.is_empty()
            && rule.exes.is_empty()
            && rule.users.is_empty()
            && rule.units.is_empty();
        if empty {
            return Err(self.at(
                entry,
                format!(
                    "[[allow]] entry {} matches every listener: give at least one of port, protocol, address, process, exe, user, unit",
                    index + 1
                ),
            ));
        }
        Ok(rule)
    }

    /// An optional key that takes one value or a list: empty when not given.
    fn list<T>(
        &self,
        value: &Option<Spanned<Value>>,
        key: &str,
        allowed: &str,
        parse: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, ConfigError> {
        match value {
            Some(v) => self.each(v, key, allowed, parse),
            None => Ok(Vec::new()),
        }
    }

    /// Validates a key that takes one value or a list of values.
    fn each<T>(
        &self,
        value: &Spanned<Value>,
        key: &str,
        allowed: &str,
        parse: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, ConfigError> {
        let items: Vec<&Value> = match value.get_ref() {
            Value::Array(items) if items.is_empty() => {
                return Err(self.at(
                    value,
                    format!("allow.{key}: empty list; expected {allowed}"),
                ));
            }
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        items
            .into_iter()
            .map(|item| {
                parse(item).ok_or_else(|| {
                    self.at(
                        value,
                        format!(
                            "allow.{key}: {} is not valid; expected {allowed}",
                            show(item)
                        ),
                    )
                })
            })
            .collect()
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => format!("`{other}`"),
    }
}

fn short_name(file: &str) -> &str {
    Path::new(file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(file)
}

fn parse_port(v: &Value) -> Option<(u16, u16)> {
    match v {
        Value::Integer(n) => u16::try_from(*n).ok().map(|p| (p, p)),
        Value::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
            (a <= b).then_some((a, b))
        }
        _ => None,
    }
}

fn parse_process(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    (!s.is_empty() && s.len() <= 15).then(|| s.to_owned())
}

fn parse_exe(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    s.starts_with('/').then(|| s.to_owned())
}

fn parse_user(v: &Value) -> Option<UserMatch> {
    match v {
        Value::Integer(n) => u32::try_from(*n).ok().map(UserMatch::Uid),
        Value::String(s) if !s.is_empty() => Some(match s.parse::<u32>() {
            Ok(n) => UserMatch::Uid(n),
            Err(_) => UserMatch::Name(s.clone()),
        }),
        _ => None,
    }
}

fn parse_unit(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    (s.contains('.') && !s.contains('/')).then(|| s.to_owned())
}

fn parse_address(v: &Value) -> Option<AddressMatch> {
    let s = v.as_str()?;
    match s {
        "loopback" => Some(AddressMatch::Loopback),
        "any" => Some(AddressMatch::Any),
        _ => {
            let s = s.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = s.parse::<IpAddr>() {
                return Some(AddressMatch::Net(ip.into()));
            }
            s.parse().ok().map(AddressMatch::Net)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn err(text: &str) -> String {
        parse(text, Path::new("/etc/portsentinel/config.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.registry_csv, None);
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let e = err("[policy]\nalert_on = []\n\n[[allow]]\nprot = 22\n");
        assert!(e.starts_with("/etc/portsentinel/config.toml:5:1: "), "{e}");
        assert!(e.contains("unknown field `prot`"), "{e}");
        assert!(e.contains("`port`"), "lists what is allowed: {e}");
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let e = err("[[allow]]\nport = 70000\n");
        assert!(
            e.starts_with("/etc/portsentinel/config.toml:2:8: allow.port: `70000` is not valid"),
            "{e}"
        );
        assert!(e.contains("0-65535"), "{e}");
        let e = err("[[allow]]\nport = 22\naddress = [\"loopback\", \"10.0.0.0/33\"]\n");
        assert!(e.contains(":3:11: allow.address: \"10.0.0.0/33\""), "{e}");
        let e = err("[policy]\nalert_on = [\"well-known\", \"everything\"]\n");
        assert!(
            e.contains(":2:27: policy.alert_on: unknown condition `everything`"),
            "{e}"
        );
        assert!(e.contains("registered-unassigned"), "{e}");
        let e = err("[[allow]]\nprotocol = \"sctp\"\n");
        assert!(e.contains(":2:12: allow.protocol: `sctp`"), "{e}");
        let e = err("[[allow]]\nname = \"nothing\"\n");
        assert!(e.contains("matches every listener"), "{e}");
        let e = err("[[allow]]\nexe = \"sshd\"\n");
        assert!(e.contains("absolute path"), "{e}");
        let e = err("[policy\n");
        assert!(e.starts_with("/etc/portsentinel/config.toml:1:"), "{e}");
    }

    #[test]
    fn allow_rules_accept_one_value_or_lists() {
        let c = parse(
            r#"
[policy]
alert_on = ["well-known", "registered-unassigned"]

[[allow]]
name = "web"
port = [80, "8000-8099"]
protocol = "TCP"
address = ["any", "::1", "[fe80::1]", "10.0.0.0/8"]
process = "nginx"
exe = ["/usr/sbin/nginx"]
user = ["www-data", 0, "33"]
unit = "nginx.service"
"#,
            Path::new("/etc/x/c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.policy.alert_on,
            [Condition::WellKnown, Condition::RegisteredUnassigned].into()
        );
        let r = &c.policy.allow[0];
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.origin, "c.toml:5");
        assert_eq!(r.ports, [(80, 80), (8000, 8099)]);
        assert_eq!(r.protocol, Some(Protocol::Tcp));
        assert_eq!(r.addresses.len(), 4);
        assert_eq!(r.addresses[0], AddressMatch::Any);
        assert_eq!(
            r.users,
            [
                UserMatch::Name("www-data".into()),
                UserMatch::Uid(0),
                UserMatch::Uid(33)
            ]
        );
        assert_eq!(r.units, ["nginx.service"]);
    }

    #[test]
    fn daemon_settings() {
        let c = parse(
            "[daemon]\ninterval = \"250ms\"\nrestart_grace = \"2s\"\nrealert_after = \"1m\"\nstate_directory = \"/var/lib/x\"\nlog = \"json\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.daemon.interval, Duration::from_millis(250));
        assert_eq!(c.daemon.restart_grace, Duration::from_secs(2));
        assert_eq!(c.daemon.realert_after, Duration::from_secs(60));
        assert_eq!(
            c.daemon.state_directory.as_deref(),
            Some(Path::new("/var/lib/x"))
        );
        assert_eq!(c.daemon.log, LogMode::Json);
        let e = err("[daemon]\ninterval = \"10ms\"\n");
        assert!(
            e.contains(":2:12: daemon.interval: `10ms` is too short; the least allowed is 100ms"),
            "{e}"
        );
        let e = err("[daemon]\ninterval = \"soon\"\n");
        assert!(
            e.contains(":2:12: daemon.interval: `soon` is not a duration"),
            "{e}"
        );
        let e = err("[events]\nbuffer = 0\n");
        assert!(
            e.contains(":2:10: events.buffer: `0` is out of range"),
            "{e}"
        );
        let c = parse(
            "[events]\nsocket = \"\"\ngroup = \"\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!((c.events.socket, c.events.group), (None, None));
        let c = parse(
            "[events]\nmax_subscribers = 100\nmax_subscribers_per_user = 3\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            (c.events.max_subscribers, c.events.max_subscribers_per_user),
            (100, 3)
        );
        let e = err("[events]\nmax_subscribers_per_user = 0\n");
        assert!(
            e.contains(":2:28: events.max_subscribers_per_user: `0` is out of range"),
            "{e}"
        );
        let e = err("[daemon]\nlog = \"syslog\"\n");
        assert!(e.contains("daemon.log: unknown log mode `syslog`"), "{e}");
    }

    #[test]
    fn relative_registry_csv_is_relative_to_the_config() {
        let c = parse(
            "[registry]\ncsv = \"iana.csv\"\n",
            Path::new("/etc/portsentinel/config.toml"),
        )
        .unwrap();
        let (p, loc) = c.registry_csv.unwrap();
        assert_eq!(p, Path::new("/etc/portsentinel/iana.csv"));
        assert_eq!((loc.line, loc.column), (2, 7));
    }

    #[test]
    fn missing_registry_csv_is_a_config_error() {
        let c = parse(
            "[registry]\ncsv = \"/nonexistent/iana.csv\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let e = c.registry().unwrap_err().to_string();
        assert!(
            e.starts_with(
                "c.toml:2:7: registry.csv: cannot open IANA registry /nonexistent/iana.csv"
            ),
            "{e}"
        );
    }
}
